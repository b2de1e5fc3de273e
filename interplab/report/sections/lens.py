"""The logit lens (:mod:`interplab.analyses.observational.lens`) as HTML: one prompt's summary, figure and
top-token table, shared by the model report and the ``serve`` page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.analyses.observational.lens import display_token
from interplab.report.html import Html, figure, heading, table, text

if TYPE_CHECKING:
    import pandas as pd

    from interplab.analyses.observational.lens import LogitLensResult

__all__ = ["display_frame", "lens_parts"]


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``top…`` token columns made visible (:func:`display_token`)."""
    for c in df.columns:
        if str(c).startswith("top"):
            df[c] = df[c].map(display_token)
    return df


def lens_parts(res: LogitLensResult, answer_given: bool, intro: str = "", data_name: str | None = None) -> list[Html]:
    """The summary (``intro`` first; the tracked answer, marked as the model's own prediction unless
    ``answer_given``; where the lens first ranks it top-1; ``data_name``, the saved file), the figure and the table
    of top tokens at the last position."""
    h = res.headline()
    first = h["first_layer_top1"]
    summary = (
        intro
        + f"Prompt: {res.prompt}\n"
        + f"Answer tracked: {display_token(res.answer)!r}"
        + ("" if answer_given else " (the model's own top prediction)")
        + f" — final p = {h['answer_prob_final']:.3f}, rank {h['answer_rank_final']}; "
        + (
            f"first ranked top-1 at layer {first}, top-1 from layer {h['stable_top1_from_layer']} on."
            if first is not None
            else "never ranked top-1 by the lens."
        )
        + (f"\nData: {data_name}" if data_name else "")
    )
    return [
        text(summary),
        figure(res.plot()),
        heading("Top tokens at the last position, per layer", 4),
        table(display_frame(res.to_frame("last"))),
    ]
