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

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Interpretability and AI-safety experiments on transformers."
)
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


def _print_metrics(res: dict, as_json: bool, skip_suffix: str | None = None, title: str | None = None) -> None:
    """A result's metrics (a benchmark's, a run's headline): JSON on stdout with ``--json``, else a
    two-column table (titled ``title``, if given)."""
    if as_json:
        _print_json(res)
        return
    t = Table("metric", "value", title=title)
    for k, v in res.items():
        if not (skip_suffix and k.endswith(skip_suffix)):
            t.add_row(k, str(v))
    Console().print(t)


def _load(name: str):
    import transformers

    import interplab

    transformers.utils.logging.disable_progress_bar()
    with err.status(f"loading {name} …"):
        return interplab.load(name)


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-models)."),
):
    """List the named models: family, parameters, whether installed here, and how to install."""
    from interplab.io.runs import Run
    from interplab.models.registry import REGISTRY, is_available

    with Run("models", {}, out=out) as run:
        rows = [
            {
                "name": m.name,
                "family": m.family,
                "params": m.params,
                "available": is_available(m),
                "install": None if is_available(m) else m.install,
                "hub_id": m.hub_id,
                "description": m.description,
            }
            for m in REGISTRY.values()
        ]
        run.save_json("models.json", rows)
        run.headline["models"] = rows
    if as_json:
        _print_json(rows)
        return
    t = Table("name", "family", "params", "available", "install")
    for r in rows:
        t.add_row(
            r["name"], r["family"], f"{r['params'] / 1e6:.1f}M", "yes" if r["available"] else "no", r["install"] or ""
        )
    Console().print(t)


@app.command()
def info(
    name: str = typer.Argument(..., help="Registry name, .gguf path, local directory or hub id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    run_dir: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-info)."),
):
    """Print a model's configuration (layers, heads, dimensions, family)."""
    from interplab.io.runs import Run

    with _Guard(), Run("info", {"name": name}, out=run_dir) as run:
        m = _load(name)
        out = {
            "name": m.name,
            **m.cfg.to_dict(),
            "n_params": m.n_params,
            "source": m.source,
            "load_seconds": round(m.load_seconds, 2),
            "n_hook_points": len(m.hook_names()),
            "hook_names": m.hook_names(),
        }
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
def report(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model to report on."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-report)."),
    sections: str | None = typer.Option(
        None,
        "--sections",
        help="Comma-separated analysis sections: heads, weights, dla, logit-pca (default), ablation (opt-in, slower); 'none': only model card, lens, attention.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print headline numbers as JSON."),
):
    """Build the HTML report (model card, logit lens, attention viewer, analyses) into a run directory."""
    from interplab.io.runs import Run

    chosen = (
        None
        if sections is None
        else ([] if sections.strip() == "none" else [x.strip() for x in sections.split(",") if x.strip()])
    )
    with _Guard(), Run("report", {"model": model, "sections": sections}, out=out) as run:
        m = _load(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        from interplab.report.model_report import build_report

        with err.status("building report …"):
            path = build_report(m, run.dir, sections=chosen)
        run.artefacts += sorted(
            p.name for p in run.dir.iterdir() if p.suffix in (".html", ".json") and p.name != "run.json"
        )
        lens = {
            p.stem.removeprefix("lens_"): json.loads(p.read_text())["headline"]
            for p in sorted(run.dir.glob("lens_*.json"))
        }
        run.headline.update(
            {
                "model": m.name,
                "report": str(path.resolve()),
                "run_dir": str(run.dir.resolve()),
                "load_seconds": round(m.load_seconds, 2),
                "logit_lens": lens,
            }
        )
    if as_json:
        _print_json(run.headline)
    else:
        err.print(f"report written to [bold]{path.resolve()}[/]")


@bench_app.command("hooks")
def bench_hooks_cmd(
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    batch: int = typer.Option(8, help="Batch size."),
    seq: int = typer.Option(128, help="Tokens per sequence."),
    rounds: int = typer.Option(7, help="Timed interleaved rounds (after 2 warm-up rounds)."),
    threads: int = typer.Option(2, help="torch threads."),
    out: str | None = typer.Option(None, "--out"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Cost of caching (residual streams; every hook point but patterns) relative to the plain forward."""
    from interplab.bench.core import bench_hooks
    from interplab.io.runs import Run

    with (
        _Guard(),
        Run(
            "bench-hooks", {"model": model, "batch": batch, "seq": seq, "rounds": rounds, "threads": threads}, out=out
        ) as run,
    ):
        m = _load(model)
        with err.status("benchmarking …"):
            res = bench_hooks(m, batch=batch, seq=seq, rounds=rounds, threads=threads)
        run.save_json("bench.json", res)
        run.headline.update(res)
    _print_metrics(res, as_json, skip_suffix="_rounds")


@app.command()
def diff(
    model_a: str | None = typer.Option(
        None, "--model-a", "-a", help="Model A: registry name, .gguf path, local directory or hub id."
    ),
    model_b: str | None = typer.Option(
        None, "--model-b", "-b", help="Model B (diff = loss B - loss A; > 0: A better)."
    ),
    checkpoint: list[str] | None = typer.Option(
        None,
        "--checkpoint",
        "-c",
        help="A checkpoint of a training run, in training order; repeat (-c ckpt0 -c ckpt1 -c ckpt2). "
        "Replaces --model-a/--model-b: finds abrupt per-token loss changes and diffs the first against the last.",
    ),
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
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-diff)."),
    as_json: bool = typer.Option(False, "--json", help="Print headline numbers as JSON."),
):
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
    with _Guard(), Run("diff", args, out=out) as run:
        from interplab.analyses.diffing import diff_checkpoints, diff_models
        from interplab.report.html import Report

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
            a, b = _load(model_a), _load(model_b)
            run.timings["load_seconds"] = round(a.load_seconds + b.load_seconds, 2)
            with err.status("per-token losses …"):
                res = diff_models(a, b, source=text_file, n_chunks=n_chunks, chunk_len=chunk_len, alignment=alignment)
            res.model_a, res.model_b = model_a, model_b
        res.save(run.dir)
        run.artefacts += ["diff.json", "diff_units.parquet"]
        report = Report(f"interplab diff — {res.model_a} vs {res.model_b}")
        if series is not None:
            series.save(run.dir)
            run.artefacts += ["checkpoints.json", "checkpoint_losses.parquet"]
            report.section(
                "Checkpoint series: abrupt per-token loss changes", *series.report_parts(top), id="checkpoints"
            )
        report.section(
            "Two-model diff" if series is None else "First checkpoint vs last", *res.report_parts(top), id="diff"
        )
        path = report.save(run.path("report.html"))
        run.headline.update(res.headline(top))
        if series is not None:
            run.headline["checkpoints"] = series.headline(top)
        run.headline.update({"report": str(path.resolve()), "run_dir": str(run.dir.resolve())})
    if as_json:
        _print_json(run.headline)
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


@app.command()
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
        help="Text for previous-token and sink scores: 'pydoc', a text file or 'random' (default: pydoc, or random without a tokenizer).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random tokens and null inputs."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-heads)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline (per class [layer, head, score]) as JSON."),
):
    """Head detectors: previous-token, duplicate-token, induction, sink, copying, copy-suppression heads, with null baselines."""
    from interplab.io.runs import Run

    args = {"model": model, "batch": batch, "seq_len": seq_len, "n_seqs": n_seqs, "text": text}
    with _Guard(), Run("heads", args, out=out, seed=seed) as run:
        m = _load(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        from interplab.analyses.observational.heads import head_scores
        from interplab.report.html import Report, table

        with err.status("scoring heads …"):
            res = head_scores(m, n_seqs=n_seqs, batch=batch, seq_len=seq_len, text=text, seed=seed)
        run.timings.update({k: res.settings[k] for k in ("attention_seconds", "copying_seconds")})
        res.save(run.dir)
        wide = res.to_frame("wide")
        wide.to_parquet(run.dir / "heads.parquet", index=False)
        rep = Report(f"Head detectors — {m.name}")
        rep.section(
            "Head detectors",
            res.plot(),
            table(
                [
                    {
                        "class": c,
                        "members": len(res.members(c)),
                        "threshold": res.thresholds[c],
                        "margin": res.margins[c],
                        "top (layer.head score / null)": ", ".join(
                            f"{a}.{b} {s:.2f} / {n:.2f}" for a, b, s, n in res.top(c, 5)
                        ),
                    }
                    for c in res.classes
                ]
            ),
        )
        rep.save(run.dir / "report.html")
        run.artefacts += ["heads.json", "heads.parquet", "report.html"]
        run.headline.update({"model": m.name, **res.headline()})
    if as_json:
        _print_json(run.headline)
    else:
        t = Table("class", "members", "top heads (layer.head score / null)")
        for c in res.classes:
            t.add_row(
                c, str(len(res.members(c))), ", ".join(f"{a}.{b} {s:.2f}/{n:.2f}" for a, b, s, n in res.top(c, 5))
            )
        Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/]")


@app.command()
def ablate(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model whose heads to ablate."),
    how: str = typer.Option("zero", "--how", help="zero | mean | resample (see interplab.analyses.causal.ablation)."),
    text: str | None = typer.Option(
        None, "--text", help="UTF-8 text file (default: the standard library's pydoc topics)."
    ),
    n_chunks: int = typer.Option(16, "--n-chunks", help="Number of text chunks (the CI is over chunks; at least 2)."),
    chunk_len: int = typer.Option(128, "--chunk-len", help="Tokens per chunk."),
    mean_over: str = typer.Option(
        "all", "--mean-over", help="Mean ablation: 'all' (chunks and positions) or 'position'."
    ),
    layers: list[int] | None = typer.Option(None, "--layer", "-l", help="Only these layers (repeat); default all."),
    method: str = typer.Option(
        "fast", "--method", help="fast (prefix reuse, batched variants) | naive (one forward per head)."
    ),
    ci: str = typer.Option("t", "--ci", help="Confidence interval over chunks: t | bootstrap."),
    top_k: int = typer.Option(10, "--top-k", help="Heads in the headline; 'important' means top-k."),
    no_induction: bool = typer.Option(False, "--no-induction", help="Skip the induction scores (no flagging)."),
    seed: int = typer.Option(0, "--seed", help="Seed of resample ablation, bootstrap and induction inputs."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-ablate)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
):
    """Ablation importance of every attention head on text: loss increase, CI over chunks, important non-induction heads."""
    from interplab.io.runs import Run

    args = {
        "model": model,
        "how": how,
        "text": text,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "mean_over": mean_over,
        "layers": layers,
        "method": method,
        "ci": ci,
        "top_k": top_k,
        "induction": not no_induction,
    }
    with _Guard(), Run("ablate", args, out=out, seed=seed) as run:
        from interplab.analyses.causal.ablation import head_ablation_importance
        from interplab.report.html import Report, table

        m = _load(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        with err.status("ablating heads …"):
            res = head_ablation_importance(
                m,
                text=text,
                n_chunks=n_chunks,
                chunk_len=chunk_len,
                how=how,
                mean_over=mean_over,
                layers=layers or None,
                method=method,
                ci=ci,
                top_k=top_k,
                seed=seed,
                induction_score=None if no_induction else "auto",
            )
        run.timings.update(res.settings["seconds"])
        res.save(run.dir)
        res.to_frame().to_parquet(run.dir / "head_ablation.parquet", index=False)
        run.artefacts += ["head_ablation.json", "head_ablation.safetensors", "head_ablation.parquet", "report.html"]
        h = res.headline()
        rep = Report(
            f"Head ablation importance — {m.name}",
            f"{how} ablation of hook_z, {res.settings['n_chunks']} chunks × {res.settings['chunk_len']} tokens of "
            f"{res.settings['source']}; baseline loss {h['baseline_loss']}",
        )
        rep.section("Loss increase per head", res.plot(), table(res.to_frame().head(max(top_k, 20))), id="ablation")
        path = rep.save(run.dir / "report.html")
        run.headline.update({**h, "report": str(path.resolve()), "run_dir": str(run.dir.resolve())})
    if as_json:
        _print_json(run.headline)
    else:
        t = Table(
            "layer", "head", "Δ loss", "CI", "induction", title=f"{how} ablation, baseline loss {h['baseline_loss']}"
        )
        flagged = {(a, b) for a, b, *_ in h.get("important_non_induction_heads", [])}
        for a, b, d, lo, hi in h["top_heads"]:
            s = res.induction_score[a, b] if res.induction_score is not None else None
            t.add_row(
                str(a),
                str(b),
                f"{d:.4f}",
                f"[{lo:.4f}, {hi:.4f}]",
                ("n/a" if s is None else f"{float(s):.2f}") + (" (not induction)" if (a, b) in flagged else ""),
            )
        Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/]")


@bench_app.command("ablation")
def bench_ablation_cmd(
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    layers: list[int] | None = typer.Option(
        None, "--layer", "-l", help="Layers timed (repeat); default 3 at the centres of equal bins."
    ),
    n_chunks: int = typer.Option(4, "--n-chunks", help="Text chunks."),
    chunk_len: int = typer.Option(128, "--chunk-len", help="Tokens per chunk."),
    how: str = typer.Option("zero", "--how", help="zero | mean | resample."),
    rounds: int = typer.Option(3, "--rounds", help="Rounds of (naive, fast) pairs per layer (medians over rounds)."),
    threads: int = typer.Option(2, "--threads", help="torch threads."),
    all_heads: bool = typer.Option(
        False,
        "--all-heads",
        help="Also time the fast path on every head (the naive all-head time is then extrapolated, and labelled so).",
    ),
    out: str | None = typer.Option(None, "--out"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Head-ablation importance: naive (one forward per head) vs fast (prefix reuse, batched variants), same heads and chunks."""
    from interplab.bench.core import bench_ablation
    from interplab.io.runs import Run

    args = {
        "model": model,
        "layers": layers,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "how": how,
        "rounds": rounds,
        "threads": threads,
        "all_heads": all_heads,
    }
    with _Guard(), Run("bench-ablation", args, out=out) as run:
        m = _load(model)
        with err.status("benchmarking head ablation …"):
            res = bench_ablation(
                m,
                layers=layers or None,
                n_chunks=n_chunks,
                chunk_len=chunk_len,
                how=how,
                rounds=rounds,
                threads=threads,
                all_heads=all_heads,
            )
        run.save_json("bench.json", res)
        run.headline.update(res)
    _print_metrics(res, as_json)


# commands defined in their own modules (causal analysis; representations; activation datasets and SAEs;
# training lab)
from interplab.cli import representations as _cli_repr
from interplab.cli import sae as _cli_sae
from interplab.cli.causal import register as _register_causal

_register_causal(app, bench_app)
_cli_repr.register(app, bench_app)
_cli_sae.register(app, bench_app)
from interplab.cli.train import bench_grokking as _bench_grokking_cmd
from interplab.cli.train import train as _train_cmd

app.command("train")(_train_cmd)
bench_app.command("grokking")(_bench_grokking_cmd)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
