"""``interplab bench sweep``: what a sweep costs per cell on each backend, measured on empty cells.

An empty cell is ``interplab models`` (lists the registry, writes a run directory; no model, no data), so a
cell's wall time is the sweep's own overhead: the child interpreter and interplab's imports, the run directory,
the marker, and the backend's dispatch. Each backend runs the same small sweep (``cells`` cells into a fresh
directory) once per round, in the interleaved rounds of :mod:`interplab.bench.protocol`; ``overhead_s[backend]``
is the fastest sweep's wall time divided by its cells (the process and Ray backends run ``max_parallel`` cells
at once, so theirs can be below one child's start-up). ``direct_s`` is one such child run directly, without a
sweep, for comparison. A local Ray (``max_parallel`` CPUs) is started once before the rounds and shut down after;
its workers start during the warm-up round.
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


def bench_sweep(
    cells: int = 4,
    rounds: int = 3,
    warmup: int = 1,
    backends: Sequence[str] = BACKENDS,
    max_parallel: int = 2,
) -> dict[str, Any]:
    """Seconds per empty cell of each backend (``overhead_s``) and of one direct child run (``direct_s``).

    Args:
        cells: cells per sweep.
        rounds, warmup: timed and untimed interleaved rounds (a round runs one sweep per backend).
        backends: backends timed (``ray`` is left out, with a note, when Ray is not installed).
        max_parallel: cells at once for the process and Ray backends.
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
    out: dict[str, Any] = {
        "cells": cells,
        "max_parallel": max_parallel,
        "overhead_s": {b: round(t.min(b) / cells, 3) for b in backends},
        "overhead_s_median": {b: round(t.median(b) / cells, 3) for b in backends},
        "direct_s": round(t.min("direct"), 3),
        "direct_s_median": round(t.median("direct"), 3),
        "cpus": os.cpu_count(),
    }
    if notes:
        out["notes"] = notes
    return out | t.protocol()
