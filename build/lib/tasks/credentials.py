"""Credentials from a Prefect Secret block, applied to this process's environment.

The block holds a JSON object such as ``{"AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "..."}``.
Only known credential variables are accepted, so a block cannot redirect anything else; values
never enter flow parameters, manifests or artifacts (they are read from the env where needed).
"""

from __future__ import annotations

import os

from prefect.blocks.system import Secret

ALLOWED = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL", "HF_TOKEN"}
)


def apply_credentials_block(name: str) -> list[str]:
    """Load Secret block ``name`` into ``os.environ``; return the variable names set (never values)."""
    value = Secret.load(name).get()
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of environment variables")
    unknown = sorted(set(value) - ALLOWED)
    if unknown:
        raise ValueError(f"Secret block {name!r} has keys outside {sorted(ALLOWED)}: {unknown}")
    for key, val in value.items():
        os.environ[key] = str(val)
    return sorted(value)
