"""The IOI procedure (Wang et al. 2022; :mod:`interplab.analyses.causal.circuits`) as HTML: logit differences,
head classes, head patching at END, direct effects, the circuit, and a side-by-side replication across models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from interplab.report.html import Html, Report, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.causal.ioi import IOIResult

__all__ = ["ioi_comparison", "ioi_parts", "ioi_report", "ioi_sections"]


def ioi_comparison(rep: Report, results: Mapping[str, IOIResult]) -> None:
    """Side-by-side replication: one table row per model and overlaid logit-difference histograms."""
    import pandas as pd
    import plotly.graph_objects as go

    rows = []
    fig = go.Figure()
    for name, res in results.items():
        h = res.headline()
        c = h.get("circuit", {})
        rows.append(
            {
                "model": name,
                "n_layers x heads": f"{res.dla.shape[0]} x {res.dla.shape[1]}" if res.dla is not None else "",
                "logit diff": h["logit_diff_mean"],
                "IO preferred": h["io_preferred_frac"],
                "name movers": len(h["heads"]["name_movers"]),
                "S-inhibition": len(h["heads"]["s_inhibition"]),
                "induction": len(h["heads"]["induction"]),
                "circuit nodes": c.get("n_nodes"),
                "faithfulness": c.get("faithfulness"),
            }
        )
        fig.add_trace(go.Histogram(x=res.logit_diff.tolist(), name=name, opacity=0.6, nbinsx=30))
    fig.update_layout(
        barmode="overlay",
        title={"text": "IOI logit difference per model"},
        height=320,
        xaxis_title="logit(IO) − logit(S)",
    )
    rep.section("Replication across models", table(pd.DataFrame(rows)), fig, id="ioi-compare")


def ioi_sections(rep: Report, res: IOIResult, prefix: str = "") -> None:
    """One model's sections (titles and ids prefixed with ``prefix``)."""
    import pandas as pd
    import plotly.graph_objects as go

    ld = res.logit_diff
    fig = go.Figure(go.Histogram(x=ld.tolist(), nbinsx=30))
    fig.update_layout(
        title={"text": "IOI logit difference logit(IO) − logit(S), clean prompts"},
        height=320,
        xaxis_title="logit difference",
        yaxis_title="prompts",
    )
    rows = [{"class": c, "heads": " ".join(f"{a}.{b}" for a, b in hs) or "—"} for c, hs in res.classes.items()]
    rep.section(prefix + "Logit difference and head classes", fig, table(pd.DataFrame(rows)), id=prefix + "ioi")
    if res.patching is not None:
        rep.section(prefix + "Head patching at END (denoising, p_ABC)", res.patching.plot(), id=prefix + "ioi-patching")
    if res.dla is not None:
        d = res.dla
        heat = go.Figure(
            go.Heatmap(
                z=d.tolist(), colorscale="RdBu", zmid=0.0, hovertemplate="layer %{y} head %{x}: %{z:.3f}<extra></extra>"
            )
        )
        heat.update_layout(
            title={"text": "Direct logit attribution per head (IO − S)"},
            xaxis_title="head",
            yaxis_title="layer",
            height=520,
        )
        heat.update_yaxes(autorange="reversed")
        rep.section(prefix + "Direct effect per head", heat, id=prefix + "ioi-dla")
    if res.circuit is not None:
        rep.section(prefix + "Circuit", res.circuit.plot(), table(res.circuit.to_frame()), id=prefix + "ioi-circuit")


def ioi_report(results: Mapping[str, IOIResult], n: int) -> Report:
    """The report of ``interplab ioi``: the replication table when there are several models, then each model's
    sections."""
    rep = Report(
        "IOI — " + " vs ".join(results), f"{n} prompt pairs per model (Wang et al.'s templates, p_ABC corruption)"
    )
    if len(results) > 1:
        ioi_comparison(rep, results)
    for name, res in results.items():
        ioi_sections(rep, res, prefix=f"{name}: " if len(results) > 1 else "")
    return rep


def ioi_parts(res: IOIResult) -> list[Html]:
    """The model report's section: logit difference, head classes and the circuit with its faithfulness."""
    h = res.headline()
    rows: list[dict[str, Any]] = [
        {"class": c, "heads": " ".join(f"{a}.{b}" for a, b in hs) or "—"} for c, hs in h["heads"].items()
    ]
    parts = [
        text(f"Logit difference {h['logit_diff_mean']} (IO preferred in {h['io_preferred_frac']:.0%} of prompts)."),
        table(rows),
    ]
    if res.circuit is not None:
        parts += [
            text(f"Circuit: {len(res.circuit.nodes)} nodes, faithfulness {res.circuit.faithfulness:.3f}."),
            figure(res.circuit.plot()),
        ]
    return parts
