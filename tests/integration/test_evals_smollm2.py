"""SmolLM2 through interplab's Inspect provider: per-choice log-likelihoods equal lm-evaluation-harness HFLM's (given
the loaded model object) within 1e-4 with the same argmax on every item, on plain and chat-templated prompts."""

from __future__ import annotations

import pytest

import interplab
from tests.evals.loglik_oracle import lm_eval_logliks, run_items

pytestmark = pytest.mark.integration

ITEMS = [
    ("The capital of France is", [" Paris", " London", " Berlin", " Madrid"], 0),
    ("Water freezes at a temperature of", [" zero degrees Celsius", " one hundred degrees Celsius"], 0),
    ("The largest planet in the solar system is", [" Jupiter", " Mars", " Earth"], 0),
    ("When Mary and John went to the store, John gave a drink to", [" Mary", " John"], 0),
    ("2 + 2 =", [" 4", " 5", " 22"], 0),
    ("The opposite of hot is", [" cold", " warm", " spicy food"], 0),
]


@pytest.fixture(scope="module")
def smol():
    from interplab.evals.provider import register_model

    m = interplab.load("smollm2-135m")
    register_model("smollm2-135m", m)
    return m


def test_smollm2_logliks_match_lm_eval_hflm(smol, tmp_path):
    from interplab.evals.provider import InterplabAPI

    api = InterplabAPI("smollm2-135m")
    chat = [(api.prompt_text(q.strip()), [c.strip() for c in cs], g) for q, cs, g in ITEMS[:3]]
    items = ITEMS + chat
    samples, _ = run_items(items, "interplab/smollm2-135m", tmp_path, batch_size=8)
    ref = lm_eval_logliks(smol, items, batch_size=8)
    for s, want in zip(samples, ref, strict=True):
        got = s.metadata["choice_logliks"]
        assert got == pytest.approx(want, abs=1e-4), (s.id, got, want)
        assert max(range(len(got)), key=got.__getitem__) == max(range(len(want)), key=want.__getitem__)
