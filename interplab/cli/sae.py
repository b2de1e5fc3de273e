"""CLI for activation datasets and sparse autoencoders: ``interplab acts``, ``interplab sae train``, ``interplab bench sae``.

Registered at the end of :mod:`interplab.cli` by :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer

sae_app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders on activations, with controls.")


def _cli():
    from interplab import cli

    return cli


def acts(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model to read activations from."),
    hook: str = typer.Option(
        ..., "--hook", help="Hook point, e.g. blocks.6.hook_resid_post (see `interplab info MODEL`)."
    ),
    text: str | None = typer.Option(
        None, "--text", help="UTF-8 text file (default: the standard library's pydoc topics)."
    ),
    task: str | None = typer.Option(None, "--task", help="Built-in task instead of text: induction."),
    out: str = typer.Option(
        ..., "--out", help="Output directory (rerun the same command to resume an interrupted run)."
    ),
    tokens: int = typer.Option(100_000, "--tokens", help="Tokens to run (n_tokens // chunk_len sequences)."),
    positions: str = typer.Option("all", "--positions", help="all | last | an integer position."),
    chunk_len: int = typer.Option(128, "--chunk-len", help="Tokens per sequence."),
    batch: int = typer.Option(8, "--batch", help="Sequences per forward pass."),
    shard_rows: int = typer.Option(16384, "--shard-rows", help="Rows per shard file."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float16 | bfloat16 on disk."),
    skip_first: bool | None = typer.Option(
        None,
        "--skip-first/--keep-first",
        help="Leave out position 0 of each sequence (default: only when it is a BOS token).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
):
    """Extract activations at a hook point over a corpus or task into safetensors shards (resumable)."""
    cli = _cli()
    from interplab.io.runs import Run

    args = {
        "model": model,
        "hook": hook,
        "text": text,
        "task": task,
        "tokens": tokens,
        "positions": positions,
        "chunk_len": chunk_len,
        "batch": batch,
        "shard_rows": shard_rows,
        "dtype": dtype,
        "skip_first": skip_first,
    }
    with cli._Guard(), Run("acts", args, out=out) as run:
        from interplab.io.activations import extract_activations

        m = cli._load(model)
        pos = (
            positions
            if positions in ("all", "last")
            else int(positions)
            if positions.lstrip("-").isdigit()
            else positions
        )
        with cli.err.status("extracting activations …") as status:
            ds = extract_activations(
                m,
                hook,
                out,
                text=text,
                task=task,
                n_tokens=tokens,
                chunk_len=chunk_len,
                positions=pos,
                skip_first=skip_first,
                batch=batch,
                shard_rows=shard_rows,
                dtype=dtype,
                progress=lambda d, n: status.update(f"extracting activations … {d}/{n} rows"),
            )
        run.headline.update(
            {
                "out": str(Path(out).resolve()),
                "hook": ds.hook,
                "model": ds.model_name,
                "d": ds.d,
                "n_rows": len(ds),
                "n_shards": len(ds.shards),
                "dtype": dtype,
                "positions": positions,
            }
        )
    if as_json:
        cli._print_json(run.headline)
    else:
        cli.err.print(
            f"{run.headline['n_rows']} rows x {run.headline['d']} in {run.headline['n_shards']} shards at [bold]{run.headline['out']}[/]"
        )


@sae_app.command("train")
def sae_train(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model (activations are extracted at --hook; enables the CE score)."
    ),
    hook: str | None = typer.Option(None, "--hook", help="Hook point to train on (with --model)."),
    data: str | None = typer.Option(
        None,
        "--data",
        help="acts DIR | gaussian | mixture | uniform | uniform-cube | known-dict "
        "(default: activations of --model at --hook).",
    ),
    data_dir: str | None = typer.Argument(None, help="With --data acts: the activation directory."),
    tokens: int = typer.Option(100_000, "--tokens", help="Tokens of text to extract (with --model/--hook)."),
    keep_first: bool = typer.Option(
        False,
        "--keep-first",
        help="Train on the first position of each chunk too "
        "(default: left out, and left unchanged when splicing for the CE score: an outlier).",
    ),
    text: str | None = typer.Option(None, "--text", help="Text file for extraction (default pydoc topics)."),
    kind: str = typer.Option("topk", "--kind", help="topk | relu | jumprelu"),
    k: int = typer.Option(32, "--k", help="TopK: active features per token."),
    n_features: int = typer.Option(4096, "--features", help="Dictionary size."),
    l1: float = typer.Option(5.0, "--l1", help="ReLU: L1 coefficient (inputs scaled to E||x||^2 = d)."),
    l0: float = typer.Option(0.5, "--l0", help="JumpReLU: L0 coefficient."),
    lr: float = typer.Option(4e-4, "--lr", help="Adam learning rate."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Rows per training step."),
    epochs: float = typer.Option(4.0, "--epochs", help="Passes over the training rows."),
    test_frac: float = typer.Option(0.1, "--test-frac", help="Held-out fraction (last shards)."),
    controls: bool = typer.Option(True, "--controls/--no-controls", help="Run the controls too."),
    control_rows: int = typer.Option(32768, "--control-rows", help="Training rows of each synthetic control."),
    threads: int = typer.Option(1, "--threads", help="torch threads (1 is fastest on a shared machine)."),
    seed: int = typer.Option(0, "--seed"),
    out: str | None = typer.Option(
        None,
        "--out",
        help="Run directory (default runs/<timestamp>-sae-train); "
        "rerunning into the same directory resumes training from its checkpoint.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
):
    """Train a sparse autoencoder; report L0, explained variance, MSE, CE score, dead fraction (train and held-out) and controls."""
    cli = _cli()
    from interplab.io.runs import Run

    args = {
        "model": model,
        "hook": hook,
        "data": data,
        "data_dir": data_dir,
        "tokens": tokens,
        "keep_first": keep_first,
        "text": text,
        "kind": kind,
        "k": k,
        "n_features": n_features,
        "l1": l1,
        "l0": l0,
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "test_frac": test_frac,
        "controls": controls,
        "control_rows": control_rows,
        "threads": threads,
    }
    from interplab.runtime import torch_threads

    with torch_threads(threads), cli._Guard(), Run("sae-train", args, out=out, seed=seed) as run:
        from interplab.analyses.sae import SYNTHETIC, browser_html, run_sae
        from interplab.report.html import Report

        m = None
        acts_dir = None
        if data is not None and data not in ("acts",) + SYNTHETIC:
            if Path(data).is_dir():
                data, data_dir = "acts", data
            else:
                raise ValueError(
                    f"--data must be 'acts DIR', a directory, or one of {', '.join(SYNTHETIC)}; got {data!r}."
                )
        if data == "acts":
            if not data_dir:
                raise ValueError("--data acts needs the activation directory after it: --data acts DIR.")
            acts_dir = data_dir
            if model:
                m = cli._load(model)
        elif data is None:
            if not (model and hook):
                raise ValueError(
                    "give --model and --hook (activations are extracted), or --data acts DIR / a synthetic set."
                )
            from interplab.io.activations import extract_activations

            m = cli._load(model)
            acts_dir = run.dir / "acts"
            with cli.err.status("extracting activations …"):
                extract_activations(
                    m,
                    hook,
                    acts_dir,
                    text=text,
                    n_tokens=tokens,
                    skip_first=not keep_first,
                    shard_rows=max(128, min(8192, tokens // 10)),
                )
            data = "acts"
        if hook and acts_dir is not None:
            from interplab.io.activations import ActivationDataset

            if ActivationDataset(acts_dir).hook != hook:
                raise ValueError(f"{acts_dir} holds {ActivationDataset(acts_dir).hook}, not --hook {hook}.")
        sae, res = run_sae(
            data,
            model=m,
            acts_dir=acts_dir,
            run_dir=run.dir,
            controls=controls,
            control_rows=control_rows,
            n_features=n_features,
            kind=kind,
            k=k,
            l1_coeff=l1,
            l0_coeff=l0,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            test_frac=test_frac,
            log=lambda s: cli.err.print(s, highlight=False),
        )
        rep = Report(
            f"Sparse autoencoder — {res.settings.get('model') or data}",
            f"{kind}, {n_features} features, hook {res.settings.get('hook')}",
        )
        rep.section("SAE metrics and controls", *res.report_parts(), id="sae")
        if res.browser:
            rep.section(
                "Feature browser: top-activating held-out contexts",
                browser_html(res.browser, res.settings.get("browser_density")),
                id="browser",
            )
        path = rep.save(run.dir / "report.html")
        run.artefacts += ["sae.safetensors", "sae_result.json", "report.html"]
        run.headline.update({**res.headline(), "report": str(path.resolve()), "run_dir": str(run.dir.resolve())})
    if as_json:
        cli._print_json(run.headline)
    else:
        cli._print_metrics({key: v for key, v in run.headline.items() if key != "controls"}, False)
        for name, c in run.headline.get("controls", {}).items():
            cli.err.print(f"control {name}: {c}")


def bench_sae_cmd(
    rows: int = typer.Option(32768, "--rows", help="Activation rows (Gaussian, d given)."),
    d: int = typer.Option(512, "--d", help="Input dimension."),
    n_features: int = typer.Option(4096, "--features"),
    k: int = typer.Option(32, "--k"),
    batch_size: int = typer.Option(1024, "--batch-size"),
    steps: int = typer.Option(24, "--steps", help="Steps per timing."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved (interplab, SAELens) pairs."),
    threads: int = typer.Option(2, "--threads"),
    out: str | None = typer.Option(None, "--out"),
    as_json: bool = typer.Option(False, "--json"),
):
    """TopK SAE training throughput (tokens/s), beside SAELens's trainer on the same activations where it is installed."""
    cli = _cli()
    from interplab.bench.sae import bench_sae
    from interplab.io.runs import Run

    args = {
        "rows": rows,
        "d": d,
        "n_features": n_features,
        "k": k,
        "batch_size": batch_size,
        "steps": steps,
        "rounds": rounds,
        "threads": threads,
    }
    with cli._Guard(), Run("bench-sae", args, out=out) as run:
        with cli.err.status("benchmarking SAE training …"):
            res = bench_sae(**args)
        run.save_json("bench.json", res)
        run.headline.update(res)
    cli._print_metrics(res, as_json)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("acts")(acts)
    app.add_typer(sae_app, name="sae")
    bench_app.command("sae")(bench_sae_cmd)
