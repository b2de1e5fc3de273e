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


def _imbalanced(*arrays, y, n_true=72, n_false=48, seed=0):
    """The rows of ``arrays`` (and ``y``) of ``n_true`` random rows labelled 1 and ``n_false`` labelled 0."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    keep = np.sort(np.r_[rng.choice(pos, n_true, replace=False), rng.choice(neg, n_false, replace=False)])
    return [a[keep] for a in arrays] + [y[keep]]


def test_no_truth_direction_counts_zero_truth_like_directions():
    """Random Gaussian activations, random labels 72 / 48, 36 held-out rows: nothing carries truth, so no direction
    may count as truth-like. The old rule (unoriented accuracy max(a, 1 - a) >= 0.55) counted 0, 3, 1, 5, 0, 0 on
    these six data sets; seed 1 has the shape of the reported case (held-out majority 0.67, CCS 0.42 label-oriented
    but 0.58 unoriented). The CCS loss is as low as the first's in every round all the same (Roger's point,
    counted separately)."""
    counts = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        y = rng.permutation(np.r_[np.ones(72, int), np.zeros(48, int)])
        hp, hn = rng.standard_normal((120, 64)), rng.standard_normal((120, 64))
        train, test = group_split(np.arange(120), 0.3, seed)
        res = C.ccs_evaluate(hp, hn, y, None, train, test, n_restarts=3, epochs=300, max_dirs=3, n_random=20)
        h = res.headline()
        assert 0.5 < h["truth_like_null"] < 0.8 and h["majority_acc"] >= 0.5
        assert all(0.5 < r["null"] < 0.8 for r in res.directions)
        assert h["n_low_ccs_loss_directions"] == 3
        counts.append(h["n_truth_like_directions"])
        if h["ccs_acc"] <= max(h["majority_acc"], h["truth_like_null"]):  # the first direction fails: count 0
            assert h["n_truth_like_directions"] == 0 and not res.directions[0]["truth_like"]
        if seed == 1:
            assert h["ccs_acc"] < 0.5 < h["ccs_acc_unoriented"] and h["majority_acc"] > 0.6
            assert h["n_truth_like_directions"] == 0 and not h["truth_like_hit_max"]
    # the null is a 95th percentile: by design about 1 in 20 null data sets passes it; allow one in six
    assert sum(c > 0 for c in counts) <= 1, counts


def test_one_planted_truth_direction_is_truth_like_on_a_small_imbalanced_split():
    """One planted truth direction, 120 rows labelled 72 / 48, 36 held out (majority 0.61): the first CCS direction
    beats the majority rate and the random-direction null, so at least one truth-like direction is counted."""
    hp, hn, y, tmpl, _ = C.planted_truth_data(200, 32, seed=3)
    hp, hn, tmpl, y = _imbalanced(hp, hn, tmpl, y=y, seed=3)
    test = np.sort(np.r_[np.flatnonzero(y == 1)[:22], np.flatnonzero(y == 0)[:14]])  # held-out 22 / 14 (0.61)
    train = np.setdiff1d(np.arange(len(y)), test)
    res = C.ccs_evaluate(hp, hn, y, tmpl, train, test, n_restarts=3, epochs=300, max_dirs=3, n_random=20)
    h = res.headline()
    assert h["majority_acc"] > 0.6
    assert h["ccs_acc"] > max(h["majority_acc"], h["truth_like_null"]), h
    assert h["n_truth_like_directions"] >= 1 and res.directions[0]["truth_like"]
