#!/usr/bin/env bash
# Write constraints.txt, the lock of the resolved set that scripts/install.sh installs from and checks.
#
#   bash scripts/lock.sh            keep every locked version, add what pyproject.toml newly asks for
#   bash scripts/lock.sh --upgrade  re-resolve everything from pyproject.toml alone (new upstream releases)
#
# Either way it resolves in a fresh venv.  Run it on purpose, then `make test`, and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=(-c constraints.txt)
[ "${1:-}" = "--upgrade" ] && keep=()
[ -f constraints.txt ] || keep=()
work=$(mktemp -d)
trap 'rm -rf "$work" build' EXIT  # setuptools leaves build/ beside pyproject.toml
python3 -m venv "$work/venv"
bash scripts/cpu_torch.sh "$work/venv"
"$work/venv/bin/pip" install -q "${keep[@]}" ".[cpu,dev]"
"$work/venv/bin/pip" uninstall -y -q torchaudio torchvision torchcodec 2>/dev/null || true
{
  echo "# The resolved set of '.[cpu,dev]', written by scripts/lock.sh on $(date -u +%Y-%m-%d) ($("$work/venv/bin/python" --version))."
  echo "# scripts/install.sh installs with -c constraints.txt, then fails if anything installed differs from it."
  "$work/venv/bin/pip" freeze --exclude audio-curate | grep -v '^-e ' | sort -f
} > "$work/constraints.txt"
mv "$work/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
