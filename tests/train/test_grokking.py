"""Grokking (Nanda et al. 2023): fast forward == model forward, Fourier analysis on planted ground truth,
and a shortened run that groks, with restricted loss falling before test loss, through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import interplab
from interplab.models.model import Model
from interplab.train import fourier as fr
from interplab.train import grokking as G


def test_fast_forward_matches_model_and_hooks():
    cfg = G.GrokkingConfig()  # Nanda et al.'s architecture, p = 113
    data = G.make_data(cfg)
    model = G.make_model(cfg)
    assert len(data["train"]) == int(0.3 * 113 * 113)
    assert set(data["train"].tolist()).isdisjoint(data["test"].tolist())
    idx = torch.arange(0, 113 * 113, 97)
    with torch.no_grad():
        ref = model(G.tokens(cfg, data, idx)).logits[:, -1]
        fast, acts = G.forward_eq(model, data["a"][idx], data["b"][idx], cfg.p)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    m = Model(model)
    _, cache = m.run(G.tokens(cfg, data, idx), cache=["blocks.0.mlp.hook_post"])
    torch.testing.assert_close(acts, cache["blocks.0.mlp.hook_post"][:, -1], atol=1e-5, rtol=1e-5)


def test_fourier_planted_embedding_and_neurons():
    p, keys = 113, [4, 9, 17, 40]
    x = torch.arange(p, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    cols = []
    for k in keys:
        for f in (torch.cos, torch.sin):
            cols.append(f(2 * math.pi * k * x / p))
    W = torch.stack(cols, 1) @ torch.randn(len(cols), 64, generator=g, dtype=torch.float64)  # [p, 64]
    norms = fr.embedding_freq_norms(W)
    found = (torch.nonzero(norms > 1e-6 * norms.max()).flatten() + 1).tolist()
    assert found == keys
    # neurons: ReLU(cos(w_k (a + b) + phase)) for neurons of frequency k
    a = x[:, None]
    b = x[None, :]
    acts = []
    for i in range(60):
        k = keys[i % 3]  # frequency 40 is not used by neurons
        ph = float(torch.rand((), generator=g)) * 2 * math.pi
        acts.append(torch.relu(torch.cos(2 * math.pi * k * (a + b) / p + ph)))
    A = torch.stack(acts, -1)
    freq, fve = fr.neuron_frequencies(A)
    assert freq.tolist() == [keys[i % 3] for i in range(60)]
    assert fve.min() > 0.5
    assert fr.key_frequencies(A) == keys[:3]


def test_restricted_excluded_and_gini_planted():
    p, keys = 31, [2, 7]
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    c = torch.arange(p).double()
    logits = (
        torch.stack([torch.cos(2 * math.pi * k * (a[:, None] + b[:, None] - c[None]) / p) for k in keys]).sum(0) * 5
    )
    r, e = fr.restricted_excluded_logits(logits, keys)
    torch.testing.assert_close(r, logits, atol=1e-9, rtol=0)  # nothing outside the key directions
    torch.testing.assert_close(e, torch.zeros_like(e), atol=1e-9, rtol=0)  # nothing left once removed
    r1, e1 = fr.restricted_excluded_logits(logits, [2])
    torch.testing.assert_close(r1 + e1 - logits.mean(0, keepdim=True), logits, atol=1e-9, rtol=0)
    assert fr.gini(torch.ones(10)) == pytest.approx(0.0)
    assert fr.gini(torch.tensor([0.0] * 9 + [1.0])) == pytest.approx(0.9)


@pytest.fixture(scope="module")
def grok_run(tmp_path_factory):
    from interplab.cli import app

    out = tmp_path_factory.mktemp("grok")
    res = CliRunner().invoke(
        app,
        [
            "train",
            "grokking",
            "--set",
            "p=31",
            "--set",
            "frac_train=0.5",
            "--set",
            "lr=3e-3",
            "--set",
            "epochs=1500",
            "--set",
            "d_mlp=128",
            "--set",
            "log_every=50",
            "--set",
            "snapshot_every=100",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_short_run_groks_with_progress_measures(grok_run):
    out, h = grok_run
    for key in ("final_train_acc", "final_test_acc", "grok_epoch", "key_frequencies", "phases"):
        assert key in h
    assert h["final_train_acc"] == 1.0 and h["final_test_acc"] >= 0.99
    assert h["train_acc_1_epoch"] is not None and h["grok_epoch"] - h["train_acc_1_epoch"] >= 500  # grokking gap
    assert 3 <= len(h["key_frequencies"]) <= 6
    assert [ph["name"] for ph in h["phases"]] == ["memorisation", "circuit formation", "clean-up"]
    assert h["phases"][0]["end"] < h["phases"][1]["end"] <= h["grok_epoch"]
    res = G.GrokkingResult.load(out)
    test = {m["step"]: m["test_loss"] for m in res.metrics}
    prog = {r["step"]: r for r in res.progress}
    # restricted loss falls (below 0.1) well before the test loss does
    t_r = min(s for s, r in prog.items() if r["restricted_loss"] < 0.1)
    t_t = min(s for s, v in test.items() if v < 0.1)
    assert t_r < t_t - 200
    # excluded loss rises during circuit formation: above its value at the end of memorisation
    t_mem = h["phases"][0]["end"]
    e_mem = prog[min(s for s in prog if s >= t_mem)]["excluded_loss"]
    e_mid = prog[min(s for s in prog if s >= h["phases"][1]["end"])]["excluded_loss"]
    assert e_mid > 2 * e_mem
    assert (out / "report.html").exists() and (out / "metrics.jsonl").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_trained_model_loads_through_interplab_load(grok_run):
    out, _h = grok_run
    m = interplab.load(str(out))
    assert m.cfg.n_layers == 1 and m.cfg.d_vocab == 32
    cfg = G.GrokkingConfig(p=31, frac_train=0.5)
    data = G.make_data(cfg)
    logits, cache = m.run(G.tokens(cfg, data), cache=["blocks.0.attn.hook_pattern"])
    acc = float((logits[:, -1, :31].argmax(-1) == data["labels"]).double().mean())
    assert acc >= 0.99
    assert cache["blocks.0.attn.hook_pattern"].shape == (31 * 31, 4, 3, 3)


def test_resume_via_cli_rejects_config_changes(grok_run, tmp_path):
    from interplab.cli import app

    out, _ = grok_run
    r = CliRunner().invoke(app, ["train", "grokking", "--resume", str(out), "--set", "p=37"])
    assert r.exit_code == 2 and "only" in r.output
    r = CliRunner().invoke(app, ["train", "nope"])
    assert r.exit_code == 2 and "available" in r.output


def test_bench_grokking_cli(tmp_path):
    from interplab.cli import app

    r = CliRunner().invoke(
        app,
        [
            "bench",
            "grokking",
            "--p",
            "23",
            "--steps",
            "2",
            "--rounds",
            "2",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "b"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (
        len(res["ms_per_step"]["1"]) == 2
        and res["median_ms_per_step"]["1"] > 0
        and res["train_pairs"] == int(0.3 * 23 * 23)
    )
    r = CliRunner().invoke(app, ["bench", "grokking", "--threads", "x"])
    assert r.exit_code == 2 and "thread counts" in r.output
    r = CliRunner().invoke(app, ["bench", "grokking", "--p", "24"])
    assert r.exit_code == 2 and "prime" in r.output
