"""The eval statistics (interplab.stats, Miller 2024): clustered intervals cover the truth, naive ones do not."""

from __future__ import annotations

import numpy as np
import pytest

from interplab.stats import clustered_mean, minimum_detectable_effect, paired_difference, template_spread


def test_clustered_95pct_intervals_cover_truth_while_naive_ones_under_cover():
    """1,000 simulated evals: 40 clusters of 10 items, intra-cluster correlation 0.2, true mean 0.3."""
    rng = np.random.default_rng(0)
    n_sims, g, m, icc, truth = 1000, 40, 10, 0.2, 0.3
    clusters = np.repeat(np.arange(g), m)
    hit_cl = hit_naive = 0
    for _ in range(n_sims):
        x = truth + np.repeat(rng.normal(0, np.sqrt(icc), g), m) + rng.normal(0, np.sqrt(1 - icc), g * m)
        est = clustered_mean(x, clusters)
        hit_cl += est.ci[0] <= truth <= est.ci[1]
        half = 1.96 * est.se_naive
        hit_naive += est.mean - half <= truth <= est.mean + half
    cover_cl, cover_naive = hit_cl / n_sims, hit_naive / n_sims
    assert 0.93 <= cover_cl <= 0.97, cover_cl
    assert cover_naive < 0.85, cover_naive  # design effect 1 + 9·0.2 = 2.8: naive SE ~0.6 of the truth


def test_clustered_se_equals_naive_se_for_singleton_clusters_up_to_the_cr1_factor():
    x = np.random.default_rng(1).normal(size=50)
    est = clustered_mean(x)
    assert est.se_clustered == pytest.approx(est.se_naive)  # G/(G-1) and ddof=1 agree when every cluster is one value
    assert est.n_clusters == 50


def test_paired_difference_is_the_clustered_mean_of_differences():
    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0])
    d = paired_difference(a, b, clusters=["x", "x", "y", "z"])
    assert d.mean == pytest.approx(0.5)
    assert d.n_clusters == 3
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference(a, b[:3])


def test_template_variance_component_recovers_a_planted_template_sd():
    rng = np.random.default_rng(2)
    n_items, n_templates, sd_t = 400, 8, 0.5
    item_eff = rng.normal(0, 1, n_items)[:, None]
    tmpl_eff = rng.normal(0, sd_t, n_templates)[None, :]
    x = item_eff + tmpl_eff + rng.normal(0, 0.3, (n_items, n_templates))
    items = np.repeat(np.arange(n_items), n_templates)
    templates = np.tile(np.arange(n_templates), n_items)
    sp = template_spread(x.ravel(), items, templates)
    assert sp.sd == pytest.approx(np.std(tmpl_eff, ddof=1), rel=0.05)
    assert len(sp.per_template) == n_templates
    flat = template_spread((item_eff + rng.normal(0, 0.3, (n_items, n_templates))).ravel(), items, templates)
    assert flat.sd < 0.05  # no template effect planted


def test_minimum_detectable_effect_is_2_8_standard_errors_at_80pct_power():
    assert minimum_detectable_effect(0.1) == pytest.approx(0.2802, abs=1e-3)


def test_clustered_mean_rejects_bad_input_clearly():
    with pytest.raises(ValueError, match="at least 2 clusters"):
        clustered_mean([1.0, 2.0], ["a", "a"])
    with pytest.raises(ValueError, match="NaN"):
        clustered_mean([1.0, float("nan")])


def test_framing_shift_is_the_paired_change_of_the_framing_effect():
    import pandas as pd

    from interplab.evals.analysis import framing_shift

    def frame(okay_conf: float) -> pd.DataFrame:
        rows = []
        for i in range(6):
            for t in range(2):
                for cond, v in (("confirming", okay_conf + 0.01 * i), ("disconfirming", 0.5)):
                    rows.append({"item": f"a{i}", "cluster": f"c{i // 2}", "template": t, "condition": cond,
                                 "class": "fine", "value": v})  # fmt: skip
        return pd.DataFrame(rows)

    shift = framing_shift(frame(0.5), frame(0.8))
    assert shift["effect"] == pytest.approx(0.3)
    assert shift["n_pairs"] == 12 and shift["n_clusters"] == 3


def test_wilson_interval_matches_the_textbook_value_and_does_not_collapse_at_zero():
    from interplab.stats import wilson_interval

    lo, hi = wilson_interval(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
