"""``interplab report``: the HTML model report (:func:`interplab.report.model_report.build_report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from interplab.cli._common import AsJson, ModelName, OutDir, err, finish_run, guard, load_model, print_json


def report(
    model: ModelName = "smollm2-135m",
    out: OutDir = None,
    sections: str | None = typer.Option(
        None,
        "--sections",
        help="Comma-separated sections after the model card, lens and attention: heads, weights, dla, logit-pca "
        "(default); ablation, patching, ioi, evals (opt-in, slower); finetune (loss curves; with a compare run its "
        "verdict), invert (an invert run's curves and guesses), organisms (organism cards, population, detector ROC "
        "curves): results of other commands, found in the model directory or given with --runs, and added by "
        "default when there are some; 'none': only model card, lens, attention.",
    ),
    runs: Annotated[
        list[str] | None,
        typer.Option(
            "--runs",
            help="A run directory of another command whose results the report shows (repeat for several): compare, "
            "invert, finetune, organism make / make toy-population / bench, eval.",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--prompt",
            "-p",
            help="Your prompt instead of the built-in ones (repeat for several); the first one gets the attention "
            "viewer and the direct logit attribution.",
        ),
    ] = None,
    answer: str | None = typer.Option(
        None,
        "--answer",
        help="The first prompt's answer to track (default: the model's top prediction), e.g. ' Paris'.",
    ),
    wrong: str | None = typer.Option(
        None, "--wrong", help="The first prompt's competing answer: DLA of logit(answer) - logit(wrong)."
    ),
    prompts_file: str | None = typer.Option(
        None,
        "--prompts",
        help="Your prompts from a file: .txt (one per line) or .jsonl/.csv with prompt[, answer, wrong, name].",
    ),
    as_json: AsJson = False,
) -> None:
    """Build the HTML report (model card, logit lens, attention viewer, analyses) into a run directory; on the
    built-in prompts, or on yours (--prompt, --prompts). With the results of other commands: a fine-tuned model's
    loss curves (and a compare run's verdict), an invert run's guesses, organism cards and detector ROC curves."""
    from interplab.io.runs import Run
    from interplab.report.model_report import build_report, plan_report

    chosen = (
        None
        if sections is None
        else ([] if sections.strip() == "none" else [x.strip() for x in sections.split(",") if x.strip()])
    )
    args = {"model": model, "sections": sections, "runs": runs, "prompt": prompt, "answer": answer, "wrong": wrong}
    with guard(), Run("report", {**args, "prompts": prompts_file}, out=out) as run:
        users = _user_prompts(prompt, answer, wrong, prompts_file)
        model_dir = model if Path(model).is_dir() else None
        shown, found = plan_report(chosen, runs or [], model_dir, model)  # refused before the model loads
        m = load_model(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        with err.status("building report …"):
            path = build_report(m, run.dir, prompts=users, sections=chosen, runs=runs or [], model_dir=model_dir)
        lens = {
            p.stem.removeprefix("lens_"): json.loads(p.read_text())["headline"]
            for p in sorted(run.dir.glob("lens_*.json"))
        }
        finish_run(
            run,
            {
                "model": m.name,
                "report": str(path.resolve()),
                "run_dir": str(run.dir.resolve()),
                "load_seconds": round(m.load_seconds, 2),
                "logit_lens": lens,
                "sections": shown,
                "runs": [{"kind": r.kind, "dir": str(r.dir.resolve())} for r in found],
            },
        )
    if as_json:
        print_json(run.headline)
    else:
        err.print(f"report written to [bold]{path.resolve()}[/]")


def _user_prompts(
    prompt: list[str] | None, answer: str | None, wrong: str | None, prompts_file: str | None
) -> list[dict[str, Any]] | None:
    """The report's prompts from ``--prompt``/``--answer``/``--wrong`` and ``--prompts FILE``; None: built-in."""
    rows: list[dict[str, Any]] = [{"prompt": p} for p in prompt or []]
    if (answer is not None or wrong is not None) and not rows:
        raise ValueError("--answer and --wrong go with --prompt (the first prompt's answers).")
    if rows:
        rows[0].update({"answer": answer, "wrong": wrong})
    if prompts_file:
        path = Path(prompts_file)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise ValueError(f"--prompts {path}: no such file (a .txt with one prompt per line, or .jsonl/.csv).")
            rows += [{"prompt": line} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            from interplab.io.records import read_records

            rows += [
                {k: r.get(k) or None for k in ("prompt", "answer", "wrong", "name")}
                for r in read_records(path, ["prompt"], what="prompt")
            ]
        if not rows:
            raise ValueError(f"--prompts {path}: holds no prompts.")
    return rows or None
