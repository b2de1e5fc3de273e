"""``interplab bench sweep``: what a sweep costs per cell on each backend, measured on empty cells.

An empty cell is ``interplab models`` (lists the registry, writes a run directory; no model, no data), so a
cell's wall time is the sweep's own overhead: the child interpreter and interplab's imports, the run directory,
the marker, and the backend's dispatch. Each backend runs the same small sweep (``cells`` cells into a fresh
directory) once per round, in the interleaved rounds of :mod:`interplab.bench.protocol`; ``overhead_s[backend]``
is the fastest sweep's wall time divided by its cells (the process and Ray backends run ``max_parallel`` cells
at once, so theirs can be below one child's start-up). ``direct_s`` is one such child run directly, without a
sweep, for comparison. A local Ray (``max_parallel`` CPUs) is started once before the rounds and shut down after;
its workers start during the warm-up round.

``speedup_2_workers`` (with ``speedup_cells`` > 0): the wall time of a sweep of ``speedup_cells`` CPU-bound cells
of about ``cell_seconds`` each (``train double-descent`` on one width and noise level, its step count calibrated
from two short runs, one thread per cell) on one worker (serial) divided by the same sweep on two (process,
``--max-parallel 2``), in ``speedup_rounds`` interleaved rounds (ratio of minimums). On 2 free cores the goal is
≥ 1.8; fewer free cores cap it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interplab.bench.protocol import interleave
from interplab.sweeps.backends import BACKENDS, make_backend
from interplab.sweeps.cell import CLI
from interplab.sweeps.engine import run_sweep

__all__ = ["bench_sweep"]

EMPTY_COMMAND = ["models"]


def _calibrated_steps(root: Path, cell_seconds: float, env: dict[str, str]) -> int:
    """Steps of the speed-up cell that take about ``cell_seconds`` here: two timed runs (200 and 800 steps)
    separate the cost per step from the fixed cost of a run (interpreter, imports, data, run directory)."""
    import time

    def run(steps: int) -> float:
        argv = [sys.executable, "-c", CLI, "train", "double-descent", *_cell_sets(steps)]
        t = time.perf_counter()
        out = root / f"calib-{steps}"
        subprocess.run([*argv, "--out", str(out), "--json", "--no-progress"], capture_output=True, env=env, check=True)
        return time.perf_counter() - t

    short, long = run(200), run(800)
    per_step = max(long - short, 0.01) / 600
    fixed = max(short - 200 * per_step, 0.0)
    return max(50, int((cell_seconds - fixed) / per_step))


def _cell_sets(steps: int) -> list[str]:
    sets = ["widths=256", "noises=0.2", "n_evals=2", "threads=1", f"steps={steps}"]
    return [x for s in sets for x in ("--set", s)]


def bench_sweep(
    cells: int = 4,
    rounds: int = 3,
    warmup: int = 1,
    backends: Sequence[str] = BACKENDS,
    max_parallel: int = 2,
    speedup_cells: int = 0,
    cell_seconds: float = 30.0,
    speedup_rounds: int = 1,
) -> dict[str, Any]:
    """Seconds per empty cell of each backend (``overhead_s``) and of one direct child run (``direct_s``).

    Args:
        cells: cells per sweep.
        rounds, warmup: timed and untimed interleaved rounds (a round runs one sweep per backend).
        backends: backends timed (``ray`` is left out, with a note, when Ray is not installed).
        max_parallel: cells at once for the process and Ray backends.
        speedup_cells, cell_seconds, speedup_rounds: the 1-vs-2-worker sweep (skipped when ``speedup_cells`` is 0).
    """
    if cells < 1 or max_parallel < 1:
        raise ValueError("cells and max_parallel must be at least 1.")
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown backends {bad}; use {', '.join(BACKENDS)}.")
    notes: list[str] = []
    backends = list(backends)
    ray: Any = None
    if "ray" in backends:
        try:
            import ray
        except ImportError:
            backends.remove("ray")
            notes.append("ray not installed (pip install -e .[ray]): not timed")
    grid = {"i": [str(i) for i in range(cells)]}  # no option of `models`: every cell runs the same command
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    with tempfile.TemporaryDirectory(prefix="interplab-bench-sweep-") as tmp:
        root = Path(tmp)
        counter = iter(range(10**9))

        def one_sweep(backend: str) -> int:
            be = make_backend(backend, max_parallel=None if backend == "serial" else max_parallel)
            res = run_sweep(EMPTY_COMMAND, [], grid, lambda c: [], root / f"{backend}-{next(counter)}", be)
            if res.completed != cells:
                raise RuntimeError(f"an empty cell failed on the {backend} backend; see {root}.")
            return res.completed

        def direct() -> int:
            out = root / f"direct-{next(counter)}"
            argv = [sys.executable, "-c", CLI, *EMPTY_COMMAND, "--out", str(out), "--json"]
            return subprocess.run(argv, capture_output=True, env=env, check=True).returncode

        variants: dict[str, Any] = {"direct": direct}
        variants |= {b: (lambda b=b: one_sweep(b)) for b in backends}
        started = False
        if "ray" in backends and not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=max_parallel, include_dashboard=False, log_to_driver=False)
            started = True
        try:
            t = interleave(variants, rounds=rounds, warmup=warmup)
        finally:
            if started:
                ray.shutdown()
        speed: dict[str, Any] = {}
        if speedup_cells > 0:
            steps = _calibrated_steps(root, cell_seconds, env)
            seeds = {"set.seeds": [str(i) for i in range(speedup_cells)]}
            command = ["train", "double-descent", *_cell_sets(steps), "--no-progress"]

            def work(workers: int) -> int:
                be = make_backend("serial" if workers == 1 else "process", max_parallel=None if workers == 1 else 2)
                res = run_sweep(command, [], seeds, lambda c: [], root / f"work{workers}-{next(counter)}", be)
                if res.completed != speedup_cells:
                    raise RuntimeError(f"a speed-up cell failed with {workers} worker(s); see {root}.")
                return res.completed

            w = interleave({"1": lambda: work(1), "2": lambda: work(2)}, rounds=speedup_rounds, warmup=0)
            speed = {
                "speedup_2_workers": round(w.ratio("1", "2"), 3),
                "speedup_cell_steps": steps,
                "speedup_cells": speedup_cells,
                "speedup_wall_s": {"1_worker": round(w.min("1"), 1), "2_workers": round(w.min("2"), 1)},
                "speedup_rounds": speedup_rounds,
            }
    out: dict[str, Any] = {
        "cells": cells,
        "max_parallel": max_parallel,
        "overhead_s": {b: round(t.min(b) / cells, 3) for b in backends},
        "overhead_s_median": {b: round(t.median(b) / cells, 3) for b in backends},
        "direct_s": round(t.min("direct"), 3),
        "direct_s_median": round(t.median("direct"), 3),
        "cpus": os.cpu_count(),
        **speed,
    }
    if notes:
        out["notes"] = notes
    return out | t.protocol()
