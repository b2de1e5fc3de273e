"""OPT and GPT-Neo (the IOI-replication families): the hook-point invariants against Hugging Face on tiny random
configs, per-head weights consistent with the forward, OPT's variants refused by name, and analyses end to end.

The invariants every family shares also run on these two through ``tiny`` (tests/conftest.py ``FAMILIES``); this
file checks what is particular to them: GPT-Neo's local attention and unscaled score, OPT's pre-scaled query
and its MLP on flattened tokens."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import interplab
from interplab import Ablate, Apply, Patch
from interplab.hooks import HookSession

pytestmark = pytest.mark.usefixtures("one_thread")

NEW = ["opt", "gpt_neo"]
B, P = 2, 11  # P > GPT-Neo's window (4): the local layers mask something


@pytest.fixture(scope="module", params=NEW)
def fam(request, tiny_dirs):
    return interplab.load(tiny_dirs[request.param])


def toks(model, seed=0, b=B, p=P):
    return torch.randint(0, model.cfg.d_vocab, (b, p), generator=torch.Generator().manual_seed(seed))


def hf(model, tokens, **kw):
    with torch.no_grad():
        return model.hf(input_ids=tokens, use_cache=False, **kw)


def eager_reference(model, tokens):
    """HF's own eager forward with attentions (GPT-Neo is eager already; OPT runs SDPA by default)."""
    impl = model.hf.config._attn_implementation
    model.hf.config._attn_implementation = "eager"
    try:
        return hf(model, tokens, output_attentions=True, output_hidden_states=True)
    finally:
        model.hf.config._attn_implementation = impl


def keep_mask(model, layer):
    """[q, k] True where layer ``layer`` may attend: causal, and within the window on GPT-Neo's local layers."""
    causal = torch.ones(P, P, dtype=torch.bool).tril()
    if model.cfg.family == "gpt_neo" and model.hf.config.attention_layers[layer] == "local":
        causal &= ~torch.ones(P, P, dtype=torch.bool).tril(-model.hf.config.window_size)
    return causal


def no_hooks_left(model):
    for mod in model.hf.modules():
        for fn in [*mod._forward_hooks.values(), *mod._forward_pre_hooks.values()]:
            assert not getattr(fn, "__module__", "").startswith("interplab"), type(mod).__name__
        assert "_interplab_site" not in mod.__dict__ and "_attn" not in mod.__dict__
    assert model.hf.config._attn_implementation == model.adapter.attn_implementation


def test_config_read_from_the_saved_directory(fam):
    c, h = fam.cfg, fam.hf.config
    assert (c.n_layers, c.n_heads, c.d_model, c.d_head, c.d_mlp, c.d_vocab) == (3, 4, 32, 8, 48, 97)
    assert c.normalization == "LN" and c.positional == "learned" and not c.parallel_attn_mlp
    assert c.act_fn == h.activation_function  # OPT relu, GPT-Neo gelu_new
    assert h._attn_implementation == ("eager" if c.family == "gpt_neo" else "sdpa")


def test_logits_hidden_states_and_patterns_equal_hf(fam):
    """No intervention: HF's logits bit for bit (every non-pattern point cached too); resid_post[L] =
    hidden_states[L+1]; the last layer through the final norm = HF's last entry; patterns = HF eager
    attentions, GPT-Neo's local layers included (zero outside the window)."""
    t = toks(fam)
    plain = hf(fam, t).logits
    logits, c = fam.run(t, cache=lambda n: "pattern" not in n)
    assert torch.equal(logits, plain) and torch.equal(fam.run(t).logits, plain)
    ref = eager_reference(fam, t)
    hs, n = ref.hidden_states, fam.cfg.n_layers
    scale = max(float(h.abs().max()) for h in hs)
    atol = 1e-6 * scale  # relative to the largest residual entry
    torch.testing.assert_close(c["blocks.0.hook_resid_pre"], hs[0], rtol=1e-5, atol=atol)
    for layer in range(n - 1):
        torch.testing.assert_close(c[f"blocks.{layer}.hook_resid_post"], hs[layer + 1], rtol=1e-5, atol=atol)
    torch.testing.assert_close(c["ln_final.hook_normalized"], hs[-1], rtol=1e-5, atol=atol)
    with torch.no_grad():
        torch.testing.assert_close(
            fam.adapter.ln_final()(c[f"blocks.{n - 1}.hook_resid_post"]), hs[-1], rtol=1e-5, atol=atol
        )
    logits, pc = fam.run(t, cache=lambda name: "pattern" in name)
    for layer in range(n):
        pat = pc[f"blocks.{layer}.attn.hook_pattern"]
        torch.testing.assert_close(pat, ref.attentions[layer], rtol=0, atol=1e-6)
        assert torch.all(pat[..., ~keep_mask(fam, layer)] == 0)
    if fam.cfg.family == "gpt_neo":
        assert not keep_mask(fam, 1).equal(torch.ones(P, P, dtype=torch.bool).tril())  # a real local layer
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)
    no_hooks_left(fam)


def test_heads_recomputed_from_weights_and_pattern(fam):
    """hook_q / hook_v = ln(x) W + b; softmax(q.k * attn_score_scale + mask) = pattern; pattern @ v @ W_O[h] =
    hook_result[h]; the heads plus b_O sum to attn_out; hook_post @ W_out + its bias = mlp_out."""
    t = toks(fam)
    _, c = fam.run(t, cache=True)
    ad = fam.adapter
    for layer in range(fam.cfg.n_layers):

        def get(kind: str, _l: int = layer) -> torch.Tensor:
            return c[f"blocks.{_l}.{kind}"]

        with torch.no_grad():
            x = ad.attn_input_norm(layer)(get("hook_resid_pre"))
            q = torch.einsum("bpd,hde->bphe", x, fam.W_Q[layer]) + fam.b_Q[layer]
            v = torch.einsum("bpd,hde->bphe", x, fam.W_V[layer]) + fam.b_V[layer]
        torch.testing.assert_close(get("attn.hook_q"), q, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(get("attn.hook_v"), v, rtol=1e-4, atol=1e-5)
        s = torch.einsum("bqhe,bkhe->bhqk", get("attn.hook_q"), get("attn.hook_k")) * ad.attn_score_scale(layer)
        s = s.masked_fill(~keep_mask(fam, layer), float("-inf"))
        torch.testing.assert_close(get("attn.hook_pattern"), s.softmax(-1), rtol=1e-4, atol=1e-5)
        z = torch.einsum("bhqk,bkhe->bqhe", get("attn.hook_pattern"), v)
        torch.testing.assert_close(get("attn.hook_z"), z, rtol=1e-4, atol=1e-5)
        result = torch.einsum("bqhe,hed->bqhd", z, fam.W_O[layer])
        torch.testing.assert_close(get("attn.hook_result"), result, rtol=1e-4, atol=1e-5)
        heads = get("attn.hook_result").sum(2) + fam.b_O[layer]
        torch.testing.assert_close(heads, get("hook_attn_out"), rtol=1e-5, atol=1e-5)
        assert get("mlp.hook_post").shape == (B, P, fam.cfg.d_mlp)  # OPT's flattened MLP seen per position
        out_bias = ad.neurons(layer).bias
        torch.testing.assert_close(get("mlp.hook_post") @ fam.W_out[layer] + out_bias, get("hook_mlp_out"))
    assert fam.adapter.attn_score_scale(0) == (1.0 if fam.cfg.family == "gpt_neo" else fam.cfg.d_head**-0.5)


def test_interventions_change_logits_and_no_hook_survives_an_error(fam):
    clean, corrupt = toks(fam, 1), toks(fam, 2)
    clean_logits, cc = fam.run(clean, cache=True)
    corrupt_logits = fam.run(corrupt).logits
    patched = fam.run(corrupt, interventions=[Patch("blocks.1.hook_resid_post", source=cc)]).logits
    torch.testing.assert_close(patched, clean_logits, rtol=1e-5, atol=1e-5)
    for iv in [
        Ablate("blocks.2.attn.hook_z", heads=[1]),
        Ablate("blocks.0.mlp.hook_post", neurons=[0, 3]),
        Patch("blocks.1.attn.hook_q", source=cc),
        Patch("blocks.2.attn.hook_pattern", source=cc),
    ]:
        assert not torch.allclose(fam.run(corrupt, interventions=[iv]).logits, corrupt_logits), iv.hook
    # a q patch round-trips: patching the run's own q (OPT: divided by and multiplied back by its pre-scale)
    own = fam.run(corrupt, cache=["blocks.1.attn.hook_q"]).cache
    again = fam.run(corrupt, interventions=[Patch("blocks.1.attn.hook_q", source=own)]).logits
    torch.testing.assert_close(again, corrupt_logits, rtol=1e-5, atol=1e-5)

    def boom(x, ctx):
        raise RuntimeError("boom")

    for hook in [
        "blocks.1.attn.hook_pattern",
        "blocks.1.attn.hook_k",
        "blocks.0.mlp.hook_post",
        "blocks.2.hook_mlp_out",
    ]:
        with pytest.raises(RuntimeError, match="boom"):
            fam.run(corrupt, cache=True, interventions=[Apply(hook, fn=boom)])
        no_hooks_left(fam)
    assert torch.equal(fam.run(corrupt).logits, hf(fam, corrupt).logits)
    with HookSession(fam, ["blocks.0.attn.hook_pattern"]):
        assert "_attn" in fam.adapter.attn(0).__dict__ or "_interplab_site" in fam.adapter.attn(0).__dict__
    no_hooks_left(fam)


def test_split_forward_reproduces_the_full_run(fam):
    """start_at_layer / stop_at_layer (the engine under patching and ablation): GPT-Neo's layers return tuples."""
    t = toks(fam)
    full = fam.run(t).logits
    for layer in range(1, fam.cfg.n_layers):
        resid = fam.run(t, stop_at_layer=layer).logits
        torch.testing.assert_close(fam.run(resid, start_at_layer=layer).logits, full, rtol=1e-5, atol=1e-5)


def _opt_dir(tmp_path, **kw):
    import transformers as T

    cfg = T.OPTConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=48, **kw)
    T.OPTForCausalLM(cfg).save_pretrained(str(tmp_path))
    return cfg, str(tmp_path)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"do_layer_norm_before": False}, "post-LN"), ({"word_embed_proj_dim": 16}, "project_in/project_out")],
)
def test_opt_350m_variants_are_refused_by_name(tmp_path, kw, match):
    import transformers as T

    from interplab.models.model import from_hf

    cfg, d = _opt_dir(tmp_path, **kw)
    with pytest.raises(ValueError, match=match) as e:
        interplab.load(d)
    assert "opt-125m" in str(e.value)
    with pytest.raises(ValueError, match=match):
        from_hf(T.OPTForCausalLM(cfg))


def test_folded_weights_on_both_families(fam):
    """Norm folding (LayerNorm with bias, as GPT-2): the folded W_V gives hook_v up to the norm's scale and bias."""
    from interplab.models.folding import folded_weights, norm_info

    fw = folded_weights(fam)
    assert "LN centring" in fw.notes[0]
    t = toks(fam)
    _, c = fam.run(t, cache=["blocks.1.hook_resid_pre", "blocks.1.attn.hook_v"])
    x = c["blocks.1.hook_resid_pre"]
    ni = norm_info(fam.adapter.attn_input_norm(1))
    assert ni is not None and ni.kind == "LN" and ni.bias is not None
    v = torch.einsum("bpd,hde->bphe", x, fw.W_V[1]) / ni.scale(x)[..., None]
    v = v + torch.einsum("d,hde->he", ni.bias, fam.W_V[1]) + fam.b_V[1]
    torch.testing.assert_close(v, c["blocks.1.attn.hook_v"], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ analyses end to end
@pytest.fixture(scope="module")
def tokenized_dirs(tmp_path_factory):
    """OPT and GPT-Neo with a real (tiny BPE) tokenizer: the tokenizer of the tiny tokenized Llama."""
    import transformers as T
    from tiny_tokenized import make_tiny_tokenized_model, task_text

    src = make_tiny_tokenized_model(tmp_path_factory.mktemp("tok_src"), vocab_size=1200, extra_text=task_text())
    tok = T.AutoTokenizer.from_pretrained(src)
    common: dict[str, Any] = {"vocab_size": len(tok), "hidden_size": 32, "max_position_embeddings": 64}
    configs = {
        "opt": (
            T.OPTConfig(num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, pad_token_id=0, **common),
            T.OPTForCausalLM,
        ),
        "gpt_neo": (
            T.GPTNeoConfig(
                num_layers=2, num_heads=4, window_size=4, attention_types=[[["global", "local"], 1]], **common
            ),
            T.GPTNeoForCausalLM,
        ),
    }
    out = {}
    for fam, (cfg, cls) in configs.items():
        torch.manual_seed(0)
        d = tmp_path_factory.mktemp(f"tok_{fam}")
        cls(cfg).save_pretrained(str(d))
        tok.save_pretrained(str(d))
        out[fam] = str(d)
    return out


@pytest.mark.parametrize("family", NEW)
def test_lens_heads_and_patching_cli_run_end_to_end(family, tokenized_dirs, tmp_path):
    from interplab.analyses.observational.heads import head_scores
    from interplab.analyses.observational.lens import logit_lens
    from interplab.cli import app

    model = interplab.load(tokenized_dirs[family])
    assert model.tokenizer is not None and model.cfg.family == family
    text = "When Mary and John went to the store, John gave a drink to"
    lens = logit_lens(model, text, top_k=3)
    logits = model.run(text).logits[0]
    torch.testing.assert_close(lens.top_probs[-1], logits.softmax(-1).topk(3, -1).values, atol=1e-5, rtol=0)
    heads = head_scores(model, n_seqs=2, batch=2, seq_len=8, text_len=16, n_null_rotations=2)
    assert all(torch.isfinite(s).all() for s in heads.scores.values())
    args = ["patch", "--model", tokenized_dirs[family], "--clean", text]
    args += ["--corrupt", text.replace("Mary and John", "John and Mary").replace("John gave", "Mary gave")]
    r = CliRunner().invoke(
        app, [*args, "--answer", " Mary", "--wrong", " John", "--path", "--json", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["n_prompts"] == 1 and "path_patching_top" in h
    assert (tmp_path / "report.html").exists()


def test_gpt_neo_in_bfloat16_keeps_its_float32_score(tiny_dirs):
    """GPT-Neo computes its score from q and k upcast to float32: the wrapped kernel does the same, so a bf16
    model with every hook point cached (patterns included) still returns HF's logits and attentions exactly."""
    model = interplab.load(tiny_dirs["gpt_neo"], dtype=torch.bfloat16)
    t = toks(model)
    ref = hf(model, t, output_attentions=True)
    logits, c = model.run(t, cache=True)
    assert torch.equal(logits, ref.logits)
    for layer in range(model.cfg.n_layers):
        assert torch.equal(c[f"blocks.{layer}.attn.hook_pattern"], ref.attentions[layer])
    assert c["blocks.0.attn.hook_q"].dtype == torch.float32 and c["blocks.0.attn.hook_v"].dtype == torch.bfloat16


def test_hub_ids_load_with_the_family_kernel_and_refuse_post_ln_opt(tiny_dirs, tmp_path, monkeypatch):
    """Loading by hub id stays real code (here the hub is a local directory): GPT-Neo comes up eager, OPT with
    SDPA, and a post-LN OPT is refused by name once its config is read."""
    import transformers

    orig = transformers.AutoModelForCausalLM.from_pretrained
    where = {"org/neo": tiny_dirs["gpt_neo"], "org/opt": tiny_dirs["opt"]}
    where["org/opt-post-ln"] = _opt_dir(tmp_path, do_layer_norm_before=False)[1]
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda n, **kw: orig(where[n], **kw))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda name, **kw: None)
    neo, opt = interplab.load("org/neo"), interplab.load("org/opt")
    assert (neo.cfg.family, neo.hf.config._attn_implementation) == ("gpt_neo", "eager")
    assert (opt.cfg.family, opt.hf.config._attn_implementation) == ("opt", "sdpa")
    with pytest.raises(ValueError, match="post-LN"):
        interplab.load("org/opt-post-ln")
