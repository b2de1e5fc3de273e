"""``interplab heads``: head detectors with null baselines (:mod:`interplab.analyses.observational.heads`)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli._common import err, finish_run, guard, load_model, print_json


def heads(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model whose heads to score."),
    batch: int = typer.Option(8, "--batch", help="Sequences per forward pass (bounds memory)."),
    seq_len: int | None = typer.Option(
        None, "--seq-len", help="Length of the repeated random sequence (default 50, or what fits)."
    ),
    n_seqs: int = typer.Option(32, "--n-seqs", help="Sequences per input set."),
    text: str | None = typer.Option(
        None,
        "--text",
        help="Text for previous-token and sink scores: 'pydoc', a text file or 'random' (default: pydoc, or random "
        "without a tokenizer).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random tokens and null inputs."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-heads)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline (per class [layer, head, score]) as JSON."),
) -> None:
    """Head detectors: previous-token, duplicate-token, induction, sink, copying, copy-suppression heads, with
    null baselines."""
    from interplab.analyses.observational.heads import head_scores
    from interplab.io.runs import Run
    from interplab.report.sections.heads import heads_report

    args = {"model": model, "batch": batch, "seq_len": seq_len, "n_seqs": n_seqs, "text": text}
    with guard(), Run("heads", args, out=out, seed=seed) as run:
        m = load_model(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        with err.status("scoring heads …"):
            res = head_scores(m, n_seqs=n_seqs, batch=batch, seq_len=seq_len, text=text, seed=seed)
        run.timings.update({k: res.settings[k] for k in ("attention_seconds", "copying_seconds")})
        res.save(run.dir)
        res.to_frame("wide").to_parquet(run.dir / "heads.parquet", index=False)
        finish_run(run, {"model": m.name, **res.headline()}, heads_report(res, m.name), run_dir_in_headline=False)
    if as_json:
        print_json(run.headline)
    else:
        t = Table("class", "members", "top heads (layer.head score / null)")
        for c in res.classes:
            t.add_row(
                c, str(len(res.members(c))), ", ".join(f"{a}.{b} {s:.2f}/{n:.2f}" for a, b, s, n in res.top(c, 5))
            )
        Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/]")
