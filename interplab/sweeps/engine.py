"""A sweep: one interplab command over the product of a grid, each cell an ordinary run directory, resumable, gathered
into one table.

Layout of a sweep directory::

    SWEEP/sweep.json                  the command, its fixed arguments and the grid (a rerun must match the command)
    SWEEP/cells/<cell>/               the cell's run directory (``--out``): run.json, the command's files, cell.log
    SWEEP/cells/<cell>/sweep_cell.json  written atomically when the cell ends: status, values, headline, error
    SWEEP/sweep.parquet               one row per cell (:func:`gather`)

A cell counts as done when its ``sweep_cell.json`` says ``complete``; a rerun of the same sweep into the same
directory skips those cells and runs the rest (never started, killed half way, or failed), so a killed sweep, or one
whose worker died, is finished by running it again. The grid may grow between runs; the command may not change.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interplab.io.atomic import atomic_write, write_json
from interplab.sweeps.backends import Backend
from interplab.sweeps.cell import CellOutcome, CellSpec
from interplab.sweeps.grid import Cell, expand, typed_values

__all__ = ["MANIFEST", "MARKER", "TABLE", "SweepResult", "check_resumable", "flatten_headline", "gather", "run_sweep"]

MANIFEST = "sweep.json"
MARKER = "sweep_cell.json"
TABLE = "sweep.parquet"
CELLS = "cells"
META_COLUMNS = ("cell", "status", "error", "wall_s")
"""The table's columns besides the grid keys and the headline (a headline key equal to one of these, or to a grid
key, becomes ``headline.KEY``)."""


@dataclass
class SweepResult:
    """What a sweep did: cells in the grid, complete and failed after this run, how many ran now and how many were
    skipped as already complete, the table's path and the backend's name."""

    n_cells: int
    completed: int
    failed: int
    ran: int
    skipped: int
    table: Path
    backend: str
    wall_s: float

    def headline(self) -> dict[str, Any]:
        return {
            "n_cells": self.n_cells,
            "completed": self.completed,
            "failed": self.failed,
            "table": str(self.table.resolve()),
            "backend": self.backend,
            "ran": self.ran,
            "skipped": self.skipped,
            "wall_s": self.wall_s,
        }


def flatten_headline(headline: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalar entries of a ``--json`` headline, nested objects flattened to ``a.b`` keys; lists are left out."""
    out: dict[str, Any] = {}
    for k, v in headline.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_headline(v, key + "."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[key] = v
    return out


def check_resumable(sweep_dir: str | Path, command: Sequence[str], args: Sequence[str]) -> None:
    """A ValueError if ``sweep_dir`` holds a sweep of another command or other fixed arguments (a rerun into a
    sweep directory must repeat its command; the grid may change)."""
    p = Path(sweep_dir) / MANIFEST
    if not p.exists():
        return
    old = json.loads(p.read_text())
    if (old.get("command"), old.get("args")) != (list(command), list(args)):
        raise ValueError(
            f"{sweep_dir} holds a sweep of `{' '.join(old.get('command', []) + old.get('args', []))}`; "
            "resume it with the same command and arguments, or give another --out."
        )


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        m = json.loads(path.read_text())
        return m if isinstance(m, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


def run_sweep(
    command: Sequence[str],
    args: Sequence[str],
    grid: Mapping[str, Sequence[str]],
    to_args: Callable[[Cell], list[str]],
    sweep_dir: str | Path,
    backend: Backend,
    *,
    cpus_per_cell: float = 1,
    on_cell: Callable[[CellOutcome, Mapping[str, str]], None] | None = None,
) -> SweepResult:
    """Run ``interplab COMMAND ARGS <cell args>`` for every cell of ``grid`` not yet complete in ``sweep_dir``
    on ``backend``, then gather the table (:data:`TABLE`).

    Args:
        command: the command's words (``["train"]``, ``["bench", "grokking"]``).
        args: the arguments every cell shares (``["grokking", "--set", "p=13"]``), without ``--out`` / ``--json``.
        grid: key -> values (:func:`~interplab.sweeps.grid.parse_grid`).
        to_args: a cell's own arguments (:func:`~interplab.sweeps.grid.cell_args` with the command's options).
        sweep_dir: the sweep directory (created; reused to resume).
        backend: where cells run (:func:`~interplab.sweeps.backends.make_backend`).
        cpus_per_cell: threads each cell may use (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``; the same for every
            backend, so that the numbers do not depend on it).
        on_cell: called with each outcome and the cell's values as it ends (progress lines).
    """
    t0 = time.perf_counter()
    clash = sorted(set(grid) & set(META_COLUMNS))
    if clash:
        raise ValueError(f"grid keys {clash} are names of the sweep table's own columns {list(META_COLUMNS)}.")
    root = Path(sweep_dir).resolve()
    manifest = {"command": list(command), "args": list(args), "grid": {k: list(v) for k, v in grid.items()}}
    check_resumable(root, command, args)
    write_json(root / MANIFEST, manifest, indent=2)

    cells = expand(grid)
    by_name = {c.name: c for c in cells}
    todo = [c for c in cells if (_read_marker(root / CELLS / c.name / MARKER) or {}).get("status") != "complete"]
    import interplab

    src = str(Path(interplab.__file__).resolve().parent.parent)  # this interplab first on the child's path
    threads = str(max(1, int(cpus_per_cell)))
    env = {
        "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    cwd = os.getcwd()
    specs = [
        CellSpec(c.name, [*command, *args, *to_args(c)], str(root / CELLS / c.name), cwd=cwd, env=env) for c in todo
    ]

    def done(outcome: CellOutcome) -> None:
        cell = by_name[outcome.name]
        record = {
            "cell": outcome.name,
            "values": dict(cell.values),
            "status": outcome.status,
            "returncode": outcome.returncode,
            "wall_s": outcome.wall_s,
            "error": outcome.error,
            "headline": outcome.headline,
        }
        write_json(root / CELLS / outcome.name / MARKER, record, indent=2, default=str)
        if on_cell is not None:
            on_cell(outcome, cell.values)

    if specs:
        with backend:
            backend.run(specs, done)
    table = gather(root, grid)
    path = atomic_write(root / TABLE, lambda t: table.to_parquet(t, index=False))
    status = [str(s) for s in table["status"].tolist()]
    n_complete, n_failed = status.count("complete"), status.count("failed")
    return SweepResult(
        n_cells=len(cells),
        completed=n_complete,
        failed=n_failed,
        ran=len(specs),
        skipped=len(cells) - len(specs),
        table=path,
        backend=backend.name,
        wall_s=round(time.perf_counter() - t0, 3),
    )


def _column_safe(values: list[Any]) -> list[Any]:
    """A column Parquet can store: text throughout when text is mixed with numbers or booleans."""
    kinds = {type(v) for v in values if v is not None}
    if str in kinds and len(kinds) > 1:
        return [None if v is None else str(v) for v in values]
    return values


def gather(sweep_dir: str | Path, grid: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The sweep's table, one row per cell of ``grid`` in grid order: the grid values (typed, see
    :func:`~interplab.sweeps.grid.typed_values`), ``cell`` (its directory under ``cells/``), ``status``
    (``complete``, ``failed`` or ``pending``), ``error``, ``wall_s``, then the flattened headline."""
    root = Path(sweep_dir)
    keys = list(grid)
    typed = {k: dict(zip(grid[k], typed_values(list(grid[k])), strict=True)) for k in keys}
    reserved = set(keys) | set(META_COLUMNS)
    rows: list[dict[str, Any]] = []
    head_cols: list[str] = []
    for cell in expand(grid):
        marker = _read_marker(root / CELLS / cell.name / MARKER) or {}
        row: dict[str, Any] = {k: typed[k][cell.values[k]] for k in keys}
        row |= {
            "cell": cell.name,
            "status": marker.get("status", "pending"),
            "error": marker.get("error"),
            "wall_s": marker.get("wall_s"),
        }
        for k, v in flatten_headline(marker.get("headline") or {}).items():
            col = f"headline.{k}" if k in reserved else k
            if col not in head_cols:
                head_cols.append(col)
            row[col] = v
        rows.append(row)
    columns = [*keys, *META_COLUMNS, *head_cols]
    data = {c: _column_safe([r.get(c) for r in rows]) for c in columns}
    df = pd.DataFrame(data, columns=columns)
    df["error"] = df["error"].astype(object)
    return df
