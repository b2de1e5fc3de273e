"""``interplab compare BASE TUNED``: what a fine-tune changed (:mod:`interplab.finetune.compare`)."""

from __future__ import annotations

from typing import Annotated, cast

import typer
from rich.table import Table

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, load_model, print_run


def compare(
    base: Annotated[str, typer.Argument(help="Base model: registry name, .gguf path, local directory or hub id.")],
    tuned: Annotated[str, typer.Argument(help="Fine-tuned model (same tokenizer, layers and heads).")],
    data: str | None = typer.Option(
        None,
        "--data",
        help="The fine-tuning distribution: pydoc | corpus:pydoc | a text file | a JSONL (text, or prompt + "
        "completion). Default: what TUNED/finetune.json names, else pydoc.",
    ),
    other: str | None = typer.Option(
        None, "--other", help="Unrelated text (a file; paragraphs = documents). Default: built-in everyday prose."
    ),
    n_chunks: int = typer.Option(8, "--n-chunks", help="Chunks of each text."),
    chunk_len: int = typer.Option(64, "--chunk-len", help="Tokens per chunk."),
    detector_seqs: int = typer.Option(8, "--detector-seqs", help="Sequences per head-detector input set."),
    copying: bool = typer.Option(False, "--copying", help="Also compare the weight-based copying scores (slower)."),
    ioi: str = typer.Option(
        "auto", "--ioi", help="auto (when the base model does IOI) | always | never: the IOI circuit comparison."
    ),
    ioi_n: int = typer.Option(16, "--ioi-n", help="IOI prompt pairs."),
    no_circuit: bool = typer.Option(False, "--no-circuit", help="Skip the IOI circuit discovery (ACDC-style)."),
    important_frac: float = typer.Option(
        0.2, "--important-frac", help="Fraction of heads (by base ablation importance) that were important before."
    ),
    ablation_chunks: int = typer.Option(4, "--ablation-chunks", help="Fine-tuning chunks of the ablation importance."),
    cmap_exact: int = typer.Option(
        20, "--cmap-exact", help="Heads patched exactly after an attribution screen (0: every changed head exactly)."
    ),
    top: int = typer.Option(10, "--top", help="Heads, tokens and matrices listed."),
    seed: int = typer.Option(0, "--seed"),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Base vs fine-tuned: loss in and off the tuning distribution, per-head changes, circuits, weight updates,
    the activation difference lens, and a verdict (rewired existing heads or created new ones)."""
    from interplab.io.runs import Run

    args = {
        "base": base,
        "tuned": tuned,
        "data": data,
        "other": other,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "detector_seqs": detector_seqs,
        "copying": copying,
        "ioi": ioi,
        "ioi_n": ioi_n,
        "circuit": not no_circuit,
        "important_frac": important_frac,
        "ablation_chunks": ablation_chunks,
        "cmap_exact": cmap_exact,
        "top": top,
    }
    with guard(), Run("compare", args, out=out, seed=seed) as run:
        from interplab.finetune.compare import IOIMode, compare_models, tuned_data_spec
        from interplab.report.html import Report
        from interplab.report.sections.compare import compare_parts

        if ioi not in ("auto", "always", "never"):
            raise ValueError(f"--ioi must be auto, always or never, not {ioi!r}.")
        b, t = load_model(base), load_model(tuned)
        run.timings["load_seconds"] = round(b.load_seconds + t.load_seconds, 2)
        with err.status("comparing …") as status:
            res = compare_models(
                b,
                t,
                data=data if data is not None else tuned_data_spec(tuned),
                other=other,
                n_chunks=n_chunks,
                chunk_len=chunk_len,
                detector_seqs=detector_seqs,
                detector_copying=copying,
                important_frac=important_frac,
                ablation_chunks=ablation_chunks,
                cmap_exact=cmap_exact or None,
                ioi=cast(IOIMode, ioi),
                ioi_n=ioi_n,
                circuit=not no_circuit,
                top_k=top,
                seed=seed,
                progress=lambda s: status.update(s),
            )
        res.base_name, res.tuned_name = base, tuned
        res.save(run.dir)
        report = Report(f"interplab compare — {base} vs {tuned}")
        report.section("Base vs fine-tuned", *compare_parts(res, top), id="compare")
        finish_run(run, res.headline(top), report, report_in_headline=True)

    def tables():
        h = run.headline
        t = Table("metric", "value", title=f"{base} vs {tuned}: {h['verdict']}")
        for key in (
            "mean_loss_delta_in",
            "mean_loss_delta_other",
            "head_js_max",
            "circuit_jaccard",
            "weight_update_rel_norm",
            "cmap_recovered_all_heads",
        ):
            t.add_row(key, str(h[key]))
        t.add_row("top cross-model patching heads", str(h["top_cmap_heads"][:5]))
        t.add_row("activation difference lens", ", ".join(map(repr, h["adl_top_tokens"][:10])))
        yield t

    print_run(run, as_json, tables)
