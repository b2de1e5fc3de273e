"""Run directories: ``run.json`` (command, arguments, seed, versions, git revision, timings, status) + data files.

A run directory is created when the job starts with ``status: "running"``; it is marked
``"complete"`` only after everything was written, and ``"failed"`` (with the error) if the job raised,
so a half-written directory never looks complete. Data are JSON, Parquet or safetensors — never pickle.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from interplab.io.atomic import atomic_write, write_json

if TYPE_CHECKING:
    import pandas as pd


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("interplab", "torch", "transformers", "numpy", "safetensors", "gguf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


class Run:
    """A run directory for one job. Use as a context manager::

    with Run("report", {"model": "smollm2-135m"}) as run:
        run.save_json("lens.json", data)
        run.headline["top1"] = 0.9
    """

    def __init__(
        self,
        command: str,
        arguments: dict | None = None,
        out: str | Path | None = None,
        seed: int | None = None,
        root: str | Path = "runs",
    ):
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.dir = Path(out) if out else Path(root) / f"{stamp}-{command}"
        if not out:
            n = 1
            while self.dir.exists():
                n += 1
                self.dir = Path(root) / f"{stamp}-{command}-{n}"
        self.command = command
        self.arguments = dict(arguments or {})
        self.seed = seed
        self.headline: dict[str, Any] = {}
        self.artefacts: list[str] = []
        self.timings: dict[str, float] = {}
        self._t0 = 0.0
        self._started = ""

    # ---- lifecycle
    def __enter__(self) -> Self:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.perf_counter()
        self._started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self._write("running")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._write("complete")
        else:
            self._write("failed", error="".join(traceback.format_exception_only(exc_type, exc)).strip())

    def record(self) -> dict:
        return {
            "command": self.command,
            "arguments": _jsonable(self.arguments),
            "argv": sys.argv,
            "seed": self.seed,
            "versions": versions(),
            "git_revision": git_revision(),
            "platform": platform.platform(),
            "started": self._started,
            "wall_seconds": round(time.perf_counter() - self._t0, 3),
            "timings": self.timings,
            "artefacts": self.artefacts,
            "headline": _jsonable(self.headline),
        }

    def _write(self, status: str, **extra: Any) -> None:
        write_json(self.dir / "run.json", self.record() | {"status": status} | extra, indent=2, default=str)

    # ---- artefacts (atomic writes)
    def path(self, name: str) -> Path:
        self.artefacts.append(name)
        return self.dir / name

    def save_json(self, name: str, obj: Any) -> Path:
        """``obj`` as ``name`` in the run directory (JSON; tensors and arrays as lists), listed as an artefact."""
        return write_json(self.path(name), _jsonable(obj), indent=2, default=str)

    def save_frame(self, name: str, df: pd.DataFrame) -> Path:
        """``df`` as the Parquet file ``name`` in the run directory, listed as an artefact."""
        p = self.path(name)
        atomic_write(p, lambda t: df.to_parquet(t))
        return p
