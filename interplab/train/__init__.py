"""Training lab: a deterministic, checkpointing trainer and toy experiments (grokking, superposition,
attention-only induction-head formation). See :mod:`interplab.train.trainer`."""

from interplab.train.trainer import Trainer, TrainingDiverged

__all__ = ["Trainer", "TrainingDiverged"]
