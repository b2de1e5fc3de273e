"""Activation and attribution patching (:mod:`interplab.analyses.causal.patching`) as HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Html, Report, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.causal.circuits import CircuitResult
    from interplab.analyses.causal.edges import EdgeAttributionResult
    from interplab.analyses.causal.patching import PatchingResult
    from interplab.analyses.causal.path_patching import PathPatchingResult

__all__ = ["patching_ioi_parts", "patching_report"]


def patching_ioi_parts(res: PatchingResult, att: PatchingResult, n_pairs: int, corr: float) -> list[Html]:
    """The model report's section: every head's z patched at END on IOI pairs, exact (``res``) and attribution
    (``att``) patching, which correlate ``corr``."""
    h = res.headline()
    return [
        text(
            f"Denoising activation patching of each head's z at END on {n_pairs} IOI pairs (Wang et al.'s "
            f"templates, p_ABC corruption): 1 = the clean logit difference ({h['clean_metric']:.2f}) restored, "
            f"0 = the corrupt one ({h['corrupt_metric']:.2f}). Attribution patching (one forward + backward) "
            f"correlates {corr:.3f} with it. interplab ioi runs the full procedure."
        ),
        figure(res.plot()),
        figure(att.plot()),
    ]


def patching_report(
    res: PatchingResult,
    model_name: str,
    task: str,
    n_pairs: int,
    att: PatchingResult | None = None,
    attribution_corr: float | None = None,
    path: PathPatchingResult | None = None,
    circuit: CircuitResult | None = None,
    edges: EdgeAttributionResult | None = None,
) -> Report:
    """The report of ``interplab patch``: the grid and its top 60 cells, and attribution patching beside it
    (``att``, with its correlation to exact patching), path patching, the discovered circuit and the edge scores
    (EAP / EAP-IG, with the faithfulness of the top-k edge circuits) when they were run."""
    h = res.headline()
    rep = Report(
        f"Activation patching — {task} — {model_name}",
        f"{res.direction}, grid {res.grid}, {n_pairs} pairs; clean metric {h['clean_metric']:.3f}, "
        f"corrupt {h['corrupt_metric']:.3f}",
    )
    rep.section("Patching", res.plot(), table(res.to_frame().head(60)), id="patching")
    if att is not None:
        rep.section(
            "Attribution patching",
            att.plot(),
            text(f"Pearson correlation with exact patching: {attribution_corr}"),
            id="attribution",
        )
    if path is not None:
        f = path.to_frame()
        top = f.assign(abs_effect=f["effect"].abs()).nlargest(30, "abs_effect").drop(columns="abs_effect")
        rep.section("Path patching (each head's direct path to the logits)", table(top), id="path-patching")
    if circuit is not None:
        rep.section("Circuit", circuit.plot(), table(circuit.to_frame().head(60)), id="circuit")
    if edges is not None:
        parts = [
            text(
                f"{edges.method}: each edge's score estimates the change of the metric when only that edge carries "
                "the reference activation; below, the 40 largest by |score| and the top-k edge circuits."
            ),
            edges.plot(),
            table(edges.to_frame().head(40)),
        ]
        if edges.circuits:
            parts.append(table(edges.headline()["circuits"]))
        rep.section("Edge attribution patching", *parts, id="edges")
    return rep
