"""Learned inversion of the residual stream (interplab.finetune.invert) against a planted ground truth: a toy model
whose block 1 provably erases every trace of the input tokens, so recovery is high before it and at chance after."""

from __future__ import annotations

import pytest
import torch
from invert_planted import N, V, eraser_model

from interplab.finetune.invert import (
    InversionResult,
    InverterConfig,
    check_layer,
    decode_guesses,
    guess_metrics,
    invert,
    parse_dims,
    token_set_f1,
    train_inverter,
)
from interplab.models.model import Model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def eraser() -> Model:
    return eraser_model()


FAST = InverterConfig(d_model=64, n_layers=2, n_heads=4, d_mlp=128, steps=80, batch_size=64, lr=3e-3, k=4)


def test_planted_eraser_block_leaves_only_the_position(eraser: Model) -> None:
    from interplab.finetune.invert import residual_states

    toks = torch.randint(0, V, (32, N), generator=torch.Generator().manual_seed(1))
    states = residual_states(eraser, toks, [1, 2])
    assert states[1][..., :V].argmax(-1).eq(toks).all()  # token one-hot still readable before the eraser
    assert (states[2] == states[2][:1]).all()  # after it: the same state for every input, at every position


def test_recovery_is_high_before_an_erasing_block_and_at_chance_after(eraser: Model, tmp_path) -> None:
    res = invert(eraser, 0, layers=[1, 2], seq_len=N, n_train=512, n_test=128, cfg=FAST, out=tmp_path)
    by_layer = {r["layer"]: r for r in res.curve("layer")}
    assert by_layer[0]["exact_token_recovery"] >= 0.95
    assert by_layer[1]["exact_token_recovery"] >= 0.9
    assert res.chance_token_recovery == pytest.approx(1 / V)
    # after the eraser: chance, 1/16 = 0.0625 (1024 held-out tokens give a standard error of 0.008)
    assert by_layer[2]["exact_token_recovery"] <= 0.12
    assert by_layer[2]["sequence_exact_match"] == 0.0
    h = res.headline()
    assert {"layer", "exact_token_recovery", "token_f1", "search_exact_match"} <= set(h)
    assert [r["layer"] for r in h["curve_vs_layer"]] == [0, 1, 2]


def test_inverter_training_resumed_after_a_kill_is_identical(eraser: Model, tmp_path) -> None:
    from interplab.finetune.invert import corpus_split, residual_states

    cfg = InverterConfig(d_model=32, n_layers=1, n_heads=2, d_mlp=64, steps=30, log_every=10, ckpt_every=10, k=2)
    tr, te = corpus_split(eraser, 128, 16, N)
    s_tr, s_te = residual_states(eraser, tr, [1])[1], residual_states(eraser, te, [1])[1]
    full, m_full = train_inverter(s_tr, tr, s_te, te, tmp_path / "full", cfg=cfg)

    class Kill(Exception):
        pass

    def kill(step: int, trainer) -> None:
        if step == 17:
            raise Kill

    with pytest.raises(Kill):
        train_inverter(s_tr, tr, s_te, te, tmp_path / "killed", cfg=cfg, callbacks=[kill])
    resumed, m_res = train_inverter(s_tr, tr, s_te, te, tmp_path / "killed", cfg=cfg, resume=True)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert m_full == m_res
    g1 = decode_guesses(full, s_te, 3, seed=5)
    g2 = decode_guesses(resumed, s_te, 3, seed=5)
    assert torch.equal(g1, g2)


def test_rerun_into_the_same_directory_reuses_finished_inverters(eraser: Model, tmp_path) -> None:
    cfg = InverterConfig(d_model=32, n_layers=1, n_heads=2, d_mlp=64, steps=20, k=2)
    a = invert(eraser, 1, seq_len=N, n_train=64, n_test=16, cfg=cfg, out=tmp_path)
    seen: list[str] = []
    b = invert(eraser, 1, seq_len=N, n_train=64, n_test=16, cfg=cfg, out=tmp_path, status=seen.append)
    assert a.runs[0]["exact_token_recovery"] == b.runs[0]["exact_token_recovery"]
    assert not any("training" in s for s in seen)
    seen.clear()
    c = invert(eraser, 1, seq_len=N, n_train=64, n_test=12, cfg=cfg, out=tmp_path, status=seen.append)
    assert any("training" in s for s in seen)  # another held-out set: trained and scored again
    assert c.runs[0]["n_test_sequences"] == 12


def test_metrics_follow_their_definitions() -> None:
    orig = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    guesses = torch.tensor(
        [
            [[1, 2, 3, 4], [0, 0, 0, 0]],  # sequence 0: greedy exact
            [[6, 5, 7, 9], [5, 6, 7, 8]],  # sequence 1: greedy 1/4 right in place; second guess exact
        ]
    )
    m = guess_metrics(guesses, orig)
    assert m["exact_token_recovery"] == pytest.approx((1 + 0.25) / 2)
    assert m["sequence_exact_match"] == 0.5
    assert m["best_of_k_token_recovery"] == 1.0
    assert m["best_of_k_sequence_exact_match"] == 1.0
    # sets {6,5,7,9} vs {5,6,7,8}: P = R = 3/4
    assert m["token_f1"] == pytest.approx((1 + 0.75) / 2)
    assert token_set_f1([1, 1, 2], [2, 3]) == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    assert token_set_f1([4], [5]) == 0.0
    skipped = guess_metrics(guesses, orig, skip_first=1)
    assert skipped["n_test_tokens"] == 6


def test_layer_out_of_range_and_bad_dims_are_clear_errors(eraser: Model) -> None:
    with pytest.raises(ValueError, match=r"out of range.*0\.\.3"):
        check_layer(eraser, 4)
    with pytest.raises(ValueError, match="out of range"):
        check_layer(eraser, -1)
    with pytest.raises(ValueError, match="out of range"):
        invert(eraser, 9, seq_len=N, n_train=8, n_test=4)
    d = eraser.cfg.d_model
    assert parse_dims("all", d) == (list(range(d)), "all")
    assert parse_dims("lower-half", d)[0] == list(range(d // 2))
    assert parse_dims("0.25", d)[0] == list(range(round(0.25 * d)))
    assert parse_dims("2:5", d)[0] == [2, 3, 4]
    assert parse_dims("7,1", d)[0] == [1, 7]
    for bad, msg in [
        ("0:99", "outside"),
        ("5:5", "A < B"),
        ("1.5", r"\(0, 1\]"),
        ("-3", "outside"),
        ("1,1", "repeats"),
        ("half", "not readable"),
        ("0.0", r"\(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_dims(bad, d)
    with pytest.raises(ValueError, match="outside"):
        invert(eraser, 1, dims="0:999", seq_len=N, n_train=8, n_test=4)


def test_dims_fraction_and_last_position_runs_are_planned_and_scored(eraser: Model, tmp_path) -> None:
    cfg = InverterConfig(d_model=32, n_layers=1, n_heads=2, d_mlp=64, steps=10, k=2)
    res = invert(
        eraser,
        1,
        dims_fractions=[1.0, 0.5],
        last_position=True,
        prior=True,
        seq_len=N,
        n_train=64,
        n_test=16,
        cfg=cfg,
        out=tmp_path,
    )
    names = [r["name"] for r in res.runs]
    assert names == ["L1-all-all", "L1-first0.5-all", "L1-all-last", "L1-all-none"]
    assert [r["dims_fraction"] for r in res.curve("dims")] == [1.0, 0.5]
    h = res.headline()
    assert h["last"][0]["positions"] == "last" and h["prior"][0]["positions"] == "none"
    assert len(res.examples[0]["guesses"]) == 2
    loaded = InversionResult.load(res.save(tmp_path / "saved"))
    assert loaded.headline() == h
