"""Who may call the daemon's HTTP endpoints: bearer tokens checked by the API server
(TokenReview + SubjectAccessReview, as controller-runtime protects its metrics endpoint), or
one shared token from a file (a mounted Secret), plus a rate limit for mutating endpoints.

Non-resource authorization: a caller of ``POST /invoke`` needs a (Cluster)Role rule
``nonResourceURLs: ["/invoke"], verbs: ["post"]``; of ``GET /metrics`` (when protected)
``nonResourceURLs: ["/metrics"], verbs: ["get"]`` — the API server's own convention for
non-resource paths (verb = lower-case HTTP method). Decisions are cached briefly (like
controller-runtime's 1-minute cache) so a scraper does not cost two API calls per scrape.
Failures of the review calls deny (fail closed) with 503, never allow.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("controlloop.httpauth")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: int  # HTTP status to answer with when not allowed
    reason: str
    user: str = ""


ALLOWED = Decision(True, 200, "authentication disabled")


class Authorizer(Protocol):
    def check(self, authorization: str, path: str, verb: str) -> Decision: ...


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AllowAll:
    """No authentication (the default off-cluster, where the port is on loopback)."""

    def check(self, authorization: str, path: str, verb: str) -> Decision:
        return ALLOWED


class StaticToken:
    """One shared bearer token, read from a file (a mounted Secret) each time it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token = self._read()

    def _read(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot read the token file: "
                             f"{exc.strerror or exc}") from None
        if not token:
            raise ValueError(f"{self.path}: the token file is empty")
        return token

    def check(self, authorization: str, path: str, verb: str) -> Decision:
        given = bearer(authorization)
        if not given:
            return Decision(False, 401, "a bearer token is required")
        try:
            self._token = self._read()  # a rotated Secret applies at once
        except ValueError as exc:
            log.error("%s; keeping the last token", exc)
        if hmac.compare_digest(given.encode(), self._token.encode()):
            return Decision(True, 200, "token accepted", "token")
        return Decision(False, 401, "invalid bearer token")


class Reviewer(Protocol):
    """The two API calls (the official client in production and in tests)."""

    def token_review(self, token: str) -> dict[str, Any]: ...

    def access_review(self, user: dict[str, Any], path: str, verb: str) -> dict[str, Any]: ...


class KubeReviewer:
    """TokenReview and SubjectAccessReview through ``kubernetes.client``."""

    def __init__(self, api_client: Any, timeout_s: float = 5.0) -> None:
        from kubernetes import client as k8s

        self._authn = k8s.AuthenticationV1Api(api_client)
        self._authz = k8s.AuthorizationV1Api(api_client)
        self._api = api_client
        self.timeout_s = timeout_s

    def token_review(self, token: str) -> dict[str, Any]:
        body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}}
        out = self._authn.create_token_review(body, _request_timeout=self.timeout_s)
        return dict(self._api.sanitize_for_serialization(out).get("status") or {})

    def access_review(self, user: dict[str, Any], path: str, verb: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"user": user.get("username", ""),
                                "groups": user.get("groups") or [],
                                "nonResourceAttributes": {"path": path, "verb": verb}}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        body: Any = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec}
        out = self._authz.create_subject_access_review(body, _request_timeout=self.timeout_s)
        return dict(self._api.sanitize_for_serialization(out).get("status") or {})


class TokenReviewAuthorizer:
    """A bearer token is authenticated with TokenReview, then the user must be allowed
    ``verb`` on the non-resource ``path`` (SubjectAccessReview)."""

    def __init__(self, reviewer: Reviewer, *, cache_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reviewer = reviewer
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, Decision]] = {}
        self._lock = threading.Lock()

    def check(self, authorization: str, path: str, verb: str) -> Decision:
        token = bearer(authorization)
        if not token:
            return Decision(False, 401, "a bearer token is required")
        key = (hashlib.sha256(token.encode()).hexdigest(), path, verb)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self.cache_seconds:
                return hit[1]
        decision = self._review(token, path, verb)
        if decision.code != 503:  # API trouble is not cached: the next call asks again
            with self._lock:
                if len(self._cache) > 1024:
                    self._cache.clear()
                self._cache[key] = (now, decision)
        return decision

    def _review(self, token: str, path: str, verb: str) -> Decision:
        try:
            status = self.reviewer.token_review(token)
        except Exception as exc:  # noqa: BLE001 - any client failure denies
            log.warning("TokenReview failed, denying: %s", exc)
            return Decision(False, 503, "cannot authenticate now (TokenReview failed)")
        if not status.get("authenticated"):
            return Decision(False, 401, status.get("error") or "token not authenticated")
        user = dict(status.get("user") or {})
        name = str(user.get("username", ""))
        try:
            review = self.reviewer.access_review(user, path, verb)
        except Exception as exc:  # noqa: BLE001
            log.warning("SubjectAccessReview failed, denying %s: %s", name, exc)
            return Decision(False, 503, "cannot authorize now (SubjectAccessReview failed)", name)
        if not review.get("allowed") or review.get("denied"):
            why = review.get("reason") or "no RBAC rule allows it"
            return Decision(False, 403, f'user "{name}" may not {verb} {path}: {why}', name)
        return Decision(True, 200, "allowed by RBAC", name)


class RateLimiter:
    """Token bucket: ``per_minute`` calls on average, at most ``burst`` at once."""

    def __init__(self, per_minute: float, burst: int = 1, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("rate must be > 0 per minute and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """0 when a call may go ahead (and counts it), else the seconds to wait."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


@dataclass
class EndpointPolicy:
    """What the daemon's HTTP server enforces."""

    authorizer: Authorizer
    invoke_enabled: bool = True
    metrics_protected: bool = False
    invoke_limiter: RateLimiter | None = None
    mode: str = "none"

    def describe(self) -> str:
        parts = [f"auth {self.mode}"]
        parts.append("POST /invoke " + ("off" if not self.invoke_enabled else "on"))
        if self.invoke_limiter is not None and self.invoke_enabled:
            parts.append(f"invoke rate {self.invoke_limiter.rate * 60:g}/min")
        parts.append("/metrics " + ("protected" if self.metrics_protected else "open"))
        return ", ".join(parts)


def build_policy(*, mode: str, in_cluster: bool, token_file: str | None,
                 invoke: bool, invoke_per_minute: float, metrics_auth: bool,
                 api_client: Any = None) -> EndpointPolicy:
    """The policy for ``run``'s flags; ``mode`` auto = tokenreview in-cluster, else none.
    Raises ValueError naming the flag on a bad combination."""
    if mode == "auto":
        mode = "token" if token_file else ("tokenreview" if in_cluster else "none")
    authorizer: Authorizer
    if mode == "none":
        authorizer = AllowAll()
    elif mode == "token":
        if not token_file:
            raise ValueError("--http-auth token needs --http-token-file (env "
                             "CONTROLLOOP_HTTP_TOKEN_FILE)")
        authorizer = StaticToken(Path(token_file))
    elif mode == "tokenreview":
        if api_client is None:
            raise ValueError("--http-auth tokenreview needs a Kubernetes client")
        authorizer = TokenReviewAuthorizer(KubeReviewer(api_client))
    else:
        raise ValueError(f"--http-auth: expected auto, none, token or tokenreview, got {mode!r}")
    if metrics_auth and mode == "none":
        raise ValueError("--metrics-auth needs --http-auth token or tokenreview")
    limiter = RateLimiter(invoke_per_minute, burst=max(1, int(invoke_per_minute // 6) or 1))
    return EndpointPolicy(authorizer, invoke_enabled=invoke, metrics_protected=metrics_auth,
                          invoke_limiter=limiter, mode=mode)
