"""Weights-only head analyses (interplab.analyses.weights): composition scores against a planted
circuit, a random baseline, a dense implementation of the formula and TransformerLens; norm folding
against the model's own q/v; SVD reconstruction; the copying score against the dense full OV circuit and a planted
copying model, Elhage et al.'s eigenvalue ratio (reference) against dense eigenvalues."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import pytest
import torch
from plotly_traces import traces

from interplab.analyses.weights import (
    CompositionResult,
    HeadCircuitsResult,
    composition_scores,
    copying_fractions,
    copying_members,
    eigenvalue_copying,
    factored_svd,
    head_circuits,
    head_svds,
    ov_copying,
    random_composition_baseline,
)
from interplab.analyses.weights.copying import random_rotations
from interplab.models.folding import attn_input_norm, folded_weights, norm_info
from interplab.models.planted import (
    ANTI_COPYING_HEAD,
    COPYING_HEAD,
    INDUCTION_HEAD,
    PREV_TOKEN_HEAD,
    PSD_HEAD,
    copying_model,
    induction_model,
)


@pytest.fixture(scope="module")
def planted():
    return induction_model()


def _dense_scores(fw) -> dict[str, torch.Tensor]:
    """The published formula on materialised d x d matrices, pair by pair (float64)."""
    OV = fw.W_V.double() @ fw.W_O.double()  # [L, H, d, d]
    QK = fw.W_Q.double() @ fw.W_K.double().mT
    L = OV.shape[0]
    right = {"Q": QK, "K": QK.mT, "V": OV}
    later = torch.arange(L)[:, None, None, None] < torch.arange(L)[None, None, :, None]  # l1 < l2
    out = {}
    for k, R in right.items():
        prod = torch.einsum("abij,cdjk->abcdik", OV, R)  # every pair's d x d product
        norms = torch.linalg.matrix_norm(OV)[:, :, None, None] * torch.linalg.matrix_norm(R)[None, None]
        s = torch.linalg.matrix_norm(prod) / norms
        out[k] = torch.where(later.expand_as(s), s, float("nan"))
    return out


def _close_where_defined(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    ok = torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), ok)
    torch.testing.assert_close(a[ok].double(), b[ok].double(), rtol=rtol, atol=1e-6)


# ------------------------------------------------------------------------------------ composition


def test_planted_k_composition_stands_out(planted):
    res = composition_scores(planted)
    (l1, h1), (l2, h2) = PREV_TOKEN_HEAD, INDUCTION_HEAD
    k = res.scores["K"]
    score = float(k[l1, h1, l2, h2])
    assert score == pytest.approx(float(torch.nan_to_num(k, nan=-1).max()))  # the maximum over all K pairs
    # both circuits are scaled identities on one 64-dim block: ||s I_64|| / (||I_64|| ||s I_64||) = 1/8
    assert score == pytest.approx(1 / 8, rel=1e-4)
    assert score > res.baseline_mean["K"] + 5 * res.baseline_std["K"]
    assert float(res.zscores("K")[l1, h1, l2, h2]) > 20
    # nothing else in the planted model composes beyond chance: every other pair, every kind, z < 5
    for kind in res.kinds:
        z = res.zscores(kind).clone()
        if kind == "K":
            z[l1, h1, l2, h2] = float("nan")
        assert float(torch.nan_to_num(z, nan=-math.inf).max()) < 5, kind
    assert res.top_pairs("K", 1)[0][:4] == [l1, h1, l2, h2]
    # same-layer and backward pairs are undefined
    assert torch.isnan(k[1, 0, 0, 0]) and torch.isnan(k[0, 0, 0, 1])


def test_random_model_sits_near_baseline(tiny):
    res = composition_scores(tiny)
    for kind in res.kinds:
        z = res.zscores(kind)
        z = z[torch.isfinite(z)]
        assert z.numel() == (tiny.cfg.n_layers * (tiny.cfg.n_layers - 1) // 2) * tiny.cfg.n_heads**2
        assert abs(float(z.mean())) < 1.0, (kind, float(z.mean()))
        assert float(z.max()) < 5.0, (kind, float(z.max()))


def test_baseline_mean_is_one_over_sqrt_d():
    # For independent random matrices E||M1 M2||^2 / (||M1||^2 ||M2||^2) = 1/d: the baseline is ~1/sqrt(d)
    for d, e in ((32, 8), (240, 64), (576, 64)):
        b = random_composition_baseline(d, e, n_samples=100, seed=1)
        assert b.shape == (100,)
        assert float(b.mean()) == pytest.approx(d**-0.5, rel=0.05)
        assert 0 < float(b.std()) < 0.3 * float(b.mean())


def test_composition_matches_dense_formula(tiny):
    fw = folded_weights(tiny, with_embed=False)
    dense = _dense_scores(fw)
    for method in ("gram", "factored"):
        res = composition_scores(tiny, method=method, n_baseline=20)
        assert res.settings["algorithm"] == method
        for kind in "QKV":
            _close_where_defined(res.scores[kind], dense[kind])


def test_composition_matches_transformer_lens(tiny):
    """TransformerLens's own ``FactoredMatrix`` + ``utils.composition_scores`` on the same (folded) weights."""
    pytest.importorskip("transformer_lens")
    import warnings

    from transformer_lens import FactoredMatrix

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformer_lens import utils as tl_utils

    fw = folded_weights(tiny, with_embed=False)
    OV = FactoredMatrix(fw.W_V, fw.W_O)
    QK = FactoredMatrix(fw.W_Q, fw.W_K.transpose(-2, -1))
    ours = composition_scores(tiny, n_baseline=20)
    for kind, right in (("Q", QK), ("K", QK.T), ("V", OV)):
        tl = tl_utils.composition_scores(OV, right, broadcast_dims=True)  # [L, H, L, H], every pair
        mask = torch.isfinite(ours.scores[kind])
        torch.testing.assert_close(ours.scores[kind][mask], tl[mask].float(), rtol=1e-4, atol=1e-6)


def test_folded_weights_reproduce_q_and_v(tiny):
    """Folding is exact up to the per-token scalar: v = norm(x) W_V + b_V equals
    (x @ W_V_folded) / scale(x) + norm_bias @ W_V + b_V, on every family (q likewise at position 0,
    where rotary is the identity; with Gemma's q-norm, q is only known up to a positive scalar)."""
    tokens = torch.tensor([[3, 14, 15, 9, 2, 6]])
    _, cache = tiny.run(tokens, cache=lambda n: n.endswith(("hook_resid_pre", "attn.hook_v", "attn.hook_q")))
    fw = folded_weights(tiny, with_embed=False)
    W_Q, W_V, b_Q, b_V = tiny.W_Q, tiny.W_V, tiny.b_Q, tiny.b_V
    gemma = tiny.cfg.family == "gemma3"
    for layer in range(tiny.cfg.n_layers):
        x = cache[f"blocks.{layer}.hook_resid_pre"][0]
        ni = norm_info(attn_input_norm(tiny, layer))
        assert ni is not None  # every family's attention input norm is a norm module
        s = ni.scale(x)[:, None]  # [p, 1, 1]
        nb = ni.bias if ni.bias is not None else torch.zeros(tiny.cfg.d_model)
        v = torch.einsum("pd,hde->phe", x, fw.W_V[layer]) / s + torch.einsum("d,hde->he", nb, W_V[layer]) + b_V[layer]
        torch.testing.assert_close(v, cache[f"blocks.{layer}.attn.hook_v"][0], rtol=1e-4, atol=1e-5)
        q = (
            torch.einsum("d,hde->he", x[0], fw.W_Q[layer]) / s[0]
            + torch.einsum("d,hde->he", nb, W_Q[layer])
            + b_Q[layer]
        )
        q_real = cache[f"blocks.{layer}.attn.hook_q"][0, 0]
        if gemma:
            q, q_real = q / q.norm(dim=-1, keepdim=True), q_real / q_real.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(q, q_real, rtol=1e-4, atol=1e-5)
    if tiny.cfg.normalization == "LN":  # writers centred
        assert fw.W_O.mean(-1).abs().max() < 1e-6


def test_folded_w_o_reproduces_attn_out(tiny):
    """Writer side: sum_h z_h W_O_folded is attn_out minus the bias — centred for LayerNorm models,
    and for Gemma 3 (post-attention norm folded into W_O) equal up to the per-token norm scale."""
    tokens = torch.tensor([[3, 14, 15, 9, 2, 6]])
    _, cache = tiny.run(tokens, cache=lambda n: n.endswith(("attn.hook_z", "hook_attn_out")))
    fw = folded_weights(tiny, with_embed=False)
    for layer in range(tiny.cfg.n_layers):
        out = torch.einsum("phe,hed->pd", cache[f"blocks.{layer}.attn.hook_z"][0], fw.W_O[layer])
        real = cache[f"blocks.{layer}.hook_attn_out"][0] - tiny.b_O[layer]
        if tiny.cfg.normalization == "LN":
            real = real - real.mean(-1, keepdim=True)
        if tiny.cfg.family == "gemma3":  # b_O is zero there; compare directions per position
            out, real = out / out.norm(dim=-1, keepdim=True), real / real.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(out, real, rtol=1e-4, atol=1e-5)


def test_no_fold_uses_raw_weights(tiny):
    fw = folded_weights(tiny, fold_norms=False)
    assert torch.equal(fw.W_V, tiny.W_V) and torch.equal(fw.W_U, tiny.W_U)


def test_gqa_heads_share_kv(tiny):
    c = tiny.cfg
    if c.n_kv_heads == c.n_heads:
        pytest.skip("no grouped-query attention in this family")
    g = c.n_heads // c.n_kv_heads
    fw = folded_weights(tiny, with_embed=False)
    for h in range(c.n_heads):
        assert torch.equal(fw.W_K[:, h], fw.W_K[:, (h // g) * g])
        assert torch.equal(fw.W_V[:, h], fw.W_V[:, (h // g) * g])


def test_composition_result_table_plot_save(planted, tmp_path):
    res = composition_scores(planted, kinds=("K", "V"), n_baseline=50)
    assert res.kinds == ["K", "V"]
    df = res.to_frame()
    assert len(df) == 2 * 1 * 2 * 2 and set(df.columns) == {"kind", "layer1", "head1", "layer2", "head2", "score", "z"}
    assert len(traces(res.plot())) == 2 and len(traces(res.plot("K"))) == 1
    with pytest.raises(ValueError):
        res.plot("Q")
    h = res.headline(3)
    assert h["K"]["top"][0][:4] == [0, 0, 1, 0]
    json.dumps(h)
    path = res.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["composition.json", "composition.safetensors"]
    back = CompositionResult.load(path)
    for kind in res.kinds:
        torch.testing.assert_close(back.scores[kind], res.scores[kind], equal_nan=True)
    assert back.baseline_std == res.baseline_std and back.headline() == json.loads(json.dumps(res.headline()))
    with pytest.raises(ValueError):
        composition_scores(planted, kinds=cast(Any, ("X",)))  # an unknown kind on purpose
    with pytest.raises(ValueError):
        composition_scores(planted, method=cast(Any, "dense"))  # an unknown method on purpose


# ------------------------------------------------------------------------------------ SVD, copying


def test_factored_svd_reconstructs():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(3, 40, 8, generator=g), torch.randn(3, 8, 40, generator=g)
    B[1, 5:] = 0  # a rank-deficient product
    U, S, V = factored_svd(A, B)
    assert U.shape == (3, 40, 8) and S.shape == (3, 8) and V.shape == (3, 40, 8)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ V.mT, A @ B, rtol=1e-4, atol=1e-4)
    assert (S[:, :-1] >= S[:, 1:]).all() and float(S[1, 5:].abs().max()) < 1e-4
    torch.testing.assert_close(U.mT @ U, torch.eye(8).expand(3, 8, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.svdvals(A @ B)[:, :8], S, rtol=1e-4, atol=1e-4)


def test_head_svd_reconstructs_ov_and_qk(tiny):
    res = head_circuits(tiny, n_directions=2, top_k=3)
    fw = folded_weights(tiny)
    OV = fw.W_V @ fw.W_O
    QK = fw.W_Q @ fw.W_K.mT
    torch.testing.assert_close(
        res.ov_singular, torch.linalg.svdvals(OV)[..., : res.ov_singular.shape[-1]], rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        res.qk_singular, torch.linalg.svdvals(QK)[..., : res.qk_singular.shape[-1]], rtol=1e-4, atol=1e-5
    )
    # the token readings are the extremes of W_E u_1 / u_1 W_U (up to the documented sign convention)

    U, _, V = head_svds(fw)["OV"]
    read = fw.W_E @ U[0, 0, :, 0]
    write = V[0, 0, :, 0] @ fw.W_U
    plus = res.token_ids["OV"]["read+"][0, 0, 0]
    flipped = read.max() < -read.min()
    exp_read = (-read if flipped else read).topk(3).indices
    exp_write = (-write if flipped else write).topk(3).indices
    assert torch.equal(plus, exp_read) and torch.equal(res.token_ids["OV"]["write+"][0, 0, 0], exp_write)


def test_eigenvalue_ratio_matches_dense_eigenvalues(tiny):
    fw = folded_weights(tiny)
    full = fw.W_E.double() @ fw.W_V.double() @ fw.W_O.double() @ fw.W_U.double()  # [L, H, vocab, vocab]
    eig = torch.linalg.eigvals(full)
    dense = eig.real.sum(-1) / eig.abs().sum(-1)
    torch.testing.assert_close(eigenvalue_copying(tiny), dense.float(), rtol=1e-4, atol=1e-5)
    assert float(eigenvalue_copying(tiny).abs().max()) <= 1 + 1e-6


def _dense_fractions(fw, k: int, rotations=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The copying score's definition on the materialised [vocab, vocab] OV circuit of every head: the fraction
    of rows whose diagonal entry has fewer than k other entries >= (<=) it."""
    V_ = fw.W_V.double() if rotations is None else fw.W_V.double() @ rotations.double()[:, None, None]
    full = fw.W_E.double() @ V_ @ fw.W_O.double() @ fw.W_U.double()  # [(R,) L, H, vocab, vocab]
    own = full.diagonal(dim1=-2, dim2=-1)[..., None]
    top = (full >= own).sum(-1) - 1
    bottom = (full <= own).sum(-1) - 1
    return (top < k).double().mean(-1), (bottom < k).double().mean(-1)


@pytest.mark.parametrize("n_screen", [3, 4096])
def test_copying_fractions_match_the_dense_definition(tiny, n_screen):
    """Every token of the vocabulary, with and without the screening pass doing any work, real heads and
    rotated (null) heads: the fractions equal the definition computed on the full OV circuit."""
    fw = folded_weights(tiny)
    V = fw.W_E.shape[0]
    q = random_rotations(2, fw.W_V.shape[-1], torch.Generator().manual_seed(1))
    for k in (1, 5):
        c, s = copying_fractions(fw, torch.arange(V), k, n_screen=n_screen, chunk=17)
        dc, ds = _dense_fractions(fw, k)
        assert c.shape == (1, *dc.shape)
        torch.testing.assert_close(c[0].double(), dc, atol=1e-6, rtol=0)
        torch.testing.assert_close(s[0].double(), ds, atol=1e-6, rtol=0)
        c, s = copying_fractions(fw, torch.arange(V), k, rotations=q, n_screen=n_screen)
        assert c.shape == (3, *dc.shape)
        dc, ds = _dense_fractions(fw, k, rotations=q)
        torch.testing.assert_close(c[1:].double(), dc, atol=1e-6, rtol=0)
        torch.testing.assert_close(s[1:].double(), ds, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def copier():
    return copying_model()


def test_planted_copying_head_is_ranked_first_and_separated(copier):
    """One exact copying head (W_OV = I, tied embeddings), one anti-copying head (W_OV = -I), one rank-1 positive
    semi-definite head, random heads: the copying score ranks the planted heads first by a wide margin, puts every
    other head below the membership rule, and does not saturate where Elhage et al.'s eigenvalue ratio does."""
    cp = ov_copying(copier, n_tokens=256, n_null_rotations=2)
    assert cp.token_ids.numel() == 256 and cp.token_ids.unique().numel() == 256  # a sample, without repeats
    for score, head in ((cp.copying, COPYING_HEAD), (cp.suppression, ANTI_COPYING_HEAD)):
        others = score.clone()
        others[head] = -1
        assert float(score[head]) > 0.99
        assert float(score[head]) - float(others.max()) > 0.8  # random heads score near k / vocab = 0.02
        assert copying_members(
            score, cp.null_max["copying" if score is cp.copying else "copy_suppression"]
        ).nonzero().tolist() == [list(head)]
    assert max(cp.null_max.values()) < 0.1
    # the PSD head: every eigenvalue positive, Elhage's ratio ties with the true copier's; it copies no token
    ratio = eigenvalue_copying(copier)
    assert float(ratio[PSD_HEAD]) == pytest.approx(1.0, abs=1e-4)
    assert float(ratio[COPYING_HEAD]) == pytest.approx(1.0, abs=1e-4)
    assert float(cp.copying[PSD_HEAD]) < 0.1
    # the same sample and rotations with the same seed: the same numbers
    again = ov_copying(copier, n_tokens=256, n_null_rotations=2)
    assert torch.equal(again.copying, cp.copying) and again.null_max == cp.null_max


def test_ov_copying_rejects_bad_arguments(copier):
    with pytest.raises(ValueError, match="at least"):
        ov_copying(copier, k=0)


def test_planted_induction_head_copies(planted):
    res = head_circuits(planted, n_directions=3, top_k=4)
    il, ih = INDUCTION_HEAD
    pl, ph = PREV_TOKEN_HEAD
    # W_E writes the token block, the induction head's OV copies it into the output block, W_U reads it:
    # W_E W_OV W_U = I: every token is its own top-1, and every eigenvalue is 1
    assert float(res.copying[il, ih]) == 1.0 and float(res.copy_suppression[il, ih]) == 0.0
    assert float(res.eigenvalue_copying[il, ih]) == pytest.approx(1.0, abs=1e-5)
    assert float(res.positive_fraction[il, ih]) == pytest.approx(1.0, abs=1e-5)
    ev = res.eigenvalues[il, ih]
    torch.testing.assert_close(ev[..., 0], torch.ones(ev.shape[0]), atol=1e-4, rtol=0)
    # the previous-token head writes where the unembedding does not read: its full OV circuit is 0, all ties
    assert float(res.eigenvalue_copying[pl, ph]) == 0.0
    assert float(res.copying[pl, ph]) == 0.0 and float(res.copy_suppression[pl, ph]) == 0.0
    assert res.top_copying(1)[0][:2] == [il, ih]
    assert [m[:2] for m in res.members("copying")] == [[il, ih]] and res.members("copy_suppression") == []
    # what it reads is what it writes, direction by direction
    for d in range(3):
        t = res.tokens(il, ih, "OV", d)
        assert t["read+"] == t["write+"] and t["read-"] == t["write-"]
    assert res.ov_singular[il, ih, :64].allclose(torch.ones(64), atol=1e-4)


def test_head_circuits_result_table_plot_save(planted, tmp_path):
    res = head_circuits(planted, n_directions=2, top_k=3)
    L, H = 2, 2
    heads = res.to_frame()
    assert len(heads) == L * H and {"copying", "copy_suppression", "eigenvalue_copying", "positive_fraction"} <= set(
        heads.columns
    )
    toks = res.to_frame("tokens")
    assert len(toks) == 2 * 4 * L * H * 2 * 3  # circuits x sides x heads x directions x top_k
    with pytest.raises(ValueError):
        res.to_frame("nope")
    assert traces(res.plot())[0].type == "heatmap" and len(traces(res.plot("spectrum"))) == 2 * L * H
    h = res.headline(2)
    assert h["top_copying"][0]["layer"] == 1 and h["top_copying"][0]["head"] == 0
    assert h["copying_members"][0][:2] == [1, 0] and set(h["null_max"]) == {"copying", "copy_suppression"}
    json.dumps(h)
    path = res.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head_circuits.json", "head_circuits.safetensors"]
    back = HeadCircuitsResult.load(path)
    torch.testing.assert_close(back.copying, res.copying)
    torch.testing.assert_close(back.eigenvalue_copying, res.eigenvalue_copying)
    assert back.null_max == res.null_max
    assert back.tokens_str == res.tokens_str
    assert all(torch.equal(back.token_ids[c][s], res.token_ids[c][s]) for c in res.token_ids for s in res.token_ids[c])
    with pytest.raises(ValueError):
        head_circuits(planted, n_directions=0)


# ------------------------------------------------------------------------------------ SmolLM2
