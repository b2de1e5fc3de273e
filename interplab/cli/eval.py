"""``interplab eval`` (behavioural evals on Inspect AI, :mod:`interplab.evals`) and ``interplab bench eval``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli._common import (
    AsJson,
    MaxParallel,
    OutDir,
    SplitBackend,
    err,
    finish_run,
    guard,
    load_model,
    print_json,
    print_metrics,
)

__all__ = ["bench_eval_cmd", "eval_cmd", "parse_model_args"]


def parse_model_args(pairs: list[str] | None) -> dict[str, Any]:
    """``-M key=value`` pairs as a dict (numbers parsed as numbers)."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValueError(f"-M {p!r}: write model args as key=value (e.g. -M steer_layer=12).")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _tables(res: dict[str, Any]) -> list[Table]:
    from interplab.report.sections.evals import headline_rows

    rows = headline_rows(res["task"], res["models"])
    if not rows:
        return []
    t = Table(*rows[0].keys(), title=f"{res['task']} (clustered 95% CIs)")
    for r in rows:
        t.add_row(*[("—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r.values()])
    return [t]


def eval_cmd(
    task: str = typer.Argument(..., help="framing | truthful | harmful, or path/to/task.py@name (an Inspect task)."),
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model (repeat for side by side): registry name, .gguf, directory, hub id."),
    ] = None,
    template_set: str = typer.Option("all", "--template-set", help="Prompt templates: all, first, or indices 0,2,4."),
    dataset: str | None = typer.Option(None, "--dataset", help="Your items (.jsonl or .csv) in place of the built-in."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N items (every template and condition)."),
    method: str = typer.Option("loglik", "--method", help="framing/truthful: loglik (yes/no log-probs) or generate."),
    model_args: Annotated[
        list[str] | None,
        typer.Option(
            "-M",
            "--model-arg",
            help="Provider arg key=value (repeat): steer=FILE.safetensors, steer_layer=L, steer_scale=S, "
            "ablate=L.H,L.H",
        ),
    ] = None,
    batch_size: int = typer.Option(16, "--batch-size", help="Requests per forward pass."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Generated tokens per answer (generate)."),
    backend: SplitBackend = "serial",
    max_parallel: MaxParallel = None,
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Run a behavioural eval through Inspect AI on each model: paired effects, clustered 95% CIs, template spread.

    The Inspect .eval logs go in RUN_DIR/logs (open them with `inspect view --log-dir RUN_DIR/logs`); rerunning with
    --out RUN_DIR resumes an interrupted run without redoing finished samples."""
    from interplab.evals.provider import register_model
    from interplab.evals.run import run_eval_split
    from interplab.io.runs import Run
    from interplab.report.sections.evals import evals_report

    names = list(models or ["smollm2-135m"])
    args = {
        "task": task,
        "models": names,
        "template_set": template_set,
        "dataset": dataset,
        "limit": limit,
        "method": method,
        "model_args": model_args,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "backend": backend,
        "max_parallel": max_parallel,
    }
    with guard(), Run("eval", args, out=out) as run:
        margs = parse_model_args(model_args)
        if backend == "serial":  # the workers of another backend load their own model
            for name in names:
                m = load_model(name.removeprefix("interplab/"))
                register_model(name.removeprefix("interplab/"), m)
        with err.status(f"running {task} on {', '.join(names)} …"):
            res = run_eval_split(
                task,
                names,
                run.dir / "logs",
                backend=backend,
                max_parallel=max_parallel,
                template_set=template_set,
                dataset=dataset,
                limit_items=limit,
                method=method,
                model_args=margs,
                max_tokens=max_tokens,
                batch_size=batch_size,
            )
        res["settings"] = {k: v for k, v in args.items() if v is not None and k not in ("task", "models")}
        run.save_json(f"evals_{res['task']}.json", res)
        finish_run(run, res, evals_report(res))
    if as_json:
        print_json(run.headline)
    else:
        for t in _tables(run.headline):
            Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/] (Inspect logs in logs/)")


def bench_eval_cmd(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model (a registry name or local directory)."),
    n_items: int = typer.Option(8, "--n-items", help="Framing actions (x2 framings, one template) per round."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved timed rounds (after 1 warm-up round)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Batch size of both providers."),
    gen_tokens: int = typer.Option(16, "--gen-tokens", help="Generated tokens per answer in the generation path."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Items/s of the framing eval (log-prob scoring and generation) through interplab's provider vs Inspect's hf/
    provider on the same local directory, and lm-evaluation-harness HFLM for the log-likelihoods."""
    from interplab.bench.eval import bench_eval
    from interplab.io.runs import Run

    args = {"model": model, "n_items": n_items, "rounds": rounds, "batch_size": batch_size, "gen_tokens": gen_tokens}
    with guard(), Run("bench-eval", args, out=out) as run:
        m = load_model(model)
        with err.status("benchmarking the eval providers …"):
            res = bench_eval(
                m, n_items=n_items, rounds=rounds, batch_size=batch_size, gen_tokens=gen_tokens, work_dir=run.dir
            )
        run.save_json("bench.json", res)
        run.headline.update(res)
    print_metrics(res, as_json, skip_suffix="_rounds")
