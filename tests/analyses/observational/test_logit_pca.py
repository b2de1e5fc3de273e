"""PCA of logits layer by layer (interplab.analyses.observational.logit_pca): the PCA matches an SVD, a planted kink is
found at its place (in synthetic points, and across checkpoints whose unembedding moves along a bent path),
and the points are the logit lens's outputs."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import numpy as np
import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model
from torch import nn

import interplab
from interplab.analyses.observational.logit_pca import (
    LogitPCAResult,
    layer_points,
    logit_pca,
    pca_trajectory,
    random_tokens,
)
from interplab.models.model import Model


@pytest.fixture(scope="session")
def tok_model(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("pca_tok"), vocab_size=300, n_layers=4))


def _kinked_path(n_before=6, n_after=5, dim=50, noise=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    e1, e2 = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    e1[0], e2[1] = 1.0, 1.0
    pts = [t * e1 for t in range(n_before)] + [(n_before - 1) * e1 + t * e2 for t in range(1, n_after + 1)]
    return torch.stack(pts) + noise * torch.randn(len(pts), dim, generator=g, dtype=torch.float64)


def test_synthetic_kink_is_found():
    X = _kinked_path()  # straight along e1 for 5 steps, a right-angle turn at point 5, straight along e2
    res = pca_trajectory(X)
    h = res.headline()
    assert h["kinks"][0]["layer"] == "5" and 80 < h["kinks"][0]["angle"] < 100
    others = torch.cat([res.turn_angle[0, 1:5], res.turn_angle[0, 6:-1]])
    assert float(others.max()) < 20  # straight segments turn only by the noise
    assert res.coords.shape == (1, 11, 3) and res.step_length.shape == (1, 11)
    assert (
        torch.isnan(res.turn_angle[0, 0]) and torch.isnan(res.turn_angle[0, -1]) and torch.isnan(res.step_length[0, 0])
    )
    evr = res.explained_variance_ratio
    assert float(evr.sum()) <= 1 + 1e-9 and (evr[:-1] >= evr[1:]).all()
    assert float(evr[:2].sum()) > 0.99  # the path lies in a plane


def test_pca_matches_numpy_svd_and_geometry_is_exact():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 7, 40)).cumsum(axis=1)  # 3 random walks (checkpoints) of 7 points
    res = pca_trajectory(X, n_components=4)
    flat = X.reshape(21, 40)
    Xc = flat - flat.mean(0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(res.explained_variance_ratio.numpy(), (S**2 / (S**2).sum())[:4], rtol=1e-8)
    ref = U[:, :4] * S[:4]
    got = res.coords.reshape(21, 4).numpy()
    signs = np.sign((ref * got).sum(0))
    np.testing.assert_allclose(got, ref * signs, atol=1e-8)
    # steps and angles are those of the original points (full space), not of the 2-D picture
    steps = np.linalg.norm(X[:, 1:] - X[:, :-1], axis=-1)
    np.testing.assert_allclose(res.step_length[:, 1:].numpy(), steps, rtol=1e-8)
    u, v = X[1, 2] - X[1, 1], X[1, 3] - X[1, 2]
    ang = np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
    assert float(res.turn_angle[1, 2]) == pytest.approx(ang, abs=1e-6)
    csteps = np.linalg.norm(X[1:] - X[:-1], axis=-1)  # across checkpoints, per layer
    np.testing.assert_allclose(res.ckpt_step_length[1:].numpy(), csteps, rtol=1e-8)


def test_points_are_the_logit_lens(tok_model):
    tokens = random_tokens(tok_model, n_seqs=2, seq_len=8, seed=3)
    assert tokens.shape == (2, 8) and torch.equal(tokens, random_tokens(tok_model, 2, 8, seed=3))
    assert not torch.equal(tokens, random_tokens(tok_model, 2, 8, seed=4))
    pts = layer_points(tok_model, tokens)
    V = tok_model.cfg.d_vocab
    assert pts.shape == (tok_model.cfg.n_layers + 1, 2 * 8 * V)
    lp = tok_model.run(tokens).logits.float().log_softmax(-1)
    torch.testing.assert_close(pts[-1], (lp - lp.mean(-1, keepdim=True)).flatten(), atol=1e-5, rtol=1e-5)
    probs = layer_points(tok_model, tokens, space="probs", include_embed=False)
    assert probs.shape == (tok_model.cfg.n_layers, 2 * 8 * V)
    torch.testing.assert_close(
        probs.view(tok_model.cfg.n_layers, 16, V).sum(-1), torch.ones(tok_model.cfg.n_layers, 16)
    )


def test_logit_pca_on_a_model(tok_model, tmp_path):
    res = logit_pca(tok_model, n_seqs=2, seq_len=8, seed=0)
    L = tok_model.cfg.n_layers
    assert res.coords.shape == (1, L + 1, 3) and res.layer_labels == ["embed"] + [str(i) for i in range(L)]
    assert float(res.explained_variance_ratio.sum()) <= 1 + 1e-9
    again = logit_pca(tok_model, n_seqs=2, seq_len=8, seed=0)
    torch.testing.assert_close(res.coords, again.coords)  # seeded: the same random tokens, the same picture
    h = res.headline()
    assert len(h["kinks"]) == 3 and all(0 <= k["angle"] <= 180 for k in h["kinks"])
    assert h["kinks"][0]["angle"] == pytest.approx(float(torch.nan_to_num(res.turn_angle, nan=-1).max()), abs=1e-3)
    res.save(tmp_path)
    back = LogitPCAResult.load(tmp_path)
    assert back.headline() == h and back.layer_labels == res.layer_labels
    json.loads((tmp_path / "logit_pca.json").read_text())
    for kind in ("both", "trajectory", "angles"):
        assert res.plot(kind).to_plotly_json()["data"]
    assert len(res.to_frame()) == L + 1 and len(res.to_frame("variance")) == 3
    from interplab.report.html import Report
    from interplab.report.sections.logit_pca import logit_pca_parts

    assert "ipl-figure" in Report("pca").section("PCA of logits", *logit_pca_parts(res)).to_html()


def _with_unembedding(model: Model, weight: torch.Tensor, name: str) -> Model:
    hf = copy.deepcopy(model.hf)
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)  # untied: the embedding stays put
    with torch.no_grad():
        head.weight.copy_(weight)
    hf.lm_head = head
    return Model(hf, model.tokenizer, name=name)


def test_training_kink_across_checkpoints(tok_model):
    """Checkpoints whose only change is the unembedding moving along a bent path: W_U(c) = W_0 + c d1 for
    c <= 3, then W_0 + 3 d1 + (c - 3) d2. Centred log-probabilities are linear in W_U, so every layer's
    lens point moves along the same bent path, and the turn must be found at checkpoint 3 for every layer."""
    W0 = tok_model.hf.lm_head.weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    d1, d2 = (torch.randn(W0.shape, generator=g) * 0.05 for _ in range(2))
    ckpts = [_with_unembedding(tok_model, W0 + min(c, 3) * d1 + max(0, c - 3) * d2, f"step{c}") for c in range(7)]
    res = logit_pca(ckpts, n_seqs=2, seq_len=8)
    assert res.coords.shape == (7, tok_model.cfg.n_layers + 1, 3)
    assert res.checkpoint_names == [f"step{c}" for c in range(7)]
    best = torch.nan_to_num(res.ckpt_turn_angle, nan=-1).argmax(0)
    assert (best == 3).all()
    straight = res.ckpt_turn_angle[[1, 2, 4, 5]]
    assert float(straight.max()) < 1.0 and float(res.ckpt_turn_angle[3].min()) > 30
    assert res.headline()["training_kinks"][0]["index"] == 3


def test_input_errors(tok_model, tmp_path):
    with pytest.raises(ValueError, match="max_elements"):
        logit_pca(tok_model, max_elements=1000)
    with pytest.raises(ValueError, match="space must be"):
        logit_pca(tok_model, space=cast(Any, "logits"))  # an unknown space on purpose
    other = interplab.load(make_tiny_tokenized_model(tmp_path / "two", vocab_size=300, n_layers=2))
    with pytest.raises(ValueError, match="share the architecture"):
        logit_pca([tok_model, other], n_seqs=1, seq_len=4)
    with pytest.raises(ValueError, match="n_layers >= 2"):
        pca_trajectory(np.zeros((1, 5)))
