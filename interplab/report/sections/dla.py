"""Direct logit attribution (:mod:`interplab.analyses.observational.dla`) as HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Html, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.observational.dla import DLAResult

__all__ = ["dla_parts"]


def dla_parts(res: DLAResult, prompt: str, answer: str, distractor: str | None) -> list[Html]:
    """The contributions to ``logit(answer) − logit(distractor)`` (or ``logit(answer)``) on ``prompt``: how they
    sum up, the plot and the ten largest heads by absolute contribution."""
    what = f"logit({answer!r})" + (f" − logit({distractor!r})" if distractor is not None else "")
    return [
        text(
            f"Direct logit attribution of {what} on: {prompt}\n"
            f"Components (heads, MLPs, embeddings, biases; final norm scale frozen) sum to "
            f"{float(res.total):.4f}; the model's {'logit difference' if distractor is not None else 'logit'} is "
            f"{float(res.logit_diff):.4f}."
        ),
        figure(res.plot()),
        table([{"head": f"{a}.{b}", "contribution": c} for a, b, c in res.top_heads(10, "abs")]),
    ]
