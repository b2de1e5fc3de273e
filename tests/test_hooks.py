"""Invariants of the hook mechanism, checked on a tiny random model of every supported family."""

from __future__ import annotations

import pytest
import torch

import interplab
from interplab import Ablate, AddVector, Apply, Patch
from interplab.hooks import HookNameError

B, P = 2, 11


def toks(model, seed=0, b=B, p=P):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (b, p), generator=g)


def hf_forward(model, tokens, **kw):
    with torch.no_grad():
        if model.cfg.family == "toy":
            return model.hf(tokens)
        return model.hf(input_ids=tokens, use_cache=False, **kw)


def no_hooks_left(model):
    for (
        mod
    ) in model.hf.modules():  # (transformers keeps output-capturing hooks of its own; ours live in interplab.hooks)
        for fn in [*mod._forward_hooks.values(), *mod._forward_pre_hooks.values()]:
            assert not getattr(fn, "__module__", "").startswith("interplab"), f"hook left on {type(mod).__name__}"
        assert "_interplab_site" not in mod.__dict__
    if model.cfg.family != "toy":
        assert model.hf.config._attn_implementation == model.adapter.attn_implementation


def not_pattern(n):
    return "pattern" not in n


def test_plain_run_equals_hf_exactly(tiny):
    t = toks(tiny)
    ref = hf_forward(tiny, t).logits
    assert torch.equal(tiny.run(t).logits, ref)
    logits, cache = tiny.run(t, cache=not_pattern)  # every hook point but patterns: still SDPA, bit-identical
    assert torch.equal(logits, ref)
    assert len(cache) == len([n for n in tiny.hook_names() if not_pattern(n)])
    no_hooks_left(tiny)


def test_resid_post_matches_hidden_states(tiny):
    if tiny.cfg.family == "toy":
        pytest.skip("toy models have no HF hidden_states; covered by the decomposition test")
    t = toks(tiny)
    hs = hf_forward(tiny, t, output_hidden_states=True).hidden_states
    _, cache = tiny.run(t, cache=True)
    n = tiny.cfg.n_layers
    for layer in range(n - 1):
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], hs[layer + 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], hs[0], rtol=1e-5, atol=1e-5)
    # HF's last entry is after the final norm
    torch.testing.assert_close(cache["ln_final.hook_normalized"], hs[-1], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        normed = tiny.adapter.ln_final()(cache[f"blocks.{n - 1}.hook_resid_post"])
    torch.testing.assert_close(normed, hs[-1], rtol=1e-5, atol=1e-5)


def test_residual_decomposition(tiny):
    """resid_post = resid_pre + attn_out (+ mlp_out); resid_mid = resid_pre + attn_out; heads sum to attn_out."""
    t = toks(tiny)
    _, c = tiny.run(t, cache=not_pattern)
    cfg = tiny.cfg
    for layer in range(cfg.n_layers):
        pre, post = c[f"blocks.{layer}.hook_resid_pre"], c[f"blocks.{layer}.hook_resid_post"]
        attn = c[f"blocks.{layer}.hook_attn_out"]
        mlp = c[f"blocks.{layer}.hook_mlp_out"] if cfg.d_mlp else 0
        torch.testing.assert_close(pre + attn + mlp, post, rtol=1e-5, atol=1e-5)
        if f"blocks.{layer}.hook_resid_mid" in c:
            torch.testing.assert_close(c[f"blocks.{layer}.hook_resid_mid"], pre + attn, rtol=0, atol=0)
        heads = c[f"blocks.{layer}.attn.hook_result"].sum(dim=2) + tiny.b_O[layer]
        if cfg.family == "gemma3":  # the post-attention norm sits between the heads and the residual stream
            with torch.no_grad():
                heads = tiny.adapter.attn_out(layer)(heads)
        torch.testing.assert_close(heads, attn, rtol=1e-5, atol=1e-5)
        # shapes
        assert c[f"blocks.{layer}.attn.hook_z"].shape == (B, P, cfg.n_heads, cfg.d_head)
        for k in "qkv":
            assert c[f"blocks.{layer}.attn.hook_{k}"].shape == (B, P, cfg.n_heads, cfg.d_head)
        if cfg.d_mlp:
            assert c[f"blocks.{layer}.mlp.hook_post"].shape == (B, P, cfg.d_mlp)


def test_patterns_equal_hf_eager(tiny):
    t = toks(tiny)
    logits, cache = tiny.run(t, cache=lambda n: "pattern" in n)
    if tiny.cfg.family == "toy":
        # recompute from cached q, k (causal softmax) as the independent reference
        _, qk = tiny.run(t, cache=lambda n: n.endswith(("hook_q", "hook_k")))
        for layer in range(tiny.cfg.n_layers):
            q, k = qk[f"blocks.{layer}.attn.hook_q"], qk[f"blocks.{layer}.attn.hook_k"]
            s = torch.einsum("bqhe,bkhe->bhqk", q, k) / tiny.cfg.d_head**0.5
            s = s.masked_fill(~torch.ones(P, P, dtype=torch.bool).tril(), float("-inf"))
            torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], s.softmax(-1), rtol=1e-5, atol=1e-6)
        return
    impl = tiny.hf.config._attn_implementation
    tiny.hf.config._attn_implementation = "eager"
    try:
        ref = hf_forward(tiny, t, output_attentions=True)
    finally:
        tiny.hf.config._attn_implementation = impl
    for layer in range(tiny.cfg.n_layers):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pat.shape == (B, tiny.cfg.n_heads, P, P)
        torch.testing.assert_close(pat, ref.attentions[layer], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, ref.logits, rtol=0, atol=1e-5)


def test_qk_recompute_pattern(tiny):
    """hook_q/hook_k are exactly what enters the score: softmax(q.k * scale) reproduces the pattern."""
    if tiny.cfg.family in ("gemma3", "toy", "gpt_neo"):
        pytest.skip("gemma3 / gpt_neo use a sliding window (gpt_neo: tests/models/test_families.py); toy above")
    t = toks(tiny)
    _, c = tiny.run(t, cache=lambda n: n.endswith(("hook_q", "hook_k", "hook_pattern")))
    for layer in range(tiny.cfg.n_layers):
        q, k = c[f"blocks.{layer}.attn.hook_q"], c[f"blocks.{layer}.attn.hook_k"]
        s = torch.einsum("bqhe,bkhe->bhqk", q, k) * tiny.adapter.attn_score_scale(layer)
        s = s.masked_fill(~torch.ones(P, P, dtype=torch.bool).tril(), float("-inf"))
        torch.testing.assert_close(c[f"blocks.{layer}.attn.hook_pattern"], s.softmax(-1), rtol=1e-4, atol=1e-5)


def test_full_patch_restores_clean_and_none_changes_nothing(tiny):
    clean, corrupt = toks(tiny, 1), toks(tiny, 2)
    clean_logits, cc = tiny.run(clean, cache=True)
    corrupt_logits = tiny.run(corrupt).logits
    last = tiny.cfg.n_layers - 1
    for hook in [f"blocks.{last}.hook_resid_post", "ln_final.hook_normalized"]:
        out = tiny.run(corrupt, interventions=[Patch(hook, source=cc)]).logits
        torch.testing.assert_close(out, clean_logits, rtol=1e-5, atol=1e-5)
    # patch all heads' z at every layer, plus the MLP outputs -> clean run (attention-out path)
    ivs = []
    for layer in range(tiny.cfg.n_layers):
        ivs.append(Patch(f"blocks.{layer}.hook_attn_out", source=cc))
        if tiny.cfg.d_mlp:
            ivs.append(Patch(f"blocks.{layer}.hook_mlp_out", source=cc))
    out = tiny.run(corrupt, interventions=ivs + [Patch("hook_embed", source=cc)]).logits
    torch.testing.assert_close(out, clean_logits, rtol=1e-4, atol=1e-4)
    # patching a position subset that is empty changes nothing
    out = tiny.run(corrupt, interventions=[Patch("blocks.0.hook_resid_post", source=cc, positions=[])]).logits
    assert torch.equal(out, corrupt_logits)
    no_hooks_left(tiny)


def test_head_interventions_agree_across_points(tiny):
    """Zeroing head h's z, its result, or its q-side value v gives the same effect where the maths says so."""
    t = toks(tiny)
    layer, head = tiny.cfg.n_layers - 1, 1
    via_z = tiny.run(t, interventions=[Ablate(f"blocks.{layer}.attn.hook_z", heads=head)]).logits
    via_result = tiny.run(t, interventions=[Ablate(f"blocks.{layer}.attn.hook_result", heads=head)]).logits
    torch.testing.assert_close(via_z, via_result, rtol=1e-5, atol=1e-5)
    via_v = tiny.run(t, interventions=[Ablate(f"blocks.{layer}.attn.hook_v", heads=head)]).logits
    torch.testing.assert_close(via_z, via_v, rtol=1e-5, atol=1e-5)  # pattern @ 0 = 0, so z_h = 0
    assert not torch.allclose(via_z, tiny.run(t).logits)
    # patching one head's z from another run only changes that head
    src = toks(tiny, 5)
    _, sc = tiny.run(src, cache=[f"blocks.{layer}.attn.hook_z"])
    _, pc = tiny.run(
        t,
        cache=[f"blocks.{layer}.attn.hook_z"],
        interventions=[Patch(f"blocks.{layer}.attn.hook_z", source=sc, heads=[head], positions=[2, -1])],
    )
    z = pc[f"blocks.{layer}.attn.hook_z"]
    torch.testing.assert_close(z[:, [2, P - 1], head], sc[f"blocks.{layer}.attn.hook_z"][:, [2, P - 1], head])
    _, oc = tiny.run(t, cache=[f"blocks.{layer}.attn.hook_z"])
    mask = torch.ones(P, tiny.cfg.n_heads, dtype=torch.bool)
    mask[[2, P - 1], head] = False
    assert torch.equal(z[:, mask], oc[f"blocks.{layer}.attn.hook_z"][:, mask])


def test_qkv_pattern_patching_restores(tiny):
    clean, corrupt = toks(tiny, 1), toks(tiny, 2)
    # patterns only where the run is eager: compare with the eager clean run
    _clean_logits, cc = tiny.run(clean, cache=True)
    layer = 0
    # q, k, v of every head at layer 0 plus everything downstream of the residual stream being clean:
    # patching resid_pre of layer 1 and the kernel inputs of layer 0 reproduces the clean run.
    ivs = [Patch(f"blocks.{layer}.attn.hook_{k}", source=cc) for k in "qkv"]
    _, pc = tiny.run(
        corrupt, cache=[f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.attn.hook_pattern"], interventions=ivs
    )
    torch.testing.assert_close(
        pc[f"blocks.{layer}.attn.hook_z"], cc[f"blocks.{layer}.attn.hook_z"], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        pc[f"blocks.{layer}.attn.hook_pattern"], cc[f"blocks.{layer}.attn.hook_pattern"], rtol=1e-5, atol=1e-6
    )
    # patching the pattern and v of all heads reproduces z too
    ivs = [Patch(f"blocks.{layer}.attn.hook_pattern", source=cc), Patch(f"blocks.{layer}.attn.hook_v", source=cc)]
    _, pc = tiny.run(corrupt, cache=[f"blocks.{layer}.attn.hook_z"], interventions=ivs)
    torch.testing.assert_close(
        pc[f"blocks.{layer}.attn.hook_z"], cc[f"blocks.{layer}.attn.hook_z"], rtol=1e-5, atol=1e-5
    )
    no_hooks_left(tiny)


def test_resid_mid_patch(tiny):
    if "blocks.0.hook_resid_mid" not in tiny.hook_names():
        pytest.skip("no resid_mid in parallel-residual / attention-only models")
    clean, corrupt = toks(tiny, 1), toks(tiny, 2)
    _clean_logits, cc = tiny.run(clean, cache=["blocks.1.hook_resid_mid"])
    _, pc = tiny.run(
        corrupt,
        cache=["blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"],
        interventions=[Patch("blocks.1.hook_resid_mid", source=cc)],
    )
    torch.testing.assert_close(pc["blocks.1.hook_resid_mid"], cc["blocks.1.hook_resid_mid"])


def test_add_vector_equals_embedding_shift(tiny):
    t = toks(tiny)
    v = torch.randn(tiny.cfg.d_model) * 0.5
    out = tiny.run(t, interventions=[AddVector("hook_embed", vector=v)]).logits
    out2 = tiny.run(t, interventions=[Apply("hook_embed", fn=lambda x, ctx: x + v)]).logits
    torch.testing.assert_close(out, out2)
    _, c0 = tiny.run(t, cache=["hook_embed"])
    _, c1 = tiny.run(
        t, cache=["hook_embed"], interventions=[AddVector("hook_embed", vector=v, positions=[0], scale=2.0)]
    )
    torch.testing.assert_close(c1["hook_embed"][:, 0], c0["hook_embed"][:, 0] + 2 * v)
    torch.testing.assert_close(c1["hook_embed"][:, 1:], c0["hook_embed"][:, 1:])


def test_apply_acts_only_on_selected_positions_and_heads(tiny_dirs):
    model = interplab.load(tiny_dirs["llama"])
    t = toks(model)
    z = "blocks.0.attn.hook_z"
    _, c0 = model.run(t, cache=["hook_embed", z])
    _, c1 = model.run(
        t,
        cache=["hook_embed", z],
        interventions=[
            Apply("hook_embed", fn=lambda x, ctx: x + 1, positions=slice(1, None)),
            Apply(z, fn=lambda x, ctx: x * 0 + 3, heads=[1]),
        ],
    )
    torch.testing.assert_close(c1["hook_embed"][:, 0], c0["hook_embed"][:, 0], rtol=0, atol=0)
    torch.testing.assert_close(c1["hook_embed"][:, 1:], c0["hook_embed"][:, 1:] + 1, rtol=0, atol=0)
    assert torch.all(c1[z][:, :, 1] == 3) and not torch.any(c1[z][:, :, [0, 2, 3]] == 3)


def test_mean_and_resample_ablation(tiny):
    t = toks(tiny)
    ref = toks(tiny, 9, b=6)
    hook = "blocks.0.hook_attn_out"
    _, rc = tiny.run(ref, cache=[hook])
    _, c = tiny.run(t, cache=[hook], interventions=[Ablate(hook, how="mean", reference=rc)])
    torch.testing.assert_close(c[hook], rc[hook].mean(0, keepdim=True).expand(B, -1, -1))
    _, c = tiny.run(t, cache=[hook], interventions=[Ablate(hook, how="mean", reference=rc, over=("batch", "pos"))])
    torch.testing.assert_close(c[hook][0, 3], rc[hook].mean((0, 1)))
    _, c1 = tiny.run(t, cache=[hook], interventions=[Ablate(hook, how="resample", reference=rc, seed=3)])
    _, c2 = tiny.run(t, cache=[hook], interventions=[Ablate(hook, how="resample", reference=rc, seed=3)])
    assert torch.equal(c1[hook], c2[hook])
    for b in range(B):  # each prompt took some reference prompt's activation
        assert any(torch.equal(c1[hook][b], rc[hook][j]) for j in range(6))
    # per-prompt positions (e.g. each prompt's own END token)
    pos = torch.tensor([3, 7])
    _, c = tiny.run(t, cache=[hook], interventions=[Ablate(hook, positions=pos)])
    assert torch.all(c[hook][0, 3] == 0) and torch.all(c[hook][1, 7] == 0) and not torch.all(c[hook][0, 7] == 0)


def test_neuron_ablation(tiny):
    if not tiny.cfg.d_mlp:
        pytest.skip("attention-only")
    t = toks(tiny)
    _, c = tiny.run(
        t, cache=["blocks.0.mlp.hook_post"], interventions=[Ablate("blocks.0.mlp.hook_post", neurons=[0, 5])]
    )
    assert torch.all(c["blocks.0.mlp.hook_post"][..., [0, 5]] == 0)


def test_exception_leaves_no_hooks(tiny):
    t = toks(tiny)

    def boom(x, ctx):
        raise RuntimeError("boom")

    for hook in [
        "blocks.1.attn.hook_pattern",
        "blocks.1.attn.hook_z",
        "blocks.0.hook_resid_post",
        "blocks.1.attn.hook_k",
    ]:
        with pytest.raises(RuntimeError, match="boom"):
            tiny.run(t, cache=True, interventions=[Apply(hook, fn=boom)])
        no_hooks_left(tiny)
    assert torch.equal(tiny.run(t).logits, hf_forward(tiny, t).logits)


def test_cache_has_no_graph_unless_grad(tiny):
    t = toks(tiny)
    _, c = tiny.run(t, cache=True)
    for name in c:
        assert c[name].grad_fn is None and not c[name].requires_grad, name
    logits, c = tiny.run(t, cache=["blocks.0.hook_resid_post"], grad=True)
    assert logits.requires_grad and c["blocks.0.hook_resid_post"].requires_grad


def test_weights_shapes_and_reconstruct_z(tiny):
    """W_V / W_O read per head reproduce the cached v and result (checks the weight slicing, incl. GQA)."""
    cfg = tiny.cfg
    L, Hh, D, E = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
    assert tiny.W_Q.shape == tiny.W_K.shape == tiny.W_V.shape == (L, Hh, D, E)
    assert tiny.W_O.shape == (L, Hh, E, D)
    assert tiny.W_E.shape == (cfg.d_vocab, D) and tiny.W_U.shape == (D, cfg.d_vocab)
    if cfg.d_mlp:
        assert tiny.W_in.shape == (L, D, cfg.d_mlp) and tiny.W_out.shape == (L, cfg.d_mlp, D)
    t = toks(tiny)
    names = ["blocks.0.attn.hook_v", "blocks.0.hook_resid_pre"]
    _, c = tiny.run(t, cache=names)
    with torch.no_grad():
        x = tiny.adapter.attn_input_norm(0)(c["blocks.0.hook_resid_pre"])
        v = torch.einsum("bpd,hde->bphe", x, tiny.W_V[0]) + tiny.b_V[0]
    torch.testing.assert_close(c["blocks.0.attn.hook_v"], v, rtol=1e-4, atol=1e-5)


def test_bad_inputs(tiny):
    t = toks(tiny)
    with pytest.raises(HookNameError, match="blocks.0.hook_resid_post"):
        tiny.run(t, cache=["blocks.0.hook_resid_pots"])
    with pytest.raises(HookNameError, match="Valid names"):
        tiny.run(t, interventions=[Ablate("blocks.99.hook_resid_post")])
    with pytest.raises(ValueError, match="n_ctx"):
        tiny.run(torch.zeros(1, tiny.cfg.n_ctx + 1, dtype=torch.long))
    no_hooks_left(tiny)


def test_patch_shape_error_names_both(tiny):
    t = toks(tiny)
    bad = torch.zeros(3, P, tiny.cfg.d_model)
    with pytest.raises(ValueError) as e:
        tiny.run(t, interventions=[Patch("blocks.0.hook_resid_post", source=bad)])
    assert f"(3, {P}, {tiny.cfg.d_model})" in str(e.value) and f"(2, {P}, {tiny.cfg.d_model})" in str(e.value)
    no_hooks_left(tiny)


def test_hooks_context_for_generate(tiny_dirs):
    model = interplab.load(tiny_dirs["llama"])
    t = toks(model, b=1, p=5)
    plain = model.generate(t, max_new_tokens=4)
    big = torch.zeros(model.cfg.d_model)
    big[0] = 1e4
    steered = model.generate(t, max_new_tokens=4, interventions=[AddVector("ln_final.hook_normalized", vector=big)])
    assert isinstance(plain, torch.Tensor) and isinstance(steered, torch.Tensor)  # no tokenizer: token ids
    assert not torch.equal(plain, steered)
    with model.hooks(cache=["blocks.0.hook_resid_post"]) as c:
        model.hf(t)
    assert c["blocks.0.hook_resid_post"].shape == (1, 5, model.cfg.d_model)
    no_hooks_left(model)


def test_padded_batch_matches_unpadded(tiny):
    """Right padding with an attention mask: valid positions equal the unpadded run, patterns included."""
    full = toks(tiny, 4, b=1, p=9)
    short = full[:, :6]
    batch = torch.cat([full, torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1)])
    mask = torch.ones_like(batch)
    mask[1, 6:] = 0
    logits, c = tiny.run(batch, attention_mask=mask, cache=lambda n: n.endswith(("hook_pattern", "hook_resid_post")))
    ref_logits, rc = tiny.run(short, cache=lambda n: n.endswith(("hook_pattern", "hook_resid_post")))
    torch.testing.assert_close(logits[1, :6], ref_logits[0], rtol=1e-4, atol=1e-4)
    last = tiny.cfg.n_layers - 1
    torch.testing.assert_close(
        c[f"blocks.{last}.attn.hook_pattern"][1, :, :6, :6],
        rc[f"blocks.{last}.attn.hook_pattern"][0],
        rtol=1e-4,
        atol=1e-5,
    )
    assert torch.all(c[f"blocks.{last}.attn.hook_pattern"][1, :, :, 6:] == 0)


def test_embed_and_unembed_weights(tiny):
    """W_E[tokens] is hook_embed (Gemma's scale folded in); ln_final.hook_normalized @ W_U gives the logits."""
    t = toks(tiny)
    logits, c = tiny.run(t, cache=["hook_embed", "ln_final.hook_normalized"])
    torch.testing.assert_close(c["hook_embed"], tiny.W_E[t], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c["ln_final.hook_normalized"] @ tiny.W_U, logits, rtol=1e-4, atol=1e-4)


def test_start_and_stop_at_layer(tiny):
    """Splitting the forward at any layer reproduces the full run (the basis of fast ablation sweeps)."""
    t = toks(tiny)
    n = tiny.cfg.n_layers
    full, c = tiny.run(t, cache=lambda name: name.endswith(("hook_resid_pre", "hook_resid_post")))
    for layer in range(1, n):
        resid, sc = tiny.run(t, stop_at_layer=layer, cache=lambda name: "hook_resid_post" in name)
        torch.testing.assert_close(resid, c[f"blocks.{layer}.hook_resid_pre"], rtol=0, atol=0)
        assert f"blocks.{layer}.hook_resid_post" not in sc and f"blocks.{layer - 1}.hook_resid_post" in sc
        logits, rc = tiny.run(resid, start_at_layer=layer, cache=[f"blocks.{n - 1}.hook_resid_post"])
        torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            rc[f"blocks.{n - 1}.hook_resid_post"], c[f"blocks.{n - 1}.hook_resid_post"], rtol=1e-5, atol=1e-5
        )
    # an ablation applied in the second half equals the same ablation in a full run
    iv = [Ablate(f"blocks.{n - 1}.attn.hook_z", heads=[0])]
    resid = tiny.run(t, stop_at_layer=n - 1).logits
    torch.testing.assert_close(
        tiny.run(resid, start_at_layer=n - 1, interventions=iv).logits,
        tiny.run(t, interventions=iv).logits,
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="residual stream"):
        tiny.run(t, start_at_layer=1)
    no_hooks_left(tiny)
    assert isinstance(getattr(*tiny.adapter.layers_slot()), torch.nn.ModuleList)
    assert all(not (m is None) and type(m).__name__ != "_Skip" for m in getattr(*tiny.adapter.layers_slot()))
