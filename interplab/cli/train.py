"""``interplab train EXPERIMENT``: the training lab's command (registered at the end of ``interplab/cli/__init__.py``)."""

from __future__ import annotations

import typer


def _parse_layers(spec: str) -> list[int]:
    s = spec.strip()
    try:
        if ".." in s:
            lo, hi = s.split("..", 1)
            out = list(range(int(lo), int(hi) + 1))
        else:
            out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--layers {spec!r}: use a range like 1..4 or a list like 1,2.") from None
    if not out or min(out) < 1:
        raise ValueError(f"--layers {spec!r}: layer counts must be at least 1.")
    return out


def train(
    experiment: str = typer.Argument(..., help="grokking | superposition | addition | attn-only"),
    config: str | None = typer.Option(None, "--config", help="TOML file overriding the experiment's defaults."),
    sets: list[str] | None = typer.Option(None, "--set", help="key=value override (repeat)."),
    resume: str | None = typer.Option(None, "--resume", help="Run directory to resume from its newest checkpoint."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-train-EXPERIMENT)."),
    layers: str | None = typer.Option(None, "--layers", help="attn-only: layer counts, e.g. 1..4 or 1,2."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print headline numbers as JSON on stdout."),
):
    """Train a toy model (seeded, checkpointed, resumable) and analyse it; writes metrics, model and report.html."""
    from interplab.cli import _Guard, _print_json, err
    from interplab.io.runs import Run
    from interplab.train import experiments as X

    with _Guard():
        X.get(experiment)
        extra = None
        if layers is not None:
            if experiment != "attn-only":
                raise ValueError("--layers applies to attn-only only; use --set for other experiments.")
            extra = {"layers": tuple(_parse_layers(layers))}
        cfg = X.make_config(experiment, file=config, sets=sets, resume_dir=resume, extra=extra)
        args = {"experiment": experiment, "config_file": config, "set": sets, "resume": resume, "layers": layers}
        with Run(f"train-{experiment}", args, out=resume or out, seed=getattr(cfg, "seed", None)) as run:
            res = X.run(experiment, cfg, run.dir, resume=resume is not None, progress=not no_progress)
            run.artefacts += sorted(p.name for p in run.dir.iterdir() if p.is_file() and p.name != "run.json")
            run.headline.update(res.headline)
            run.headline["report"] = str((run.dir / "report.html").resolve())
            run.headline["run_dir"] = str(run.dir.resolve())
    if as_json:
        _print_json(run.headline)
    else:
        for k, v in run.headline.items():
            err.print(f"{k}: {v}", highlight=False)


def bench_grokking(
    steps: int = typer.Option(50, "--steps", help="Timed steps per round and thread count."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds."),
    threads: str = typer.Option("1,2", "--threads", help="Torch thread counts to compare, e.g. 1,2."),
    p: int = typer.Option(113, "--p", help="Prime (Nanda et al.: 113)."),
    out: str | None = typer.Option(None, "--out", help="Run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Grokking training-step speed (Nanda et al. defaults) per thread count, interleaved rounds, medians."""
    from interplab.cli import _Guard, _print_json, err
    from interplab.io.runs import Run
    from interplab.train.grokking import GrokkingConfig, bench_step

    with _Guard():
        try:
            ts = tuple(int(x) for x in threads.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--threads {threads!r}: use thread counts like 1,2.") from None
        if not ts or min(ts) < 1 or steps < 1 or rounds < 1:
            raise ValueError("--threads, --steps and --rounds must be positive.")
        cfg = GrokkingConfig(p=p)
        cfg.validate()
        args = {"steps": steps, "rounds": rounds, "threads": list(ts), "p": p}
        with Run("bench-grokking", args, out=out) as run:
            with err.status("timing grokking steps …"):
                res = bench_step(cfg, steps=steps, rounds=rounds, threads=ts)
            run.save_json("bench.json", res)
            run.headline.update(res)
    if as_json:
        _print_json(res)
    else:
        for k, v in res.items():
            err.print(f"{k}: {v}", highlight=False)
