"""Analyses: plain functions of a model (and a task) that return a typed Result.

Each Result is a dataclass with the numbers, the settings that produced them, ``to_frame()``,
``plot()``, ``save(dir)`` (JSON / Parquet / safetensors, never pickle) and ``headline()``.
"""

from interplab.analyses.observational.lens import LogitLensResult, logit_lens, unembed_resid

__all__ = ["LogitLensResult", "logit_lens", "unembed_resid"]
