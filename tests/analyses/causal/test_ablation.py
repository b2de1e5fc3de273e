"""Head ablation importance (interplab.analyses.causal.ablation): the fast path (prefix reuse, batched variants)
equals the naive one (one forward per head) on every family and ablation; the planted induction circuit
comes out on top; CIs; the Result's table/plot/JSON round trip; bad input; the CLI; and on SmolLM2 the
issue's check that ablating the induction heads hurts repeated sequences far more than random heads."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from tiny_tokenized import make_tiny_tokenized_model
from typer.testing import CliRunner

import interplab
from interplab.analyses.causal.ablation import (
    HeadAblationResult,
    InductionAblationComparison,
    compare_induction_ablation,
    head_ablation_importance,
    induction_scores,
    resample_index,
)
from interplab.cli import app
from interplab.models.planted import INDUCTION_HEAD, PREV_TOKEN_HEAD, induction_model
from interplab.stats import confidence_interval, t_quantile
from interplab.tasks import repeated_tokens

runner = CliRunner()


@pytest.fixture(scope="module")
def planted():
    return induction_model()


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    return interplab.load(make_tiny_tokenized_model(tmp_path_factory.mktemp("tiny_tokenized_ablation")))


def _tokens(model, n=5, p=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (n, p), generator=g)


# ------------------------------------------------------------------ fast == naive


@pytest.mark.parametrize("how", ["zero", "mean", "resample"])
def test_fast_equals_naive_every_family(tiny, how):
    toks = _tokens(tiny)
    # fast: all variants of a layer in one forward; naive: chunks split over two forwards per head
    fast = head_ablation_importance(tiny, toks, how=how, method="fast", induction_score=None)
    naive = head_ablation_importance(tiny, toks, how=how, method="naive", induction_score=None, max_batch_tokens=36)
    assert fast.settings["n_forward"] < naive.settings["n_forward"]
    assert (fast.per_chunk - naive.per_chunk).abs().max() <= 1e-4
    assert (fast.delta_loss - naive.delta_loss).abs().max() <= 1e-4
    assert fast.baseline_loss == pytest.approx(naive.baseline_loss, abs=1e-5)
    assert fast.delta_loss.abs().max() > 1e-5  # ablations do something on these random-weight models


@pytest.mark.parametrize("how", ["zero", "mean", "resample"])
def test_fast_variant_batching_and_chunk_split(planted, how):
    """Splitting variants and chunks over several forwards changes nothing."""
    toks, _ = repeated_tokens(planted, batch=6, seq_len=12, seed=3)
    one = head_ablation_importance(planted, toks, how=how, induction_score=None)
    split = head_ablation_importance(planted, toks, how=how, induction_score=None, max_batch_tokens=2 * toks.shape[1])
    assert split.settings["n_forward"] > one.settings["n_forward"]
    torch.testing.assert_close(split.per_chunk, one.per_chunk, atol=1e-5, rtol=0)


def test_fast_matches_hand_written_ablation(tiny):
    """Independent of both paths: one Ablate run by hand for one head."""
    toks = _tokens(tiny, n=3, p=10, seed=1)
    res = head_ablation_importance(tiny, toks, heads=[(1, 2)], induction_score=None)
    logits = tiny.run(toks, interventions=[interplab.Ablate("blocks.1.attn.hook_z", heads=[2], how="zero")]).logits
    clean = tiny.run(toks).logits
    ce = lambda lg: torch.stack([torch.nn.functional.cross_entropy(lg[i, :-1], toks[i, 1:]) for i in range(3)])
    torch.testing.assert_close(res.per_chunk[1, 2], ce(logits) - ce(clean), atol=1e-5, rtol=0)
    assert torch.isnan(res.delta_loss[0]).all() and torch.isnan(res.delta_loss[1, :2]).all()
    assert res.ranking() == [(1, 2, *[float(x) for x in (res.delta_loss[1, 2], res.ci_low[1, 2], res.ci_high[1, 2])])]


def test_mean_over_position_differs_from_all(planted):
    toks, _ = repeated_tokens(planted, batch=6, seq_len=12, seed=4)
    a = head_ablation_importance(planted, toks, how="mean", mean_over="all", induction_score=None)
    p = head_ablation_importance(planted, toks, how="mean", mean_over="position", induction_score=None)
    pn = head_ablation_importance(planted, toks, how="mean", mean_over="position", induction_score=None, method="naive")
    assert (a.per_chunk - p.per_chunk).abs().max() > 1e-3
    torch.testing.assert_close(p.per_chunk, pn.per_chunk, atol=1e-5, rtol=0)


def test_resample_index_is_seeded_and_never_self():
    a, b, c = resample_index(9, seed=0), resample_index(9, seed=0), resample_index(9, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a != torch.arange(9)).all() and ((a >= 0) & (a < 9)).all()


# ------------------------------------------------------------------ planted ground truth


@pytest.mark.parametrize("how", ["zero", "mean", "resample"])
def test_planted_circuit_heads_rank_first(planted, how):
    toks, _ = repeated_tokens(planted, batch=8, seq_len=20, seed=0)
    res = head_ablation_importance(planted, toks, how=how)
    top2 = {(layer, h) for layer, h, *_ in res.ranking()[:2]}
    assert top2 == {PREV_TOKEN_HEAD, INDUCTION_HEAD}
    circuit = min(float(res.delta_loss[PREV_TOKEN_HEAD]), float(res.delta_loss[INDUCTION_HEAD]))
    others = [float(res.delta_loss[layer, h]) for layer in range(2) for h in range(2) if (layer, h) not in top2]
    assert circuit > 0.2 and circuit > 100 * max(abs(x) for x in others)
    # the induction head is recognised; the previous-token head is important but not an induction head
    assert res.is_induction is not None
    assert res.is_induction[INDUCTION_HEAD] and not res.is_induction[PREV_TOKEN_HEAD]
    assert [(a, b) for a, b, *_ in res.flagged()] == [PREV_TOKEN_HEAD]
    h = res.headline()
    assert [x[:2] for x in h["induction_heads"]] == [list(INDUCTION_HEAD)]
    assert [x[:2] for x in h["important_non_induction_heads"]] == [list(PREV_TOKEN_HEAD)]


def test_planted_induction_score(planted):
    score, null, member = induction_scores(planted)
    assert float(score[INDUCTION_HEAD]) > 0.9 and float(null[INDUCTION_HEAD]) < 0.1
    assert member.sum() == 1 and member[INDUCTION_HEAD]


def test_planted_compare_induction_ablation(planted):
    c = compare_induction_ablation(planted, None, k=1, n_random=3, batch=8, seq_len=20)
    assert c.induction_heads == [INDUCTION_HEAD]
    assert c.induction_increase > 0.5
    assert float(c.random_increases.abs().max()) < 0.05
    assert set(c.headline()) >= {"induction_increase", "random_increase_mean", "random_increase_max", "clean_loss"}
    assert len(c.to_frame()) == 2 + 3


def test_induction_ablation_comparison_survives_save_and_load(planted, tmp_path):
    c = compare_induction_ablation(planted, None, k=1, n_random=2, batch=4, seq_len=12)
    c.save(tmp_path)
    assert (tmp_path / "induction_ablation.json").exists()
    back = InductionAblationComparison.load(tmp_path)
    assert back.induction_heads == c.induction_heads and back.random_heads == c.random_heads
    assert torch.equal(back.random_losses, c.random_losses) and back.headline() == c.headline()
    assert c.plot().data


# ------------------------------------------------------------------ statistics


def test_t_quantiles_match_tables():
    for df, q in [(1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (7, 2.3646243), (15, 2.1314495), (30, 2.0422725)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    assert t_quantile(0.95, 10) == pytest.approx(1.8124611, abs=1e-6)
    assert t_quantile(0.975, 10_000) == pytest.approx(1.959964 + 0.00024, abs=5e-4)


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_ci_contains_mean_and_shrinks(method):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, generator=g) + torch.tensor([[0.0], [1.0], [5.0]])
    lo, hi = confidence_interval(x, method=method)
    m = x.mean(-1)
    assert (lo < m).all() and (m < hi).all()
    lo2, hi2 = confidence_interval(x[:, :10], method=method)
    assert ((hi - lo) < (hi2 - lo2)).all()
    # coverage of the t interval on normal data is close to 95 %
    if method == "t":
        draws = torch.randn(2000, 8, generator=g)
        lo, hi = confidence_interval(draws)
        cover = ((lo < 0) & (0 < hi)).float().mean()
        assert 0.93 < float(cover) < 0.97


def test_result_ci_contains_mean(planted):
    toks, _ = repeated_tokens(planted, batch=8, seq_len=20, seed=1)
    for ci in ("t", "bootstrap"):
        res = head_ablation_importance(planted, toks, how="resample", ci=ci, induction_score=None)
        assert (res.ci_low <= res.delta_loss).all() and (res.delta_loss <= res.ci_high).all()
        torch.testing.assert_close(res.delta_loss, res.per_chunk.mean(-1))
        assert res.per_chunk.shape == (2, 2, 8)


# ------------------------------------------------------------------ result: frame, plot, save


def test_result_views_and_round_trip(tok_model, tmp_path):
    res = head_ablation_importance(tok_model, n_chunks=3, chunk_len=16, how="mean", layers=[1])
    assert res.settings["source"] == "pydoc_data.topics" and res.settings["n_chunks"] == 3
    df = res.to_frame()
    assert list(df.columns) == [
        "layer",
        "head",
        "delta_loss",
        "ci_low",
        "ci_high",
        "rank",
        "induction_score",
        "flagged",
    ]
    assert len(df) == tok_model.cfg.n_heads and bool((df["layer"] == 1).all())
    assert bool(df["delta_loss"].is_monotonic_decreasing)
    heat: Any = res.plot().data[0]
    assert heat.type == "heatmap" and "CI" in heat.hovertemplate
    res.save(tmp_path)
    assert (tmp_path / "head_ablation.safetensors").exists()
    json.loads((tmp_path / "head_ablation.json").read_text())  # strict JSON (NaN written as null)
    back = HeadAblationResult.load(tmp_path)
    assert back.headline() == res.headline()
    torch.testing.assert_close(back.per_chunk, res.per_chunk, equal_nan=True)
    h = res.headline()
    assert len(h["top_heads"]) == tok_model.cfg.n_heads and all(len(r) == 5 for r in h["top_heads"])
    assert math.isfinite(h["baseline_loss"])


# ------------------------------------------------------------------ bad input


def test_bad_input(tok_model, planted, tmp_path):
    toks = _tokens(planted, n=3, p=8)
    with pytest.raises(ValueError, match="head 5 is out of range"):
        head_ablation_importance(planted, toks, heads=[(1, 5)], induction_score=None)
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        head_ablation_importance(planted, toks, heads=[(2, 0)], induction_score=None)
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        head_ablation_importance(planted, toks, layers=[7], induction_score=None)
    with pytest.raises(ValueError, match="how="):
        head_ablation_importance(planted, toks, how="noise", induction_score=None)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="at least 2 chunks"):
        head_ablation_importance(planted, toks[:1], induction_score=None)
    with pytest.raises(ValueError, match="induction_score has shape"):
        head_ablation_importance(planted, toks, induction_score=torch.zeros(3, 3))
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.")
    with pytest.raises(ValueError, match="Ask for fewer or shorter chunks"):
        head_ablation_importance(tok_model, text=short, n_chunks=4, chunk_len=32)
    with pytest.raises(ValueError, match="no tokenizer"):
        head_ablation_importance(planted, n_chunks=4, chunk_len=8)


# ------------------------------------------------------------------ CLI


def test_cli_ablate(tok_model, tmp_path):
    d = tmp_path / "model"
    tok_model.save(d)
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "ablate",
            "--model",
            str(d),
            "--how",
            "resample",
            "--n-chunks",
            "3",
            "--chunk-len",
            "16",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["how"] == "resample" and len(h["top_heads"]) == min(10, tok_model.cfg.n_layers * tok_model.cfg.n_heads)
    assert "important_non_induction_heads" in h
    for f in ("run.json", "head_ablation.json", "head_ablation.safetensors", "head_ablation.parquet", "report.html"):
        assert (out / f).exists(), f
    assert json.loads((out / "run.json").read_text())["status"] == "complete"

    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    r = runner.invoke(
        app, ["ablate", "--model", str(d), "--text", str(short), "--n-chunks", "4", "--out", str(tmp_path / "bad")]
    )
    assert r.exit_code == 2 and "chunks" in r.output


def test_bench_ablation_small(tok_model):
    from interplab.bench.ablation import bench_ablation

    res = bench_ablation(tok_model, n_chunks=3, chunk_len=16, layers=[0, 1], rounds=3)
    assert res["max_abs_diff"] <= 1e-4 and res["heads_timed"] == 2 * tok_model.cfg.n_heads
    assert res["naive_s"] >= 0 and res["fast_s"] >= 0 and res["speedup"] > 0 and res["extrapolated"] is False
    assert 1 < res["speedup_arithmetic_model"] < 2


def test_ablation_work_ratio_smollm2_shape():
    """The multiply-add model for SmolLM2's shapes (no weights needed): prefix reuse alone stays below 2x."""
    from types import SimpleNamespace

    from interplab.bench.ablation import ablation_work_ratio

    cfg = SimpleNamespace(
        n_layers=30, n_heads=9, n_kv_heads=3, d_model=576, d_head=64, d_mlp=1536, gated_mlp=True, d_vocab=49152
    )
    assert ablation_work_ratio(cfg, [5, 15, 25], 128) == pytest.approx(1.555, abs=1e-3)
    assert ablation_work_ratio(cfg, list(range(30)), 128, one_call=True) == pytest.approx(1.618, abs=1e-3)
    free_unembed = SimpleNamespace(**{**vars(cfg), "d_vocab": 0})
    assert ablation_work_ratio(free_unembed, list(range(30)), 128, one_call=True) < 30 / 15.5


# ------------------------------------------------------------------ SmolLM2
