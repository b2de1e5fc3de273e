"""Activation / attribution / path patching and circuit discovery: planted ground truth, exactness,
fast == naive on every family, bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from interplab.analyses.causal import (
    PatchingResult,
    PathPatchingResult,
    activation_patching,
    attribution_patching,
    correlation,
    discover_circuit,
    path_patching,
)
from interplab.models.planted import INDUCTION_HEAD, PREV_TOKEN_HEAD, induction_model
from interplab.tasks import PairSpec, build_pairs, pairs_from_tokens
from interplab.tasks.induction import induction_pairs


@pytest.fixture(scope="module")
def planted():
    return induction_model()


@pytest.fixture(scope="module")
def pairs(planted):
    return induction_pairs(planted, n=12, seed=1)


def test_planted_pairs_are_what_they_say(planted, pairs):
    logits = planted(pairs.clean)
    assert (logits[:, -1].argmax(-1) == pairs.answer_ids).all()
    logits = planted(pairs.corrupt)
    assert (logits[:, -1].argmax(-1) == pairs.wrong_ids).all()


def test_heads_patching_finds_the_planted_head(planted, pairs):
    res = activation_patching(planted, pairs, grid="heads")
    v = res.values
    assert v[INDUCTION_HEAD] == pytest.approx(1.0, abs=2e-3)
    others = [(a, b) for a in range(2) for b in range(2) if (a, b) != INDUCTION_HEAD]
    for a, b in others:
        assert abs(float(v[a, b])) < 2e-3
    # CIs bracket the value
    assert (res.ci_low <= res.values + 1e-6).all() and (res.values <= res.ci_high + 1e-6).all()
    # noising: the induction head is necessary
    noise = activation_patching(planted, pairs, grid="heads", direction="noise")
    assert noise.values[INDUCTION_HEAD] == pytest.approx(0.0, abs=2e-3)
    assert noise.values[PREV_TOKEN_HEAD] == pytest.approx(1.0, abs=2e-3)


def test_resid_positions_on_planted(planted, pairs):
    res = activation_patching(planted, pairs, grid="resid")
    names = res.labels[1]
    b1, end = names.index("B1"), names.index("END")
    # the changed token carries everything in layer 0 and 1 (read by the induction head at B1)
    assert res.values[0, b1] == pytest.approx(1.0, abs=1e-4)
    assert res.values[1, b1] == pytest.approx(1.0, abs=1e-4)
    assert abs(float(res.values[0, end])) < 1e-3


def test_full_restoration_is_exactly_one_and_none_is_zero(planted, pairs):
    # patching the whole residual stream entering layer 0 is the other run
    den = activation_patching(planted, pairs, grid="resid", positions=None, layers=[0], method="naive")
    assert float(den.values[0, 0]) == 1.0
    noi = activation_patching(
        planted, pairs, grid="resid", positions=None, layers=[0], method="naive", direction="noise"
    )
    assert float(noi.values[0, 0]) == 0.0
    fast = activation_patching(planted, pairs, grid="resid", positions=None, layers=[0], method="fast")
    assert float(fast.values[0, 0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("grid", ["resid", "attn_out", "heads", "heads_by_pos", "q", "k", "v", "pattern"])
def test_fast_equals_naive_planted(planted, pairs, grid):
    kw: dict[str, Any] = {"position": "END"} if grid in ("q", "pattern") else {}
    f = activation_patching(planted, pairs, grid=grid, method="fast", **kw)
    n = activation_patching(planted, pairs, grid=grid, method="naive", **kw)
    assert (f.per_prompt - n.per_prompt).abs().max() <= 1e-4
    assert (f.values - n.values).abs().max() <= 1e-4


def _random_pairs(model, n=6, p=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, model.cfg.d_vocab, (n, p), generator=g)
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(1, model.cfg.d_vocab, (n,), generator=g)
    ans = torch.randint(1, model.cfg.d_vocab, (n,), generator=g)
    wrong = torch.randint(1, model.cfg.d_vocab, (n,), generator=g)
    return pairs_from_tokens("random", clean, corrupt, ans, wrong, positions={"X": 3, "after": 4})


@pytest.mark.parametrize("grid", ["heads", "k", "mlp_out"])
def test_fast_equals_naive_every_family(tiny, grid):
    if grid == "mlp_out" and not tiny.cfg.d_mlp:
        with pytest.raises(ValueError, match="attention-only"):
            activation_patching(tiny, _random_pairs(tiny), grid=grid)
        return
    pr = _random_pairs(tiny)
    f = activation_patching(tiny, pr, grid=grid, method="fast", max_batch_tokens=64)
    n = activation_patching(tiny, pr, grid=grid, method="naive")
    assert (f.per_prompt - n.per_prompt).abs().max() <= 1e-4


def test_attribution_matches_exact_on_planted(planted, pairs):
    exact = activation_patching(planted, pairs, grid="heads")
    att = attribution_patching(planted, pairs, grid="heads")
    assert correlation(att, exact) > 0.99
    assert att.values[INDUCTION_HEAD] == pytest.approx(1.0, abs=0.05)


def test_attribution_is_first_order_exact_for_a_linear_site(tiny):
    # the logit difference is linear in the final residual stream when there is no final norm only for
    # norm-free models; in general check that AtP is exact to first order: tiny perturbation
    pr = _random_pairs(tiny)
    pr.corrupt = pr.clean.clone()  # identical runs: both methods must give the clean metric, no NaN
    att = attribution_patching(tiny, pr, grid="resid")
    assert att.per_prompt.shape[-1] == len(pr)
    assert torch.allclose(att.per_prompt, att.clean_metric.expand_as(att.per_prompt), atol=1e-5)


def test_path_patching_planted(planted):
    base = induction_pairs(planted, n=8, seed=2)
    # corrupt the FIRST occurrence of the query token: breaks the previous-token information at B1
    corrupt = base.clean.clone()
    corrupt[:, 5] = (corrupt[:, 5] + 7) % planted.cfg.d_vocab
    pr = pairs_from_tokens(
        "induction-a",
        base.clean,
        corrupt,
        base.answer_ids,
        base.wrong_ids,
        positions={k: v for k, v in base.positions.items()},
    )
    via_k = path_patching(
        planted,
        pr,
        senders=[PREV_TOKEN_HEAD, (0, 1)],
        receivers=[INDUCTION_HEAD],
        receiver_input="k",
        receiver_position=None,
    )
    assert float(via_k.values[0, 0]) < 0.2  # prev-token head -> induction head's keys: the path that matters
    assert float(via_k.values[1, 0]) == pytest.approx(1.0, abs=0.05)
    direct = path_patching(planted, pr, senders=[PREV_TOKEN_HEAD], receivers="logits")
    assert float(direct.values[0, 0]) == pytest.approx(1.0, abs=0.05)  # no direct path to the logits


def test_path_patching_result_survives_save_and_load(planted, pairs, tmp_path):
    res = path_patching(
        planted, pairs, senders=[PREV_TOKEN_HEAD, (0, 1)], receivers=[INDUCTION_HEAD], receiver_input="k"
    )
    res.save(tmp_path)
    assert (tmp_path / "path_patching.json").exists() and (tmp_path / "path_patching.safetensors").exists()
    back = PathPatchingResult.load(tmp_path)
    assert back.senders == res.senders and back.receivers == res.receivers
    assert torch.equal(back.values, res.values) and torch.equal(back.per_prompt, res.per_prompt)
    assert back.headline() == res.headline() and len(back.to_frame()) == 2


def test_circuit_discovery_finds_the_planted_circuit(planted, pairs):
    c = discover_circuit(planted, pairs)
    assert sorted(c.heads) == sorted([list(PREV_TOKEN_HEAD), list(INDUCTION_HEAD)])
    assert c.faithfulness == pytest.approx(1.0, abs=0.02)
    assert c.metric_empty < 0.2 * c.metric_full
    assert c.edges and c.edges[0][:2] == ("0.0", "1.0")
    # attribution screening misses the previous-token head (its attention is saturated, so its gradient is
    # ~0: the failure mode AtP* addresses); the exact check notices and the screen is discarded
    assert c.settings["screen_discarded"] is True
    exact = discover_circuit(planted, pairs, screen=None)
    assert exact.heads == c.heads and exact.faithfulness == pytest.approx(c.faithfulness)


def test_result_roundtrip(planted, pairs, tmp_path):
    res = activation_patching(planted, pairs, grid="heads_by_pos")
    res.save(tmp_path)
    back = PatchingResult.load(tmp_path)
    assert torch.allclose(back.values, res.values) and back.labels == res.labels
    assert back.to_frame().shape[0] == res.values.numel()
    assert res.plot().data
    # a second grid beside the first, under its own name (e.g. attribution.json): both survive
    att = attribution_patching(planted, pairs, grid="heads")
    att.save(tmp_path, "attribution.json")
    assert (tmp_path / "attribution.safetensors").exists()
    back_att = PatchingResult.load(tmp_path / "attribution.json")
    assert back_att.method == "attribution" and torch.equal(back_att.values, att.values)
    assert torch.equal(PatchingResult.load(tmp_path).values, res.values)


def test_bad_input(planted, pairs):
    with pytest.raises(ValueError, match="grid must be"):
        activation_patching(planted, pairs, grid="nope")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="not a named position"):
        activation_patching(planted, pairs, grid="heads", position="IO")
    with pytest.raises(ValueError, match="out of range"):
        activation_patching(planted, pairs, grid="heads", layers=[5])
    with pytest.raises(ValueError, match="direction"):
        activation_patching(planted, pairs, grid="heads", direction="sideways")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="out of range"):
        path_patching(planted, pairs, senders=[(0, 9)])


def test_build_pairs_refuses_length_mismatch():
    class Tok:
        bos_token_id = None
        pad_token_id = 0
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) % 50 + 1 for c in text]}

    class M:
        tokenizer = Tok()
        default_prepend_bos = False

        class cfg:
            n_ctx = 64
            d_vocab = 64

        def need_tokenizer(self):
            return self.tokenizer

        def first_token_id(self, s, what="token"):
            return ord(s[0]) % 50 + 1, 1

    spec = PairSpec([("ab", None), ("c", "X")], [("abc", None), ("d", "X")], answer="x", wrong="y")
    with pytest.raises(ValueError, match=r"pair 0 \('abc' / 'abcd'\)"):
        build_pairs(M(), [spec], task="t")
    ok = PairSpec([("ab", None), ("c", "X")], [("ab", None), ("d", "X")], answer="x", wrong="y")
    pr = build_pairs(M(), [spec, ok], task="t", on_mismatch="drop")
    assert len(pr) == 1 and len(pr.dropped) == 1 and int(pr.positions["X"][0]) == 2
