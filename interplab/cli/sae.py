"""Activation datasets and sparse autoencoders: ``interplab acts``, ``interplab sae train`` and
``interplab sae features``."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from interplab.cli._common import AsJson, OutDir, err, finish_run, guard, load_model, print_json, print_metrics


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
) -> None:
    """Extract activations at a hook point over a corpus or task into safetensors shards (resumable)."""
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
    with guard(), Run("acts", args, out=out) as run:
        from interplab.io.activations import ActsDType, ActsTask, extract_activations

        m = load_model(model)
        pos = (
            positions
            if positions in ("all", "last")
            else int(positions)
            if positions.lstrip("-").isdigit()
            else positions
        )
        with err.status("extracting activations …") as status:
            ds = extract_activations(
                m,
                hook,
                out,
                text=text,
                task=cast(ActsTask | None, task),  # extract_activations refuses other names
                n_tokens=tokens,
                chunk_len=chunk_len,
                positions=pos,
                skip_first=skip_first,
                batch=batch,
                shard_rows=shard_rows,
                dtype=cast(ActsDType, dtype),  # likewise
                progress=lambda d, n: status.update(f"extracting activations … {d}/{n} rows"),
            )
        finish_run(
            run,
            {
                "out": str(Path(out).resolve()),
                "hook": ds.hook,
                "model": ds.model_name,
                "d": ds.d,
                "n_rows": len(ds),
                "n_shards": len(ds.shards),
                "dtype": dtype,
                "positions": positions,
            },
            run_dir_in_headline=False,
        )
    if as_json:
        print_json(run.headline)
    else:
        err.print(
            f"{run.headline['n_rows']} rows x {run.headline['d']} in {run.headline['n_shards']} shards at "
            f"[bold]{run.headline['out']}[/]"
        )


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
    as_json: AsJson = False,
) -> None:
    """Train a sparse autoencoder; report L0, explained variance, MSE, CE score, dead fraction (train and
    held-out) and controls."""
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

    with torch_threads(threads), guard(), Run("sae-train", args, out=out, seed=seed) as run:
        from interplab.analyses.sae import SYNTHETIC, run_sae
        from interplab.report.html import Report
        from interplab.report.sections.sae import add_sae_sections

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
                m = load_model(model)
        elif data is None:
            if not (model and hook):
                raise ValueError(
                    "give --model and --hook (activations are extracted), or --data acts DIR / a synthetic set."
                )
            from interplab.io.activations import extract_activations

            m = load_model(model)
            acts_dir = run.dir / "acts"
            with err.status("extracting activations …"):
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
        _sae, res = run_sae(
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
            log=lambda s: err.print(s, highlight=False),
        )
        rep = Report(
            f"Sparse autoencoder — {res.settings.get('model') or data}",
            f"{kind}, {n_features} features, hook {res.settings.get('hook')}",
        )
        add_sae_sections(rep, res)
        finish_run(run, res.headline(), rep, report_in_headline=True)
    if as_json:
        print_json(run.headline)
    else:
        print_metrics({key: v for key, v in run.headline.items() if key != "controls"}, False)
        for name, c in run.headline.get("controls", {}).items():
            err.print(f"control {name}: {c}")


def sae_features(
    sae_path: str = typer.Option(
        ...,
        "--sae",
        help="An SAE: a SAELens directory (cfg.json + sae_weights.safetensors) or an interplab SAE "
        "(sae.safetensors, or the sae-train run directory holding it).",
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="The model the SAE reads."),
    hook: str | None = typer.Option(
        None, "--hook", help="Hook point the SAE reads (default: the one recorded with the SAE)."
    ),
    features: str | None = typer.Option(
        None, "--features", help="Comma-separated feature indices (default: the --n-features most frequent)."
    ),
    n_features: int = typer.Option(8, "--n-features", help="Without --features: how many of the most frequent."),
    n_top: int = typer.Option(8, "--n-top", help="Max-activating examples per feature."),
    n_chunks: int = typer.Option(32, "--n-chunks", help="Text chunks searched."),
    chunk_len: int = typer.Option(64, "--chunk-len", help="Tokens per chunk."),
    text: str | None = typer.Option(None, "--text", help="UTF-8 text file (default: the pydoc topics)."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Any SAE's features (trained here or from SAELens): max-activating examples on text and the tokens each
    decoder direction promotes and suppresses directly."""
    import json

    from interplab.analyses.sae import SAE
    from interplab.analyses.sae.features import (
        feature_density,
        feature_logit_effects,
        hook_activations,
        load_saelens,
        max_activating_examples,
        saelens_hook,
    )
    from interplab.io.runs import Run
    from interplab.report.sections.sae import sae_features_report
    from interplab.tasks import token_chunks

    args = {"sae": sae_path, "model": model, "hook": hook, "features": features, "n_chunks": n_chunks}
    with guard(), Run("sae-features", {**args, "chunk_len": chunk_len, "text": text}, out=out) as run:
        p = Path(sae_path)
        recorded = None
        if (p / "cfg.json").exists():
            sae, (recorded, _) = load_saelens(p), saelens_hook(p)
            source = "SAELens"
        elif p.is_file() or (p / "sae.safetensors").exists():
            sae, source = SAE.load(p), "interplab"
            rj = (p if p.is_dir() else p.parent) / "run.json"
            if rj.exists():
                recorded = json.loads(rj.read_text(encoding="utf-8")).get("args", {}).get("hook")
        else:
            raise ValueError(
                f"--sae {sae_path}: neither a SAELens directory (cfg.json) nor an interplab SAE (sae.safetensors)."
            )
        hook_name = hook or recorded
        if not hook_name:
            raise ValueError(
                "the SAE does not record the hook point it reads; give --hook (e.g. blocks.6.hook_resid_post)."
            )
        m = load_model(model)
        if sae.cfg.d_in != m.cfg.d_model:
            raise ValueError(f"the SAE reads d_in={sae.cfg.d_in}; {m.name} has d_model={m.cfg.d_model}.")
        tokens = token_chunks(m, source=text, n_chunks=n_chunks, chunk_len=chunk_len)
        skip_first = bool(m.default_prepend_bos) if m.tokenizer is not None else False
        acts = hook_activations(m, hook_name, tokens)
        density = feature_density(sae, acts)
        chosen = (
            [int(x) for x in features.split(",") if x.strip()]
            if features
            else density.topk(min(n_features, sae.cfg.n_features)).indices.tolist()
        )
        bad = [f for f in chosen if not 0 <= f < sae.cfg.n_features]
        if bad:
            raise ValueError(f"--features {bad}: the SAE has features 0..{sae.cfg.n_features - 1}.")
        examples = max_activating_examples(
            m, sae, hook_name, tokens, chosen, n_top=n_top, skip_first=skip_first, acts=acts
        )
        effects = feature_logit_effects(m, sae, chosen)
        dens = {f: float(density[f]) for f in chosen}
        run.save_json("features.json", {"examples": examples, "logit_effects": effects, "density": dens})
        title = f"SAE features ({source}, {hook_name}) — {m.name}"
        headline = {
            "source": source,
            "hook": hook_name,
            "features": chosen,
            "density": dens,
            "top_example": {f: (ex[0]["token"] if ex else None) for f, ex in examples.items()},
            "promotes": {f: [t for t, _ in e["top"][:3]] for f, e in effects.items()},
        }
        finish_run(run, headline, sae_features_report(title, examples, effects, dens))
    if as_json:
        print_json(run.headline)
    else:
        err.print(f"report written to [bold]{run.dir / 'report.html'}[/]")
