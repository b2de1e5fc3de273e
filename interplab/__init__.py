"""interplab: interpretability and AI-safety experiments on real and toy transformers."""

from interplab.hooks import Ablate, AddVector, Apply, Cache, Intervention, Patch
from interplab.models import DEFAULT_MODEL, REGISTRY, Model, ModelConfig, ToyConfig, ToyTransformer, load

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "Ablate",
    "AddVector",
    "Apply",
    "Cache",
    "Intervention",
    "Model",
    "ModelConfig",
    "Patch",
    "ToyConfig",
    "ToyTransformer",
    "__version__",
    "load",
]
