"""The Result of a training experiment (grokking, addition, superposition, attn-only): its config, its logged
metrics and the headline numbers, kept in the ``summary`` field and returned by ``headline()``."""

from __future__ import annotations

from typing import Any, ClassVar

from interplab.io.results import Result

__all__ = ["TrainingResult"]


class TrainingResult(Result):
    """Base of the training lab's Results (dataclasses with a ``summary`` field)."""

    FORMAT_VERSION: ClassVar[int] = 2  # 2: the headline is kept in ``summary``
    summary: dict[str, Any]

    def headline(self) -> dict[str, Any]:
        return self.summary
