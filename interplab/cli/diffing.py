"""``interplab diff``: per-token loss of two models or a checkpoint series (:mod:`interplab.analyses.diffing`)."""

from __future__ import annotations

from typing import Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, load_model, print_json


def diff(
    model_a: str | None = typer.Option(
        None, "--model-a", "-a", help="Model A: registry name, .gguf path, local directory or hub id."
    ),
    model_b: str | None = typer.Option(
        None, "--model-b", "-b", help="Model B (diff = loss B - loss A; > 0: A better)."
    ),
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="A checkpoint of a training run, in training order; repeat (-c ckpt0 -c ckpt1 -c ckpt2). "
            "Replaces --model-a/--model-b: finds abrupt per-token loss changes and diffs the first against the last.",
        ),
    ] = None,
    text_file: str | None = typer.Option(
        None, "--text", help="UTF-8 text file (default: the standard library's pydoc topics)."
    ),
    n_chunks: int = typer.Option(16, "--n-chunks", help="Number of text chunks."),
    chunk_len: int = typer.Option(
        128, "--chunk-len", help="Tokens per chunk (a BOS token included where the tokenizer adds one)."
    ),
    alignment: str = typer.Option(
        "auto",
        "--alignment",
        help="auto | tokens | text: 'tokens' refuses different tokenizers, 'auto' compares them on aligned text units.",
    ),
    threshold: float = typer.Option(
        1.0,
        "--threshold",
        help="Checkpoint series: a loss change (nats) between consecutive checkpoints that counts as abrupt.",
    ),
    top: int = typer.Option(10, "--top", help="Token types and contexts listed."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Per-token loss of two models (or a series of checkpoints) on the same text, and where they differ."""
    from interplab.io.runs import Run

    args = {
        "model_a": model_a,
        "model_b": model_b,
        "checkpoints": checkpoint,
        "text": text_file,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "alignment": alignment,
        "threshold": threshold,
        "top": top,
    }
    with guard(), Run("diff", args, out=out) as run:
        from interplab.analyses.diffing import Alignment, diff_checkpoints, diff_models
        from interplab.report.html import Report
        from interplab.report.sections.diffing import checkpoint_series_parts, diff_parts

        if checkpoint:
            if model_a or model_b:
                raise ValueError("give either --model-a/--model-b or --checkpoint (a series), not both.")
            if len(checkpoint) < 2:
                raise ValueError(
                    "a checkpoint series needs at least 2 --checkpoint values (3 or more to see a phase change)."
                )
            with err.status(f"per-token losses of {len(checkpoint)} checkpoints …"):
                series = diff_checkpoints(
                    checkpoint, source=text_file, n_chunks=n_chunks, chunk_len=chunk_len, threshold=threshold
                )
            res = series.pair(0, -1)
        else:
            if not (model_a and model_b):
                raise ValueError("give both --model-a and --model-b (or a series with --checkpoint).")
            series = None
            a, b = load_model(model_a), load_model(model_b)
            run.timings["load_seconds"] = round(a.load_seconds + b.load_seconds, 2)
            with err.status("per-token losses …"):
                res = diff_models(
                    a,
                    b,
                    source=text_file,
                    n_chunks=n_chunks,
                    chunk_len=chunk_len,
                    alignment=cast(Alignment, alignment),  # diff_models refuses other names
                )
            res.model_a, res.model_b = model_a, model_b
        res.save(run.dir)
        report = Report(f"interplab diff — {res.model_a} vs {res.model_b}")
        if series is not None:
            series.save(run.dir)
            report.section(
                "Checkpoint series: abrupt per-token loss changes",
                *checkpoint_series_parts(series, top),
                id="checkpoints",
            )
        report.section(
            "Two-model diff" if series is None else "First checkpoint vs last", *diff_parts(res, top), id="diff"
        )
        headline = res.headline(top)
        if series is not None:
            headline["checkpoints"] = series.headline(top)
        path = finish_run(run, headline, report, report_in_headline=True)
        assert path is not None
    if as_json:
        print_json(run.headline)
    else:
        h = run.headline
        t = Table(
            "token",
            "count",
            "loss A",
            "loss B",
            "mean diff",
            title=f"mean loss A {h['mean_loss_a']}, B {h['mean_loss_b']} (diff = B - A; > 0: A better)",
        )
        for r in h["top_tokens"]:
            t.add_row(
                repr(r["token"]), str(r["count"]), str(r["mean_loss_a"]), str(r["mean_loss_b"]), str(r["mean_diff"])
            )
        Console().print(t)
        err.print(f"report written to [bold]{path.resolve()}[/]")
