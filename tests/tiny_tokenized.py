"""A tiny random-weight Llama *with a tokenizer*, for tests of text-level code (lens, report).

The tokenizer is a byte-level BPE trained in well under a second on a few sentences and the
stdlib's pydoc topics text, so any string round-trips. ``XSS_TOKEN`` is added as one token so a
single token string can try to break out of the page. Not a test module (no ``test_`` prefix);
the test files import it and wrap it in their own session-scoped fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

XSS_TOKEN = "<script>alert(1)</script>"

SENTENCES = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The Eiffel Tower is located in the city of Paris.",
    "The quick brown fox jumps over the lazy dog.",
    "Interpretability asks what a network computes and how.",
]


def make_tiny_tokenized_model(
    directory: str | Path, vocab_size: int = 400, n_layers: int = 2, extra_text: list[str] | None = None
) -> str:
    """Write a tiny LlamaForCausalLM (2 layers, d_model 32, 4 heads / 2 KV heads) and its tokenizer
    to ``directory``; return the directory for ``interplab.load``. ``extra_text``: sentences repeated in
    the tokenizer's training text (so their words become single tokens)."""
    from pydoc_data.topics import topics

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = SENTENCES * 20 + [topics[k] for k in sorted(topics)[:40]] + list(extra_text or []) * 50
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.add_tokens([XSS_TOKEN])

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        bos_token_id=cast(int, fast.bos_token_id),
        eos_token_id=cast(int, fast.eos_token_id),
        pad_token_id=cast(int, fast.pad_token_id),
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norm weights so a forgotten final norm shows
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    d = Path(directory)
    model.save_pretrained(str(d))
    fast.save_pretrained(str(d))
    return str(d)


def task_text() -> list[str]:
    """Sentences that make the built-in tasks' names and words single tokens (IOI needs that)."""
    from interplab.tasks.ioi import NAMES, OBJECTS, PLACES
    from interplab.tasks.small import _FEMALE, _MALE, _WORDS

    words = " ".join(NAMES + _MALE + _FEMALE + _WORDS + PLACES + OBJECTS + ["he", "she", "The", "the", "gave", "to"])
    return [" " + words, words]


REPORT_SECTIONS = ["model-card", "logit-lens", "attention", "about"]
"""The core sections every model report has."""

XSS_PROMPTS = [
    {"name": "xss", "prompt": f"{XSS_TOKEN} When Mary and John went to the store, & John"},
    ("The Eiffel Tower is located in the city of", " Paris"),
]
"""Report prompts: one carrying a token that tries to break out of the page, one plain (prompt, answer) pair."""


def gemma3_softcap_config():
    """A tiny Gemma 3 text config (2 full-attention layers) with a final-logit soft-cap of 0.5."""
    import transformers as T

    return T.Gemma3TextConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=48,
        max_position_embeddings=64,
        query_pre_attn_scalar=8,
        final_logit_softcapping=0.5,
        layer_types=["full_attention", "full_attention"],
    )


def boosted_unembedding(model, token_id: int, boost: float = 3.0, name: str = "boosted"):
    """Model B = model A whose unembedding raises one token's logit by ``boost`` at every position
    (an unembedding bias on that vocabulary row; every other weight shared)."""
    import copy

    import torch
    from torch import nn

    from interplab.models.model import Model

    hf = copy.deepcopy(model.hf)
    old = hf.lm_head
    new = nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.zero_()
        new.bias[token_id] = boost
    hf.lm_head = new
    return Model(hf, model.tokenizer, name=name)
