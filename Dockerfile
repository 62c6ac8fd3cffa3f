# syntax=docker/dockerfile:1.7
#
# One image for every TicketBuster process, chosen by command:
#   python -m api                      the HTTP/WebSocket API (Granian)
#   python -m workers.persister        Kafka -> PostgreSQL
#   python -m workers.issuer           signed tickets
#   python -m workers.notifier         order status -> buyers
#   python -m workers.expirer          hold sweeps + reconciler
#   python -m migrations up            schema migrations (a Job)
#
# Built with uv from the committed lock (`uv sync --frozen --no-dev`), runs as
# an unprivileged user and works with a read-only root filesystem: the only
# writable paths are the emptyDirs that k8s mounts on /tmp and, for the API, on
# /run/prometheus. PROMETHEUS_MULTIPROC_DIR is deliberately not set here:
# prometheus_client switches to multiprocess mode when the variable merely
# exists, and only the API (several Granian workers) wants that.
# See docs/decisions/0501-container-image.md.

# Keep in step with the interpreter CI tests on (requires-python >= 3.11).
ARG PYTHON_VERSION=3.11
# The uv that wrote uv.lock.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- build: resolve and install the locked runtime dependencies -------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# The project is not a package (tool.uv.package = false): only its locked
# dependencies are installed; the source is copied in the runtime stage.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    uv sync --frozen --no-dev --no-install-project

# --- runtime: the venv plus the source, nothing else -------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 tb \
 && useradd --system --uid 10001 --gid tb --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tb
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
# Source is owned by root and read-only for the app user.
COPY core/ /app/core/
COPY lua/ /app/lua/
COPY api/ /app/api/
COPY workers/ /app/workers/
COPY migrations/ /app/migrations/
COPY web/ /app/web/
COPY pyproject.toml /app/pyproject.toml
RUN python -m compileall -q /app/core /app/api /app/workers /app/migrations
ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    TB_API_HOST=0.0.0.0 \
    TB_API_PORT=8000 \
    TB_WORKERS_HTTP_HOST=0.0.0.0
# Numeric uid so kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000 9101 9102 9103 9104
CMD ["python", "-m", "api"]
