# The embedded default: CPU only, bundled models, local Ray, Prefect ephemeral or a server.
# Built with scripts/install.sh, the very script `make demo` / `make test` run, so they cannot drift.
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VENV=/opt/venv \
    EXTRAS=cpu \
    EDITABLE=0 \
    CURATE_MODEL_CACHE=/opt/models \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 curate \
    && mkdir -p /opt/models /app /data \
    && chown curate:curate /opt/models /app /data

WORKDIR /app
COPY --chown=curate:curate . /app
RUN bash scripts/install.sh && chown -R curate:curate /opt/venv /opt/models

USER curate
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import pipeline.config, ray, prefect"]
ENTRYPOINT ["curate"]
CMD ["run", "--output", "/data/demo"]
