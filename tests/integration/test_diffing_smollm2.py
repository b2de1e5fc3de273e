"""Integration tests on the real SmolLM2-135M (marked ``integration``) and the browser."""

from __future__ import annotations

import pytest
import torch
from tiny_tokenized import boosted_unembedding

from interplab.analyses.diffing import (
    diff_models,
)
from interplab.models.scoring import model_token_losses
from interplab.tasks.corpus import token_chunks


@pytest.mark.integration
def test_smollm2_vs_planted_copy(smollm2):
    """B = SmolLM2 with +3 on the logit of a token it predicts badly here (count >= 3, highest mean loss):
    that token must top the table, B better by most of 3 nats. (A frequent, well-predicted token such as
    " the" is a poor plant: boosting it mostly hurts the tokens it competes with, which then top the table.)"""
    chunks = token_chunks(smollm2, n_chunks=3, chunk_len=64)
    loss = model_token_losses(smollm2, chunks).flatten()
    targets = chunks[:, 1:].flatten()
    ids, counts = targets.unique(return_counts=True)
    cands = [int(i) for i, c in zip(ids, counts) if c >= 3]
    planted = max(cands, key=lambda i: float(loss[targets == i].mean()))
    b = boosted_unembedding(smollm2, planted, boost=3.0, name="smollm2-planted")
    res = diff_models(smollm2, b, n_chunks=3, chunk_len=64)
    h = res.headline()
    assert res.mode == "tokens" and h["n_units"] == 3 * 63
    torch.testing.assert_close(res.loss_a, loss, atol=1e-4, rtol=1e-4)
    assert 1.5 < h["mean_loss_a"] < 5.0  # SmolLM2 on Python's documentation
    top = h["top_tokens"][0]
    assert top["token_id"] == planted and top["better"] == "B" and -3.0 < top["mean_diff"] < -2.0
    assert abs(h["top_tokens"][1]["mean_diff"]) < 1.0
