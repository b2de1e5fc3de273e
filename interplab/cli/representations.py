"""CLI commands for representations: ``interplab erase``, ``interplab ccs``, ``interplab bench leace``.

Registered at the end of :mod:`interplab.cli` (``register(app, bench_app)``).
"""

from __future__ import annotations

import typer


def erase(
    method: str = typer.Option("leace", "--method", help="leace | mean | inlp | rlace | median"),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="synthetic (make_classification) | outliers (means equal, "
        "bulk separated) | acts (then give DIR: acts.safetensors with x [n, d] and y [n])",
    ),
    directory: str | None = typer.Argument(None, metavar="[DIR]", help="Activation directory for --data acts."),
    n: int = typer.Option(2000, "--n", help="Synthetic data: number of points."),
    d: int = typer.Option(20, "--d", help="Synthetic data: dimensions."),
    rank: int | None = typer.Option(
        None,
        "--rank",
        help="Directions removed (rlace: default 1; median: default "
        "chosen by a held-out rank test; inlp: maximum iterations, default 10).",
    ),
    nonlinear: bool = typer.Option(
        True, "--nonlinear/--no-nonlinear", help="Also probe with an MLP and gradient-boosted trees."
    ),
    test_frac: float = typer.Option(0.3, "--test-frac", help="Held-out fraction (probes are scored there)."),
    seed: int = typer.Option(0, "--seed"),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-erase)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
):
    """Concept erasure with a held-out evaluation: linear probe (accuracy, log-loss vs label entropy), MLP, boosted trees."""
    from interplab.cli import _Guard, _print_metrics, err
    from interplab.io.runs import Run

    args = {
        "method": method,
        "data": data,
        "dir": directory,
        "n": n,
        "d": d,
        "rank": rank,
        "nonlinear": nonlinear,
        "test_frac": test_frac,
    }
    with _Guard(), Run("erase", args, out=out, seed=seed) as run:
        from interplab.analyses.representations import erasure as E
        from interplab.report.html import Report, table, text

        if data == "synthetic":
            X, y = E.make_synthetic_data(n, d, seed)
        elif data == "outliers":
            X, y = E.make_outlier_data(n, d, seed=seed)
        elif data == "acts":
            if not directory:
                raise ValueError("--data acts needs a directory: interplab erase --data acts DIR")
            X, y = E.load_acts_dir(directory)
        else:
            raise ValueError(f"--data must be synthetic, outliers or acts, not {data!r}.")
        kw = {}
        if rank is not None:
            if method in ("rlace", "median"):
                kw["rank"] = rank
            elif method == "inlp":
                kw["n_iter"] = rank
            else:
                raise ValueError(f"--rank does not apply to {method} (its rank is fixed by the number of classes).")
        if method in ("inlp", "rlace", "median"):
            kw["random_state"] = seed
        eraser = E.make_eraser(method, **kw)
        with err.status(f"{method}: fitting and probing …"):
            res = E.evaluate_erasure(eraser, X, y, test_frac=test_frac, nonlinear=nonlinear, seed=seed, method=method)
        res.settings["data"] = data if data != "acts" else f"acts:{directory}"
        res.save(run.dir)
        run.artefacts.append(f"erasure_{method}.json")
        h = res.headline()
        rep = Report(
            f"Concept erasure — {method}",
            f"data: {res.settings['data']}, n={len(X)}, d={X.shape[1]}, held-out fraction {test_frac}",
        )
        rep.section(
            "Held-out probes before and after erasure",
            res.plot(),
            table(res.to_frame()),
            table(h),
            text(
                "Linear guardedness (equal class means) only bounds convex losses of linear predictors; the MLP "
                "and boosted trees show what a non-linear (or 0-1 loss) adversary can still recover."
            ),
        )
        path = rep.save(run.path("report.html"))
        run.headline.update({**h, "report": str(path.resolve()), "run_dir": str(run.dir.resolve())})
    _print_metrics(run.headline if as_json else h, as_json, title=f"{method} on {data}")


def ccs(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model to probe."),
    dataset: str = typer.Option(
        "numbers", "--dataset", help="numbers | arithmetic | capitals | negations (+neg mixes in negations)."
    ),
    layer: int | None = typer.Option(
        None, "--layer", help="Layer (default: best supervised probe on an inner split of the training rows)."
    ),
    n: int = typer.Option(100, "--n", help="Statements (each rendered through every template)."),
    restarts: int = typer.Option(10, "--restarts", help="CCS random restarts."),
    epochs: int = typer.Option(1000, "--epochs", help="CCS full-batch optimisation steps."),
    max_dirs: int = typer.Option(
        20, "--max-dirs", help="Truth-like directions: at most this many fit / project-out rounds."
    ),
    test_frac: float = typer.Option(0.3, "--test-frac", help="Held-out fraction of statements."),
    batch: int = typer.Option(16, "--batch", help="Prompts per forward pass."),
    seed: int = typer.Option(0, "--seed"),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-ccs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
):
    """Contrast-Consistent Search beside random, CRC-TPC, supervised and zero-shot baselines; truth-like directions."""
    from interplab.cli import _Guard, _load, _print_metrics, err
    from interplab.io.runs import Run

    args = {
        "model": model,
        "dataset": dataset,
        "layer": layer,
        "n": n,
        "restarts": restarts,
        "epochs": epochs,
        "max_dirs": max_dirs,
        "test_frac": test_frac,
    }
    with _Guard(), Run("ccs", args, out=out, seed=seed) as run:
        from interplab.analyses.representations.ccs import run_ccs
        from interplab.io.activations import save_acts
        from interplab.report.html import Report, table, text
        from interplab.tasks.truth import make_truth_dataset

        m = _load(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        ds = make_truth_dataset(dataset, n=n, seed=seed, model=m)
        run.save_frame("dataset.parquet", ds.to_frame())
        with err.status(f"CCS on {len(ds)} contrast pairs …"):
            res, acts = run_ccs(
                m,
                ds,
                layer=layer,
                test_frac=test_frac,
                seed=seed,
                batch_size=batch,
                n_restarts=restarts,
                epochs=epochs,
                max_dirs=max_dirs,
                return_acts=True,
            )
        res.save(run.dir)
        # x⁺ residual streams at the chosen layer + truth labels: `interplab erase --data acts DIR/acts`
        acts_path = save_acts(run.dir / "acts", acts["pos"], acts["y"])
        run.artefacts.append(acts_path.relative_to(run.dir).as_posix())
        run.artefacts.append("ccs.json")
        h = res.headline()
        rep = Report(
            f"CCS — {m.name} on {dataset}",
            f"{len(ds.statements)} statements × {res.settings['n_templates']} templates, "
            f"layer {h['layer']} ({res.settings['layer_chosen_by']}); accuracies on held-out statements",
        )
        rep.section(
            "CCS and baselines",
            res.plot(),
            table(res.to_frame()),
            text(
                "label-oriented: the sign of an unsupervised direction is chosen with the training labels (this uses "
                "labels); unoriented: max(acc, 1 - acc) on the test rows, as Burns et al. report."
            ),
            id="ccs",
        )
        rep.section("Truth-like directions", table(res.to_frame("directions")), id="directions")
        rep.section("Supervised probe and layer choice", table(res.to_frame("layers")), id="layers")
        rep.section("Headline", table(h), id="headline")
        path = rep.save(run.path("report.html"))
        run.headline.update(
            {"model": m.name, "dataset": dataset, **h, "report": str(path.resolve()), "run_dir": str(run.dir.resolve())}
        )
    _print_metrics(run.headline if as_json else h, as_json, title=f"CCS — {m.name} on {dataset}")


def bench_leace_cmd(
    n: int = typer.Option(8192, "--n", help="Rows."),
    d: int = typer.Option(576, "--d", help="Dimensions (576 = SmolLM2's d_model)."),
    classes: int = typer.Option(2, "--classes"),
    rounds: int = typer.Option(7, "--rounds"),
    threads: int = typer.Option(2, "--threads"),
    out: str | None = typer.Option(None, "--out"),
    as_json: bool = typer.Option(False, "--json"),
):
    """LEACE fit time: interplab vs EleutherAI's concept-erasure on the same data (interleaved rounds, medians)."""
    from interplab.bench.leace import bench_leace
    from interplab.cli import _Guard, _print_metrics, err
    from interplab.io.runs import Run

    with (
        _Guard(),
        Run("bench-leace", {"n": n, "d": d, "classes": classes, "rounds": rounds, "threads": threads}, out=out) as run,
    ):
        with err.status("benchmarking LEACE fits …"):
            res = bench_leace(n=n, d=d, k=classes, rounds=rounds, threads=threads)
        run.save_json("bench.json", res)
        run.headline.update(res)
    _print_metrics(res, as_json)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("erase")(erase)
    app.command("ccs")(ccs)
    bench_app.command("leace")(bench_leace_cmd)
