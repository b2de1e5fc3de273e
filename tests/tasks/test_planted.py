"""Built-in tasks and the planted induction model."""

import torch

from interplab.models.planted import INDUCTION_HEAD, PREV_TOKEN_HEAD, induction_model
from interplab.tasks import corpus_text, repeated_tokens


def test_planted_model_does_induction():
    m = induction_model()
    tokens, offset = repeated_tokens(m, batch=8, seq_len=20)
    assert offset == 0 and tokens.shape == (8, 40)
    assert torch.equal(tokens[:, :20], tokens[:, 20:])
    logits, c = m.run(tokens, cache=lambda n: "pattern" in n)
    acc = (logits.argmax(-1)[:, 20:-1] == tokens[:, 21:]).float().mean()
    assert acc > 0.9
    pl, ph = PREV_TOKEN_HEAD
    prev = torch.diagonal(c[f"blocks.{pl}.attn.hook_pattern"][:, ph], -1, 1, 2).mean()
    il, ih = INDUCTION_HEAD
    ind = torch.diagonal(c[f"blocks.{il}.attn.hook_pattern"][:, ih], -19, 1, 2)[:, 1:].mean()
    assert prev > 0.99 and ind > 0.9
    other = torch.diagonal(c[f"blocks.{il}.attn.hook_pattern"][:, 1], -19, 1, 2)[:, 1:].mean()
    assert other < 0.2


def test_pydoc_corpus_present():
    text = corpus_text()
    assert len(text) > 400_000 and "assert" in text
