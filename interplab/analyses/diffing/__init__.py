"""Model diffing: where do two models (or the checkpoints of one training run) disagree on a text?

Answers the research idea "identify differences between models run on the same text" with the per-token
loss comparison of Olsson et al. (2022), "In-context Learning and Induction Heads"
(https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/):

- :mod:`~interplab.analyses.diffing.alignment`: chunks of a text, and the alignment on text units when the
  two tokenizers differ;
- :mod:`~interplab.analyses.diffing.models`: two models, :func:`diff_models` → :class:`DiffResult`;
- :mod:`~interplab.analyses.diffing.checkpoints`: a series of checkpoints, :func:`diff_checkpoints` →
  :class:`CheckpointSeriesResult` (abrupt per-token loss changes, the phase-change step).

Per-token losses come from :func:`interplab.models.scoring.model_token_losses`.
"""

from interplab.analyses.diffing.alignment import ALIGNMENTS, Alignment, same_tokenizer
from interplab.analyses.diffing.checkpoints import CheckpointSeriesResult, diff_checkpoints
from interplab.analyses.diffing.models import QUANTILES, DiffMode, DiffResult, diff_models

__all__ = [
    "ALIGNMENTS",
    "QUANTILES",
    "Alignment",
    "CheckpointSeriesResult",
    "DiffMode",
    "DiffResult",
    "diff_checkpoints",
    "diff_models",
    "same_tokenizer",
]
