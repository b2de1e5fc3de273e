"""``interplab compare BASE TUNED``: what a fine-tune changed (:mod:`interplab.finetune.compare`)."""

from __future__ import annotations

from typing import Annotated, cast

import typer
from rich.table import Table

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, int_list, load_model, print_run


def compare(
    base: Annotated[str, typer.Argument(help="Base model: registry name, .gguf path, local directory or hub id.")],
    tuned: Annotated[
        str | None, typer.Argument(help="Fine-tuned model (same tokenizer, layers and heads); omit with --topics.")
    ] = None,
    data: str | None = typer.Option(
        None,
        "--data",
        help="The fine-tuning distribution: pydoc | corpus:pydoc | a text file | a JSONL (text, or prompt + "
        "completion). Default: what TUNED/finetune.json names, else pydoc.",
    ),
    other: str | None = typer.Option(
        None,
        "--other",
        help="Unrelated text (a file; paragraphs = documents). Default: built-in everyday prose; with --topics the "
        "standard library's pydoc text.",
    ),
    topics: str | None = typer.Option(
        None,
        "--topics",
        help="Topic identification benchmark instead of one comparison: NAME=DIR,NAME=DIR,… (a model tuned on each "
        "topic). Each topic's text: --topic-texts, else the built-in topic of that name, else what DIR/finetune.json "
        "names.",
    ),
    topic_texts: str | None = typer.Option(
        None,
        "--topic-texts",
        help="With --topics: NAME=FILE,… candidate topic texts (a name without a tuned model is still a candidate).",
    ),
    layers: str | None = typer.Option(
        None, "--layers", help="With --topics: layers of the difference lens, e.g. 15,20 (default the middle one)."
    ),
    n_docs: int = typer.Option(200, "--n-docs", help="With --topics: unrelated documents read."),
    skip_first: bool = typer.Option(
        False,
        "--skip-first",
        help="With --topics: leave each document's first token (an attention sink without BOS) out of the mean "
        "difference.",
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
    the activation difference lens, and a verdict (rewired existing heads or created new ones). With --topics:
    which topic each of several fine-tunes was tuned on, from the difference lens alone (top-1 accuracy)."""
    from interplab.io.runs import Run

    if topics is not None or tuned is None:
        with guard():
            if topics is None:
                raise ValueError("give a TUNED model to compare with BASE, or --topics NAME=DIR,… for the benchmark.")
            if tuned is not None:
                raise ValueError("give either TUNED (one comparison) or --topics (the benchmark), not both.")
        _identify(base, topics, topic_texts, other, layers, n_docs, skip_first, top, seed, out, as_json)
        return

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


def _pairs(spec: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(
                f"{what} must be NAME=DIR pairs separated by commas, e.g. bees=runs/ft-bees; got {item!r}."
            )
        if name.strip() in out:
            raise ValueError(f"{what} names {name.strip()!r} twice.")
        out[name.strip()] = value.strip()
    if not out:
        raise ValueError(f"{what} is empty; give NAME=DIR pairs separated by commas.")
    return out


def _identify(
    base: str,
    topics: str,
    topic_texts: str | None,
    other: str | None,
    layers: str | None,
    n_docs: int,
    skip_first: bool,
    top: int,
    seed: int,
    out: str | None,
    as_json: bool,
) -> None:
    from interplab.io.runs import Run

    args = {
        "base": base,
        "topics": topics,
        "topic_texts": topic_texts,
        "other": other,
        "layers": layers,
        "n_docs": n_docs,
        "skip_first": skip_first,
        "top": top,
    }
    with guard(), Run("compare", args, out=out, seed=seed) as run:
        from interplab.finetune.adl import builtin_topics, identify_topics, unrelated_documents
        from interplab.finetune.compare import read_data_text, tuned_data_spec
        from interplab.report.html import Report
        from interplab.report.sections.compare import identify_parts
        from interplab.tasks.corpus import corpus_text

        tuned = _pairs(topics, "--topics")
        texts = {n: read_data_text(f) for n, f in _pairs(topic_texts, "--topic-texts").items()} if topic_texts else {}
        builtin = builtin_topics()
        for name, d in tuned.items():
            if name in texts:
                continue
            if name in builtin:
                texts[name] = builtin[name]
                continue
            spec = tuned_data_spec(d)
            if spec is None:
                raise ValueError(
                    f"topic {name!r} has no text: it is not a built-in topic ({', '.join(builtin)}), {d}/finetune.json "
                    "names no data, and --topic-texts does not name it."
                )
            texts[name] = read_data_text(spec)
        lay = int_list(layers, "--layers", "15,29 or 20..29") or None
        other_txt = read_data_text(other) if other is not None else None
        docs = unrelated_documents(other_txt, n_docs)
        b = load_model(base)
        with err.status("identifying …") as status:
            res = identify_topics(
                b,
                tuned,
                texts,
                docs,
                unrelated_text=other_txt if other_txt is not None else corpus_text(None),
                layers=lay,
                skip_first=skip_first,
                top_k=2 * top,
                progress=lambda s: status.update(s),
            )
        if other is None:
            res.settings["unrelated"] = "pydoc paragraphs"
        res.save(run.dir)
        report = Report(f"interplab compare — difference-lens topic identification on {base}")
        report.section("Which topic was each model tuned on?", *identify_parts(res, top), id="identify")
        finish_run(run, res.headline(top), report, report_in_headline=True)

    def tables():
        h = run.headline
        t = Table("tuned on", "predicted", "||δ||", "lens tokens", title=f"accuracy {h['accuracy']} {h['accuracy_ci']}")
        for p in h["predictions"]:
            t.add_row(p["truth"], str(p["predicted"]), str(p["norm"]), ", ".join(map(repr, p["top_tokens"][:8])))
        yield t

    print_run(run, as_json, tables)
