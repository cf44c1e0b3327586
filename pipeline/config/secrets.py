"""The one rule every entry point applies: no secret-looking setting goes any further (it would land in
Ray's job table, an actor's runtime env, a flow's parameters or a log), and what is written is redacted."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config.types import CurationConfig


SECRET_KEY = re.compile(r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key|auth)", re.I)


class SecretInConfigError(ValueError):
    """A setting that looks like a secret was given where it would be stored or shown: refused."""


# Settings a key pattern would flag but that hold no secret.
NOT_SECRET = frozenset({"RAY_AUTH_MODE"})
SECRET_ADVICE = (
    "secrets never go in the config or its overrides: Prefect stores flow parameters in its database, "
    "Ray shows job entrypoints and actor runtime envs to anyone with the dashboard. Give credentials "
    "through a Prefect Secret block (the flows' credentials_block) or the Ray nodes' own environment"
)


def _secret_key(key: str) -> bool:
    return key not in NOT_SECRET and key not in _declared() and bool(SECRET_KEY.search(key))


@functools.cache
def _declared() -> frozenset[str]:
    """Every field name of the typed config: settings whatever their names say (``max_new_tokens`` was
    refused as an override and shown as "***"); only free-form keys (``engine_env``, ``engine_kwargs``) and
    unknown ones are judged by their names."""
    from pydantic import BaseModel

    from pipeline.config.types import CurationConfig

    names: set[str] = set()
    todo: list[type[BaseModel]] = [CurationConfig]
    while todo:
        for name, field in todo.pop().model_fields.items():
            names.add(name)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                todo.append(field.annotation)
    return frozenset(names)


def secret_overrides(overrides: list[str] | None) -> list[str]:
    """The ``section.field=value`` overrides whose key path looks like a secret (never their values)."""
    found = []
    for item in overrides or []:
        dotted = item.split("=", 1)[0].strip()
        if any(_secret_key(part) for part in dotted.split(".")):
            found.append(dotted)
    return found


def _secret_paths(value: Any, path: str) -> list[str]:
    """The dotted paths under ``value`` whose key looks like a secret, at any depth."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}"
            found += [sub] if _secret_key(str(k)) else _secret_paths(v, sub)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _secret_paths(v, f"{path}[{i}]")
    return found


_CREDENTIALS_IN_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.I)


def _urls_with_credentials(value: Any, path: str) -> list[str]:
    """The dotted paths of string settings that are URLs carrying a user and password."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _urls_with_credentials(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _urls_with_credentials(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and _CREDENTIALS_IN_URL.match(value) else []


def secret_settings(cfg: CurationConfig) -> list[str]:
    """The config's secret-looking settings: keys of the free-form engine env/kwargs (at any depth), and any
    URL that carries a password (the catalog's, an S3 endpoint's, a Ray address)."""
    found = [p for section in ("engine_env", "engine_kwargs") for p in _secret_paths(getattr(cfg.judge, section),
                                                                                       f"judge.{section}")]  # fmt: skip
    for where in _urls_with_credentials(cfg.model_dump(), ""):
        hint = (
            "; put it in PGPASSWORD" if where == "table.catalog_uri" else "; give credentials through the environment"
        )
        found.append(f"{where} (a password in the URL{hint})")
    return found


def refuse_secrets(cfg: CurationConfig | None = None, overrides: list[str] | None = None, where: str = "") -> None:
    """The one rule every entry point applies: no secret-looking setting goes any further."""
    # An override and the config built from it name the same key: each once.
    found = list(dict.fromkeys(secret_overrides(overrides) + (secret_settings(cfg) if cfg is not None else [])))
    if found:
        raise SecretInConfigError(f"{where + ': ' if where else ''}refused {', '.join(found)}: {SECRET_ADVICE}")


def redact(value: Any) -> Any:
    """``value`` with every entry under a secret-looking key replaced by "***", and the password of any URL
    too, at any depth."""
    if isinstance(value, dict):
        return {k: "***" if _secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and _CREDENTIALS_IN_URL.match(value):
        scheme, rest = value.split("://", 1)
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
    return value
