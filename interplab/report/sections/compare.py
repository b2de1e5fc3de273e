"""Base vs fine-tuned (:mod:`interplab.finetune.compare`) as HTML: the verdict with its numbers, the loss change
in and off the fine-tuning distribution, per-head changes, weight updates, the activation difference lens and
the IOI comparison.

>>> report.section("Base vs fine-tuned", *compare_parts(res), id="compare")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interplab.analyses.observational.lens import display_token
from interplab.report.html import Html, figure, heading, table, text

if TYPE_CHECKING:
    from interplab.finetune.adl import IdentifyResult
    from interplab.finetune.compare import CompareResult

__all__ = ["compare_parts", "identify_parts"]


def _heads(rows: list[list[Any]], what: str) -> list[dict[str, Any]]:
    return [{"head": f"{a}.{b}", what: v} for a, b, v in rows]


def compare_parts(res: CompareResult, k: int = 10) -> list[Html]:
    """Report parts of a base-vs-tuned comparison (every token escaped by :mod:`interplab.report.html`).

    Args:
        res: the comparison (:func:`interplab.finetune.compare.compare_models`).
        k: rows per table.
    """
    h = res.headline(k)
    d = res.verdict_detail
    summary = (
        f"Base: {res.base_name}\nTuned: {res.tuned_name}\n"
        f"Verdict: {res.verdict}. Relative weight update {h['weight_update_rel_norm']}; mean loss change "
        f"{h['mean_loss_delta_in']} nats/token on the fine-tuning text ({res.settings.get('data')}) and "
        f"{h['mean_loss_delta_other']} on other text. Patching every head of the tuned model into the base "
        f"recovers {h['cmap_recovered_all_heads']} of the loss change (every MLP: {h['cmap_recovered_all_mlps']}); "
        f"{d.get('frac_change_in_preexisting_heads', 0):.3f} of the heads' positive share goes through the "
        f"{d.get('n_important_before', 0)} heads that were important before (top "
        f"{100 * res.settings.get('important_frac', 0.2):.0f}% by base ablation importance, CI above 0).\n"
        f"Rule: {d.get('rule', '')}."
    )
    loss_rows = [
        {
            "token": display_token(t["token"]),
            "count": t["count"],
            "loss base": t["mean_loss_a"],
            "loss tuned": t["mean_loss_b"],
            "tuned − base": t["mean_diff"],
        }
        for t in res.loss["in"]["top_tokens"][:k]
    ]
    weights = [
        {
            "parameter": w["name"],
            "relative update": w["rel_norm"],
            "effective rank of ΔW": w.get("effective_rank"),
            "stable rank": w.get("stable_rank"),
            "top σ share": w.get("top_sv_frac"),
        }
        for w in sorted(res.weights, key=lambda w: (-w["rel_norm"], w["name"]))[:k]
        if w["delta_norm"] > 0
    ]
    adl = res.adl
    adl_text = (
        f"Layer {adl.get('layer')}, first {adl.get('k')} tokens of {adl.get('n_documents')} unrelated documents: "
        f"‖δ‖ = {adl.get('norm', 0):.4g} (mean ‖h_base‖ {adl.get('base_norm', 0):.4g}). Relevance (top tokens found "
        f"only in the fine-tuning text) {adl.get('relevance')}, chance {adl.get('chance')}."
    )
    adl_rows = [{"token": display_token(t["token"]), "logit": t["logit"]} for t in adl.get("top_tokens", [])]
    circ = res.circuits
    if "skipped" in circ:
        circ_parts: list[Html] = [text(f"IOI comparison skipped: {circ['skipped']}.")]
    else:
        keep = {k2: v for k2, v in circ.items() if not k2.startswith("classes_")}
        circ_parts = [table({k2: str(v) for k2, v in keep.items()})]
    det = [{"class": c, "max |Δ score|": v} for c, v in h["detector_delta_max"].items()]
    return [
        text(summary),
        figure(res.plot()),
        heading("Tokens of the fine-tuning text whose loss changed most", 4),
        table(loss_rows),
        heading("Heads carrying the loss change (cross-model patching, recovered fraction)", 4),
        table(_heads(h["top_cmap_heads"], "recovered")),
        heading("Heads whose attention changed most (Jensen–Shannon, bits)", 4),
        table(_heads(h["top_js_heads"], "JS")),
        heading("Largest changes of ablation importance (nats)", 4),
        table(_heads(h["top_ablation_change_heads"], "Δ importance")),
        heading("Head-detector score changes", 4),
        table(det),
        heading("Largest weight updates", 4),
        table(weights),
        heading("Activation difference lens (Minder et al. 2025)", 4),
        text(adl_text),
        table(adl_rows),
        heading("IOI circuits (Wang et al. 2022)", 4),
        *circ_parts,
    ]


def identify_parts(res: IdentifyResult, k: int = 10) -> list[Html]:
    """Report parts of the difference-lens topic benchmark (:func:`interplab.finetune.adl.identify_topics`):
    accuracy with its interval per method and layer, the score heatmap, each model's prediction and lens tokens."""
    h = res.headline(k)
    acc = h["accuracy_by_method"]
    summary = (
        f"{len(h['predictions'])} tuned models, K = {h['k']} candidate topics ({', '.join(res.topics)}); "
        f"difference lens at layer {h['layer']} on the first {res.settings.get('k')} tokens of "
        f"{res.settings.get('n_documents')} unrelated documents ({res.settings.get('unrelated')})"
        f"{', position 0 left out' if h['skip_first'] else ''}.\n"
        f"Top-1 accuracy (z-score of the topic's distinctive tokens): {acc['zscore']['correct']}/{acc['zscore']['n']}"
        f" = {acc['zscore']['accuracy']:.3f}, 95% Wilson CI {acc['zscore']['ci']}; relevance of the top tokens: "
        f"{acc['relevance']['accuracy']:.3f} {acc['relevance']['ci']}; chance {h['chance']:.3f}."
    )
    preds = [
        {
            "tuned on": p["truth"],
            "predicted (z-score)": p["predicted"] or "none",
            "predicted (relevance)": p["predicted_relevance"] or "none",
            "||δ||": p["norm"],
            **{f"z {t}": v for t, v in p["scores"].items()},
            "lens tokens": " ".join(display_token(t) for t in p["top_tokens"]),
        }
        for p in h["predictions"]
    ]
    by_layer = [{"layer": lay, **v} for lay, v in h["accuracy_by_layer"].items()]
    return [
        text(summary),
        figure(res.plot()),
        heading("Predictions", 4),
        table(preds),
        heading("Accuracy by layer", 4),
        table(by_layer),
    ]
