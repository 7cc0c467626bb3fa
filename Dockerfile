# The scheduler's image: `botsched serve` on port 8080, as an unprivileged user (uid 10001), its
# SQLite file and run data in /data (mount a volume there), or its jobs in PostgreSQL
# (SCHEDULER_STORE=postgres, DATABASE_URL; `botsched migrate` from the same image).
#
#   podman build -t bot-scheduler:0.1.0 .        # or: docker build
#
# The base is pinned by version. For builds that must not change under you, pin its digest too:
# PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<the digest you tested>.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY handlers ./handlers
# the app and its extras for the cluster into a virtualenv: kubernetes (PyYAML, for a YAML
# kubeconfig) and postgres (psycopg with its C build, and its pool: the store of several replicas)
RUN python -m venv /opt/botsched \
    && /opt/botsched/bin/pip install --no-cache-dir ".[kubernetes,postgres]"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 botsched \
    && useradd --system --uid 10001 --gid botsched --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin botsched \
    && mkdir /data \
    && chown botsched:botsched /data
COPY --from=build /opt/botsched /opt/botsched
ENV PATH=/opt/botsched/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    SCHEDULER_DATA_DIR=/data
WORKDIR /data
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["botsched"]
CMD ["serve"]
