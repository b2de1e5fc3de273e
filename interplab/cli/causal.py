"""CLI commands for causal analysis: ``interplab patch``, ``ioi``, ``trace`` and ``bench patching``.

Registered on the main app by :func:`register`; each command is a thin shell over
:mod:`interplab.analyses.causal.patching`, :mod:`~interplab.analyses.causal.circuits` and
:mod:`~interplab.analyses.causal.tracing`, writes a run directory with the results and a report.html.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    from interplab.cli import _Guard, _load, _print_metrics, err

    @app.command()
    def patch(
        task: str = typer.Argument(..., help="ioi | facts | pronouns | capitalisation | acronyms"),
        model: str = typer.Option("smollm2-135m", "--model", "-m"),
        grid: str = typer.Option(
            "resid", "--grid", help="resid | attn_out | mlp_out | heads | heads_by_pos | q | k | v | pattern | neurons"
        ),
        direction: str = typer.Option(
            "denoise", "--direction", help="denoise (corrupt run, clean patched in) | noise."
        ),
        position: str | None = typer.Option(
            None, "--position", help="For head grids: a named position (e.g. END); default all positions."
        ),
        n: int = typer.Option(20, "--n", help="Prompt pairs."),
        neuron: list[str] | None = typer.Option(None, "--neuron", help="For --grid neurons: LAYER:NEURON (repeat)."),
        method: str = typer.Option("fast", "--method", help="fast | naive."),
        attribution: bool = typer.Option(
            False, "--attribution", help="Also run attribution patching and report its correlation."
        ),
        seed: int = typer.Option(0, "--seed"),
        out: str | None = typer.Option(None, "--out"),
        as_json: bool = typer.Option(False, "--json"),
    ):
        """Activation patching of a task over a grid (normalised: 0 = corrupt, 1 = clean; bootstrap CIs over prompts)."""
        from interplab.analyses.causal.patching import activation_patching, attribution_patching, correlation
        from interplab.io.runs import Run
        from interplab.report.html import Report, table, text
        from interplab.tasks import get_task

        args = {
            "task": task,
            "model": model,
            "grid": grid,
            "direction": direction,
            "position": position,
            "n": n,
            "method": method,
            "attribution": attribution,
        }
        with _Guard(), Run("patch", args, out=out, seed=seed) as run:
            try:
                neurons = [tuple(int(x) for x in s.split(":")) for s in (neuron or [])]
                if any(len(t) != 2 for t in neurons):
                    raise ValueError
            except ValueError:
                raise ValueError(f"--neuron takes LAYER:NEURON, e.g. 12:345; got {neuron}.") from None
            m = _load(model)
            pairs = get_task(m, task, n=n, seed=seed)
            with err.status(f"patching {grid} on {len(pairs)} {task} pairs …"):
                res = activation_patching(
                    m,
                    pairs,
                    grid=grid,
                    direction=direction,
                    position=position,
                    method=method,
                    seed=seed,
                    neurons=neurons or None,
                )
            res.save(run.dir)
            h = res.headline()
            rep = Report(
                f"Activation patching — {task} — {m.name}",
                f"{direction}, grid {grid}, {len(pairs)} pairs; clean metric {h['clean_metric']:.3f}, "
                f"corrupt {h['corrupt_metric']:.3f}",
            )
            rep.section("Patching", res.plot(), table(res.to_frame().head(60)), id="patching")
            if attribution:
                with err.status("attribution patching …"):
                    att = attribution_patching(
                        m, pairs, grid=grid, direction=direction, position=position, seed=seed, neurons=neurons or None
                    )
                att.save(run.dir, "attribution.json")
                h["attribution_corr"] = round(correlation(att, res), 4)
                rep.section(
                    "Attribution patching",
                    att.plot(),
                    text(f"Pearson correlation with exact patching: {h['attribution_corr']}"),
                    id="attribution",
                )
            _complete(run, rep, h)

        def tables():
            t = Table(*res.axis_names, "value", title=f"{task}: top cells ({direction})")
            for coords, v in res.top(10, "abs" if direction == "denoise" else "effect"):
                t.add_row(*coords, f"{v:.3f}")
            return [t]

        _print_run(run, as_json, tables)

    @app.command()
    def ioi(
        model: list[str] = typer.Option(
            ["smollm2-135m"],
            "--model",
            "-m",
            help="Model(s); repeat for a side-by-side replication (e.g. -m smollm2-135m -m gemma3-270m).",
        ),
        n: int = typer.Option(40, "--n", help="IOI prompt pairs (ABBA and BABA, Wang et al.'s templates)."),
        threshold: float = typer.Option(
            0.02, "--threshold", help="Circuit pruning threshold (fraction of the full metric)."
        ),
        no_circuit: bool = typer.Option(False, "--no-circuit", help="Skip the circuit search."),
        seed: int = typer.Option(0, "--seed"),
        out: str | None = typer.Option(None, "--out"),
        as_json: bool = typer.Option(False, "--json"),
    ):
        """The IOI procedure (Wang et al. 2022): logit difference, head classes, circuit and its faithfulness."""
        from interplab.analyses.causal.circuits import ioi_circuit
        from interplab.io.runs import Run
        from interplab.report.html import Report, table
        from interplab.tasks.ioi import ioi as ioi_task

        args = {"model": model, "n": n, "threshold": threshold, "circuit": not no_circuit}
        results = {}
        with _Guard(), Run("ioi", args, out=out, seed=seed) as run:
            for name in model:
                m = _load(name)
                pairs = ioi_task(m, n=n, seed=seed)
                with err.status(f"IOI on {len(pairs)} prompts, {m.name} …"):
                    res = ioi_circuit(m, pairs, threshold=threshold, circuit=not no_circuit)
                res.save(run.dir / m.name if len(model) > 1 else run.dir)
                results[m.name] = res
                del m
            heads = {k: r.headline() for k, r in results.items()}
            title = "IOI — " + " vs ".join(results)
            rep = Report(title, f"{n} prompt pairs per model (Wang et al.'s templates, p_ABC corruption)")
            if len(results) > 1:
                _ioi_comparison(rep, results, table)
            for name, res in results.items():
                _ioi_sections(rep, res, table, prefix=f"{name}: " if len(results) > 1 else "")
            _complete(run, rep, next(iter(heads.values())) if len(heads) == 1 else {"models": heads})

        def tables():
            out = []
            for name, hh in heads.items():
                t = Table("quantity", "value", title=f"IOI on {name}")
                for k in ("logit_diff_mean", "io_preferred_frac", "corrupt_logit_diff_mean"):
                    t.add_row(k, str(hh[k]))
                for c, hs in hh["heads"].items():
                    t.add_row(c, " ".join(f"{a}.{b}" for a, b in hs) or "—")
                if "circuit" in hh:
                    t.add_row(
                        "circuit", f"{hh['circuit']['n_nodes']} nodes, faithfulness {hh['circuit']['faithfulness']}"
                    )
                out.append(t)
            return out

        _print_run(run, as_json, tables)

    @app.command()
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
        corruption: str = typer.Option("noise", "--corruption", help="noise (Gaussian, 3x embedding std) | resample."),
        samples: int = typer.Option(10, "--samples", help="Noise draws / resampled subjects per fact."),
        window: int = typer.Option(10, "--window", help="Layers restored together for MLP/attention (ROME: 10)."),
        refine_peaks: bool = typer.Option(True, "--refine/--no-refine", help="Refine the peaks to heads and neurons."),
        seed: int = typer.Option(0, "--seed"),
        out: str | None = typer.Option(None, "--out"),
        resume: str | None = typer.Option(
            None, "--resume", help="Run directory of a killed trace run: finished facts are reused."
        ),
        as_json: bool = typer.Option(False, "--json"),
    ):
        """Causal tracing (Meng et al. 2022): where is a fact recalled? Peak component/layer/position, top heads and neurons."""
        from interplab.analyses.causal.tracing import causal_tracing, refine
        from interplab.io.runs import Run
        from interplab.report.html import Report, table
        from interplab.tasks.facts import Fact, all_facts, known_facts

        args = {
            "model": model,
            "prompt": prompt,
            "subject": subject,
            "answer": answer,
            "facts": facts,
            "corruption": corruption,
            "samples": samples,
            "window": window,
        }
        if resume:
            from pathlib import Path

            if not (Path(resume) / "traces.jsonl").exists():
                raise typer.BadParameter(f"{resume} holds no traces.jsonl: it is not a trace run directory.")
            out = resume
        with _Guard(), Run("trace", args, out=out, seed=seed) as run:
            if facts <= 0 and not (prompt and subject and answer):
                raise ValueError(
                    "give --prompt, --subject and --answer for one fact, or --facts N for the built-in set."
                )
            m = _load(model)
            if facts > 0:
                with err.status("finding the facts the model knows …"):
                    kept, summary = known_facts(m)
                run.save_json("known_facts.json", summary)
                chosen = kept[:facts]
                partners = kept
            else:
                if subject not in prompt:
                    raise ValueError(f"--subject {subject!r} does not occur in --prompt {prompt!r}.")
                chosen = [Fact(prompt.replace(subject, "{}", 1), subject, answer)]
                partners = chosen + [f for f in all_facts() if f.template == chosen[0].template]
                summary = None
            with err.status(f"tracing {len(chosen)} fact(s) …"):
                res = causal_tracing(
                    m,
                    chosen,
                    corruption=corruption,
                    n_samples=samples,
                    window=window,
                    seed=seed,
                    partners=partners,
                    checkpoint=run.dir / "traces.jsonl",
                )
            res.save(run.dir)
            h = res.headline()
            if summary:
                h["facts_known"] = f"{summary['n_known']}/{summary['n_total']}"
            rep = Report(f"Causal tracing — {m.name}", f"{len(res.traces)} fact(s), corruption {corruption}")
            rep.section("Average indirect effect", res.plot(), id="aie")
            rep.section("One fact", res.fact_plot(0), id="fact")
            if refine_peaks and corruption == "noise":
                with err.status("refining the peaks to heads and neurons …"):
                    ref = refine(m, chosen, res, n_samples=samples, seed=seed)
                h["top_heads"] = ref["heads"]
                h["top_neurons"] = ref.get("neurons", [])
                run.save_json("refine.json", {k: v for k, v in ref.items() if k != "head_ie"})
                import pandas as pd

                parts = [table(pd.DataFrame(ref["heads"], columns=["layer", "head", "IE"]))]
                if h["top_neurons"]:
                    parts.append(
                        table(pd.DataFrame(h["top_neurons"], columns=["layer", "neuron", "attribution", "IE"]))
                    )
                rep.section("Heads and neurons", *parts, id="refine")
            _complete(run, rep, h)

        def tables():
            t = Table("component", "layer", "position", "AIE", title=f"causal tracing peaks ({corruption})")
            for d in h["peaks"].values():
                t.add_row(d["component"], str(d["layer"]), d["position"], f"{d['aie']:.4f}")
            return [t]

        _print_run(run, as_json, tables)

    @bench_app.command("patching")
    def bench_patching_cmd(
        model: str = typer.Option("smollm2-135m", "--model", "-m"),
        n: int = typer.Option(20, "--n", help="IOI pairs."),
        rounds: int = typer.Option(1, "--rounds", help="(naive, fast) pairs timed; medians reported."),
        threads: int = typer.Option(2, "--threads"),
        peer: bool = typer.Option(False, "--peer", help="Also time TransformerLens's patching module."),
        out: str | None = typer.Option(None, "--out"),
        as_json: bool = typer.Option(False, "--json"),
    ):
        """Patching every head's z at the final position on IOI pairs: naive vs fast vs attribution patching."""
        from interplab.bench.core import bench_patching
        from interplab.io.runs import Run

        with _Guard(), Run("bench-patching", {"model": model, "n": n, "rounds": rounds, "peer": peer}, out=out) as run:
            m = _load(model)
            with err.status("benchmarking patching …"):
                res = bench_patching(m, n=n, rounds=rounds, threads=threads, peer=peer)
            run.save_json("bench.json", res)
            run.headline.update(res)
        _print_metrics(res, as_json)


def _complete(run, rep, headline: dict) -> None:
    """The end of a command that writes a report: save report.html, list every file of the run directory as
    an artefact (files in per-model subdirectories by relative path) and complete the headline."""
    rep.save(run.dir / "report.html")
    run.artefacts = sorted(
        p.relative_to(run.dir).as_posix() for p in run.dir.rglob("*") if p.is_file() and p != run.dir / "run.json"
    )
    run.headline.update({**headline, "run_dir": str(run.dir.resolve())})


def _print_run(run, as_json: bool, tables) -> None:
    """The headline as JSON, or the command's tables (``tables()``) and where the run directory is."""
    from interplab.cli import _print_json, err

    if as_json:
        _print_json(run.headline)
        return
    for t in tables():
        Console().print(t)
    err.print(f"run directory [bold]{run.dir.resolve()}[/]")


def _ioi_comparison(rep, results, table) -> None:
    """Side-by-side replication: one table row per model and overlaid logit-difference histograms."""
    import pandas as pd
    import plotly.graph_objects as go

    rows = []
    fig = go.Figure()
    for name, res in results.items():
        h = res.headline()
        c = h.get("circuit", {})
        rows.append(
            {
                "model": name,
                "n_layers x heads": f"{res.dla.shape[0]} x {res.dla.shape[1]}" if res.dla is not None else "",
                "logit diff": h["logit_diff_mean"],
                "IO preferred": h["io_preferred_frac"],
                "name movers": len(h["heads"]["name_movers"]),
                "S-inhibition": len(h["heads"]["s_inhibition"]),
                "induction": len(h["heads"]["induction"]),
                "circuit nodes": c.get("n_nodes"),
                "faithfulness": c.get("faithfulness"),
            }
        )
        fig.add_trace(go.Histogram(x=res.logit_diff.tolist(), name=name, opacity=0.6, nbinsx=30))
    fig.update_layout(
        barmode="overlay",
        title={"text": "IOI logit difference per model"},
        height=320,
        xaxis_title="logit(IO) − logit(S)",
    )
    rep.section("Replication across models", table(pd.DataFrame(rows)), fig, id="ioi-compare")


def _ioi_sections(rep, res, table, prefix: str = "") -> None:
    import pandas as pd
    import plotly.graph_objects as go

    ld = res.logit_diff
    fig = go.Figure(go.Histogram(x=ld.tolist(), nbinsx=30))
    fig.update_layout(
        title={"text": "IOI logit difference logit(IO) − logit(S), clean prompts"},
        height=320,
        xaxis_title="logit difference",
        yaxis_title="prompts",
    )
    rows = [{"class": c, "heads": " ".join(f"{a}.{b}" for a, b in hs) or "—"} for c, hs in res.classes.items()]
    rep.section(prefix + "Logit difference and head classes", fig, table(pd.DataFrame(rows)), id=prefix + "ioi")
    if res.patching is not None:
        rep.section(prefix + "Head patching at END (denoising, p_ABC)", res.patching.plot(), id=prefix + "ioi-patching")
    if res.dla is not None:
        d = res.dla
        heat = go.Figure(
            go.Heatmap(
                z=d.tolist(), colorscale="RdBu", zmid=0.0, hovertemplate="layer %{y} head %{x}: %{z:.3f}<extra></extra>"
            )
        )
        heat.update_layout(
            title={"text": "Direct logit attribution per head (IO − S)"},
            xaxis_title="head",
            yaxis_title="layer",
            height=520,
        )
        heat.update_yaxes(autorange="reversed")
        rep.section(prefix + "Direct effect per head", heat, id=prefix + "ioi-dla")
    if res.circuit is not None:
        rep.section(prefix + "Circuit", res.circuit.plot(), table(res.circuit.to_frame()), id=prefix + "ioi-circuit")
