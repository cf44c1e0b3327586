# GPU worker image for the cluster profile: CUDA, vLLM, Ray, the project.  Used for Ray head/worker
# pods and as the Prefect worker's job image.  Models load by hub id (HF_TOKEN from a Secret).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# The operator's pip configuration (a mirror, an extra index, a wheel folder, a CA bundle) reaches
# install.sh unchanged.  vllm 0.32 from PyPI brings the CUDA torch it was built with.
ARG PIP_INDEX_URL \
    PIP_EXTRA_INDEX_URL \
    PIP_FIND_LINKS \
    PIP_CERT

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VENV=/opt/venv \
    EXTRAS=gpu \
    EDITABLE=0 \
    PREPARE_MODELS=0 \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip curl \
    && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 curate \
    && mkdir -p /app /data \
    && chown curate:curate /app /data

WORKDIR /app
COPY --chown=curate:curate . /app
RUN bash scripts/install.sh && chown -R curate:curate /opt/venv

USER curate
ENV CURATE_PROFILE=cluster
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import vllm, ray, pipeline.config"]
CMD ["ray", "start", "--head", "--block", "--dashboard-host=0.0.0.0"]
