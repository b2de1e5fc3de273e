"""Direct logit attribution (interplab.analyses.observational.dla): the components sum to the model's own
logit difference on every family (RMSNorm, LayerNorm, Gemma's sandwich norms and soft-cap), per-head
terms sum to attn_out, the frozen final norm is the real one at the final residual, and the planted
induction head carries the prediction."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from plotly_traces import traces
from tiny_tokenized import gemma3_softcap_config, make_tiny_tokenized_model

import interplab
from interplab.analyses.observational.dla import DLAResult, apply_final_norm_to_stack, direct_logit_attribution
from interplab.models.folding import norm_info
from interplab.models.planted import INDUCTION_HEAD, induction_model

TOKENS = torch.tensor([3, 14, 15, 9, 2, 6, 5, 35, 8, 9])
IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_tokenized_dla")))


def _check_sums(res: DLAResult, rtol: float = 1e-4) -> None:
    assert res.total == pytest.approx(res.logit_diff_precap, rel=rtol, abs=1e-6)
    torch.testing.assert_close(res.heads.sum(-1) + res.attn_bias, res.attn, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("position", [-1, 4])
def test_components_sum_to_logit_diff(tiny, position):
    res = direct_logit_attribution(tiny, TOKENS, answer=7, distractor=11, position=position)
    _check_sums(res)
    logits = tiny.run(TOKENS[None]).logits[0, position]
    assert res.logit_diff == pytest.approx(float(logits[7] - logits[11]), abs=1e-6)
    assert res.logit_diff_precap == pytest.approx(res.logit_diff, rel=1e-5, abs=1e-6)  # no soft-cap here
    assert res.position == position % len(TOKENS)
    # a single answer (no distractor): the raw logit
    single = direct_logit_attribution(tiny, TOKENS, answer=7, position=position)
    _check_sums(single)
    assert single.logit_diff == pytest.approx(float(logits[7]), abs=1e-6)
    assert single.distractor is None and single.metric == f"logit({single.answer!r})"
    assert res.settings["has_mlp"] == (tiny.cfg.d_mlp > 0)
    assert (res.pos_embed is not None) == ("hook_pos_embed" in tiny.hook_names())


def test_frozen_final_norm_is_the_real_norm(tiny):
    """Splitting the final residual into parts and passing each through the frozen norm, the parts
    (plus the norm's bias) add up to the norm of the whole: what makes DLA sum exactly."""
    _, cache = tiny.run(
        TOKENS[None], cache=[f"blocks.{tiny.cfg.n_layers - 1}.hook_resid_post", "ln_final.hook_normalized"]
    )
    x = cache[f"blocks.{tiny.cfg.n_layers - 1}.hook_resid_post"][0, -1].double()
    g = torch.Generator().manual_seed(0)
    parts = torch.randn(5, x.shape[-1], generator=g, dtype=torch.float64) * x.abs().mean()
    parts = torch.cat([parts, (x - parts.sum(0))[None]])  # six parts summing to x
    out = apply_final_norm_to_stack(tiny, parts, x).sum(0)
    ni = norm_info(tiny.adapter.ln_final())
    assert ni is not None  # the final norm is a norm module
    if ni.bias is not None:
        out = out + ni.bias
    torch.testing.assert_close(out.float(), cache["ln_final.hook_normalized"][0, -1], rtol=1e-4, atol=1e-5)


def test_gemma_softcap_and_sandwich_norms():
    """Gemma 3 with a final-logit soft-cap: the components sum to the pre-cap difference, and the
    model's (capped) difference is tanh(precap / c) * c per logit."""
    import transformers as T

    from interplab.models.model import from_hf

    torch.manual_seed(0)
    cfg = gemma3_softcap_config()
    hf = T.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    model = from_hf(hf, name="gemma3-softcap")
    res = direct_logit_attribution(model, TOKENS, answer=7, distractor=11)
    _check_sums(res)
    assert res.settings["final_logit_softcapping"] == 0.5 and res.settings["post_attention_norm_frozen"]
    _, cache = model.run(TOKENS[None], cache=["ln_final.hook_normalized"])
    with torch.no_grad():
        raw = model.adapter.unembed()(cache["ln_final.hook_normalized"][0, -1])
    capped = torch.tanh(raw / 0.5) * 0.5
    assert res.logit_diff == pytest.approx(float(capped[7] - capped[11]), abs=1e-5)
    assert res.logit_diff_precap == pytest.approx(float(raw[7] - raw[11]), rel=1e-5)
    assert abs(res.logit_diff - res.logit_diff_precap) > 1e-3  # the cap is active and documented


def test_planted_induction_head_carries_the_prediction():
    model = induction_model()
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 64, (12,), generator=g)
    tokens = torch.cat([seq, seq[:6]])  # the model should predict seq[6]
    res = direct_logit_attribution(model, tokens, answer=int(seq[6]), distractor=int(seq[7]))
    _check_sums(res)
    assert res.top_heads(1)[0][:2] == list(INDUCTION_HEAD)
    il, ih = INDUCTION_HEAD
    assert float(res.heads[il, ih]) > 0.9 * res.logit_diff > 0
    assert res.embed == pytest.approx(0.0, abs=1e-6)  # the unembedding reads only the output block


def test_text_answers_and_errors(tok_model):
    res = direct_logit_attribution(tok_model, IOI, answer=" Mary", distractor=" John")
    _check_sums(res)
    ids = tok_model.tokenizer(" Mary", add_special_tokens=False)["input_ids"]
    assert res.answer_id == ids[0] and res.settings["answer_n_tokens"] == len(ids)
    assert res.str_tokens == tok_model.to_str_tokens(IOI)
    with pytest.raises(IndexError):
        direct_logit_attribution(tok_model, IOI, answer=" Mary", position=100)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        direct_logit_attribution(tok_model, IOI, answer=10**7)
    with pytest.raises(ValueError, match="one prompt"):
        direct_logit_attribution(tok_model, torch.zeros(2, 3, dtype=torch.long), answer=1)
    with pytest.raises(ValueError, match="no tokenizer"):
        direct_logit_attribution(induction_model(), TOKENS, answer="x")


def test_result_table_plot_save(tok_model, tmp_path):
    res = direct_logit_attribution(tok_model, IOI, answer=" Mary", distractor=" John")
    L, H = tok_model.cfg.n_layers, tok_model.cfg.n_heads
    assert len(res.to_frame()) == L * H and len(res.to_frame("layers")) == L
    comps = res.to_frame("components")
    contribution = comps["contribution"]
    assert isinstance(contribution, pd.Series)  # one column
    assert contribution.sum() == pytest.approx(res.logit_diff_precap, rel=1e-4, abs=1e-6)
    assert list(comps["component"][:3]) == ["embed", "L0.attn", "L0.mlp"]
    with pytest.raises(ValueError):
        res.to_frame("nope")
    fig = res.plot()
    assert [t.type for t in traces(fig)] == ["heatmap", "bar", "bar"]
    assert len(traces(fig)[0].z) == L and len(traces(fig)[0].z[0]) == H
    assert len(traces(res.plot("heads"))) == 1 and len(traces(res.plot("layers"))) == 2
    h = res.headline(3)
    assert h["dla_total"] == pytest.approx(h["logit_diff_precap"], rel=1e-4, abs=1e-5)
    assert len(h["top_heads"]) == 3 and all(len(x) == 3 for x in h["top_heads"])
    json.dumps(h)
    path = res.save(tmp_path)
    assert path.name == "dla.json" and [p.suffix for p in tmp_path.iterdir()] == [".json"]
    back = DLAResult.load(tmp_path)
    torch.testing.assert_close(back.heads, res.heads)
    assert back.headline() == json.loads(json.dumps(res.headline()))
