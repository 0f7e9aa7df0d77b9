# controlloop controller image.
#   docker build -t controlloop:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
# Builder: a wheel of this repo plus its dependencies in /opt/venv.
# Final: python slim + that venv only (no compiler, no pip), non-root, read-only-rootfs friendly.

FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlloop ./controlloop

# pip compiles .pyc at install time, so the read-only final image never writes any.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/controlloop-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM python:3.11.13-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="controlloop" \
      org.opencontainers.image.description="SLO-driven, cost-optimal autoscaler for vLLM inference Deployments" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Everything that might write goes to /tmp (an emptyDir in Kubernetes).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp \
    XDG_CACHE_HOME=/tmp \
    CONTROLLOOP_CONFIG=/etc/controlloop

COPY --from=builder /opt/venv /opt/venv
# Default specs; in Kubernetes the ConfigMap is mounted over this directory.
COPY config/*.yaml /etc/controlloop/

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["controlloop", "run", "--in-cluster"]
CMD []
