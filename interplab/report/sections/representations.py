"""Representation analyses as HTML: concept erasure with its held-out probes
(:mod:`interplab.analyses.representations.erasure`) and CCS beside its baselines
(:mod:`interplab.analyses.representations.ccs`, Burns et al. 2022)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interplab.report.html import Report, table, text

if TYPE_CHECKING:
    from interplab.analyses.representations.ccs import CCSResult
    from interplab.analyses.representations.erasure import ErasureResult

__all__ = ["ccs_report", "erasure_report"]


def erasure_report(res: ErasureResult, method: str, n: int, d: int, test_frac: float) -> Report:
    """The report of ``interplab erase``: probes before and after erasing with ``method`` on ``n`` points of
    ``d`` dimensions (``test_frac`` held out)."""
    rep = Report(
        f"Concept erasure — {method}",
        f"data: {res.settings['data']}, n={n}, d={d}, held-out fraction {test_frac}",
    )
    rep.section(
        "Held-out probes before and after erasure",
        res.plot(),
        table(res.to_frame()),
        table(res.headline()),
        text(
            "Linear guardedness (equal class means) only bounds convex losses of linear predictors; the MLP "
            "and boosted trees show what a non-linear (or 0-1 loss) adversary can still recover."
        ),
    )
    return rep


def ccs_report(res: CCSResult, model_name: str, dataset: str, n_statements: int) -> Report:
    """The report of ``interplab ccs``: CCS and its baselines, truth-like directions, the supervised probe's
    layer choice and the headline."""
    h = res.headline()
    rep = Report(
        f"CCS — {model_name} on {dataset}",
        f"{n_statements} statements × {res.settings['n_templates']} templates, "
        f"layer {h['layer']} ({res.settings['layer_chosen_by']}); accuracies on held-out statements",
    )
    rep.section(
        "CCS and baselines",
        res.plot(),
        table(res.to_frame()),
        text(
            "label-oriented: the sign of an unsupervised direction is chosen with the training labels (this uses "
            "labels); unoriented: max(acc, 1 - acc) on the test rows, as Burns et al. report."
        ),
        id="ccs",
    )
    rep.section(
        "Truth-like directions",
        text(
            f"{h['n_truth_like_directions']} truth-like of {len(res.directions)} directions (CCS, project out, "
            f"refit): label-oriented held-out accuracy above both the majority rate {h.get('majority_acc')} and "
            f"the null {h.get('truth_like_null')} (95th percentile of the same statistic for random directions, "
            "oriented the same way; each round's null in the table), tested in order and stopping at the first "
            f"that fails. {h.get('n_low_ccs_loss_directions')} directions reach a CCS loss as low as the first's, "
            "whatever their accuracy: the CCS objective alone does not single out truth (Roger 2023; Farquhar et "
            "al. 2023)."
        ),
        table(res.to_frame("directions")),
        id="directions",
    )
    rep.section("Supervised probe and layer choice", table(res.to_frame("layers")), id="layers")
    rep.section("Headline", table(h), id="headline")
    return rep
