"""``interplab invert``: train inverters that read the input text back from a layer's residual stream, and invert
exactly by search (:mod:`interplab.finetune.invert`, :mod:`interplab.finetune.invert_search`); writes the result
and its report (:mod:`interplab.report.sections.invert`)."""

from __future__ import annotations

import typer

from interplab.cli._common import (
    AsJson,
    ModelName,
    OutDir,
    Threads,
    err,
    finish_run,
    guard,
    int_list,
    load_model,
    print_json,
)


def _floats(spec: str | None, what: str) -> list[float]:
    if not spec:
        return []
    try:
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} {spec!r}: use fractions like 1,0.5,0.25.") from None


def invert(
    model: ModelName = "smollm2-135m",
    layer: int = typer.Option(
        ...,
        "--layer",
        "-l",
        help="Layer read: 0 = embedding, L = residual entering block L, n_layers = after the last.",
    ),
    layers: str | None = typer.Option(None, "--layers", help="More layers for the curve vs layer, e.g. 0,3,6 or 0..4."),
    dims: str = typer.Option(
        "all", "--dims", help="Dimensions read at --layer: all | lower-half | upper-half | fraction | A:B | i,j,k."
    ),
    dims_fractions: str | None = typer.Option(
        None, "--dims-fractions", help="Curve vs leading fraction of dims at --layer, e.g. 1,0.5,0.25."
    ),
    last_position: bool = typer.Option(False, "--last-position", help="Also an inverter from the last position only."),
    prior: bool = typer.Option(False, "--prior", help="Also an inverter that sees no states (the corpus prior)."),
    search: int = typer.Option(4, "--search", help="Held-out sequences to invert exactly by search (0: none)."),
    search_layer: int | None = typer.Option(None, "--search-layer", help="Layer of the search (default --layer)."),
    seq_len: int = typer.Option(16, "--seq-len", help="Tokens per sequence."),
    train_seqs: int = typer.Option(2000, "--train-seqs", help="Training sequences (from the corpus start)."),
    test_seqs: int = typer.Option(200, "--test-seqs", help="Held-out sequences (from the corpus end)."),
    text: str | None = typer.Option(None, "--text", help="UTF-8 text file (default: the pydoc topics)."),
    steps: int = typer.Option(800, "--steps", help="Training steps per inverter."),
    batch_size: int = typer.Option(64, "--batch-size", help="Sequences per step."),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW peak learning rate."),
    d_inv: int = typer.Option(128, "--inverter-d-model", help="The inverter's width."),
    inv_layers: int = typer.Option(2, "--inverter-layers", help="The inverter's blocks."),
    d_mlp: int = typer.Option(512, "--inverter-d-mlp", help="The inverter's MLP width."),
    k: int = typer.Option(10, "--k", help="Guesses per input (guess 0 greedy, the others sampled)."),
    seed: int = typer.Option(0, "--seed"),
    threads: Threads = 0,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Read the input text back from a layer's residual stream: exact-token recovery, token F1 and k guesses per
    input from trained inverters, and the exact-search upper bound. Rerun into the same --out to resume."""
    from interplab.io.runs import Run
    from interplab.runtime import torch_threads

    args = {
        "model": model,
        "layer": layer,
        "layers": layers,
        "dims": dims,
        "dims_fractions": dims_fractions,
        "last_position": last_position,
        "prior": prior,
        "search": search,
        "search_layer": search_layer,
        "seq_len": seq_len,
        "train_seqs": train_seqs,
        "test_seqs": test_seqs,
        "text": text,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "inverter_d_model": d_inv,
        "inverter_layers": inv_layers,
        "inverter_d_mlp": d_mlp,
        "k": k,
        "threads": threads,
    }
    with torch_threads(threads), guard():
        from interplab.finetune.invert import InverterConfig
        from interplab.finetune.invert import invert as run_invert

        more_layers = int_list(layers, "--layers")
        fracs = _floats(dims_fractions, "--dims-fractions")
        cfg = InverterConfig(
            d_model=d_inv, n_layers=inv_layers, d_mlp=d_mlp, steps=steps, batch_size=batch_size, lr=lr, k=k, seed=seed
        )
        with Run("invert", args, out=out, seed=seed) as run:
            from interplab.report.sections.invert import invert_report

            m = load_model(model)
            with err.status("inverting …") as status:
                res = run_invert(
                    m,
                    layer,
                    layers=more_layers,
                    dims=dims,
                    dims_fractions=fracs,
                    last_position=last_position,
                    prior=prior,
                    search=search,
                    search_layer=search_layer,
                    seq_len=seq_len,
                    n_train=train_seqs,
                    n_test=test_seqs,
                    corpus=text,
                    cfg=cfg,
                    out=run.dir,
                    progress=not no_progress and not as_json,
                    status=lambda s: status.update(s),
                )
            res.save(run.dir)
            finish_run(run, res.headline(), invert_report(res), report_in_headline=True)
    if as_json:
        print_json(run.headline)
    else:
        for key, v in run.headline.items():
            if not key.startswith("curve_"):
                err.print(f"{key}: {v}", highlight=False)
        for key in ("curve_vs_layer", "curve_vs_dims"):
            for r in run.headline.get(key, []):
                err.print(
                    f"layer {r['layer']} dims {r['dims']}: exact-token recovery {r['exact_token_recovery']:.3f}, "
                    f"token F1 {r['token_f1']:.3f}",
                    highlight=False,
                )
