"""Concept erasure: LEACE's guarantees on make_classification, agreement with EleutherAI's concept-erasure,
streaming = batch statistics, the fantope projection, INLP/RLACE on synthetic data, and the outlier dataset
where equal class means leave the concept recoverable."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from interplab.analyses.representations import erasure as E


def _data(k=2, n=1024, d=16, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=d, n_informative=6, n_redundant=2, n_classes=k, random_state=seed
    )
    return X, y


def _coef(model, X, y):
    # LEACE's output lies in an affine hyperplane (one direction collapsed to a constant), so with an intercept the
    # weight along that direction is not identified; centring the inputs (no change in what a classifier with an
    # intercept can do) makes the solvers return the minimum-norm solution.
    return np.abs(model.fit(X - X.mean(0), y).coef_).max()


@pytest.mark.parametrize("k", [2, 3])
def test_leace_guarantees(k):
    X, y = _data(k)
    Xe = E.LeaceEraser().fit(X, y).transform(X)
    for make in (
        lambda: LogisticRegression(C=np.inf, max_iter=10000, tol=1e-12),  # unpenalised logistic regression
        lambda: LinearSVC(dual=False, tol=1e-12, max_iter=100000),  # type: ignore[arg-type]  # sklearn accepts a bool
    ):  # linear SVM
        before, after = _coef(make(), X, y), _coef(make(), Xe, y)
        assert before > 0.05
        assert after <= 1e-6 * before, (before, after)
    means = np.stack([Xe[y == c].mean(0) for c in range(k)])
    assert np.abs(means - means[0]).max() < 1e-10 * np.abs(X).max()
    s = np.linalg.svd(X - Xe, compute_uv=False)
    rank = int((s > 1e-9 * s[0]).sum())
    assert 1 <= rank <= k - 1  # rank(X - X') <= k (k - 1 here: one-hot columns are dependent after centring)


@pytest.mark.parametrize("k", [2, 3])
def test_leace_matches_concept_erasure(k):
    from concept_erasure import LeaceFitter

    X, y = _data(k, seed=1)
    Xt = torch.tensor(X)
    z = torch.tensor(y, dtype=torch.float64) if k == 2 else torch.nn.functional.one_hot(torch.tensor(y), k).double()
    ref = LeaceFitter.fit(Xt, z, shrinkage=False, constrain_cov_trace=False).eraser(Xt).numpy()
    ours = E.LeaceEraser().fit(X, y).transform(X)
    assert np.abs(ours - ref).max() < 1e-4
    # torch in -> torch out, same dtype
    out = E.LeaceEraser().fit(Xt.float(), torch.tensor(y)).transform(Xt.float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_leace_streaming_equals_batch():
    X, y = _data(3, n=900)
    batch = E.LeaceEraser().fit(X, y)
    stream = E.LeaceEraser()
    for i in range(0, len(X), 137):
        stream.partial_fit(X[i : i + 137], y[i : i + 137], classes=[0, 1, 2])
    assert stream.n_ == batch.n_
    assert np.allclose(stream.mean_x_, batch.mean_x_, atol=1e-12)
    assert np.allclose(stream.sigma_xx_, batch.sigma_xx_, atol=1e-10)
    assert np.allclose(stream.sigma_xz_, batch.sigma_xz_, atol=1e-12)
    assert np.abs(stream.transform(X) - batch.transform(X)).max() < 1e-9
    with pytest.raises(ValueError, match="classes"):
        E.LeaceEraser().partial_fit(X[y == 0][:10], y[y == 0][:10])


def test_mean_difference_equalises_means_and_is_orthogonal():
    X, y = _data(3)
    e = E.MeanDifferenceEraser().fit(X, y)
    Xe = e.transform(X)
    means = np.stack([Xe[y == c].mean(0) for c in range(3)])
    assert np.abs(means - means[0]).max() < 1e-10
    P = e.P_
    assert np.allclose(P, P.T) and np.allclose(P @ P, P) and e.rank_ == 2


def test_fantope_projection():
    rng = np.random.default_rng(0)
    d, k = 8, 2
    A = rng.standard_normal((d, d))
    A = (A + A.T) / 2
    P = E.fantope_project(A, k)
    lam = np.linalg.eigvalsh(P)
    assert abs(np.trace(P) - k) < 1e-8 and lam.min() > -1e-10 and lam.max() < 1 + 1e-10
    # idempotent, and a rank-k orthogonal projection is its own projection
    assert np.allclose(E.fantope_project(P, k), P, atol=1e-8)
    Q = np.linalg.qr(rng.standard_normal((d, k)))[0]
    assert np.allclose(E.fantope_project(Q @ Q.T, k), Q @ Q.T, atol=1e-8)
    # Euclidean projection: no random fantope point is closer to A
    for _ in range(50):
        V = np.linalg.qr(rng.standard_normal((d, d)))[0]
        w = rng.dirichlet(np.ones(d)) * k
        if w.max() > 1:
            continue
        assert np.linalg.norm(A - P) <= np.linalg.norm(A - (V * w) @ V.T) + 1e-9


@pytest.mark.parametrize("method", ["inlp", "rlace", "mean", "leace"])
def test_linear_erasers_reach_chance_on_held_out(method):
    X, y = E.make_synthetic_data(1200, 12, seed=2)
    res = E.evaluate_erasure(E.make_eraser(method), X, y, nonlinear=False, seed=0, method=method)
    assert res.before["linear_acc"] > 0.75
    assert res.after["linear_acc"] < res.majority_acc + 0.07, res.headline()
    assert res.after["linear_logloss"] > res.label_entropy - 0.03


def test_outlier_data_means_equal_but_concept_recoverable(tmp_path):
    """The seed's point: equalising the class means (mean projection, LEACE) leaves the concept to a
    non-linear classifier (here clearly above the majority rate); the median variant removes it."""
    X, y = E.make_outlier_data(1200, 6, seed=0)
    out = {}
    for m in ("mean", "leace", "median"):
        out[m] = E.evaluate_erasure(E.make_eraser(m), X, y, seed=0, method=m)
    for m in ("mean", "leace"):
        h = out[m]
        assert h.after["linear_acc"] < h.majority_acc + 0.07
        assert h.after["nonlinear_acc"] > 0.85 > h.majority_acc + 0.3, h.headline()
    med = out["median"]
    assert med.rank >= 2 and med.after["nonlinear_acc"] < 0.65, (
        med.headline()
    )  # mean direction + the bulk's median direction
    assert med.after["linear_acc"] < med.majority_acc + 0.07
    pure = E.evaluate_erasure(E.MedianEraser(with_mean=False), X, y, seed=0, method="median")
    assert pure.after["nonlinear_acc"] < 0.65, pure.headline()
    # save / load round trip
    out["leace"].save(tmp_path)
    back = E.ErasureResult.load(tmp_path, "leace")
    assert back.headline() == out["leace"].headline()


def test_load_acts_dir_and_errors(tmp_path):
    from safetensors.numpy import save_file

    X, y = E.make_synthetic_data(100, 5)
    save_file({"x": X.astype(np.float32), "y": y.astype(np.int64)}, str(tmp_path / "acts.safetensors"))
    X2, y2 = E.load_acts_dir(tmp_path)
    assert X2.shape == (100, 5) and (y2 == y).all()
    with pytest.raises(FileNotFoundError):
        E.load_acts_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match="single class"):
        E.LeaceEraser().fit(X, np.zeros(100))
    with pytest.raises(ValueError, match="unknown erasure method"):
        E.make_eraser("lasso")  # type: ignore[arg-type]  # an unknown name on purpose


def test_cli_erase(tmp_path):
    from safetensors.numpy import save_file
    from typer.testing import CliRunner

    from interplab.cli import app

    X, y = E.make_synthetic_data(400, 8)
    (tmp_path / "acts").mkdir()
    save_file({"x": X.astype(np.float32), "y": y.astype(np.int64)}, str(tmp_path / "acts" / "acts.safetensors"))
    r = CliRunner().invoke(
        app,
        [
            "erase",
            "--method",
            "leace",
            "--data",
            "acts",
            str(tmp_path / "acts"),
            "--no-nonlinear",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    for k in ("linear_acc_before", "linear_acc_after", "majority_acc"):
        assert k in h
    assert h["linear_acc_after"] < h["majority_acc"] + 0.1 < h["linear_acc_before"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"
    assert (tmp_path / "run" / "report.html").exists()
    r = CliRunner().invoke(
        app,
        [
            "erase",
            "--method",
            "mean",
            "--data",
            "synthetic",
            "--n",
            "300",
            "--d",
            "6",
            "--out",
            str(tmp_path / "run2"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "nonlinear_acc_after" in json.loads(r.stdout)
    r = CliRunner().invoke(app, ["erase", "--data", "acts", "--out", str(tmp_path / "run3")])
    assert r.exit_code == 2 and "needs a directory" in r.output


def test_bench_leace_small():
    from interplab.bench.leace import bench_leace

    r = bench_leace(n=300, d=12, rounds=1, warmup=0, threads=1)
    assert r["concept_erasure_installed"] and r["max_abs_diff_outputs"] < 1e-8
    assert r["interplab_f64_ms"] > 0 and r["concept_erasure_f64_ms"] > 0
