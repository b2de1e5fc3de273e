"""What every command shares: the error guard, model loading, printing and the end of a run.

Command modules import from here and never from :mod:`interplab.cli` (the package root only assembles
the app), so the CLI's imports go one way: ``__init__`` -> leaf modules -> ``_common``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from interplab.io.runs import Run
    from interplab.models.model import Model
    from interplab.report.html import Report

__all__ = [
    "AsJson",
    "ModelName",
    "OutDir",
    "Threads",
    "err",
    "finish_run",
    "guard",
    "load_model",
    "print_json",
    "print_metrics",
    "print_run",
]

err = Console(stderr=True)
"""Everything but ``--json`` output goes to stderr."""

# The options most commands share (the default goes on the parameter: ``model: ModelName = "smollm2-135m"``).
ModelName = Annotated[
    str, typer.Option("--model", "-m", help="Model: registry name, .gguf path, local directory or hub id.")
]
OutDir = Annotated[str | None, typer.Option("--out", help="Run directory (default runs/<timestamp>-<command>).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the headline as JSON on stdout.")]
Threads = Annotated[int, typer.Option("--threads", help="torch threads.")]
SplitBackend = Annotated[
    str,
    typer.Option(
        "--backend", help="serial | process | ray: spread the work over workers that each load the model (same result)."
    ),
]
MaxParallel = Annotated[int | None, typer.Option("--max-parallel", help="Workers at once (default: the CPUs here).")]


def _user_errors() -> tuple[type[BaseException], ...]:
    from interplab.hooks import HookNameError
    from interplab.models.registry import ChecksumError, ModelNotAvailable

    return (ValueError, FileNotFoundError, ModelNotAvailable, ChecksumError, HookNameError)


@contextmanager
def guard() -> Iterator[None]:
    """Turn user errors (bad values, missing files, unknown models or hook points) into their message and exit
    status 2; tracebacks only for real bugs. Put it outside ``Run(...)`` so that the run is marked failed
    (with the error) before the command exits."""
    try:
        yield
    except _user_errors() as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None


def load_model(name: str) -> Model:
    """Load a model by registry name, .gguf path, local directory or hub id, with a status line on stderr."""
    import transformers

    import interplab

    transformers.utils.logging.disable_progress_bar()
    with err.status(f"loading {name} …"):
        return interplab.load(name)


def int_list(spec: str | None, what: str, example: str = "0,3,6 or 0..4") -> list[int]:
    """The integers of a CLI list: comma-separated integers and inclusive ranges ``lo..hi`` (``"0,3,10..12"``);
    empty for an empty or missing ``spec``. A part that is not an integer raises a ``ValueError`` naming the option
    ``what`` and giving ``example``."""
    out: list[int] = []
    try:
        for part in (spec or "").replace(" ", "").split(","):
            if ".." in part:
                lo, hi = part.split("..", 1)
                out += list(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"{what} {spec!r}: give comma-separated integers or ranges, e.g. {example}.") from None
    return out


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout (the only thing ``--json`` prints there)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_metrics(
    res: Mapping[str, Any], as_json: bool, skip_suffix: str | None = None, title: str | None = None
) -> None:
    """A result's metrics (a benchmark's, a run's headline): JSON on stdout with ``--json``, else a
    two-column table (titled ``title``, if given; keys ending in ``skip_suffix`` left out)."""
    if as_json:
        print_json(res)
        return
    t = Table("metric", "value", title=title)
    for k, v in res.items():
        if not (skip_suffix and k.endswith(skip_suffix)):
            t.add_row(k, str(v))
    Console().print(t)


def finish_run(
    run: Run,
    headline: Mapping[str, Any] | None = None,
    report: Report | None = None,
    *,
    report_in_headline: bool = False,
    run_dir_in_headline: bool = True,
) -> Path | None:
    """The end of a command: save ``report`` as ``report.html`` (if given), list every file of the run
    directory as an artefact (files in subdirectories by relative path), and complete the headline with
    ``headline``, then the report's path (with ``report_in_headline``) and the run directory (with
    ``run_dir_in_headline``). Returns the report's path."""
    path = report.save(run.dir / "report.html") if report is not None else None
    run.artefacts = sorted(
        p.relative_to(run.dir).as_posix()
        for p in run.dir.rglob("*")
        if p.is_file() and p != run.dir / "run.json" and not p.name.endswith(".tmp")
    )
    run.headline.update(headline or {})
    if report_in_headline and path is not None:
        run.headline["report"] = str(path.resolve())
    if run_dir_in_headline:
        run.headline["run_dir"] = str(run.dir.resolve())
    return path


def print_run(run: Run, as_json: bool, tables: Callable[[], Iterable[Table]]) -> None:
    """The headline as JSON, or the command's tables (``tables()``) and where the run directory is."""
    if as_json:
        print_json(run.headline)
        return
    for t in tables():
        Console().print(t)
    err.print(f"run directory [bold]{run.dir.resolve()}[/]")
