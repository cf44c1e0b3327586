"""Building the config: a profile's defaults, then a YAML/TOML file, then ``--set`` overrides, then the
command line's shortcut fields."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.types import CurationConfig, Profile


def _cluster_overrides() -> dict[str, Any]:
    # One GPU per actor.  Whisper's batch and the feature pool are measured on an H200 (README
    # "Cluster profile settings", bench/gpu_check.py); the judge's are reasoned.
    return {
        "profile": "cluster",
        "audio": {"decode_batch_size": 32},
        # CPU actors beside GPU Whisper: DNSMOS costs no GPU time there.
        "quality": {"dnsmos": True, "dnsmos_actors": 4},
        "transcriber": {
            "backend": "transformers",
            "model": "openai/whisper-large-v3-turbo",  # multilingual: every locale
            "multilingual_model": None,
            "dtype": "float16",
            "batch_size": 64,
            "num_actors": 2,
            "num_gpus_per_actor": 1.0,
            "feature_batch_size": 32,
            "feature_actors": 2,
            "decoder_batch_size": 64,
            "decoder_actors": 2,
            "compile_encoder": True,
        },
        "judge": {
            "model": "unsloth/Meta-Llama-3.1-8B-Instruct",
            "locales": None,  # an 8B multilingual judge: measure it before judging a locale out
            "batch_size": 64,
            "concurrency": 2,
            "num_gpus_per_actor": 1.0,
            "max_model_len": 4096,
            "dtype": "float16",
            "gpu_memory_utilization": 0.9,
            "kv_cache_memory_bytes": None,
            "block_size": None,
            "engine_env": {},
            "max_concurrent_batches": 8,
            "enforce_eager": False,
        },
    }


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``judge.batch_size=32`` -> ``{"judge": {"batch_size": 32}}``; values are parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.field=value")
    dotted, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    for key in reversed(dotted.strip().split(".")):
        value = {key: value}
    return value


CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")
MAX_CONFIG_BYTES = 1 << 20


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or TOML file's mapping.  A flow's ``config_file`` comes from a parameter anyone with the UI
    can set, so only config files are read, bounded, and a parse error never quotes the file's text."""
    path = Path(path)
    if path.suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"{path}: a config file is {', '.join(CONFIG_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: config file is over {MAX_CONFIG_BYTES} bytes")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}{at}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: config file must hold a mapping")
    return data


def build_config(
    profile: Profile = "local",
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    **fields: Any,
) -> CurationConfig:
    """Profile defaults (or a whole ``base`` config), then the file, then ``--set`` overrides, then
    explicit keyword fields: every layer applies, whatever the one before it was."""
    data: dict[str, Any] = {"profile": profile}
    if base is not None:
        data = dict(base)
    elif profile == "cluster":
        data = deep_merge(data, _cluster_overrides())
    if file is not None:
        data = deep_merge(data, load_config_file(file))
    for item in overrides or []:
        data = deep_merge(data, parse_override(item))
    data = deep_merge(data, {k: v for k, v in fields.items() if v is not None})
    try:
        return CurationConfig.model_validate(data)
    except ValidationError as exc:
        # pydantic's message quotes the values it refused; a config file or an override may hold a secret
        # in the wrong place, so the error names where and why, never what.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid config: {problems}") from None
