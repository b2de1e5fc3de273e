"""Scaling-law fits (Hoffmann et al. 2022) on planted losses, the compute-optimal frontier against a brute-force
scan, the IsoFLOP vertex, and a tiny end-to-end run with resume."""

from __future__ import annotations

import numpy as np
import pytest

from interplab.report.sections.training import training_report
from interplab.train import experiments as X
from interplab.train import scaling as S

TRUE = {"E": 1.2, "A": 40.0, "B": 90.0, "alpha": 0.45, "beta": 0.35}


def _planted(noise: float = 0.0, seed: int = 0):
    n = np.repeat([6e3, 2.5e4, 1e5, 2.2e5], 6)
    d = np.tile([2.5e4, 5e4, 1e5, 2e5, 4e5, 8e5], 4)
    loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
    return n, d, loss * np.exp(np.random.default_rng(seed).normal(0, noise, len(loss)))


def test_fit_recovers_planted_constants():
    fit = S.fit_chinchilla(*_planted())
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-4), k


def test_bootstrap_intervals_mostly_cover_the_planted_law_under_noise():
    """Percentile intervals are approximate: over three noise draws, at least 12 of the 15 (constant, draw)
    intervals hold the planted value, and every interval holds its own point estimate."""
    covered = 0
    for seed in range(3):
        ci = S.bootstrap_fit(*_planted(noise=0.005, seed=seed), n_boot=30, seed=seed)
        covered += sum(ci[k]["low"] <= v <= ci[k]["high"] for k, v in TRUE.items())
        assert all(c["low"] <= c["value"] <= c["high"] for c in ci.values())
    assert covered >= 12


def test_compute_optimal_is_the_minimum_along_the_isoflop():
    c = 1e13
    opt = S.compute_optimal(TRUE, c)
    ns = np.geomspace(opt["N_opt"] / 30, opt["N_opt"] * 30, 20001)
    ds = c / (6 * ns)
    loss = TRUE["E"] + TRUE["A"] / ns ** TRUE["alpha"] + TRUE["B"] / ds ** TRUE["beta"]
    assert ns[np.argmin(loss)] == pytest.approx(opt["N_opt"], rel=1e-3)
    assert opt["loss"] == pytest.approx(loss.min(), rel=1e-9)
    assert opt["tokens_per_param"] == pytest.approx(opt["D_opt"] / opt["N_opt"])


def test_isoflop_optima_follow_the_planted_frontier():
    """On a dense (N, D) grid from the planted law, the IsoFLOP vertices land near the law's compute-optimal N
    (interpolation and the parabola cost a little) and their exponent near β/(α+β)."""
    cells = []
    for n in np.geomspace(2e3, 2e6, 13):
        for d in np.geomspace(1e4, 1e8, 17):
            loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
            cells.append({"params": n, "tokens": d, "flops": 6 * n * d, "loss": loss})
    iso = S.isoflop_optima(cells)
    assert len(iso["optima"]) >= 3
    for o in iso["optima"]:
        assert o["N_opt"] == pytest.approx(S.compute_optimal(TRUE, o["flops"])["N_opt"], rel=0.1)
    assert iso["exponent_a"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.03)


def test_tiny_scaling_run_resumes_and_saves(tmp_path):
    sets = ["d_models=8,16", "tokens=1024,2048", "n_boot=5", "batch=8", "n_ctx=32"]
    cfg = X.make_config("scaling", sets=sets)
    res = X.run("scaling", cfg, tmp_path, progress=False)
    assert isinstance(res, S.ScalingResult)
    assert res.summary["n_trained_now"] == 4 and len(res.cells) == 4
    small = [c for c in res.cells if c["d_model"] == 8]
    assert small[0]["params"] < small[0]["params_total"]
    assert all(np.isfinite(c["loss"]) and c["loss"] < np.log(256) for c in res.cells)
    again = X.run("scaling", cfg, tmp_path, resume=True, progress=False)
    assert isinstance(again, S.ScalingResult)
    assert again.summary["n_trained_now"] == 0 and again.cells == res.cells
    loaded = S.ScalingResult.load(tmp_path)
    assert loaded.headline() == again.headline()
    assert "Compute-optimal allocation" in training_report(loaded).to_html()


def test_one_cell_is_deterministic():
    cfg = {"n_layers": 1, "n_ctx": 32, "batch": 8, "lr": 3e-3, "warmup": 0.05, "weight_decay": 0.1, "seed": 0}
    assert S.run_cell(cfg, 8, 1024) == S.run_cell(cfg, 8, 1024)


def test_bad_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two model widths"):
        X.make_config("scaling", sets=["d_models=16"])
