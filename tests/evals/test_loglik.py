"""Log-likelihood multiple choice on interplab's provider agrees with lm-evaluation-harness's HFLM, item by item."""

from __future__ import annotations

import pytest
from loglik_oracle import lm_eval_logliks, run_items

ITEMS = [
    ("The Eiffel Tower is located in the city of", [" Paris", " London", " Rome"], 0),
    ("When Mary and John went to the store, John gave a drink to", [" Mary", " John"], 0),
    ("The quick brown fox jumps over the lazy", [" dog", " cat", " fox jumps"], 0),
    ("Interpretability asks what a network computes and", [" how.", " why", " when it is trained"], 0),
    ("It is okay to", [" Yes", " No"], 1),
    ("Is it true? ", ["True", "False"], 0),  # trailing space moves into the continuation, as in lm-eval
    ("Paris", [" is", ",", " London Rome"], 2),
    ("The", [" quick brown fox", " Eiffel"], 1),
]


def test_per_choice_logliks_match_lm_eval_hflm_within_1e_4_with_identical_argmax(tiny, tmp_path):
    samples, log = run_items(ITEMS, "interplab/tiny", tmp_path)
    ref = lm_eval_logliks(tiny, ITEMS)
    for s, want in zip(samples, ref, strict=True):
        got = s.metadata["choice_logliks"]
        assert got == pytest.approx(want, abs=1e-4), (s.id, got, want)
        assert max(range(len(got)), key=got.__getitem__) == max(range(len(want)), key=want.__getitem__)
        score = s.scores["loglik_accuracy"]
        assert score.metadata["choice_logliks"] == got  # kept in the log
    names = {sc.name for sc in log.results.scores}
    assert {"acc", "acc_norm"} <= names, names  # both reported by Inspect, with mean and stderr


def test_acc_norm_divides_by_choice_length_in_characters(tiny, tmp_path):
    samples, _ = run_items(ITEMS, "interplab/tiny", tmp_path)
    for s in samples:
        lls, choices = s.metadata["choice_logliks"], [c for c in ITEMS[int(s.id)][1]]
        gold = ITEMS[int(s.id)][2]
        best_norm = max(range(len(lls)), key=lambda i: lls[i] / len(choices[i]))
        assert s.scores["loglik_accuracy"].value["acc_norm"] == float(best_norm == gold)


def test_batch_size_does_not_change_logliks(tiny, tmp_path):
    a, _ = run_items(ITEMS, "interplab/tiny", tmp_path / "a", batch_size=1)
    b, _ = run_items(ITEMS, "interplab/tiny", tmp_path / "b", batch_size=8)
    for x, y in zip(a, b, strict=True):
        assert x.metadata["choice_logliks"] == pytest.approx(y.metadata["choice_logliks"], abs=1e-5)


def test_shared_prefix_pass_gives_the_same_logliks_as_full_rows(tiny, tmp_path, monkeypatch):
    """Chat-templated prompts share the template's opening tokens: run once and repeated over the batch, they must
    give HFLM's log-likelihoods on the full prompts."""
    from interplab.evals.provider import InterplabAPI

    api = InterplabAPI("tiny")
    items = [
        (api.prompt_text(f"The Eiffel Tower is located in the city of {w}"), [" Paris", " London", " Rome"], 0)
        for w in ("Paris", "London", "the quick brown fox", "Mary")
    ]
    items += [(api.prompt_text("The Eiffel Tower is located in the city of"), [" Mary", " John gave a drink"], 0)]
    calls = []
    orig = InterplabAPI._forward_shared_prefix

    def spy(self, inp, shared, keep):
        calls.append(shared)
        return orig(self, inp, shared, keep)

    monkeypatch.setattr(InterplabAPI, "_forward_shared_prefix", spy)
    samples, _ = run_items(items, "interplab/tiny", tmp_path, batch_size=8)
    assert calls and min(calls) >= 8  # the shared pass ran
    ref = lm_eval_logliks(tiny, items)
    for s, want in zip(samples, ref, strict=True):
        assert s.metadata["choice_logliks"] == pytest.approx(want, abs=1e-4)
