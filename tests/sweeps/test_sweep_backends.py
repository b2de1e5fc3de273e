"""``interplab sweep`` end to end on a tiny grokking run (a few seconds per cell, most of it imports): the same
table on the serial, process and Ray backends, a failing cell recorded and the others complete, a rerun that runs
only the cells not complete, and up-front errors for bad grid keys."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from interplab.cli import app

COMMAND = [
    "train",
    "grokking",
    "--set",
    "p=13",
    "--set",
    "epochs=30",
    "--set",
    "d_model=16",
    "--set",
    "d_mlp=32",
    "--set",
    "log_every=10",
    "--set",
    "ckpt_every=30",
    "--set",
    "snapshot_every=30",
    "--set",
    "threads=1",
    "--no-progress",
]
GRID = ["--grid", "set.frac_train=0.3,0.5,1.5"]  # 1.5 is no training fraction: that cell fails, the others run
VARYING = ["wall_s", "steps_per_second", "training_seconds", "report", "run_dir"]
"""Columns that differ between two runs of the same cell (timings, absolute paths)."""


def sweep(out: Path, *extra: str) -> tuple[dict, pd.DataFrame]:
    r = CliRunner().invoke(app, ["sweep", *COMMAND, *GRID, "--out", str(out), "--json", *extra])
    assert r.exit_code == 0, r.output
    head = json.loads(r.stdout)
    return head, pd.read_parquet(head["table"])


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in VARYING if c in df.columns])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "sweep"
    head, df = sweep(out)
    return out, head, df


def test_serial_sweep_records_every_cell_and_a_failure_without_stopping(serial):
    out, head, df = serial
    assert {k: head[k] for k in ("n_cells", "completed", "failed", "backend")} == {
        "n_cells": 3,
        "completed": 2,
        "failed": 1,
        "backend": "serial",
    }
    assert Path(head["table"]) == out.resolve() / "sweep.parquet"
    assert df["set.frac_train"].tolist() == [0.3, 0.5, 1.5]
    assert df["status"].tolist() == ["complete", "complete", "failed"]
    assert "frac_train must be in (0, 1), got 1.5" in df["error"][2]
    assert df["error"][:2].isna().all()
    assert df["epochs_trained"][:2].tolist() == [30, 30] and df["final_train_acc"][:2].notna().all()
    for cell in df["cell"][:2]:  # each complete cell is an ordinary, complete run directory
        run = json.loads((out / "cells" / cell / "run.json").read_text())
        assert run["status"] == "complete" and run["command"] == "train-grokking"
    assert "Metrics over the grid" in Path(head["report"]).read_text()


def test_process_backend_gives_the_serial_table(serial, tmp_path):
    _, _, df = serial
    head, got = sweep(tmp_path / "sweep", "--backend", "process", "--max-parallel", "2")
    assert head["backend"] == "process"
    pd.testing.assert_frame_equal(comparable(got), comparable(df))


@pytest.mark.ray
def test_ray_backend_on_a_local_cluster_gives_the_serial_table(serial, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    df = serial[2]
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    # no --address: the sweep starts a local Ray with 2 CPUs (2 cells at once x 1 CPU each) and shuts it down
    head, got = sweep(tmp_path / "sweep", "--backend", "ray", "--max-parallel", "2", "--no-report")
    assert head["backend"] == "ray"
    assert not ray.is_initialized()
    pd.testing.assert_frame_equal(comparable(got), comparable(df))


def test_rerun_runs_only_the_cells_not_complete(serial, tmp_path):
    src, _, df = serial
    out = tmp_path / "sweep"
    shutil.copytree(src, out)
    kept = out / "cells" / "set.frac_train=0.3" / "run.json"
    before = (kept.read_bytes(), kept.stat().st_mtime_ns)
    (out / "cells" / "set.frac_train=0.5" / "sweep_cell.json").unlink()  # as if the sweep was killed in this cell
    head, got = sweep(out, "--no-report")
    assert (head["ran"], head["skipped"], head["completed"], head["failed"]) == (2, 1, 2, 1)  # 0.5 and failed 1.5
    assert (kept.read_bytes(), kept.stat().st_mtime_ns) == before  # the complete cell was not run again
    pd.testing.assert_frame_equal(comparable(got), comparable(df))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "grokking", "--grid", "seed=0,1"], "no option --seed (for a config key use set.seed)"),
        (["train", "grokking", "--grid", "set.bogus=0,1"], "no config key 'bogus'; valid: p, operation"),
        (["train", "grokking", "--grid", "set.seed=0", "--", "--out", "x"], "the sweep sets each cell's --out"),
        (["nosuch", "--grid", "seed=0"], "no command 'nosuch'"),
        (["bench", "--grid", "seed=0"], "needs a command to sweep"),
        (["ablate", "--grid", "seed=a,b"], "Invalid value for '--seed'"),
        (["train", "grokking", "--grid", "set.seed=0", "--backend", "spark"], "use one of serial, process, ray"),
    ],
)
def test_bad_sweeps_fail_before_any_cell_runs(args, needle, tmp_path):
    r = CliRunner().invoke(app, ["sweep", *args, "--out", str(tmp_path / "s")])
    assert r.exit_code == 2, r.output
    assert needle in " ".join(r.output.split()), r.output
    assert not (tmp_path / "s" / "cells").exists()


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    from interplab.sweeps.backends import BackendUnavailable, make_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install -e \.\[ray\]"), make_backend("ray"):
        pass


def test_a_rerun_with_another_command_is_refused_and_leaves_the_sweep_as_it_was(serial):
    out, _, _ = serial
    before = (out / "run.json").read_bytes()
    r = CliRunner().invoke(app, ["sweep", *COMMAND, "--set", "lr=1e-2", *GRID, "--out", str(out)])
    assert r.exit_code == 2 and "resume it with the same command" in " ".join(r.output.split()), r.output
    assert (out / "run.json").read_bytes() == before
