"""Causal analysis commands: ``interplab ablate``, ``patch``, ``ioi`` and ``trace``.

Each is a thin shell over :mod:`interplab.analyses.causal` (ablation, patching, circuits, tracing) that writes
a run directory with the results and a report.html (built by :mod:`interplab.report.sections`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli._common import (
    MaxParallel,
    SplitBackend,
    err,
    finish_run,
    guard,
    load_model,
    print_json,
    print_run,
)

if TYPE_CHECKING:
    from interplab.analyses.causal.ablation import How, MeanOver
    from interplab.analyses.causal.engine import Method as AblationMethod
    from interplab.analyses.causal.engine import Method as PatchMethod
    from interplab.analyses.causal.patching import Direction, Grid
    from interplab.analyses.causal.tracing import Corruption
    from interplab.stats import CIMethod


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
    layers: Annotated[
        list[int] | None, typer.Option("--layer", "-l", help="Only these layers (repeat); default all.")
    ] = None,
    method: str = typer.Option(
        "fast", "--method", help="fast (prefix reuse, batched variants) | naive (one forward per head)."
    ),
    ci: str = typer.Option("t", "--ci", help="Confidence interval over chunks: t | bootstrap."),
    top_k: int = typer.Option(10, "--top-k", help="Heads in the headline; 'important' means top-k."),
    no_induction: bool = typer.Option(False, "--no-induction", help="Skip the induction scores (no flagging)."),
    seed: int = typer.Option(0, "--seed", help="Seed of resample ablation, bootstrap and induction inputs."),
    backend: SplitBackend = "serial",
    max_parallel: MaxParallel = None,
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-ablate)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
) -> None:
    """Ablation importance of every attention head on text: loss increase, CI over chunks, important
    non-induction heads."""
    from interplab.analyses.causal.ablation import head_ablation_importance
    from interplab.io.runs import Run
    from interplab.report.sections.ablation import ablation_report

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
        "backend": backend,
        "max_parallel": max_parallel,
    }
    with guard(), Run("ablate", args, out=out, seed=seed) as run:
        m = load_model(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        with err.status("ablating heads …"):
            res = head_ablation_importance(
                m,
                text=text,
                n_chunks=n_chunks,
                chunk_len=chunk_len,
                how=cast("How", how),
                mean_over=cast("MeanOver", mean_over),
                layers=layers or None,
                method=cast("AblationMethod", method),
                ci=cast("CIMethod", ci),
                top_k=top_k,
                seed=seed,
                induction_score=None if no_induction else "auto",
                backend=backend,
                max_parallel=max_parallel,
            )
        run.timings.update(res.settings["seconds"])
        res.save(run.dir)
        res.to_frame().to_parquet(run.dir / "head_ablation.parquet", index=False)
        h = res.headline()
        finish_run(run, h, ablation_report(res, m.name, how, top_k), report_in_headline=True)
    if as_json:
        print_json(run.headline)
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


def patch(
    task: str | None = typer.Argument(
        None, help="ioi | facts | pronouns | capitalisation | acronyms; or give your own --pairs / --clean …"
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    pairs_file: str | None = typer.Option(
        None,
        "--pairs",
        help="Your prompt pairs: .jsonl (clean, corrupt, answer, wrong; optional positions: {name: text}) or .csv.",
    ),
    clean: str | None = typer.Option(None, "--clean", help="One pair: the clean prompt."),
    corrupt: str | None = typer.Option(None, "--corrupt", help="One pair: the corrupt prompt (same token length)."),
    answer: str | None = typer.Option(None, "--answer", help="One pair: the clean answer, e.g. ' Mary'."),
    wrong: str | None = typer.Option(None, "--wrong", help="One pair: the competing answer, e.g. ' John'."),
    metric: str = typer.Option("logit_diff", "--metric", help="Your pairs' metric: logit_diff | prob | logprob."),
    grid: str = typer.Option(
        "resid", "--grid", help="resid | attn_out | mlp_out | heads | heads_by_pos | q | k | v | pattern | neurons"
    ),
    direction: str = typer.Option("denoise", "--direction", help="denoise (corrupt run, clean patched in) | noise."),
    position: str | None = typer.Option(
        None, "--position", help="For head grids: a named position (e.g. END); default all positions."
    ),
    n: int = typer.Option(20, "--n", help="Prompt pairs."),
    neuron: Annotated[
        list[str] | None, typer.Option("--neuron", help="For --grid neurons: LAYER:NEURON (repeat).")
    ] = None,
    method: str = typer.Option("fast", "--method", help="fast | naive."),
    attribution: bool = typer.Option(
        False, "--attribution", help="Also run attribution patching and report its correlation."
    ),
    path: bool = typer.Option(
        False, "--path", help="Also path-patch every head's direct path to the logits (Wang et al. 2022)."
    ),
    circuit: bool = typer.Option(
        False, "--circuit", help="Also discover a circuit of heads and MLPs (ACDC-style node pruning)."
    ),
    threshold: float = typer.Option(0.02, "--threshold", help="--circuit: pruning threshold (fraction of the metric)."),
    edges: bool = typer.Option(
        False,
        "--edges",
        help="Also score every edge of the head/MLP graph by edge attribution patching (EAP; EAP-IG with "
        "--ig-steps > 1) and evaluate the top --top-k edge circuits (Syed et al. 2023; Hanna et al. 2024).",
    ),
    ig_steps: int = typer.Option(1, "--ig-steps", help="--edges: EAP-IG interpolation steps (1 = EAP; paper: 5)."),
    top_k: Annotated[
        list[int] | None,
        typer.Option("--top-k", help="--edges: circuit sizes in edges to evaluate (repeat; default 100)."),
    ] = None,
    edge_reference: str = typer.Option(
        "corrupt",
        "--edge-reference",
        help="--edges: what an edge outside the circuit carries: corrupt (the corrupt prompt's activation) or mean "
        "(per-template means over the corrupt prompts, the ablation of --circuit).",
    ),
    seed: int = typer.Option(0, "--seed"),
    backend: SplitBackend = "serial",
    max_parallel: MaxParallel = None,
    out: str | None = typer.Option(None, "--out"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Activation patching of a task or your own prompt pairs over a grid (normalised: 0 = corrupt, 1 = clean;
    bootstrap CIs over prompts); optionally attribution patching, path patching, circuit discovery and edge
    attribution patching (EAP / EAP-IG, with edge-circuit faithfulness) on the same pairs."""
    from interplab.analyses.causal import activation_patching, attribution_patching, correlation
    from interplab.io.runs import Run
    from interplab.report.sections.patching import patching_report
    from interplab.tasks import get_task
    from interplab.tasks.user_pairs import one_pair, read_pairs, user_pairs

    one = [clean, corrupt, answer, wrong]
    given = [x is not None for x in one]
    sources = [task is not None, pairs_file is not None, any(given)]
    if sum(sources) != 1:
        raise typer.BadParameter(
            "give one of: a task name (ioi, facts, …), --pairs FILE, or --clean/--corrupt/--answer/--wrong."
        )
    if any(given) and not all(given):
        raise typer.BadParameter("one pair needs all four of --clean, --corrupt, --answer and --wrong.")
    label = task or (pairs_file and f"pairs from {pairs_file}") or "your pair"
    args = {
        "task": task,
        "pairs": pairs_file,
        "clean": clean,
        "corrupt": corrupt,
        "answer": answer,
        "wrong": wrong,
        "metric": metric,
        "path": path,
        "circuit": circuit,
        "threshold": threshold,
        "edges": edges,
        "ig_steps": ig_steps,
        "top_k": top_k,
        "edge_reference": edge_reference,
        "model": model,
        "grid": grid,
        "direction": direction,
        "position": position,
        "n": n,
        "method": method,
        "attribution": attribution,
        "backend": backend,
        "max_parallel": max_parallel,
    }
    if edge_reference not in ("corrupt", "mean"):
        raise typer.BadParameter(f"--edge-reference is corrupt or mean, not {edge_reference!r}.")
    if ig_steps < 1:
        raise typer.BadParameter(f"--ig-steps must be at least 1 (1 = plain EAP), got {ig_steps}.")
    if any(k < 1 for k in top_k or []):
        raise typer.BadParameter(f"--top-k takes positive edge counts, got {top_k}.")
    with guard(), Run("patch", args, out=out, seed=seed) as run:
        neurons: list[tuple[int, int]] = []
        try:
            for s in neuron or []:
                layer, unit = (int(x) for x in s.split(":"))  # a ValueError unless exactly two integers
                neurons.append((layer, unit))
        except ValueError:
            raise ValueError(f"--neuron takes LAYER:NEURON, e.g. 12:345; got {neuron}.") from None
        specs = read_pairs(pairs_file) if pairs_file else None
        if clean is not None and corrupt is not None and answer is not None and wrong is not None:
            specs = [one_pair(clean, corrupt, answer, wrong)]
        m = load_model(model)
        if specs is not None:
            pairs = user_pairs(m, specs, metric=metric)
        else:
            assert task is not None
            pairs = get_task(m, task, n=n, seed=seed)
        with err.status(f"patching {grid} on {len(pairs)} pair(s) ({label}) …"):
            res = activation_patching(
                m,
                pairs,
                grid=cast("Grid", grid),
                direction=cast("Direction", direction),
                position=position,
                method=cast("PatchMethod", method),
                seed=seed,
                neurons=neurons or None,
                backend=backend,
                max_parallel=max_parallel,
            )
        res.save(run.dir)
        h = res.headline()
        att = None
        if attribution:
            with err.status("attribution patching …"):
                att = attribution_patching(
                    m,
                    pairs,
                    grid=cast("Grid", grid),
                    direction=cast("Direction", direction),
                    position=position,
                    seed=seed,
                    neurons=neurons or None,
                )
            att.save(run.dir, "attribution.json")
            h["attribution_corr"] = round(correlation(att, res), 4)
        pp = circ = None
        if path:
            from interplab.analyses.causal.path_patching import path_patching

            with err.status("path patching every head's direct path to the logits …"):
                pp = path_patching(m, pairs)
            pp.save(run.dir, "path_patching.json")
            h["path_patching_top"] = pp.headline()["top"][:5]
        if circuit:
            from interplab.analyses.causal.circuits import discover_circuit

            with err.status("discovering a circuit …"):
                circ = discover_circuit(m, pairs, threshold=threshold)
            circ.save(run.dir, "circuit.json")
            h["circuit"] = circ.headline()
        eres = None
        if edges:
            from interplab.analyses.causal.edges import edge_attribution_patching

            what = "EAP" if ig_steps == 1 else f"EAP-IG ({ig_steps} steps)"
            with err.status(f"{what}: scoring every edge and evaluating the top-k edge circuits …"):
                eres = edge_attribution_patching(
                    m, pairs, ig_steps=ig_steps, top_k=top_k or [100], reference=edge_reference
                )
            eres.save(run.dir, "edges.json")
            h["edges"] = eres.headline()
        rep = patching_report(res, m.name, label, len(pairs), att, h.get("attribution_corr"), pp, circ, eres)
        finish_run(run, h, rep)

    def tables():
        t = Table(*res.axis_names, "value", title=f"{label}: top cells ({direction})")
        for coords, v in res.top(10, "abs" if direction == "denoise" else "effect"):
            t.add_row(*coords, f"{v:.3f}")
        if eres is None:
            return [t]
        te = Table(
            "edge", "score", title=f"{label}: top edges ({eres.method}, metric change if only that edge is corrupt)"
        )
        for u, v, s in eres.ranked(10):
            te.add_row(f"{u} -> {v}", f"{s:.4f}")
        tc = Table("top-k", "edges", "nodes", "faithfulness", title="edge circuits (corrupt elsewhere)")
        for c in eres.circuits:
            tc.add_row(str(c["top_k"]), str(c["n_edges"]), str(c["n_nodes"]), f"{c['faithfulness']:.3f}")
        return [t, te, tc]

    print_run(run, as_json, tables)


def ioi(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            default_factory=lambda: ["smollm2-135m"],
            show_default="smollm2-135m",
            help="Model(s); repeat for a side-by-side replication (e.g. -m smollm2-135m -m gemma3-270m).",
        ),
    ],
    n: int = typer.Option(40, "--n", help="IOI prompt pairs (ABBA and BABA, Wang et al.'s templates)."),
    threshold: float = typer.Option(
        0.02, "--threshold", help="Circuit pruning threshold (fraction of the full metric)."
    ),
    no_circuit: bool = typer.Option(False, "--no-circuit", help="Skip the circuit search."),
    seed: int = typer.Option(0, "--seed"),
    out: str | None = typer.Option(None, "--out"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The IOI procedure (Wang et al. 2022): logit difference, head classes, circuit and its faithfulness."""
    from interplab.analyses.causal.ioi import IOIResult, ioi_circuit
    from interplab.io.runs import Run
    from interplab.report.sections.ioi import ioi_report
    from interplab.tasks.ioi import ioi as ioi_task

    args = {"model": model, "n": n, "threshold": threshold, "circuit": not no_circuit}
    results: dict[str, IOIResult] = {}
    with guard(), Run("ioi", args, out=out, seed=seed) as run:
        for name in model:
            m = load_model(name)
            pairs = ioi_task(m, n=n, seed=seed)
            with err.status(f"IOI on {len(pairs)} prompts, {m.name} …"):
                res = ioi_circuit(m, pairs, threshold=threshold, circuit=not no_circuit)
            res.save(run.dir / m.name if len(model) > 1 else run.dir)
            results[m.name] = res
            del m
        heads = {k: r.headline() for k, r in results.items()}
        finish_run(run, next(iter(heads.values())) if len(heads) == 1 else {"models": heads}, ioi_report(results, n))

    def tables():
        out = []
        for name, hh in heads.items():
            t = Table("quantity", "value", title=f"IOI on {name}")
            for k in ("logit_diff_mean", "io_preferred_frac", "corrupt_logit_diff_mean"):
                t.add_row(k, str(hh[k]))
            for c, hs in hh["heads"].items():
                t.add_row(c, " ".join(f"{a}.{b}" for a, b in hs) or "—")
            if "circuit" in hh:
                t.add_row("circuit", f"{hh['circuit']['n_nodes']} nodes, faithfulness {hh['circuit']['faithfulness']}")
            out.append(t)
        return out

    print_run(run, as_json, tables)


def trace(
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Fact prompt, e.g. 'The Eiffel Tower is located in the city of'."
    ),
    subject: str | None = typer.Option(None, "--subject", help="Subject as it appears in the prompt."),
    answer: str | None = typer.Option(None, "--answer", help="Answer (its first token is scored), e.g. ' Paris'."),
    facts: int = typer.Option(
        0, "--facts", help="Instead of one prompt: trace this many built-in facts the model knows."
    ),
    facts_file: str | None = typer.Option(
        None,
        "--facts-file",
        help="Your facts instead of the built-in ones: a .jsonl or .csv with subject, answer and prompt (holding "
        "the subject) or template (with {} for it). The facts the model knows are traced (the first --facts N of "
        "them if given).",
    ),
    corruption: str = typer.Option(
        "noise",
        "--corruption",
        help="noise (Gaussian, 3x embedding std) | resample (the subject's tokens replaced by other subjects').",
    ),
    resample_subjects: str | None = typer.Option(
        None,
        "--resample-subjects",
        help="With --corruption resample: the subjects to put in place of --subject, comma-separated "
        "('Mount Everest,Mont Blanc') or @FILE with one subject per line (for subjects holding commas; blank "
        "lines and lines starting with # are skipped). A subject is tried when the prompt keeps its number of "
        "tokens and every token outside the subject, and used when the model's top-1 prediction on it is no "
        "longer the answer. Default: the built-in facts' subjects, same relation first, then any relation.",
    ),
    samples: int = typer.Option(
        10, "--samples", help="Noise draws / at most this many usable resampled subjects per fact."
    ),
    window: int = typer.Option(10, "--window", help="Layers restored together for MLP/attention (ROME: 10)."),
    refine_peaks: bool = typer.Option(True, "--refine/--no-refine", help="Refine the peaks to heads and neurons."),
    seed: int = typer.Option(0, "--seed"),
    out: str | None = typer.Option(None, "--out"),
    resume: str | None = typer.Option(
        None, "--resume", help="Run directory of a killed trace run: finished facts are reused."
    ),
    backend: SplitBackend = "serial",
    max_parallel: MaxParallel = None,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Causal tracing (Meng et al. 2022): where is a fact recalled? The residual peak over the subject tokens
    ("peak"), the MLP and attention peaks, top heads and neurons. The overall maximum ("peak_overall") is marked
    trivial when it is the last token's residual in the final layers that restore at least half the effect."""
    from interplab.analyses.causal.tracing import causal_tracing, refine
    from interplab.io.runs import Run
    from interplab.report.sections.tracing import tracing_report
    from interplab.tasks.facts import Fact, all_facts, known_facts, read_facts

    args = {
        "model": model,
        "prompt": prompt,
        "subject": subject,
        "answer": answer,
        "facts": facts,
        "facts_file": facts_file,
        "corruption": corruption,
        "resample_subjects": resample_subjects,
        "samples": samples,
        "window": window,
        "backend": backend,
        "max_parallel": max_parallel,
    }
    if resume:
        from pathlib import Path

        if not (Path(resume) / "traces.jsonl").exists():
            raise typer.BadParameter(f"{resume} holds no traces.jsonl: it is not a trace run directory.")
        out = resume
    with guard(), Run("trace", args, out=out, seed=seed) as run:
        if facts <= 0 and not facts_file and not (prompt and subject and answer):
            raise ValueError(
                "give --prompt, --subject and --answer for one fact, --facts N for the built-in set, or --facts-file."
            )
        if facts_file and prompt:
            raise ValueError("give either --prompt (one fact) or --facts-file, not both.")
        file_facts = read_facts(facts_file) if facts_file else None
        candidates = None
        if resample_subjects is not None:
            if corruption != "resample":
                raise ValueError("--resample-subjects needs --corruption resample.")
            candidates = _subject_list(resample_subjects)
        m = load_model(model)
        if facts > 0 or file_facts:
            with err.status("finding the facts the model knows …"):
                kept, summary = known_facts(m, file_facts)
            run.save_json("known_facts.json", summary)
            if not kept:
                raise ValueError(
                    f"the model knows none of the {summary['n_total']} facts (its top-1 next token is never the "
                    "answer's first token); check the answers' leading spaces, or give facts it knows."
                )
            chosen = kept[:facts] if facts > 0 else kept
            partners = kept if file_facts is None else kept + all_facts()
        else:
            assert prompt and subject and answer  # checked above
            if subject not in prompt:
                raise ValueError(f"--subject {subject!r} does not occur in --prompt {prompt!r}.")
            chosen = [Fact(prompt.replace(subject, "{}", 1), subject, answer)]
            partners = chosen + all_facts()  # resampling: same relation first, then any (resample_candidates)
            summary = None
        with err.status(f"tracing {len(chosen)} fact(s) …"):
            res = causal_tracing(
                m,
                chosen,
                corruption=cast("Corruption", corruption),
                n_samples=samples,
                window=window,
                seed=seed,
                partners=partners,
                checkpoint=run.dir / "traces.jsonl",
                resample_subjects=candidates,
                backend=backend,
                max_parallel=max_parallel,
                model_ref=model,
            )
        res.save(run.dir)
        h = res.headline()
        if summary:
            h["facts_known"] = f"{summary['n_known']}/{summary['n_total']}"
        ref = None
        if refine_peaks and corruption == "noise":
            with err.status("refining the peaks to heads and neurons …"):
                ref = refine(m, chosen, res, n_samples=samples, seed=seed)
            h["top_heads"] = ref["heads"]
            h["top_neurons"] = ref.get("neurons", [])
            run.save_json("refine.json", {k: v for k, v in ref.items() if k != "head_ie"})
        finish_run(run, h, tracing_report(res, m.name, corruption, ref))

    def tables():
        t = Table("component", "layer", "position", "AIE", "note", title=f"causal tracing peaks ({corruption})")
        notes = {"resid": "headline peak: subject tokens", "mlp": "window", "attn": "window"}
        for k, d in h["peaks"].items():
            t.add_row(d["component"], str(d["layer"]), d["position"], f"{d['aie']:.4f}", notes.get(k, ""))
        o, w = h["peak_overall"], h["late_last_token_layers"]
        late = f"; trivial: last token, layers {w[0]}-{w[1]} restore >= half the effect" if w else ""
        note = "overall max" + (late if o["trivial"] else "")
        t.add_row(o["component"], str(o["layer"]), o["position"], f"{o['aie']:.4f}", note)
        out = [t]
        if corruption == "resample":
            r = Table("quantity", "value", title="resampled subjects")
            for k in ("n_resamples_tried", "n_resamples_usable", "n_resamples_used", "n_facts_skipped"):
                r.add_row(k, str(h[k]))
            if "resampled_subjects" in h:
                r.add_row("used", ", ".join(h["resampled_subjects"]))
            out.append(r)
        return out

    print_run(run, as_json, tables)


def _subject_list(spec: str) -> list[str]:
    """``--resample-subjects``: ``"A,B,C"`` or ``@FILE`` (one subject per line; blank and ``#`` lines skipped)."""
    from pathlib import Path

    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise ValueError(f"--resample-subjects {spec}: no file {path} (give @FILE with one subject per line).")
        items = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        items = [x for x in items if x and not x.startswith("#")]
    else:
        items = [x.strip() for x in spec.split(",") if x.strip()]
    if not items:
        raise ValueError(f"--resample-subjects {spec!r} holds no subject; give 'A,B,C' or @FILE (one per line).")
    return items
