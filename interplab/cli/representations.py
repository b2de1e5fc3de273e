"""Representation commands: ``interplab erase`` (concept erasure, held-out evaluation) and ``interplab ccs``
(Contrast-Consistent Search beside its baselines)."""

from __future__ import annotations

from typing import cast

import typer

from interplab.cli._common import err, finish_run, guard, load_model, print_metrics


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
) -> None:
    """Concept erasure with a held-out evaluation: linear probe (accuracy, log-loss vs label entropy), MLP,
    boosted trees."""
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
    with guard(), Run("erase", args, out=out, seed=seed) as run:
        from interplab.analyses.representations import erasure as E
        from interplab.report.sections.representations import erasure_report

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
        eraser = E.make_eraser(cast(E.EraserMethod, method), **kw)  # make_eraser refuses other names
        with err.status(f"{method}: fitting and probing …"):
            res = E.evaluate_erasure(eraser, X, y, test_frac=test_frac, nonlinear=nonlinear, seed=seed, method=method)
        res.settings["data"] = data if data != "acts" else f"acts:{directory}"
        res.save(run.dir)
        h = res.headline()
        finish_run(run, h, erasure_report(res, method, len(X), X.shape[1], test_frac), report_in_headline=True)
    print_metrics(run.headline if as_json else h, as_json, title=f"{method} on {data}")


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
) -> None:
    """Contrast-Consistent Search beside random, CRC-TPC, supervised and zero-shot baselines; truth-like directions
    (label-oriented held-out accuracy above the majority rate and a random-direction null, both in the headline)
    and, apart, the directions whose CCS loss is as low as the first's."""
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
    with guard(), Run("ccs", args, out=out, seed=seed) as run:
        import torch

        from interplab.analyses.representations.ccs import run_ccs
        from interplab.io.activations import save_acts
        from interplab.report.sections.representations import ccs_report
        from interplab.tasks.truth import make_truth_dataset

        m = load_model(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        ds = make_truth_dataset(dataset, n=n, seed=seed, model=m)
        run.save_frame("dataset.parquet", ds.to_frame())
        with err.status(f"CCS on {len(ds)} contrast pairs …"):
            result = run_ccs(
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
        assert isinstance(result, tuple)  # return_acts=True
        res, acts = result
        res.save(run.dir)
        # x⁺ residual streams at the chosen layer + truth labels: `interplab erase --data acts DIR/acts`
        save_acts(run.dir / "acts", torch.as_tensor(acts["pos"]), torch.as_tensor(acts["y"]))
        h = res.headline()
        finish_run(
            run,
            {"model": m.name, "dataset": dataset, **h},
            ccs_report(res, m.name, dataset, len(ds.statements)),
            report_in_headline=True,
        )
    print_metrics(run.headline if as_json else h, as_json, title=f"CCS — {m.name} on {dataset}")
