"""Exact inversion by search (interplab.finetune.invert_search, SipIt of Nikolaou et al. 2025): exact wherever the
layer is injective (every layer of a random tiny Llama, the planted model before its eraser), and failing where a
block provably discards the tokens."""

from __future__ import annotations

import pytest
import torch
from invert_planted import N, V, eraser_model

import interplab
from interplab.finetune.invert_search import search_inversion

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_llama(tiny_tok_dir):
    return interplab.load(tiny_tok_dir)


@pytest.mark.parametrize("layer", [0, 2])
def test_search_recovers_every_token_exactly_from_an_injective_layer(tiny_llama, layer: int) -> None:
    from interplab.finetune.invert import corpus_split

    _, test = corpus_split(tiny_llama, 8, 3, 12)
    res = search_inversion(tiny_llama, test, layer)
    assert res["exact_match"] == 1.0 and res["token_accuracy"] == 1.0
    assert res["max_accepted_distance"] <= res["tol"] < res["min_rejected_distance"]
    assert res["n_sequences"] == 3 and res["seconds_per_sequence"] > 0
    assert res["hook"] == (f"blocks.{layer}.hook_resid_pre" if layer < 2 else "blocks.1.hook_resid_post")


def test_search_fails_after_a_block_that_erases_the_tokens() -> None:
    model = eraser_model()
    toks = torch.randint(0, V, (6, N), generator=torch.Generator().manual_seed(3))
    before = search_inversion(model, toks, 1)
    after = search_inversion(model, toks, 2)
    assert before["exact_match"] == 1.0
    assert after["exact_match"] == 0.0 and after["token_accuracy"] <= 0.2
    assert after["min_rejected_distance"] == 0.0  # every token gives the same state: no margin at all


def test_search_rejects_bad_input(tiny_llama) -> None:
    toks = torch.zeros((1, 4), dtype=torch.long)
    with pytest.raises(ValueError, match="out of range"):
        search_inversion(tiny_llama, toks, 3)
    with pytest.raises(ValueError, match="tol"):
        search_inversion(tiny_llama, toks, 1, tol=0)
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        search_inversion(tiny_llama, torch.zeros(4, dtype=torch.long), 1)
