"""One typed config object for every stage, with defaults per profile.

``local`` is the embedded default: CPU only, bundled models, a local Ray.
``cluster`` is the seed's setup: GPU workers, hub models, pools sized for GPUs.
Every field can be overridden from a YAML/TOML file and from ``--set section.field=value``.

``types.py`` holds the sections, ``build.py`` how a config is built, ``secrets.py`` the rule that refuses
secrets in it; this package's names are the config's one interface.
"""

from pipeline.config.build import build_config, deep_merge, load_config_file, parse_override
from pipeline.config.engines import SEED_SYSTEM_PROMPT, JudgeConfig, TranscriberConfig
from pipeline.config.secrets import SecretInConfigError, redact, refuse_secrets, secret_overrides, secret_settings
from pipeline.config.types import (
    AudioConfig,
    CurationConfig,
    GatesConfig,
    Profile,
    QualityConfig,
    RayJobConfig,
    ReaderConfig,
    StorageConfig,
    TableConfig,
)

__all__ = [
    "SEED_SYSTEM_PROMPT",
    "AudioConfig",
    "CurationConfig",
    "GatesConfig",
    "JudgeConfig",
    "Profile",
    "QualityConfig",
    "RayJobConfig",
    "ReaderConfig",
    "SecretInConfigError",
    "StorageConfig",
    "TableConfig",
    "TranscriberConfig",
    "build_config",
    "deep_merge",
    "load_config_file",
    "parse_override",
    "redact",
    "refuse_secrets",
    "secret_overrides",
    "secret_settings",
]
