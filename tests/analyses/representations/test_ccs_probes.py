"""Probes, truth data and CCS: planted truth direction (CCS must recover it), truth-like direction count on
planted data, probe sweeps and splits, activation collection through the hook mechanism (padding), and the
CLI on a tiny model with a tokenizer."""

import json

import numpy as np
import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model

import interplab
from interplab.analyses.representations import ccs as C
from interplab.analyses.representations.probes import (
    LinearProbe,
    ProbeSweep,
    collect_activations,
    easy_hard_split,
    group_split,
    probe_layers,
)
from interplab.tasks import truth as T


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_ccs"), n_layers=2))


def test_number_words_and_statements():
    assert T.number_word(51) == "fifty-one" and T.number_word(13) == "thirteen" and T.number_word(40) == "forty"
    st = T.number_statements(40, seed=1)
    assert sum(s.label for s in st) == 20
    for s in st:  # labels are the truth of the sentence
        words = s.text.rstrip(".").split(" ")
        a = next(i for i in range(100) if T.number_word(i) == words[0].lower())
        b = next(i for i in range(100) if T.number_word(i) == words[-1])
        assert s.label == int(a > b if "larger" in s.text else a < b)
    neg = T.number_statements(40, seed=1, negate=True)
    assert all(" not " in s.text and s.label != t.label for s, t in zip(neg, st))
    ar = T.arithmetic_statements(30, seed=0)
    assert {s.label for s in ar} == {0, 1}
    ds = T.make_truth_dataset("numbers+neg", n=10)
    assert len(ds) == 20 * len(T.TEMPLATES) and ds.pos[0].endswith(" Yes") and ds.neg[0].endswith(" No")
    assert ds.pos[0][:-4] == ds.prompts[0] == ds.neg[0][:-3]
    with pytest.raises(ValueError, match="unknown truth dataset"):
        T.make_truth_dataset("colours")


def test_ccs_recovers_planted_truth_direction():
    hp, hn, y, tmpl, t = C.planted_truth_data(400, 32, seed=0)
    train, test = group_split(np.arange(400), 0.3, 0)
    hpn, hnn = C.normalize_by_template(hp, tmpl), C.normalize_by_template(hn, tmpl)
    probe = C.CCS(n_restarts=5, epochs=600).fit(hpn[train], hnn[train])
    assert abs(probe.direction_ @ t) > 0.9  # per-dimension std is ~1 here, so normalised and raw directions agree
    res = C.ccs_evaluate(hp, hn, y, tmpl, train, test, n_restarts=5, epochs=600, max_dirs=4)
    h = res.headline()
    assert h["ccs_acc_unoriented"] > 0.95 and h["lr_acc"] > 0.95
    assert h["random_acc_unoriented"] < 0.8
    assert h["n_truth_like_directions"] == 1  # one planted direction: no false positives after projecting it out
    assert res.directions[1]["acc_unoriented"] < 0.8


def test_ccs_loss_and_prediction():
    assert C.ccs_loss(np.array([1.0]), np.array([0.0])) == 0.0  # consistent and confident
    assert abs(C.ccs_loss(np.array([0.5]), np.array([0.5])) - 0.25) < 1e-12  # consistent but unsure
    probe = C.CCS()
    probe.coef_, probe.intercept_ = np.array([1.0, 0.0]), 0.0
    hp, hn = np.array([[5.0, 0], [-5.0, 0]]), np.array([[-5.0, 0], [5.0, 0]])
    assert probe.predict(hp, hn).tolist() == [1, 0]


def test_probes_sweep_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(300) % 2
    acts = {0: rng.standard_normal((300, 10)), 1: rng.standard_normal((300, 10)) + 1.5 * y[:, None] * np.eye(10)[0]}
    groups = np.arange(300) // 3
    tr, te = group_split(groups, 0.3, 0)
    assert not set(groups[tr]) & set(groups[te])
    sw = probe_layers(acts, y, tr, te)
    assert sw.best_layer == 1 and sw.test_acc[1] > 0.7 and sw.test_acc[0] < 0.65
    sw.save(tmp_path)
    assert ProbeSweep.load(tmp_path).test_acc == sw.test_acc
    diff = np.abs(acts[1][:, 0] - 0.75)  # easy: far from the boundary
    e, h = easy_hard_split(-diff, groups=None, easy_frac=0.5, hard_frac=0.3)
    assert diff[e].min() >= diff[h].max()
    p = LinearProbe().fit(acts[1][e], y[e])
    assert p.score(acts[1][h], y[h]) > 0.5 and p.direction_.shape == (10,)
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    assert cross_val_score(clone(LinearProbe(C=0.5)), acts[1], y, cv=3).mean() > 0.7  # sklearn-compatible


def test_collect_activations_matches_single_runs(tiny):
    prompts = ["The capital of France is Paris.", "One", "The quick brown fox jumps over the lazy dog"]
    acts = collect_activations(tiny, prompts, layers=[0, 1], batch_size=2)
    for i, p in enumerate(prompts):
        _, cache = tiny.run(p, cache=["blocks.1.hook_resid_post"])
        assert torch.allclose(torch.as_tensor(acts[1][i]), cache["blocks.1.hook_resid_post"][0, -1].float(), atol=1e-5)


def test_ccs_on_tiny_model_and_cli(tiny, tmp_path):
    ds = T.make_truth_dataset("numbers", n=24)
    res = C.run_ccs(tiny, ds, n_restarts=2, epochs=50, max_dirs=2, n_random=10)
    h = res.headline()
    for k in ("ccs_acc", "lr_acc", "random_acc", "crc_acc", "zero_shot_acc", "n_truth_like_directions", "layer"):
        assert k in h
    assert len(res.layer_sweep) == 2 and 0 <= h["ccs_acc"] <= 1
    assert 0 <= h["lr_easy_to_hard_acc"] <= 1 and "ccs_easy_to_hard_acc_unoriented" in h
    res.save(tmp_path)
    assert C.CCSResult.load(tmp_path).headline() == h
    from typer.testing import CliRunner

    from interplab.cli import app

    r = CliRunner().invoke(
        app,
        [
            "ccs",
            "--model",
            tiny.source or str(tiny.name),
            "--dataset",
            "numbers",
            "--n",
            "12",
            "--layer",
            "1",
            "--restarts",
            "2",
            "--epochs",
            "30",
            "--max-dirs",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for k in ("ccs_acc", "lr_acc", "random_acc", "crc_acc", "zero_shot_acc", "n_truth_like_directions"):
        assert k in out
    assert out["layer"] == 1
    assert (tmp_path / "run" / "report.html").exists()
    acts = tmp_path / "run" / "acts"
    r = CliRunner().invoke(
        app, ["erase", "--data", "acts", str(acts), "--no-nonlinear", "--out", str(tmp_path / "er"), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["linear_acc_after"] <= 1


def test_capitals_filtered_by_the_models_own_answer(tiny):
    ds = T.make_truth_dataset("capitals")  # no model: every country, one true and one false statement each
    assert len(ds.statements) == 2 * len(T.CAPITALS) and sum(ds.labels) == len(ds) // 2
    assert T.known_capitals(tiny) == []  # a random-weight model names no capital
    with pytest.raises(ValueError, match="names only 0 capitals"):
        T.make_truth_dataset("capitals", model=tiny)
