"""Causal tracing (Meng et al. 2022; :mod:`interplab.analyses.causal.tracing`) as HTML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from interplab.report.html import Html, Report, table, text

if TYPE_CHECKING:
    from interplab.analyses.causal.tracing import TracingResult

__all__ = ["tracing_peaks_parts", "tracing_report"]

_WHAT = {
    "resid": "residual stream, subject tokens (headline peak)",
    "mlp": "MLP outputs, window of layers",
    "attn": "attention outputs, window of layers",
}


def tracing_peaks_parts(res: TracingResult) -> list[Html]:
    """The peaks table: the residual peak over the subject tokens and the MLP and attention peaks (ROME's
    Figure 1 sites), the overall maximum marked trivial when it lies in the late last-token window, and the
    resampled subjects' counts with resample corruption."""
    h = res.headline()
    rows = [
        {"peak": _WHAT.get(k, k), "layer": d["layer"], "position": d["position"], "AIE": d["aie"]}
        for k, d in h["peaks"].items()
    ]
    o, w = h["peak_overall"], h["late_last_token_layers"]
    rows.append(
        {
            "peak": f"overall maximum ({o['component']})" + (" — trivial" if o["trivial"] else ""),
            "layer": o["layer"],
            "position": o["position"],
            "AIE": o["aie"],
        }
    )
    parts = [
        table(rows),
        text(
            f"Total effect p_clean − p_corrupt = {h['total_effect']:.4f} (p_clean {h['p_clean_mean']:.4f}, "
            f"p_corrupt {h['p_corrupt_mean']:.4f}). "
            + (
                f"Restoring the last token's residual stream after layers {w[0]}–{w[1]} restores at least half "
                "of it (after the last layer, all of it, by construction): a peak there says the answer is already at "
                "the output, not where the fact is recalled, so it is marked trivial and the headline peak is the "
                "residual stream's over the subject tokens."
                if w
                else ""
            )
        ),
    ]
    if res.corruption == "resample":
        parts.append(
            text(
                f"Resampled subjects: {h['n_resamples_tried']} tried (same token length, rest of the prompt "
                f"unchanged), {h['n_resamples_usable']} usable (the model's top-1 is no longer the answer), "
                f"{h['n_resamples_used']} used; {h['n_facts_skipped']} fact(s) skipped for want of one."
                + (f" Used: {', '.join(h['resampled_subjects'])}." if "resampled_subjects" in h else "")
            )
        )
    return parts


def tracing_report(
    res: TracingResult, model_name: str, corruption: str, refined: Mapping[str, Any] | None = None
) -> Report:
    """The report of ``interplab trace``: the peaks, the average indirect effect, the first fact, and the heads
    and neurons of the peaks (``refined``, from :func:`~interplab.analyses.causal.tracing.refine`) when given."""
    rep = Report(f"Causal tracing — {model_name}", f"{len(res.traces)} fact(s), corruption {corruption}")
    rep.section("Peaks", *tracing_peaks_parts(res), id="peaks")
    rep.section("Average indirect effect", res.plot(), id="aie")
    rep.section("One fact", res.fact_plot(0), id="fact")
    if refined is not None:
        import pandas as pd

        parts = [table(pd.DataFrame(refined["heads"], columns=["layer", "head", "IE"]))]
        if refined.get("neurons"):
            parts.append(table(pd.DataFrame(refined["neurons"], columns=["layer", "neuron", "attribution", "IE"])))
        rep.section("Heads and neurons", *parts, id="refine")
    return rep
