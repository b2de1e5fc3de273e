"""Digit addition: data format, planted per-digit phase changes detected at the right steps, short run via CLI."""

from __future__ import annotations

import json
import math

import torch
from typer.testing import CliRunner

from interplab.train import addition as A


def test_batch_format_is_correct_addition():
    cfg = A.AdditionConfig(n_digits=5)
    t = A.make_batch(cfg, 64, torch.Generator().manual_seed(0))
    assert t.shape == (64, 18) and (t[:, 5] == A.PLUS).all() and (t[:, 11] == A.EQ).all()
    num = lambda d: sum(int(x) * 10**i for i, x in enumerate(reversed(d.tolist())))
    for row in t:
        assert num(row[:5]) + num(row[6:11]) == num(row[12:])


def test_phase_changes_on_planted_sigmoid_curves():
    steps = list(range(0, 3000, 50))
    centres = [400, 1200, 2100]
    curves = [[2.3 * (1 - 1 / (1 + math.exp(-(s - c) / 40))) + 0.01 for c in centres] for s in steps]
    curves[40][1] = 3.0  # a late spike must not move digit 1's change
    ph = A.digit_phase_changes(steps, curves)
    for p, c in zip(ph, centres):
        assert abs(p["step"] - c) <= 100, ph
    flat = [[2.3, 2.3] for _ in steps]
    assert [p["step"] for p in A.digit_phase_changes(steps, flat)] == [None, None]


def test_short_addition_run(tmp_path):
    from interplab.cli import app

    r = CliRunner().invoke(
        app,
        [
            "train",
            "addition",
            "--set",
            "n_digits=2",
            "--set",
            "steps=300",
            "--set",
            "lr=3e-3",
            "--set",
            "d_model=64",
            "--set",
            "d_mlp=256",
            "--set",
            "d_head=16",
            "--set",
            "log_every=50",
            "--out",
            str(tmp_path),
            "--json",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert len(h["final_digit_loss"]) == 3 and len(h["phase_changes"]) == 3
    assert h["final_loss"] < 0.5 * math.log(10)  # learned well beyond chance
    assert (tmp_path / "report.html").exists()
