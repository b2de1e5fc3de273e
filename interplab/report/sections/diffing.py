"""Report sections of model diffing (:mod:`interplab.analyses.diffing`): a two-model diff and a checkpoint series
as HTML parts.

>>> report.section("Two-model diff", *diff_parts(res), id="diff")
"""

from __future__ import annotations

from interplab.analyses.diffing import CheckpointSeriesResult, DiffResult
from interplab.analyses.diffing.models import records, show_context
from interplab.analyses.observational.lens import display_token
from interplab.report.html import Html, figure, heading, table, text

__all__ = ["checkpoint_series_parts", "diff_parts"]


def diff_parts(res: DiffResult, k: int = 15) -> list[Html]:
    """Report parts of a two-model diff: summary, figure, the token types and contexts each model predicts
    better (every token and context escaped by :mod:`interplab.report.html`).

    Args:
        res: the diff (:func:`interplab.analyses.diffing.diff_models`).
        k: rows per table.
    """
    h = res.headline(k)
    unit = "token" if res.mode == "tokens" else "aligned text unit"
    q = h["quantiles"]
    summary = (
        f"Model A: {res.model_a}\nModel B: {res.model_b}\n"
        f"{h['n_units']} {unit}s in {h['n_chunks']} chunks ({res.settings.get('source', 'text')}); "
        f"mean loss A {h['mean_loss_a']:.4f}, B {h['mean_loss_b']:.4f} nats; diff = loss B − loss A "
        f"(> 0: A better): mean {h['mean_diff']:+.4f}, median {q['q50']:+.4f}, 5–95% "
        f"[{q['q05']:+.4f}, {q['q95']:+.4f}]; A better on {100 * h['frac_a_better']:.1f}%, B on "
        f"{100 * h['frac_b_better']:.1f}%."
    )
    if res.mode == "text":
        summary += (
            "\nThe tokenizers differ: losses are compared on text units both tokenizations cut at "
            f"(A: {res.settings.get('tokens_per_unit_a', 0):.2f}, B: {res.settings.get('tokens_per_unit_b', 0):.2f} "
            f"tokens per unit); nats per character A {h.get('nats_per_char_a')}, B {h.get('nats_per_char_b')}."
        )

    def ctx_rows(rows):
        return [
            {
                "context": show_context(r["context"]),
                "token": display_token(r["token"]),
                "loss A": r["loss_a"],
                "loss B": r["loss_b"],
                "diff": r["diff"],
            }
            for r in rows
        ]

    def tok_rows(direction):
        return [
            {
                "token": display_token(r["token"]),
                "count": r["count"],
                "mean loss A": r["mean_loss_a"],
                "mean loss B": r["mean_loss_b"],
                "mean diff": r["mean_diff"],
                "total diff": r["total_diff"],
            }
            for r in res.top_tokens(k, direction=direction)
        ]

    ctx = res.top_contexts(k)
    return [
        text(summary),
        figure(res.plot(k=k)),
        heading(f"{unit.capitalize()} types A predicts better (count ≥ {res.min_count}), largest mean diff first", 4),
        table(tok_rows("a_better")),
        heading(f"{unit.capitalize()} types B predicts better (count ≥ {res.min_count})", 4),
        table(tok_rows("b_better")),
        heading("Where A is much better (largest diff)", 4),
        table(ctx_rows(ctx["a_better"])),
        heading("Where B is much better (smallest diff)", 4),
        table(ctx_rows(ctx["b_better"])),
    ]


def checkpoint_series_parts(res: CheckpointSeriesResult, k: int = 15) -> list[Html]:
    """Report parts of a checkpoint series: summary, figure, steps table, the largest abrupt drops and the
    token types with most of them.

    Args:
        res: the series (:func:`interplab.analyses.diffing.diff_checkpoints`).
        k: rows per table.
    """
    h = res.headline(k)
    pc = h["phase_change_step"]
    summary = (
        f"{h['n_checkpoints']} checkpoints, {h['n_units']} tokens. An abrupt drop: a token's loss falls by "
        f"more than {res.threshold:g} nats between two consecutive checkpoints. Drops per step: "
        f"{h['drops_per_step']}; rises: {h['rises_per_step']}. "
        + (
            f"Most drops at step {pc['step']} ({pc['from']} → {pc['to']}): {pc['n_drops']} tokens."
            if pc
            else "No token drops by more than the threshold."
        )
    )
    ev = res.events("drop").head(k)
    rows = [
        {
            "step": int(r.step),
            "context": show_context(r.context),
            "token": display_token(r.token),
            "before": r.loss_before,
            "after": r.loss_after,
            "delta": r.delta,
            "abruptness": r.abruptness,
        }
        for r in records(ev)
    ]
    tt = res.token_table().head(k)
    tt = tt.assign(token=tt["token"].map(display_token))
    return [
        text(summary),
        figure(res.plot(k=min(k, 12))),
        table(res.to_frame("steps")),
        heading("Largest abrupt drops", 4),
        table(rows),
        heading("Token types with most abrupt drops", 4),
        table(tt),
    ]
