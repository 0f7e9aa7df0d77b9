"""The typed errors of :class:`controlloop.cluster.kube.KubeClient`.

Kept apart from the client so that callers catch them with a module-level
import without loading the ``kubernetes`` package.
"""

from __future__ import annotations


class KubeError(Exception):
    """Base of every error raised by :class:`KubeClient`.

    ``status`` is the HTTP status (0 when no response arrived), ``reason`` the
    Kubernetes ``Status.reason`` (``NotFound``, ``Conflict``, ...) or a short
    description, ``obj`` names what the call was about, e.g. ``deployments ns/name``.
    """

    def __init__(self, message: str, *, status: int = 0, reason: str = "", obj: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.obj = obj
        self.message = message

    def __str__(self) -> str:
        where = f"{self.obj}: " if self.obj else ""
        code = f" ({self.status} {self.reason})" if self.status else ""
        return f"{where}{self.message}{code}"


class NotFound(KubeError):
    """404: the object (or the whole resource, e.g. an absent CRD) does not exist."""


class Conflict(KubeError):
    """409: stale resourceVersion on update, or the object already exists on create."""


class Unauthorized(KubeError):
    """401: credentials missing or rejected."""


class Forbidden(KubeError):
    """403: RBAC denies the verb on this resource."""


class ServerError(KubeError):
    """5xx from the API server (or an aggregated API behind it)."""


class KubeTimeout(KubeError):
    """No usable response: timeout, refused or dropped connection, TLS failure."""


class KubeConfigError(KubeError):
    """The kubeconfig / in-cluster configuration could not be loaded."""


__all__ = [
    "Conflict",
    "Forbidden",
    "KubeConfigError",
    "KubeError",
    "KubeTimeout",
    "NotFound",
    "ServerError",
    "Unauthorized",
]
