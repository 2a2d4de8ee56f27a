# syntax=docker/dockerfile:1
# The MindBus storage worker. Build: docker build -t mindbus-storage .
# Run:   docker run -e AMQP_URL=amqp://user:pass@broker:5672/ -v storage-data:/data -p 9102:9102 mindbus-storage
ARG PYTHON_VERSION=3.11

# ---- build: install the project and its extras into a virtualenv that the runtime stage copies ----
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY service ./service
COPY buffer ./buffer
COPY console ./console
RUN pip install ".[s3,telemetry,console]" \
    && storage-worker --help >/dev/null \
    && storage-worker console --help >/dev/null

# ---- runtime: slim base, no compilers, a non-root user, data on a volume ----
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="mindbus-storage" \
      org.opencontainers.image.description="MindBus storage worker: artifacts, threads and agent memory over RabbitMQ"
RUN groupadd --system --gid 10001 storage \
    && useradd --system --uid 10001 --gid storage --home-dir /data --no-create-home --shell /usr/sbin/nologin storage \
    && mkdir -p /data \
    && chown storage:storage /data
COPY --from=build /opt/venv /opt/venv
# STORAGE_ROOT (artifacts/, temp/, orphans/) and the embedded SQLite file both live on the /data volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STORAGE_ROOT=file:///data \
    DATABASE_URL=sqlite+aiosqlite:////data/storage.db \
    STORAGE_METRICS_PORT=9102 \
    STORAGE_LOG_FORMAT=json
VOLUME ["/data"]
WORKDIR /data
USER storage:storage
EXPOSE 9102
# Healthy means: this node answers a ping sent over the bus, the way agents reach it.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["storage-worker", "health", "--timeout", "10"]
# SIGTERM drains in-flight commands (STORAGE_SHUTDOWN_GRACE) and publishes evt.node.deregistered.
STOPSIGNAL SIGTERM
ENTRYPOINT ["storage-worker"]
CMD ["run"]
