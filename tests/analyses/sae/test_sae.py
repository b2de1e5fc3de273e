"""Sparse autoencoders: metric anchors, controls (Gaussian vs PCA at equal L0, known-dictionary recovery), training
paths, resampling, checkpoint/resume, CE score anchors, CLI and report."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_tokenized import XSS_TOKEN
from typer.testing import CliRunner

import interplab
import interplab.analyses.sae as S
from interplab.analyses.sae import (
    SAE,
    SAEConfig,
    SAEResult,
    ce_score,
    evaluate,
    explained_variance,
    fit_and_score,
    gaussian,
    known_dictionary,
    recovery,
    resample_dead_features,
    train_sae,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_explained_variance_anchors():
    x = torch.randn(500, 7) * torch.arange(1, 8) + 3
    assert abs(explained_variance(x, x.mean(0).expand_as(x))) < 1e-12
    assert explained_variance(x, x) == 1.0
    assert abs(evaluate(lambda b: torch.zeros_like(b) + x.mean(0), x)["explained_variance"]) < 1e-9
    e = evaluate(lambda b: b, x)
    assert e["explained_variance"] == 1.0 and e["mse"] == 0.0
    noisy = x + torch.randn_like(x)

    def noisy_rows(b: torch.Tensor) -> torch.Tensor:
        assert len(b) == 500  # one batch: the rows of noisy line up with the batch
        return noisy[: len(b)]

    torch.testing.assert_close(
        evaluate(noisy_rows, x, batch_size=500)["explained_variance"],
        explained_variance(x, noisy),
        rtol=1e-9,
        atol=1e-12,
    )


def _split(x, n_train):
    return x[:n_train], x[n_train:]


def test_gaussian_control_against_pca_at_equal_l0():
    """Isotropic Gaussian data has no features. A *complete* TopK SAE (n_features = d) does not beat PCA keeping the
    top-L0 coefficients per row (held-out, within 2 standard errors); an 8x overcomplete one beats it by a small
    margin (a larger dictionary approximates Gaussian vectors better at equal L0 — README numbers), far below its
    margin on data that does have a sparse dictionary."""
    tr, te = _split(gaussian(20480, 32, seed=0), 16384)
    _, complete = fit_and_score(tr, te, SAEConfig(d_in=32, n_features=32, k=4, batch_size=256, epochs=3, lr=2e-3))
    assert complete["ev_gap_vs_pca_topk"] <= 2 * complete["ev_gap_se"]
    _, over = fit_and_score(tr, te, SAEConfig(d_in=32, n_features=256, k=4, batch_size=256, epochs=3, lr=2e-3))
    x, atoms = known_dictionary(20480, 32, n_atoms=128, active=3, seed=0)
    ktr, kte = _split(x, 16384)
    _, known = fit_and_score(
        ktr, kte, SAEConfig(d_in=32, n_features=256, k=4, batch_size=256, epochs=3, lr=2e-3), atoms=atoms
    )
    assert over["ev_gap_vs_pca_topk"] < 0.05
    assert over["ev_gap_vs_pca_topk"] < 0.25 * known["ev_gap_vs_pca_topk"]
    assert known["recovery"] >= 0.9 and known["mmcs"] > 0.95  # measured 1.0 / 0.99
    assert complete["pca_top_ev"] < complete["pca_topk_ev"]  # the dense top-m PCA is the weaker baseline


def test_known_dictionary_recovery_and_random_baseline():
    x, atoms = known_dictionary(12288, 24, n_atoms=64, active=2, seed=1)
    sae, _ = train_sae(x, SAEConfig(d_in=24, n_features=128, k=3, batch_size=256, epochs=3, lr=2e-3, seed=1))
    r = recovery(sae, atoms)
    assert r["recovery"] >= 0.9 and r["n_atoms"] == 64
    untrained = SAE(SAEConfig(d_in=24, n_features=128, k=3))
    assert recovery(untrained, atoms)["recovery"] < 0.1  # random directions in 24-d rarely reach cosine 0.9


def test_sparse_and_dense_topk_training_agree():
    x = torch.randn(4096, 16) @ torch.randn(16, 16)
    cfg = SAEConfig(d_in=16, n_features=64, k=4, batch_size=256, epochs=2, lr=1e-3)
    a, _ = train_sae(x, cfg)
    b, _ = train_sae(x, cfg, sparse_topk=False)
    for k in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=1e-3, atol=1e-4)


def test_topk_and_relu_properties():
    x, _ = known_dictionary(8192, 16, n_atoms=48, active=2, seed=2)
    sae, _ = train_sae(x, SAEConfig(d_in=16, n_features=64, k=3, batch_size=256, epochs=2, lr=2e-3))
    assert (sae.encode(x) > 0).sum(-1).max() <= 3
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64), rtol=0, atol=1e-5)
    l0, ev = [], []
    for lam in (0.3, 3.0):
        r, _ = train_sae(
            x, SAEConfig(d_in=16, n_features=64, kind="relu", l1_coeff=lam, batch_size=256, epochs=2, lr=2e-3)
        )
        torch.testing.assert_close(r.W_dec.norm(dim=-1), torch.ones(64), rtol=0, atol=1e-5)
        m = evaluate(r, x)
        l0.append(m["l0"])
        ev.append(m["explained_variance"])
    assert l0[1] < l0[0] < 64 and ev[1] < ev[0]  # the L1 penalty trades reconstruction for sparsity
    assert ev[0] > 0.8 and ev[1] > 0.1  # measured 0.93 / 0.23 after 64 steps
    with pytest.raises(ValueError, match="kind"):
        SAEConfig(d_in=4, kind="gated")  # type: ignore[arg-type]


def test_resampling_revives_dead_features():
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    sae = SAE(SAEConfig(d_in=8, n_features=16, kind="relu"))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    with torch.no_grad():
        sae.b_enc[:8] = -1e3  # features 0..7 can never fire
    assert (sae.encode(x)[:, :8] == 0).all()
    dead = torch.zeros(16, dtype=torch.bool)
    dead[:8] = True
    assert resample_dead_features(sae, opt, dead, x, seed=0) == 8
    assert (sae.b_enc[:8] == 0).all()
    torch.testing.assert_close(sae.W_dec[:8].norm(dim=-1), torch.ones(8))
    assert ((sae.encode(x)[:, :8] > 0).sum(0) > 0).all()  # every resampled feature now fires on some inputs
    # each new decoder row points at an input (minus b_dec)
    cos = F.normalize(sae.W_dec[:8], dim=-1) @ F.normalize(x * sae.scale - sae.b_dec, dim=-1).T
    assert (cos.max(dim=1).values > 0.999).all()


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    x = torch.randn(3000, 12)
    cfg = SAEConfig(d_in=12, n_features=48, k=3, batch_size=200, epochs=2, lr=1e-3)
    full, _ = train_sae(x, cfg)
    _, info = train_sae(x, cfg, checkpoint_dir=tmp_path, checkpoint_every=4, max_steps=9)
    assert info["steps_run"] == 9 and not info["complete"]
    resumed, info2 = train_sae(x, cfg, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert info2["steps_run"] == info2["steps"] - 9 and info2["complete"]
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="another configuration"):
        train_sae(x, SAEConfig(d_in=12, n_features=48, k=4, batch_size=200, epochs=2), checkpoint_dir=tmp_path)
    resumed.save(tmp_path)
    again = SAE.load(tmp_path)
    torch.testing.assert_close(again(x), resumed(x))


def test_ce_score_anchors(tiny_tok_dir):
    model = interplab.load(tiny_tok_dir)
    d = model.cfg.d_model
    toks = torch.randint(0, model.cfg.d_vocab, (4, 16))
    perfect = SAE(SAEConfig(d_in=d, n_features=2 * d, kind="relu"))
    with torch.no_grad():  # relu(x) - relu(-x) = x
        eye = torch.eye(d)
        perfect.W_enc.copy_(torch.cat([eye, -eye], 1))
        perfect.W_dec.copy_(torch.cat([eye, -eye], 0))
        perfect.b_enc.zero_()
        perfect.b_dec.zero_()
    hook = "blocks.0.hook_resid_post"
    r = ce_score(model, perfect, hook, toks)
    assert abs(r["ce_score"] - 1) < 1e-5 and abs(r["ce_sae"] - r["ce_clean"]) < 1e-5
    zero = SAE(SAEConfig(d_in=d, n_features=8, k=1))
    with torch.no_grad():
        zero.W_dec.zero_()
        zero.b_dec.zero_()
    r = ce_score(model, zero, hook, toks)
    assert abs(r["ce_score"]) < 1e-6 and r["ce_zero_ablation"] > r["ce_clean"]
    for skip_first in (False, True):  # reusing the clean and zero-ablated CEs of an earlier call gives the same numbers
        full = ce_score(model, zero, hook, toks, batch=3, skip_first=skip_first)
        assert ce_score(model, zero, hook, toks, batch=3, skip_first=skip_first, baseline=full) == full


def test_cli_sae_synthetic_known_dict(tmp_path):
    from interplab.cli import app

    r = CliRunner().invoke(
        app,
        [
            "sae",
            "train",
            "--data",
            "known-dict",
            "--features",
            "512",
            "--k",
            "8",
            "--epochs",
            "1",
            "--lr",
            "2e-3",
            "--no-controls",
            "--out",
            str(tmp_path / "kd"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    for key in ("l0", "explained_variance", "test_explained_variance", "dead_frac", "recovery", "mse", "pca_topk_ev"):
        assert key in h
    assert h["l0"] == 8 and h["recovery"] >= 0.9 and "ce_score" not in h
    res = SAEResult.load(tmp_path / "kd")
    assert res.headline()["recovery"] == h["recovery"]
    r = CliRunner().invoke(app, ["sae", "train", "--data", "nonsense"])
    assert r.exit_code == 2 and "--data" in r.output


def test_cli_sae_model_with_controls_and_browser(tiny_tok_dir, tmp_path):
    from interplab.cli import app

    text = tmp_path / "t.txt"
    text.write_text((f"The quick brown fox {XSS_TOKEN} jumps over the lazy dog. " * 60), encoding="utf-8")
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            "sae",
            "train",
            "--model",
            tiny_tok_dir,
            "--hook",
            "blocks.1.hook_resid_post",
            "--text",
            str(text),
            "--tokens",
            "1536",
            "--features",
            "64",
            "--k",
            "4",
            "--epochs",
            "2",
            "--lr",
            "2e-3",
            "--control-rows",
            "1024",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    for key in (
        "l0",
        "explained_variance",
        "test_explained_variance",
        "ce_score",
        "test_ce_score",
        "dead_frac",
        "test_dead_frac",
    ):
        assert key in h, key
    assert set(h["controls"]) == {
        "gaussian",
        "mixture",
        "uniform",
        "uniform-cube",
        "known-dict",
        "random-decoder",
        "layer0-embed",
    }
    assert "recovery" in h["controls"]["known-dict"]
    assert (
        h["ce_baseline"] == "zero ablation" and h["ce_clean"] > 0
    )  # (random weights: no ordering of the CEs to expect)
    page = (out / "report.html").read_text()
    assert 'id="browser"' in page and "feature " in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and XSS_TOKEN not in page
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert SAE.load(out).cfg.n_features == 64


def test_bench_sae_keys():
    from interplab.bench.sae import bench_sae

    res = bench_sae(rows=2048, d=16, n_features=64, k=4, batch_size=256, steps=2, rounds=1, threads=1)
    assert res["tokens_per_s"] > 0 and "config" in res
    if res["saelens_version"]:
        assert res["saelens_tokens_per_s"] > 0 and res["speed_ratio_median"] > 0


def test_cli_sae_on_an_activation_directory(tiny_tok_dir, tmp_path):
    from interplab.cli import app
    from interplab.io.activations import extract_activations

    model = interplab.load(tiny_tok_dir)
    extract_activations(
        model, "blocks.0.hook_resid_post", tmp_path / "acts", n_tokens=1024, chunk_len=32, shard_rows=128
    )
    r = CliRunner().invoke(
        app,
        [
            "sae",
            "train",
            "--data",
            "acts",
            str(tmp_path / "acts"),
            "--features",
            "64",
            "--k",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--no-controls",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["l0"] <= 4 and "ce_score" not in h  # no --model: no CE score
    assert 'id="browser"' in (tmp_path / "r" / "report.html").read_text()
    r = CliRunner().invoke(app, ["sae", "train", "--data", "acts", "--no-controls"])
    assert r.exit_code == 2 and "activation directory" in r.output


def test_jumprelu_estimator_and_training():
    """JumpReLU (Rajamanoharan et al. 2024): forward z·H(z-θ); straight-through θ-gradients -(θ/ε)K and -(1/ε)K."""
    z = torch.tensor([[0.1, 0.49, 0.52, 0.9]], requires_grad=True)
    theta = torch.full((4,), 0.5, requires_grad=True)
    out = S.JumpReLU.apply(z, theta, 0.1)
    assert out is not None
    assert out.tolist() == [[0.0, 0.0, pytest.approx(0.52), pytest.approx(0.9)]]
    out.sum().backward()
    assert z.grad is not None
    assert z.grad.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, -5.0, -5.0, 0.0]))  # -(0.5/0.1) inside |z-θ| < ε/2
    theta.grad = None
    S.Step.apply(z, theta, 0.1).sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, -10.0, -10.0, 0.0]))
    x, atoms = known_dictionary(12288, 32, n_atoms=128, active=3, seed=0)
    l0 = []
    for lam in (0.1, 5.0):
        sae, _ = train_sae(
            x,
            SAEConfig(
                d_in=32,
                n_features=256,
                kind="jumprelu",
                l0_coeff=lam,
                threshold_init=0.5,
                batch_size=256,
                epochs=2,
                lr=2e-3,
            ),
        )
        l0.append(evaluate(sae, x)["l0"])
        assert recovery(sae, atoms)["recovery"] >= 0.9
    assert l0[1] < l0[0]
