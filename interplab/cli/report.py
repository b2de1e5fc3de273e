"""``interplab report``: the HTML model report (:func:`interplab.report.model_report.build_report`)."""

from __future__ import annotations

import json

import typer

from interplab.cli._common import AsJson, ModelName, OutDir, err, finish_run, guard, load_model, print_json


def report(
    model: ModelName = "smollm2-135m",
    out: OutDir = None,
    sections: str | None = typer.Option(
        None,
        "--sections",
        help="Comma-separated analysis sections: heads, weights, dla, logit-pca (default), ablation (opt-in, "
        "slower); 'none': only model card, lens, attention.",
    ),
    as_json: AsJson = False,
) -> None:
    """Build the HTML report (model card, logit lens, attention viewer, analyses) into a run directory."""
    from interplab.io.runs import Run
    from interplab.report.model_report import build_report

    chosen = (
        None
        if sections is None
        else ([] if sections.strip() == "none" else [x.strip() for x in sections.split(",") if x.strip()])
    )
    with guard(), Run("report", {"model": model, "sections": sections}, out=out) as run:
        m = load_model(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        with err.status("building report …"):
            path = build_report(m, run.dir, sections=chosen)
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
            },
        )
    if as_json:
        print_json(run.headline)
    else:
        err.print(f"report written to [bold]{path.resolve()}[/]")
