"""Direct logit attribution (:mod:`interplab.analyses.observational.dla`) and integrated gradients
(:mod:`interplab.analyses.observational.integrated_gradients`) as HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Html, Report, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.observational.dla import DLAResult
    from interplab.analyses.observational.integrated_gradients import IntegratedGradientsResult
    from interplab.analyses.observational.tuned_lens import TunedLensResult

__all__ = ["dla_parts", "integrated_gradients_report", "tuned_lens_report"]


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


def integrated_gradients_report(res: IntegratedGradientsResult, model_name: str) -> Report:
    """The report of ``interplab ig``: the completeness check in the subtitle, the per-token bar chart and table."""
    h = res.headline()
    rep = Report(f"Integrated gradients — {model_name}", h["method"])
    rep.section(
        "Attributions",
        text(
            f"Prompt: {res.prompt}\nMetric {h['metric']}: F(input) = {h['f_input']}, F(baseline) = "
            f"{h['f_baseline']}; the attributions sum to {h['sum_attributions']} (completeness gap "
            f"{h['completeness_gap']:.3g}, {res.n_steps} steps)."
        ),
        figure(res.plot()),
        table(res.to_frame()),
        id="integrated-gradients",
    )
    return rep


def tuned_lens_report(res: TunedLensResult) -> Report:
    """The report of ``interplab tuned-lens``: held-out KL per layer of both lenses, and the training loss."""
    import plotly.graph_objects as go

    h = res.headline()
    rep = Report(
        f"Tuned lens vs logit lens — {res.model_name}",
        f"mean held-out KL: logit lens {h['mean_kl_logit_lens']} nats, tuned lens {h['mean_kl_tuned_lens']} nats; "
        f"tuned lens lower at {h['layers_tuned_better']}/{h['n_layers_compared']} layers",
    )
    loss = go.Figure(go.Scatter(x=[r["step"] for r in res.history], y=[r["loss"] for r in res.history]))
    loss.update_layout(title={"text": "training loss (mean KL over layers)"}, xaxis={"title": "step"})
    rep.section("KL per layer", figure(res.plot()), table(res.to_frame()), id="tuned-lens")
    rep.section("Training", figure(loss), text(f"settings: {res.settings}"), id="tuned-lens-training")
    return rep
