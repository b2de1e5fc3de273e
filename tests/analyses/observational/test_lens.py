"""Logit lens (interplab.analyses.observational.lens): the last layer's lens is the model's own output, on every
family (Gemma's final-logit soft-cap included); the result's table, plot and JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch
from plotly_traces import traces
from tiny_tokenized import XSS_TOKEN, gemma3_softcap_config, make_tiny_tokenized_model

import interplab
from interplab.analyses.observational.lens import LogitLensResult, logit_lens
from interplab.models.scoring import unembed_resid

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="session")
def tok_model(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_tokenized_lens")))


def _real(model, tokens):
    logits, cache = model.run(tokens, cache=[f"blocks.{L}.hook_resid_post" for L in range(model.cfg.n_layers)])
    return logits[0].float(), cache


def test_last_layer_lens_equals_model_logits(tok_model):
    tokens = tok_model.to_tokens(PROMPT)
    logits, cache = _real(tok_model, tokens)
    last = unembed_resid(tok_model, cache[f"blocks.{tok_model.cfg.n_layers - 1}.hook_resid_post"])[0]
    torch.testing.assert_close(last, logits, atol=1e-4, rtol=0)

    res = logit_lens(tok_model, PROMPT, top_k=7)
    probs = logits.softmax(-1)
    p, i = probs.topk(7, dim=-1)
    torch.testing.assert_close(res.top_probs[-1], p, atol=1e-5, rtol=0)
    # ids agree wherever the probabilities are not tied
    assert (res.top_ids[-1][:, 0] == i[:, 0]).all()
    # default answer = the model's own top prediction at the last position: rank 1 at the end, prob matches
    assert res.answer_id == int(logits[-1].argmax())
    assert int(res.answer_rank[-1]) == 1
    assert float(res.answer_prob[-1]) == pytest.approx(float(probs[-1, res.answer_id]), abs=1e-5)
    assert float(res.kl_to_final[-1]) == pytest.approx(0.0, abs=1e-5)
    assert res.headline()["stable_top1_from_layer"] == tok_model.cfg.n_layers - 1


def test_lens_matches_logits_every_family(tiny):
    """Tiny models of every family (the toy ones have no tokenizer: token ids instead of text)."""
    tokens = torch.tensor([[3, 14, 15, 9, 2, 6, 5, 35]])
    logits, _ = _real(tiny, tokens)
    res = logit_lens(tiny, tokens[0], top_k=3)
    torch.testing.assert_close(res.top_probs[-1], logits.softmax(-1).topk(3, dim=-1).values, atol=1e-5, rtol=0)
    assert res.top_ids.shape == (tiny.cfg.n_layers, tokens.shape[1], 3)
    assert int(res.answer_rank[-1]) == 1
    # earlier layers are genuinely different distributions (the lens is not a copy of the output)
    assert float(res.kl_to_final[0]) > 1e-4


def test_softcapping_applied():
    """Gemma 3's final_logit_softcapping: the lens must apply it, or its last layer would not match."""
    import transformers as T

    from interplab.models.model import from_hf

    torch.manual_seed(0)
    cfg = gemma3_softcap_config()
    model = from_hf(T.Gemma3ForCausalLM(cfg).eval(), name="gemma3-softcap")
    tokens = torch.tensor([[1, 5, 9, 33, 2]])
    logits, cache = _real(model, tokens)
    assert logits.abs().max() <= 0.5 + 1e-6  # the cap is active
    torch.testing.assert_close(unembed_resid(model, cache["blocks.1.hook_resid_post"])[0], logits, atol=1e-5, rtol=0)
    uncapped = model.adapter.unembed()(model.adapter.ln_final()(cache["blocks.1.hook_resid_post"]))[0]
    assert not torch.allclose(uncapped, logits, atol=1e-3)
    res = logit_lens(model, tokens, top_k=2)
    assert res.settings["final_logit_softcapping"] == 0.5
    torch.testing.assert_close(res.top_probs[-1], logits.softmax(-1).topk(2, dim=-1).values, atol=1e-5, rtol=0)


def test_answer_handling(tok_model):
    ids = tok_model.tokenizer(" Mary", add_special_tokens=False)["input_ids"]
    res = logit_lens(tok_model, PROMPT, answer=" Mary")
    assert res.answer_id == ids[0]
    assert res.settings["answer_n_tokens"] == len(ids)
    assert res.settings["answer_given"] is True
    logits, _ = _real(tok_model, tok_model.to_tokens(PROMPT))
    expected_rank = int((logits[-1] > logits[-1, ids[0]]).sum()) + 1
    assert int(res.answer_rank[-1]) == expected_rank
    assert logit_lens(tok_model, PROMPT, answer=ids[0]).answer_id == ids[0]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        logit_lens(tok_model, PROMPT, answer=10**7)
    with pytest.raises(ValueError, match="top_k"):
        logit_lens(tok_model, PROMPT, top_k=0)


def test_include_embed(tok_model):
    res = logit_lens(tok_model, PROMPT, include_embed=True, top_k=2)
    assert res.layers == [-1] + list(range(tok_model.cfg.n_layers))
    assert res.layer_labels[0] == "embed"
    assert res.top_ids.shape[0] == tok_model.cfg.n_layers + 1
    assert res.headline()["n_layers"] == tok_model.cfg.n_layers


def test_result_table_plot_and_json_round_trip(tok_model, tmp_path):
    prompt = f"{XSS_TOKEN} When Mary and John"
    res = logit_lens(tok_model, prompt, top_k=4)
    n_layers, n_pos = tok_model.cfg.n_layers, len(res.str_tokens)
    assert XSS_TOKEN in res.str_tokens

    long = res.to_frame()
    assert len(long) == n_layers * n_pos * 4
    assert set(long.columns) >= {"layer", "position", "token", "k", "pred_token", "pred_id", "prob"}
    last = res.to_frame("last")
    assert len(last) == n_layers and {"top1", "p1", "top4", "answer_rank", "answer_prob", "kl_to_final"} <= set(
        last.columns
    )
    assert len(res.to_frame("answer")) == n_layers
    with pytest.raises(ValueError):
        res.to_frame("nope")

    fig = res.plot()
    assert [t.type for t in traces(fig)] == ["heatmap", "scatter"]
    assert len(traces(fig)[0].z) == n_layers and len(traces(fig)[0].z[0]) == n_pos
    # plotly draws its text as a subset of HTML: tokens go in escaped so they show literally
    ticks = " ".join(fig.layout.xaxis.ticktext)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ticks and XSS_TOKEN not in ticks
    assert len(traces(res.plot("heatmap"))) == 1 and len(traces(res.plot("answer"))) == 1

    path = res.save(tmp_path)
    assert path.name == "logit_lens.json"
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]  # JSON only, never pickle
    data = json.loads(path.read_text())
    assert data["kind"] == "logit_lens" and data["headline"] == json.loads(json.dumps(res.headline()))
    back = LogitLensResult.load(tmp_path)
    assert back.str_tokens == res.str_tokens and back.top_tokens == res.top_tokens and back.layers == res.layers
    torch.testing.assert_close(back.top_probs, res.top_probs)
    assert torch.equal(back.top_ids, res.top_ids) and torch.equal(back.answer_rank, res.answer_rank)

    h = res.headline()
    assert set(h) >= {
        "model",
        "prompt",
        "answer",
        "answer_prob_final",
        "answer_rank_final",
        "first_layer_top1",
        "stable_top1_from_layer",
        "top1_final",
        "n_layers",
    }
    json.dumps(h)  # plain JSON types
