# syntax=docker/dockerfile:1
# Gateway image: `docker build -t gateway .`, then
#   docker run -p 8080:8080 -v gateway-data:/data -v "$PWD/models:/models:ro" gateway
# Registry store: SQLite in the /data volume (set GATEWAY_STORE_URI=postgresql+psycopg://... to
# share one store between replicas). Model packages: under /models (the only artifact root).
# Extras at build time (default: the PostgreSQL driver), e.g. --build-arg EXTRAS="[postgres,sklearn,pandas]".
# Dependencies install at the versions in constraints.txt, the ones the test suite passed with.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: install the package and its dependencies into /opt/venv --------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG EXTRAS="[postgres]"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install --upgrade -c constraints.txt pip setuptools wheel \
    && pip install -c constraints.txt ".${EXTRAS}" \
    && gateway --version

# ---- runtime: the venv only, run as a non-root user ----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_STORE_URI=sqlite:////data/store.db \
    GATEWAY_ARTIFACT_ROOTS=/models
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin gateway \
    && mkdir -p /data /models \
    && chown gateway:gateway /data /models
COPY --from=builder /opt/venv /opt/venv
USER gateway:gateway
WORKDIR /data
VOLUME ["/data", "/models"]
EXPOSE 8080
# slim has no curl: probe /ping with the standard library (override the URL if you change the port)
ENV GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:8080/ping
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['GATEWAY_HEALTHCHECK_URL'], timeout=3).status == 200 else 1)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
