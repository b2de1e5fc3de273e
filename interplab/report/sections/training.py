"""Training-lab results (:mod:`interplab.train`) as HTML reports: grokking (Nanda et al. 2023), n-digit addition
(Nanda et al. 2023), toy models of superposition (Elhage et al. 2022) and attention-only transformers
(Olsson et al. 2022). The CLI (``interplab train``) writes them; the trainers never import the report.

Only the trainers and the CLI import :mod:`interplab.train`, so the results are read here by their fields
(typed ``Any``) and told apart by their ``KIND``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from interplab.report.html import Html, Report, table

__all__ = [
    "REPORTS",
    "addition_report",
    "attn_only_report",
    "double_descent_report",
    "grokking_report",
    "scaling_report",
    "superposition_report",
    "training_report",
]


def grokking_report(res: Any) -> Report:
    """Headline, phases, loss and accuracy curves, weight norm and Gini, Fourier spectra of the final model."""
    h = res.headline()
    rep = Report(
        "Grokking modular arithmetic",
        f"p={res.config['p']}, op={res.config['operation']}, {res.config['epochs']} epochs — Nanda et al. 2023",
    )
    rows = [
        {"quantity": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v}
        for k, v in h.items()
        if k != "phases"
    ]
    rep.section("Headline", table(rows))
    rep.section(
        "Phases",
        table([{"phase": ph["name"], "start epoch": ph["start"], "end epoch": ph["end"]} for ph in h["phases"]]),
        "Memorisation ends at the first epoch with train accuracy 1; circuit formation ends when the test loss is 10x "
        "below its post-memorisation peak; clean-up ends when the weight norm has made 90% of its final fall.",
    )
    rep.section("Loss curves", res.plot(), res.plot_accuracy())
    rep.section("Weight norm and Gini", res.plot_norms())
    rep.section(
        "Fourier spectra of the final model",
        res.plot_spectra(),
        f"Key frequencies (neuron clusters): {h['key_frequencies']}; "
        f"from the embedding: {h['embedding_key_frequencies']}.",
    )
    return rep


def addition_report(res: Any) -> Report:
    """Per-digit loss curves and the detected phase changes."""
    rep = Report(
        f"{res.config['n_digits']}-digit addition", "Per-digit loss curves and phase changes (Nanda et al. 2023)"
    )
    rep.section("Per-digit loss", res.plot(), table(res.headline()["phase_changes"]))
    return rep


def _headline_table(h: dict[str, Any]) -> Html:
    return table([{"quantity": k, "value": json.dumps(v)} for k, v in h.items()])


def superposition_report(res: Any) -> Report:
    """Headline, then the intro sweep, the geometry sweep and the phase diagram (those that were trained)."""
    rep = Report(
        "Toy models of superposition", "Elhage et al. 2022 — ReLU(WᵀWx + b), instances trained in one batched model"
    )
    rep.section("Headline", _headline_table(res.headline()))
    if "intro" in res.parts:
        rep.section("Intro sweep: 5 features in 2 dimensions", res.plot_wtw(), res.plot_feature_norms())
    if "geometry" in res.parts:
        rep.section(
            "Geometry: dimensions per feature",
            res.plot_d_star(),
            "Line: D* = m/‖W‖²_F per instance; grey dots: per-feature dimensionality D_i. Dotted: 1, 1/2, 2/5, 1/3.",
        )
    if "phase" in res.parts:
        rep.section("Phase diagram: 2 features in 1 dimension", res.plot_phase())
    rep.section("Instances", table(res.to_frame()))
    return rep


def _attn_only_answer(res: Any) -> str:
    lines = []
    for name, m in res.models.items():
        lines.append(
            f"{name}: final loss {m['final_loss']:.3f}, ICL score {m['icl_score']:+.3f}, loss on the repeated half "
            f"{m['synthetic_loss_second_half']:.3f} (first half {m['synthetic_loss_first_half']:.3f}), max induction "
            f"score {m['max_induction_score']:.3f} at head {m['max_induction_head']}"
            + (f", first >= 0.3 at step {m['induction_step']}" if m["induction_step"] is not None else ", never >= 0.3")
            + (f"; repeated-half loss < 1 nat from step {m['copy_step']}" if m.get("copy_step") is not None else "")
            + (f"; strongest K-composition {m['max_k_composition']}" if m.get("max_k_composition") else "")
            + (
                "; max attention from i to i-S+1+k on the repeated probe: "
                + ", ".join(f"k={k}: {v:.2f}" for k, v in m["max_attention_by_offset"].items())
                if m.get("max_attention_by_offset")
                else ""
            )
            + "."
        )
    return " ".join(lines)


def attn_only_report(res: Any) -> Report:
    """The answer (per model: loss, ICL score, induction heads and when they formed), curves, the induction
    offset profile and each model's heads by ablation."""
    h = res.headline()
    rep = Report(
        "Attention-only transformers: induction-head formation",
        f"Olsson et al. 2022 — {h.get('tokenizer', '')}, normalization {res.config.get('normalization', 'none')}",
    )
    rep.section("Answer", _attn_only_answer(res), _headline_table(h))
    rep.section("Curves", res.plot())
    if any(m.get("max_attention_by_offset") for m in res.models.values()):
        rep.section("Induction offset profile", res.plot_offsets())
    for name in res.metrics:
        rep.section(
            f"{name} heads",
            res.plot_heads(name),
            table(
                [
                    {"layer": a, "head": b, "delta_loss": d, "ci_low": lo, "ci_high": hi}
                    for a, b, d, lo, hi in res.models[name]["ablation_top_heads"]
                ]
            ),
        )
    return rep


def double_descent_report(res: Any) -> Report:
    """Peaks per noise level, the model-wise curves (error against width) and the epoch-wise curves of the widest
    model."""
    h = res.headline()
    rep = Report(
        "Deep double descent",
        f"Nakkiran et al. 2019 — two-layer ReLU networks on the digits, {h['n_train']} training images, "
        f"label noise {', '.join(f'{float(n):.0%}' for n in h['peaks'])}",
    )
    rows = []
    for noise, p in h["peaks"].items():
        ew = p["epoch_wise"]
        rows.append(
            {
                "label noise": noise,
                "interpolation width": p["interpolation_width"],
                "classical min (width: test error)": f"{p['classical_min_width']}: {p['classical_min_test_error']}",
                "peak (width: test error)": f"{p['peak_width']}: {p['peak_test_error']}",
                "peak height": p["height"],
                "widest model's test error": p["final_test_error"],
                "epoch-wise peak (step: test error)": f"{ew['peak_step']}: {ew['peak_test_error']} (+{ew['height']})",
            }
        )
    rep.section(
        "Peaks",
        table(rows),
        "Peak height: the highest test error at or beyond the classical minimum (the best width below the "
        "interpolation threshold) minus that minimum; the interpolation threshold is the smallest width that fits "
        "the noisy training labels exactly.",
    )
    rep.section("Model-wise double descent", res.plot())
    rep.section("Epoch-wise double descent", res.plot_epochs())
    rep.section("Cells", table(res.to_frame()))
    return rep


def scaling_report(res: Any) -> Report:
    """The fitted law with its intervals, the compute-optimal allocation, loss curves and IsoFLOP profiles."""
    h = res.headline()
    rep = Report(
        "Compute-optimal scaling",
        f"Hoffmann et al. 2022 — {h['n_runs']} byte-level toy transformers, N {h['params_range'][0]:,}–"
        f"{h['params_range'][1]:,} non-embedding parameters ({h['decades_of_params']} decades), D "
        f"{h['tokens_range'][0]:,}–{h['tokens_range'][1]:,} tokens",
    )
    rep.section(
        "Fit: L(N, D) = E + A/N^α + B/D^β",
        table(
            [
                {"constant": k, "value": f"{v['value']:.4g}", "95% CI": f"[{v['low']:.4g}, {v['high']:.4g}]"}
                for k, v in h["fit"].items()
            ]
        ),
        "Huber regression on log-loss (Hoffmann et al.'s approach 3); intervals: bootstrap over runs.",
    )
    iso = h["isoflop"]
    rep.section(
        "Compute-optimal allocation",
        table(
            [
                {
                    "FLOPs": f"{o['flops']:.2g}",
                    "N_opt": f"{o['N_opt']:,.0f}",
                    "D_opt": f"{o['D_opt']:,.0f}",
                    "tokens per parameter": f"{o['tokens_per_param']:.1f}",
                    "predicted loss": f"{o['loss']:.3f}",
                }
                for o in h["compute_optimal"]
            ]
        ),
        f"Tokens per parameter at the optimum for the grid's geometric-mean compute "
        f"({h['tokens_per_param_optimal_at_flops']:.2g} FLOPs): {h['tokens_per_param_optimal']:.1f} "
        f"(Chinchilla: about 20). IsoFLOP exponent a in N_opt ∝ C^a: "
        + (f"{iso['exponent_a']:.2f}" if iso["exponent_a"] is not None else "too few profiles")
        + " (Chinchilla: 0.50).",
    )
    rep.section("Loss against tokens", res.plot())
    if not h.get("E_identified", True):
        rep.section(
            "Caveat",
            "The fitted irreducible loss E is ~0: the runs are far from the irreducible regime, so E is not measured "
            "and the compute-optimal allocation beyond the grid is an extrapolation of the power-law terms.",
        )
    if iso["profiles"]:
        rep.section("IsoFLOP profiles", res.plot_isoflop())
    rep.section("Runs", table(res.to_frame()))
    return rep


REPORTS: dict[str, Callable[[Any], Report]] = {
    "grokking": grokking_report,
    "addition": addition_report,
    "superposition": superposition_report,
    "attn-only": attn_only_report,
    "double-descent": double_descent_report,
    "scaling": scaling_report,
}
"""The report builder of each training Result, by the Result's ``KIND``."""


def training_report(res: Any) -> Report:
    """The report of ``interplab train EXPERIMENT`` for the experiment's Result (chosen by its ``KIND``)."""
    kind = getattr(res, "KIND", None)
    if kind not in REPORTS:
        raise TypeError(f"no training report for a {type(res).__name__} (kind {kind!r}).")
    return REPORTS[kind](res)
