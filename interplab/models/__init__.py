"""Models: loading (``interplab.load(name)``), the registry of named models, one adapter per architecture
family, norm folding, scoring helpers, the ``Model`` wrapper, interplab's toy transformer and planted models."""

from __future__ import annotations

from interplab.models.adapters import ModelConfig
from interplab.models.loading import from_pretrained_dir, load
from interplab.models.model import Model, RunOutput
from interplab.models.registry import DEFAULT_MODEL, REGISTRY, ChecksumError, ModelNotAvailable
from interplab.models.toy import ToyConfig, ToyTransformer

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "ChecksumError",
    "Model",
    "ModelConfig",
    "ModelNotAvailable",
    "RunOutput",
    "ToyConfig",
    "ToyTransformer",
    "from_pretrained_dir",
    "load",
]
