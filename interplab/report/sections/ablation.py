"""Head-ablation importance (:mod:`interplab.analyses.causal.ablation`) as HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Html, Report, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.causal.ablation import HeadAblationResult

__all__ = ["ablation_parts", "ablation_report"]


def ablation_parts(res: HeadAblationResult) -> list[Html]:
    """The model report's section (zero ablation on 4 chunks of 64 tokens)."""
    return [
        text(
            "Zero-ablation of each head's output (hook_z) on 4 chunks of 64 tokens of the pydoc corpus "
            "(interplab ablate for more): increase of the mean next-token loss, with 95% confidence intervals over "
            "chunks; heads that matter but are not induction heads are flagged in head_ablation.json."
        ),
        figure(res.plot()),
    ]


def ablation_report(res: HeadAblationResult, model_name: str, how: str, top_k: int) -> Report:
    """The report of ``interplab ablate``: the loss increase per head and the top ``max(top_k, 20)`` rows."""
    s = res.settings
    rep = Report(
        f"Head ablation importance — {model_name}",
        f"{how} ablation of hook_z, {s['n_chunks']} chunks × {s['chunk_len']} tokens of "
        f"{s['source']}; baseline loss {res.headline()['baseline_loss']}",
    )
    rep.section("Loss increase per head", res.plot(), table(res.to_frame().head(max(top_k, 20))), id="ablation")
    return rep
