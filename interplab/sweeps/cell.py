"""One cell of a sweep: the interplab command run as a child process, ``interplab COMMAND ... --out RUN_DIR --json``
(``python -c`` :data:`CLI`), whose exit status, ``--json`` headline and error become a :class:`CellOutcome`.

A child process per cell (rather than calling the command in the sweep's own process) makes the three backends run
exactly the same thing, keeps cells apart (torch threads, seeds, hooks, memory are per process; a cell that
crashes or leaks takes nothing else with it) and lets a Ray worker anywhere run a cell with nothing but this
module. It costs one interpreter start and the imports per cell (about 2-4 s), small beside any real experiment.

This module uses the standard library only: the Ray backend ships it to workers by value, so a worker needs no
interplab import of its own (the child process imports interplab).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CellOutcome", "CellSpec", "run_cell", "run_cell_dict", "stop_running"]

CLI = "from interplab.cli import app; app(prog_name='interplab')"
"""What the child runs (``python -c CLI ARGS...``): the ``interplab`` command."""
LOG_FILE = "cell.log"
"""The child's stderr, in the cell's run directory."""


@dataclass
class CellSpec:
    """What a worker needs to run one cell: ``args`` follow ``interplab``; ``run_dir`` (absolute)
    is passed as ``--out``; ``env`` is added to the worker's environment; ``cwd`` is the sweep's working directory
    (relative paths in the arguments refer to it; ignored where it does not exist, e.g. on another node)."""

    name: str
    args: list[str]
    run_dir: str
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class CellOutcome:
    """How a cell ended: ``status`` is ``complete`` (exit status 0) or ``failed`` (with ``error``: the command's
    recorded error, else the end of its stderr); ``headline`` is the command's ``--json`` output."""

    name: str
    status: str
    returncode: int | None
    wall_s: float
    headline: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _parse_headline(stdout: str) -> dict[str, Any] | None:
    s = stdout.strip()
    if not s:
        return None
    try:
        out = json.loads(s)
        return out if isinstance(out, dict) else None
    except json.JSONDecodeError:
        pass
    lines = s.splitlines()  # anything a library printed before the JSON: parse from the last line opening an object
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                out = json.loads("\n".join(lines[i:]))
                return out if isinstance(out, dict) else None
            except json.JSONDecodeError:
                continue
    return None


def _run_record(run_dir: Path) -> dict[str, Any]:
    try:
        rec = json.loads((run_dir / "run.json").read_text())
        return rec if isinstance(rec, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _error_text(returncode: int, stderr: str, record: dict[str, Any]) -> str:
    if record.get("status") == "failed" and record.get("error"):
        return str(record["error"])
    tail = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()][-15:]
    starts = [i for i, ln in enumerate(tail) if ln.lower().startswith("error")]
    if starts:  # the CLI's `error: ...` message, which the console may have wrapped over several lines
        return " ".join(tail[starts[-1] :])
    what = f"exit status {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"
    return "\n".join([what, *tail])


_RUNNING: set[subprocess.Popen] = set()
"""The cells' child processes running in this process (threads of the process backend run several)."""


def stop_running() -> None:
    """Terminate every cell child still running in this process (a sweep that is stopped takes its cells along,
    so no orphan keeps writing into a cell directory that a rerun starts afresh)."""
    for proc in list(_RUNNING):
        proc.terminate()


def run_cell(spec: CellSpec) -> CellOutcome:
    """Run one cell in a fresh ``run_dir`` (what a previous, unfinished attempt left there is removed first)."""
    run_dir = Path(spec.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = {**os.environ, **spec.env}
    cwd = spec.cwd if spec.cwd and Path(spec.cwd).is_dir() else None
    argv = [sys.executable, "-c", CLI, *spec.args, "--out", str(run_dir), "--json"]
    t0 = time.perf_counter()
    with open(run_dir / LOG_FILE, "w+", encoding="utf-8") as log:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=cwd) as proc:
            _RUNNING.add(proc)
            try:
                stdout, _ = proc.communicate()
            except BaseException:  # the sweep is stopped (Ctrl-C, kill): take the cell along
                proc.terminate()
                raise
            finally:
                _RUNNING.discard(proc)
        log.seek(0)
        stderr = log.read()
    wall = round(time.perf_counter() - t0, 3)
    record = _run_record(run_dir)
    if proc.returncode == 0:
        headline = _parse_headline(stdout)
        if headline is None:
            headline = dict(record.get("headline") or {})
        return CellOutcome(spec.name, "complete", 0, wall, headline)
    error = _error_text(proc.returncode, stderr, record)
    return CellOutcome(spec.name, "failed", proc.returncode, wall, error=error)


def run_cell_dict(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_cell` on plain dicts (what the Ray backend sends to and gets back from a worker)."""
    return asdict(run_cell(CellSpec(**spec)))
