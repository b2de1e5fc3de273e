"""``interplab sweep COMMAND [ARGS]... --grid key=v1,v2 ...``: any interplab command over the product of a grid
(:mod:`interplab.sweeps`), each cell a run directory under the sweep directory, gathered into ``sweep.parquet`` and a
report (:mod:`interplab.report.sections.sweep`).

The sweep's own options (``--grid``, ``--backend``, ``--out``, ``--json``, ...) may stand anywhere; every other word
is the command and its arguments, shared by all cells (``--out`` and ``--json`` of the command are the sweep's to
set). Grid keys name the command's options (``seed`` -> ``--seed``) or, for ``train``, its config keys
(``set.epochs`` -> ``--set epochs=...``); see :mod:`interplab.sweeps.grid`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from interplab.cli._common import err, finish_run, guard, print_json

CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
"""The command's own options pass through the sweep (``cli/__init__`` registers the command with these)."""


def _resolve(ctx: typer.Context, words: list[str]) -> tuple[list[str], list[str], Any]:
    """Split ``words`` into the command path (``["bench", "grokking"]``), its arguments, and the command object."""
    root = ctx.find_root()
    cmd: Any = root.command
    path: list[str] = []
    rest = list(words)
    while hasattr(cmd, "commands"):
        names = sorted(n for n in cmd.commands if n != "sweep")
        where = f"`interplab {' '.join(path)}`" if path else "interplab"
        if not rest or rest[0].startswith("-"):
            raise ValueError(f"{where} needs a command to sweep: one of {', '.join(names)}.")
        name = rest.pop(0)
        if name == "sweep" and not path:
            raise ValueError("a sweep cannot sweep `interplab sweep`; put every key in one grid.")
        sub = cmd.get_command(root, name)
        if sub is None:
            raise ValueError(f"{where} has no command {name!r}; commands: {', '.join(names)}.")
        path.append(name)
        cmd = sub
    return path, rest, cmd


def _options(cmd: Any) -> dict[str, Any]:
    from interplab.sweeps.grid import OptionSpec

    out = {}
    for p in cmd.params:
        if p.param_type_name == "option" and "--help" not in p.opts:
            spec = OptionSpec(tuple(p.opts), bool(getattr(p, "is_flag", False)), tuple(p.secondary_opts))
            out[spec.name] = spec
    return out


def _check_parse(cmd: Any, path: list[str], argv: list[str], strict: bool = True) -> dict[str, Any]:
    """Parse arguments as the command would (nothing runs) and return its parameters; a ValueError with the
    command's message (``strict=False``: what can be read, no error for what is missing)."""
    try:
        with cmd.make_context(f"interplab {' '.join(path)}", list(argv), resilient_parsing=not strict) as c:
            return dict(c.params)
    except Exception as e:  # click's usage errors (typer vendors click: matched by their format_message)
        message = getattr(e, "format_message", None)
        if message is None:
            raise
        raise ValueError(f"`interplab {' '.join(path)} {' '.join(argv)}`: {message()}") from None


def _set_keys(path: list[str], params: dict[str, Any]) -> list[str] | None:
    """The keys ``--set`` accepts, where the sweep knows them (``train``: the experiment's config fields)."""
    if path == ["train"] and params.get("experiment"):
        import dataclasses

        from interplab.train import experiments as X

        return [f.name for f in dataclasses.fields(X.get(params["experiment"]).config_cls())]
    return None


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``) stops the sweep as Ctrl-C does: running cells are stopped, the sweep is marked failed,
    and a rerun resumes it."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        before = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def sweep(
    ctx: typer.Context,
    command: Annotated[
        list[str], typer.Argument(help="The interplab command and its arguments (shared by all cells).")
    ],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", "-g", help="key=v1,v2 or key=a..b (repeat; cells are the product); keys as above."),
    ] = None,
    backend: str = typer.Option("serial", "--backend", help="serial | process | ray."),
    address: str | None = typer.Option(
        None, "--address", help="ray: join this cluster (auto or HOST:PORT) instead of starting a local Ray."
    ),
    max_parallel: int | None = typer.Option(
        None, "--max-parallel", help="Cells at once (process: default CPUs / cpus per cell; ray: no limit)."
    ),
    cpus_per_cell: float = typer.Option(
        1, "--cpus-per-cell", help="CPUs (threads) per cell, every backend; ray: the task's num_cpus."
    ),
    memory_per_cell: str | None = typer.Option(
        None, "--memory-per-cell", help="ray: memory reserved per cell, e.g. 2GB."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Sweep directory (default runs/<timestamp>-sweep-COMMAND); rerun into it to resume."
    ),
    no_report: bool = typer.Option(False, "--no-report", help="No report.html."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
) -> None:
    """Run an interplab command over a grid: serial, process or Ray backend; one run directory per cell; a rerun
    skips finished cells; results in sweep.parquet (one row per cell) and report.html.

    Grid keys: NAME is the command's option --NAME (seed=0..4 -> --seed 0 ... --seed 4; a flag takes true,false);
    set.KEY is --set KEY=VALUE (train: set.epochs=600, set.seed=0..4). The sweep's options may stand anywhere; every
    other word goes to the command (each cell's --out and --json are the sweep's). Example:
    interplab sweep train grokking --set p=13 --grid set.seed=0..2 --grid set.weight_decay=0.1,1 --backend process
    """
    from interplab.io.runs import Run
    from interplab.report.sections.sweep import sweep_report
    from interplab.sweeps.backends import make_backend, parse_bytes
    from interplab.sweeps.engine import check_resumable, run_sweep
    from interplab.sweeps.grid import RESERVED_OPTIONS, cell_args, expand, parse_grid, validate_keys

    with guard():
        path, fixed, cmd = _resolve(ctx, [*command, *ctx.args])
        name = " ".join(path)
        given = [a.split("=", 1)[0] for a in fixed if a.startswith("-")]
        for opt in RESERVED_OPTIONS:
            if opt in given:
                raise ValueError(f"{opt}: the sweep sets each cell's {opt} itself; give the sweep's --out instead.")
        g = parse_grid(grid or [])
        options = _options(cmd)
        params = _check_parse(cmd, path, fixed, strict=False)
        validate_keys(g, options, name, _set_keys(path, params))
        for c in expand(g):
            extra = cell_args(c.values, options)
            dup = sorted({a for a in extra if a.startswith("--") and a != "--set"} & set(given))
            if dup:
                raise ValueError(f"{', '.join(dup)} is both in the grid and in the command's arguments; keep one.")
            _check_parse(cmd, path, [*fixed, *extra])
        be = make_backend(
            backend,
            max_parallel=max_parallel,
            address=address,
            cpus_per_cell=cpus_per_cell,
            memory_per_cell=parse_bytes(memory_per_cell) if memory_per_cell else None,
        )
        if out is not None:
            check_resumable(out, path, fixed)  # before the sweep's run.json is rewritten
        args = {"command": path, "args": fixed, "grid": grid, "backend": backend, "address": address}
        total = len(expand(g))

        def progress(outcome: Any, values: Any) -> None:
            what = ", ".join(f"{k}={v}" for k, v in values.items())
            tail = (
                "" if outcome.status == "complete" else f": {outcome.error.splitlines()[-1] if outcome.error else ''}"
            )
            err.print(f"cell {what} {outcome.status} ({outcome.wall_s:.1f} s){tail}", highlight=False)

        with _terminate_as_interrupt(), Run(f"sweep-{'-'.join(path)}", args, out=out) as run:
            err.print(f"sweep of `interplab {name}` over {total} cells on {be.name} → {run.dir}", highlight=False)
            res = run_sweep(
                path,
                fixed,
                g,
                lambda c: cell_args(c.values, options),
                run.dir,
                be,
                cpus_per_cell=cpus_per_cell,
                on_cell=progress,
            )
            report = None
            if not no_report:
                import pandas as pd

                report = sweep_report(pd.read_parquet(res.table), list(g), name)
            finish_run(run, res.headline(), report, report_in_headline=True)
            run.artefacts = [a for a in run.artefacts if "/" not in a] + ["cells/"]  # not every file of every cell
    if as_json:
        print_json(run.headline)
    else:
        for k, v in run.headline.items():
            err.print(f"{k}: {v}", highlight=False)
