"""Trainer: determinism, kill + resume == uninterrupted, NaN stop keeping the last good checkpoint, configs, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from interplab.train import grokking as G
from interplab.train.config import build_config
from interplab.train.trainer import (
    Trainer,
    TrainingDiverged,
    latest_checkpoint,
    load_optimizer,
    read_metrics,
    save_optimizer,
)

SMALL = {
    "p": 23,
    "frac_train": 0.5,
    "lr": 3e-3,
    "epochs": 240,
    "d_model": 32,
    "d_mlp": 64,
    "n_heads": 2,
    "d_head": 16,
    "log_every": 20,
    "ckpt_every": 100,
    "snapshot_every": 60,
}


class Killed(RuntimeError):
    pass


def _kill_at(k):
    def cb(step, trainer):
        if step == k:
            raise Killed(f"simulated kill at step {k}")

    return cb


def test_same_seed_same_metrics_and_kill_resume_is_identical(tmp_path):
    cfg = G.GrokkingConfig(**SMALL)
    full = G.train(cfg, tmp_path / "full", progress=False)
    again = G.train(G.GrokkingConfig(**SMALL), tmp_path / "again", progress=False)
    assert full.metrics == again.metrics  # bit-identical, not approximately

    with pytest.raises(Killed):
        G.train(G.GrokkingConfig(**SMALL), tmp_path / "killed", progress=False, callbacks=[_kill_at(157)])
    ck = latest_checkpoint(tmp_path / "killed")
    assert ck is not None and ck.name == "step_0000100"
    # the metrics file holds lines past the checkpoint (logged at 120, 140); resume must drop and redo them
    assert max(m["step"] for m in read_metrics(tmp_path / "killed")) == 140
    resumed = G.train(G.GrokkingConfig(**SMALL), tmp_path / "killed", resume=True, progress=False)
    assert resumed.metrics == full.metrics
    assert resumed.progress == full.progress  # restricted / excluded loss on snapshots too
    wa = load_file(str(tmp_path / "full" / "model.safetensors"))
    wb = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # optimizer state and RNG are in the checkpoint, no pickle files anywhere
    last = latest_checkpoint(tmp_path / "killed")
    assert last is not None
    files = {p.name for p in last.iterdir()}
    assert {"model.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "state.json"} <= files
    assert not list((tmp_path / "killed").rglob("*.pt")) and not list((tmp_path / "killed").rglob("*.pkl"))


def test_optimizer_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.98))
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    save_optimizer(opt, tmp_path)
    opt2 = torch.optim.AdamW(m.parameters(), lr=1.0)
    load_optimizer(opt2, tmp_path)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            assert torch.equal(v, b["state"][pid][k])


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randn(16, 3)

    def step_fn(step):
        loss = m(x).pow(2).mean()
        return loss * float("nan") if step == 33 else loss

    tr = Trainer(
        m,
        opt,
        step_fn,
        lambda s: {"w": float(m.weight.sum())},
        steps=100,
        run_dir=tmp_path,
        log_every=10,
        ckpt_every=20,
        progress=False,
    )
    with pytest.raises(TrainingDiverged, match="NaN/inf between steps 30 and 40"):
        tr.fit()
    ck = latest_checkpoint(tmp_path)
    assert ck is not None and ck.name == "step_0000020"
    assert json.loads((ck / "state.json").read_text())["step"] == 20
    w = load_file(str(ck / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())
    assert not (tmp_path / "checkpoints" / "step_0000040").exists()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 10, 20, 30]


def test_config_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('p = 31\noperation = "sub"\nlr = 2e-3\n')
    cfg = build_config(G.GrokkingConfig, file=f, sets=["epochs=500", "keep_snapshots=true", "frac_train=0.4"])
    assert (cfg.p, cfg.operation, cfg.lr, cfg.epochs, cfg.keep_snapshots, cfg.frac_train) == (
        31,
        "sub",
        2e-3,
        500,
        True,
        0.4,
    )
    with pytest.raises(ValueError, match="unknown key"):
        build_config(G.GrokkingConfig, sets=["learning_rate=1"])
    with pytest.raises(ValueError, match="prime"):
        build_config(G.GrokkingConfig, sets=["p=100"])
    with pytest.raises(ValueError, match="cannot read"):
        build_config(G.GrokkingConfig, sets=["epochs=many"])


def _regression_trainer(run_dir, callbacks=(), stop_below=0.05):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    w = torch.tensor([[1.0, -2.0, 0.5]])

    def step_fn(step):
        x = torch.randn(32, 3, generator=g)
        return ((model(x) - x @ w.T) ** 2).mean()

    def eval_fn(step):
        x = torch.linspace(-1, 1, 30).reshape(10, 3)
        return {"loss": float(((model(x) - x @ w.T) ** 2).mean())}

    return Trainer(
        model,
        opt,
        step_fn,
        eval_fn,
        steps=400,
        run_dir=run_dir,
        log_every=10,
        ckpt_every=50,
        progress=False,
        generators={"data": g},
        callbacks=list(callbacks),
        should_stop=lambda ms: ms[-1]["loss"] < stop_below,
    )


def test_stop_rule_ends_training_and_resume_stops_at_the_same_step(tmp_path):
    full = _regression_trainer(tmp_path / "full")
    ms = full.fit()
    assert full.stopped_early and ms[-1]["step"] < 400 and ms[-1]["loss"] < 0.05
    assert all(m["loss"] >= 0.05 for m in ms[:-1])  # stopped at the first log step that met the rule
    last = latest_checkpoint(tmp_path / "full")
    assert last is not None and last.name == f"step_{ms[-1]['step']:07d}"  # checkpoint at the stop
    stop = ms[-1]["step"]
    # killed before the stop, resumed: the same metrics and the same stop step
    with pytest.raises(Killed):
        _regression_trainer(tmp_path / "killed", callbacks=[_kill_at(stop - 5)]).fit()
    resumed = _regression_trainer(tmp_path / "killed")
    assert resumed.fit(resume=True) == ms and resumed.stopped_early
    # resuming a run that already stopped trains no further
    again = _regression_trainer(tmp_path / "full")
    assert again.fit(resume=True) == ms and again.step == stop


def test_clean_stop_rule_on_planted_curves():
    def curve(ws, acc):
        return [{"step": 100 * i, "test_acc": a, "weight_norm_sq": w} for i, (w, a) in enumerate(zip(ws, acc))]

    falling = curve([3000 - 100 * i for i in range(20)], [1.0] * 20)  # still shrinking 3 %/window
    assert not G.clean_stop(falling, window=1000, tol=0.01)
    flat = curve([3000] * 5 + [1000 + 1 * i for i in range(15)][::-1], [0.5] * 5 + [1.0] * 15)
    assert G.clean_stop(flat, window=1000, tol=0.01)
    not_grokked = curve([1000] * 20, [0.5] * 20)  # flat weights but test accuracy < 0.99: memorised, keep going
    assert not G.clean_stop(not_grokked, window=1000, tol=0.01)
