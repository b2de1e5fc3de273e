"""Behavioural evals (:mod:`interplab.evals`) as HTML: per model the headline effect with its clustered 95% CI, the
naive SE beside the clustered one, the template spread and the minimum detectable effect; a forest plot of the effect
per model and per template."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interplab.report.html import Html, Report, figure, table, text

__all__ = ["evals_parts", "evals_report", "headline_rows"]

_WHAT = {
    "framing": "Framing effect = P(okay | confirming) − P(okay | disconfirming), paired per action and template "
    "(0: answers on the action's merits; 1: always goes along with the question).",
    "truthful": "Δ correct = P(correct | 'X and truthful' system prompt) − P(correct | 'truthful'), paired per "
    "statement and template; correct = calls a false statement false or accepts a true one.",
    "harmful": "Refusal rate on harmful requests, over-refusal on their benign look-alikes, and the StrongREJECT-form "
    "compliance score (1 − refused) · specificity on harmful requests.",
}


def _ci(b: Mapping[str, Any]) -> str:
    lo, hi = b.get("ci95", [None, None])
    return "—" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"


def headline_rows(task: str, models: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model and effect: the numbers a reader compares across models."""
    rows: list[dict[str, Any]] = []
    for name, h in models.items():
        if task == "framing":
            blocks = {"all": h, **{f"class {k}": v for k, v in h.get("by_class", {}).items()}}
        elif task == "truthful":
            blocks = {f"{x} vs truthful": v for x, v in h.get("effects", {}).items()}
        elif task == "harmful":
            blocks = {k: h[k] for k in ("refusal_rate", "over_refusal_rate", "compliance_score") if k in h}
        else:
            rows.append({"model": name, **{k: str(v) for k, v in h.items()}})
            continue
        for what, b in blocks.items():
            est = b.get("effect", b.get("rate"))
            rows.append(
                {
                    "model": name,
                    "effect": what,
                    "estimate": est,
                    "95% CI (clustered)": _ci(b),
                    "SE clustered": b.get("se_clustered"),
                    "SE naive": b.get("se_naive"),
                    "template SD": b.get("template_sd"),
                    "MDE (80% power)": b.get("mde"),
                    "n": b.get("n"),
                    "clusters": b.get("n_clusters"),
                }
            )
    return rows


def _forest(task: str, models: Mapping[str, Mapping[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, h in models.items():
        if task == "framing":
            blocks = {"all": h, **h.get("by_class", {})}
        elif task == "truthful":
            blocks = h.get("effects", {})
        else:
            blocks = {k: h[k] for k in ("refusal_rate", "over_refusal_rate", "compliance_score") if k in h}
        labels, est, lo, hi = [], [], [], []
        for k, b in blocks.items():
            e = b.get("effect", b.get("rate"))
            ci = b.get("ci95", [None, None])
            if e is None or ci[0] is None:
                continue
            labels.append(k)
            est.append(e)
            lo.append(e - ci[0])
            hi.append(ci[1] - e)
        fig.add_trace(
            go.Scatter(
                x=est,
                y=labels,
                mode="markers",
                name=name,
                error_x={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            )
        )
    fig.add_vline(x=0, line_dash="dot")
    fig.update_layout(
        title={"text": f"{task}: estimate with clustered 95% CI"}, height=300 + 20 * len(models), xaxis_title="estimate"
    )
    return fig


def _per_template(task: str, models: Mapping[str, Mapping[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, h in models.items():
        if task == "framing":
            blocks = {"": h}
        elif task == "truthful":
            blocks = {f" {x}": b for x, b in h.get("effects", {}).items()}
        else:
            blocks = {" refusal": h.get("refusal_rate", {})}
        for label, b in blocks.items():
            pt = b.get("per_template") or {}
            if pt:
                fig.add_trace(go.Bar(x=[f"template {k}" for k in pt], y=list(pt.values()), name=name + label))
    fig.update_layout(title={"text": "Estimate per prompt template"}, height=300, barmode="group")
    return fig


def evals_parts(result: Mapping[str, Any]) -> list[Html]:
    """The HTML of one :func:`interplab.evals.run.run_eval` result (``{"task", "models", ...}``)."""
    task = str(result["task"])
    models = result["models"]
    parts: list[Html] = [text(_WHAT.get(task, f"Inspect task {task}: the log's metrics per model."))]
    if task in _WHAT:
        parts += [
            table(headline_rows(task, models)),
            figure(_forest(task, models)),
            figure(_per_template(task, models)),
        ]
    else:
        parts.append(table(headline_rows(task, models)))
    if result.get("settings"):
        parts.append(text("Settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items())))
    if result.get("logs"):
        parts.append(text("Inspect logs (open with `inspect view`): " + ", ".join(map(str, result["logs"].values()))))
    return parts


def evals_report(result: Mapping[str, Any]) -> Report:
    """The report of ``interplab eval``."""
    rep = Report(f"Eval {result['task']} — " + " vs ".join(result["models"]), "Inspect AI logs, clustered 95% CIs")
    rep.section(f"{result['task']}", *evals_parts(result), id="evals")
    return rep
