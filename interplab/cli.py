"""``interplab`` command line: each command is a thin shell over a library function.

Analysis commands write a run directory (``runs/<timestamp>-<command>/`` or ``--out``) with
``run.json`` and their data; ``--json`` prints the headline numbers to stdout (all other output goes
to stderr). Bad input exits with status 2 and a message saying what was wrong and what to do.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Interpretability and AI-safety experiments on transformers.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go in BENCHMARKS.md).")
app.add_typer(bench_app, name="bench")
err = Console(stderr=True)

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _user_errors():
    from interplab.hooks import HookNameError
    from interplab.models.registry import ChecksumError, ModelNotAvailable

    return (ValueError, FileNotFoundError, ModelNotAvailable, ChecksumError, HookNameError)


class _Guard:
    """Turn user errors into a clear message and exit code 2 (tracebacks only for real bugs)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, _user_errors()):
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2)
        return False


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _load(name: str):
    import transformers

    import interplab

    transformers.utils.logging.disable_progress_bar()
    with err.status(f"loading {name} …"):
        return interplab.load(name)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           out: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-models).")):
    """List the named models: family, parameters, whether installed here, and how to install."""
    from interplab.models.registry import REGISTRY, is_available
    from interplab.runs import Run

    with Run("models", {}, out=out) as run:
        rows = [
            {"name": m.name, "family": m.family, "params": m.params, "available": is_available(m),
             "install": None if is_available(m) else m.install, "hub_id": m.hub_id, "description": m.description}
            for m in REGISTRY.values()
        ]
        run.save_json("models.json", rows)
        run.headline["models"] = rows
    if as_json:
        _print_json(rows)
        return
    t = Table("name", "family", "params", "available", "install")
    for r in rows:
        t.add_row(r["name"], r["family"], f"{r['params'] / 1e6:.1f}M", "yes" if r["available"] else "no", r["install"] or "")
    Console().print(t)


@app.command()
def info(name: str = typer.Argument(..., help="Registry name, .gguf path, local directory or hub id."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON."),
         run_dir: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-info).")):
    """Print a model's configuration (layers, heads, dimensions, family)."""
    from interplab.runs import Run

    with _Guard(), Run("info", {"name": name}, out=run_dir) as run:
        m = _load(name)
        out = {"name": m.name, **m.cfg.to_dict(), "n_params": m.n_params, "source": m.source,
               "load_seconds": round(m.load_seconds, 2), "n_hook_points": len(m.hook_names()),
               "hook_names": m.hook_names()}
        run.save_json("info.json", out)
        run.headline.update({k: v for k, v in out.items() if k != "hook_names"})
        out = run.headline
    if as_json:
        _print_json(out)
    else:
        t = Table("field", "value")
        for k, v in out.items():
            t.add_row(k, str(v))
        Console().print(t)


@app.command()
def report(model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model to report on."),
           out: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-report)."),
           as_json: bool = typer.Option(False, "--json", help="Print headline numbers as JSON.")):
    """Build the HTML report (model card, logit lens, attention viewer) into a run directory."""
    from interplab.runs import Run

    with _Guard(), Run("report", {"model": model}, out=out) as run:
        m = _load(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        from interplab.report.main import build_report

        with err.status("building report …"):
            path = build_report(m, run.dir)
        run.artefacts += sorted(p.name for p in run.dir.iterdir() if p.suffix in (".html", ".json") and p.name != "run.json")
        lens = {p.stem.removeprefix("lens_"): json.loads(p.read_text())["headline"] for p in sorted(run.dir.glob("lens_*.json"))}
        run.headline.update({"model": m.name, "report": str(path.resolve()), "run_dir": str(run.dir.resolve()),
                             "load_seconds": round(m.load_seconds, 2), "logit_lens": lens})
    if as_json:
        _print_json(run.headline)
    else:
        err.print(f"report written to [bold]{path.resolve()}[/]")


@bench_app.command("hooks")
def bench_hooks_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m"),
                    batch: int = typer.Option(8, help="Batch size."), seq: int = typer.Option(128, help="Tokens per sequence."),
                    rounds: int = typer.Option(7, help="Timed interleaved rounds (after 2 warm-up rounds)."),
                    threads: int = typer.Option(2, help="torch threads."),
                    out: Optional[str] = typer.Option(None, "--out"),
                    as_json: bool = typer.Option(False, "--json")):
    """Cost of caching (residual streams; every hook point but patterns) relative to the plain forward."""
    from interplab.bench import bench_hooks
    from interplab.runs import Run

    with _Guard(), Run("bench-hooks", {"model": model, "batch": batch, "seq": seq, "rounds": rounds, "threads": threads}, out=out) as run:
        m = _load(model)
        with err.status("benchmarking …"):
            res = bench_hooks(m, batch=batch, seq=seq, rounds=rounds, threads=threads)
        run.save_json("bench.json", res)
        run.headline.update(res)
    if as_json:
        _print_json(res)
    else:
        t = Table("metric", "value")
        for k, v in res.items():
            if not k.endswith("_rounds"):
                t.add_row(k, str(v))
        Console().print(t)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
