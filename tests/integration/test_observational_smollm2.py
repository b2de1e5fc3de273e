"""Integration tests on the real SmolLM2-135M (marked ``integration``) and the browser."""

from __future__ import annotations

import math
import time

import pytest
import torch

from interplab.analyses.observational.dla import DLAResult, direct_logit_attribution
from interplab.analyses.observational.heads import (
    CLASSES,
    head_scores,
)
from interplab.analyses.observational.lens import logit_lens
from interplab.analyses.observational.logit_pca import (
    logit_pca,
)


@pytest.mark.integration
def test_smollm2_logit_pca(smollm2):
    res = logit_pca(smollm2, n_seqs=2, seq_len=16)
    assert res.coords.shape == (1, 31, 3)
    evr = res.explained_variance_ratio
    assert 0.3 < float(evr.sum()) <= 1 and float(evr[0]) > float(evr[1])
    assert len(res.headline()["kinks"]) == 3


PROMPT = "When Mary and John went to the store, John gave a drink to"


def _real(model, tokens):
    logits, cache = model.run(tokens, cache=[f"blocks.{L}.hook_resid_post" for L in range(model.cfg.n_layers)])
    return logits[0].float(), cache


@pytest.mark.integration
def test_lens_smollm2_ioi(smollm2):
    res = logit_lens(smollm2, PROMPT, answer=" Mary")
    logits, _ = _real(smollm2, smollm2.to_tokens(PROMPT))
    torch.testing.assert_close(res.top_probs[-1], logits.softmax(-1).topk(5, dim=-1).values, atol=1e-4, rtol=0)
    assert res.answer == " Mary" and int(res.answer_rank[-1]) == 1 and float(res.answer_prob[-1]) > 0.5
    # the answer emerges late: the first layer's lens does not rank it near the top
    assert int(res.answer_rank[0]) > 10


@pytest.mark.integration
def test_smollm2_induction_heads(smollm2):
    t = time.perf_counter()
    res = head_scores(smollm2, n_seqs=4, batch=4, seq_len=40, text_len=64)
    seconds = time.perf_counter() - t
    hl = res.headline()
    print(f"\nSmolLM2-135M head detectors ({seconds:.1f} s; 4 sequences per input):")
    for c in CLASSES:
        print(
            f"  {c:17s} {len(res.members(c)):3d} members; top (layer, head, score, null):",
            [(a, b, round(s, 3), round(n, 3)) for a, b, s, n in res.top(c, 6)],
        )
    ind = hl["induction"]
    assert len(ind) >= 3, ind
    top_layer, top_head, top_score = ind[0]
    assert top_score > 0.6 and res.baselines["induction"][top_layer, top_head] < 0.05
    # induction heads sit in the middle of the network, not in the first layers
    assert min(a for a, _, _ in ind) >= 5
    # previous-token heads exist; the null is far below every member's score
    prev = res.members("previous_token")
    assert prev and all(s - float(res.baselines["previous_token"][a, b]) > 0.3 for a, b, s in prev)
    assert all(math.isfinite(s) for c in CLASSES for *_, s in hl[c])


IOI = "When Mary and John went to the store, John gave a drink to"


def _check_sums(res: DLAResult, rtol: float = 1e-4) -> None:
    assert res.total == pytest.approx(res.logit_diff_precap, rel=rtol, abs=1e-6)
    torch.testing.assert_close(res.heads.sum(-1) + res.attn_bias, res.attn, rtol=1e-4, atol=1e-6)


@pytest.mark.integration
def test_smollm2_ioi_dla(smollm2):
    res = direct_logit_attribution(smollm2, IOI, answer=" Mary", distractor=" John")
    _check_sums(res, rtol=1e-4)
    assert res.logit_diff > 3  # SmolLM2 gets IOI right
    top = res.top_heads(10)
    assert top[0][2] > 1.0  # one head writes a good part of the difference directly
    h = res.headline(8)
    print(f"\nIOI {h['metric']}: logit diff {h['logit_diff']:.4f}, sum of components {h['dla_total']:.4f}")
    print("top heads by |DLA| [layer, head, contribution]:", h["top_heads"])
    print("most positive:", h["top_positive_heads"])
    print("most negative:", h["top_negative_heads"])
    print("top layer components:", h["top_layer_components"])
