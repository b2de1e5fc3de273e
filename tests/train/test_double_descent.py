"""Double descent (Nakkiran et al. 2019): the peak finder on planted curves, determinism of a cell, resume, and
the model-wise peak with label noise on the digits."""

from __future__ import annotations

import json

import pytest

from interplab.report.sections.training import training_report
from interplab.train import double_descent as dd
from interplab.train import experiments as X


def _cells(noise: float, widths: list[int], train: list[float], test: list[float], curve: list[float]):
    steps = list(range(1, len(curve) + 1))
    return [
        {
            "noise": noise,
            "seed": 0,
            "width": w,
            "params": 75 * w + 10,
            "train_error": tr,
            "test_error": te,
            "curve": [[s, 0.0, c] for s, c in zip(steps, curve, strict=True)],
        }
        for w, tr, te in zip(widths, train, test, strict=True)
    ]


def test_find_peaks_on_planted_curves():
    widths = [2, 4, 8, 16, 32, 64]
    # noise 0.2: classical minimum at width 4, train error 0 from width 16, peak at 16, second descent to 64
    noisy = _cells(0.2, widths, [0.5, 0.3, 0.1, 0.0, 0.0, 0.0], [0.5, 0.30, 0.35, 0.40, 0.32, 0.25], [0.6, 0.2, 0.3])
    # noise 0: test error only falls
    clean = _cells(0.0, widths, [0.2, 0.0, 0.0, 0.0, 0.0, 0.0], [0.3, 0.1, 0.08, 0.07, 0.06, 0.05], [0.5, 0.1, 0.05])
    p = dd.find_peaks(noisy + clean)
    assert p["0.2"]["interpolation_width"] == 16
    assert p["0.2"]["classical_min_width"] == 4 and p["0.2"]["peak_width"] == 16
    assert p["0.2"]["height"] == pytest.approx(0.10) and p["0.2"]["second_descent"] == pytest.approx(0.15)
    assert p["0.2"]["peak_params"] == 75 * 16 + 10
    assert p["0.2"]["epoch_wise"]["early_min_step"] == 2 and p["0.2"]["epoch_wise"]["peak_step"] == 3
    assert p["0"]["interpolation_width"] == 4 and p["0"]["height"] == 0.0
    assert p["0"]["epoch_wise"]["height"] == 0.0


def test_noisy_labels_flip_exactly_the_fraction_to_other_classes():
    import torch

    y = torch.arange(200) % 10
    z = dd.noisy_labels(y, 0.2, seed=3)
    assert int((z != y).sum()) == 40
    assert torch.equal(z, dd.noisy_labels(y, 0.2, seed=3))
    assert not torch.equal(z, dd.noisy_labels(y, 0.2, seed=4))


def test_cell_is_deterministic():
    cfg = {"n_train": 100, "data_seed": 0, "steps": 20, "lr": 3e-3, "n_evals": 4, "threads": 1}
    a, b = dd.run_cell(cfg, 0.1, 0, 8), dd.run_cell(cfg, 0.1, 0, 8)
    assert a == b
    assert a["params"] == 75 * 8 + 10
    assert [p[0] for p in a["curve"]] == dd.eval_steps(20, 4)


def test_resume_trains_only_missing_cells(tmp_path):
    sets = ["widths=2,4", "noises=0,0.2", "n_train=60", "steps=10", "n_evals=3"]
    cfg = X.make_config("double-descent", sets=sets)
    first = X.run("double-descent", cfg, tmp_path, progress=False)
    assert isinstance(first, dd.DoubleDescentResult)
    assert first.summary["n_trained_now"] == 4 and first.summary["n_cells"] == 4
    cell = tmp_path / "cells" / "noise0.2-seed0-width4.json"
    before = json.loads(cell.read_text())
    (tmp_path / "cells" / "noise0-seed0-width2.json").unlink()
    again = X.run("double-descent", cfg, tmp_path, resume=True, progress=False)
    assert isinstance(again, dd.DoubleDescentResult)
    assert again.summary["n_trained_now"] == 1
    assert json.loads(cell.read_text()) == before
    assert again.summary["peaks"] == first.summary["peaks"]
    loaded = dd.DoubleDescentResult.load(tmp_path)
    assert loaded.headline() == again.headline()
    html = training_report(loaded).to_html()
    assert "Model-wise double descent" in html and "Epoch-wise" in html


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="noises must be fractions"):
        X.make_config("double-descent", sets=["noises=0,1.5"])


def test_label_noise_makes_a_model_wise_peak_at_the_interpolation_threshold(tmp_path):
    """Nakkiran et al.'s model-wise claim on a small grid: with 20% label noise, test error rises from the
    classical minimum to a peak near the interpolation threshold and falls again for wide networks; without
    noise the bump is far smaller."""
    sets = ["widths=6,12,24,512", "noises=0,0.2", "steps=1500"]
    res = X.run("double-descent", X.make_config("double-descent", sets=sets), tmp_path, progress=False)
    assert isinstance(res, dd.DoubleDescentResult)
    noisy, clean = res.summary["peaks"]["0.2"], res.summary["peaks"]["0"]
    assert noisy["height"] > 0.03 and noisy["second_descent"] > 0.03
    assert noisy["interpolation_width"] is not None
    assert noisy["peak_width"] <= 2 * noisy["interpolation_width"]
    assert clean["height"] < noisy["height"] / 2
