"""``interplab train EXPERIMENT``: train a toy model of the training lab (:mod:`interplab.train`), analyse it
and write its report (:mod:`interplab.report.sections.training`)."""

from __future__ import annotations

from typing import Annotated

import typer

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, int_list, print_json


def _parse_layers(spec: str) -> list[int]:
    out = int_list(spec, "--layers", "1..4 or 1,2")
    if not out or min(out) < 1:
        raise ValueError(f"--layers {spec!r}: layer counts must be at least 1.")
    return out


def train(
    experiment: str = typer.Argument(
        ..., help="grokking | superposition | addition | attn-only | double-descent | scaling"
    ),
    config: str | None = typer.Option(None, "--config", help="TOML file overriding the experiment's defaults."),
    sets: Annotated[list[str] | None, typer.Option("--set", help="key=value override (repeat).")] = None,
    resume: str | None = typer.Option(None, "--resume", help="Run directory to resume from its newest checkpoint."),
    out: OutDir = None,
    layers: str | None = typer.Option(None, "--layers", help="attn-only: layer counts, e.g. 1..4 or 1,2."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: AsJson = False,
) -> None:
    """Train a toy model (seeded, checkpointed, resumable) and analyse it; writes metrics, model and report.html."""
    from interplab.io.runs import Run
    from interplab.report.sections.training import training_report
    from interplab.train import experiments as X

    with guard():
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
            finish_run(run, res.headline(), training_report(res), report_in_headline=True)
    if as_json:
        print_json(run.headline)
    else:
        for k, v in run.headline.items():
            err.print(f"{k}: {v}", highlight=False)
