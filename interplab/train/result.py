"""The Result of a training experiment (grokking, addition, superposition, attn-only): its config, its logged
metrics and the headline numbers, kept in the ``summary`` field and returned by ``headline()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from interplab.io.results import Result
from interplab.train.config import config_dict

__all__ = ["TrainingResult"]


@dataclass(kw_only=True)
class TrainingResult(Result):
    """Base of the training lab's Results. Subclasses (``kw_only`` dataclasses) add their analysis fields and
    may narrow ``metrics`` (one dict per logged step, or per model/part such lists)."""

    FORMAT_VERSION: ClassVar[int] = 2  # 2: the headline is kept in ``summary``

    config: dict  # the experiment's config (config_dict)
    metrics: Any
    summary: dict  # the headline numbers (returned by headline())
    settings: dict = field(default_factory=dict)  # what the numbers depend on beyond the config: paper, losses

    def headline(self) -> dict[str, Any]:
        return self.summary

    @classmethod
    def saved(cls, cfg: Any, run_dir: str | Path, **fields: Any) -> Self:
        """The Result of a finished run of config ``cfg`` (kept as a dict) with ``fields``, saved in ``run_dir``."""
        res = cls(config=config_dict(cfg), **fields)
        res.save(run_dir)
        return res
