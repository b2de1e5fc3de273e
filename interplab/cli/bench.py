"""``interplab bench ...``: every benchmark command (results go in BENCHMARKS.md).

Each is a thin shell over :mod:`interplab.bench` (or, for ``bench grokking``, the grokking trainer's
``train_step``) that writes ``bench.json`` into a run directory and prints the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from interplab.analyses.causal.ablation import How

from interplab.cli._common import AsJson, ModelName, OutDir, Threads, err, guard, load_model, print_json, print_metrics


def _bench(
    command: str,
    args: dict[str, Any],
    out: str | None,
    status: str,
    measure: Callable[[Any], dict[str, Any]],
    model: str | None = None,
) -> dict[str, Any]:
    """Run ``measure(m)`` (``m``: ``model`` loaded, or None) in a run directory of ``command`` that records
    ``args``, with ``status`` on stderr; its metrics go to ``bench.json`` and the run's headline, and are returned."""
    from interplab.io.runs import Run

    with guard(), Run(command, args, out=out) as run:
        m = load_model(model) if model is not None else None
        with err.status(status):
            res = measure(m)
        run.save_json("bench.json", res)
        run.headline.update(res)
    return res


def bench_hooks_cmd(
    model: ModelName = "smollm2-135m",
    batch: int = typer.Option(8, help="Batch size."),
    seq: int = typer.Option(128, help="Tokens per sequence."),
    rounds: int = typer.Option(15, help="Timed interleaved rounds (after 2 warm-up rounds)."),
    threads: Threads = 2,
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Cost of caching (residual streams; every hook point but patterns) relative to the plain forward."""
    from interplab.bench.hooks import bench_hooks

    res = _bench(
        "bench-hooks",
        {"model": model, "batch": batch, "seq": seq, "rounds": rounds, "threads": threads},
        out,
        "benchmarking …",
        lambda m: bench_hooks(m, batch=batch, seq=seq, rounds=rounds, threads=threads),
        model,
    )
    print_metrics(res, as_json, skip_suffix="_rounds")


def bench_ablation_cmd(
    model: ModelName = "smollm2-135m",
    layers: Annotated[
        list[int] | None,
        typer.Option("--layer", "-l", help="Layers timed (repeat); default 3 at the centres of equal bins."),
    ] = None,
    n_chunks: int = typer.Option(2, "--n-chunks", help="Text chunks."),
    chunk_len: int = typer.Option(64, "--chunk-len", help="Tokens per chunk."),
    how: str = typer.Option("zero", "--how", help="zero | mean | resample."),
    rounds: int = typer.Option(15, "--rounds", help="Interleaved rounds (naive, fast) per layer."),
    threads: Threads = 2,
    all_heads: bool = typer.Option(
        False,
        "--all-heads",
        help="Also time the fast path on every head (the naive all-head time is then extrapolated, and labelled so).",
    ),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Head-ablation importance: naive (one forward per head) vs fast (prefix reuse, batched variants), same heads
    and chunks."""
    from interplab.bench.ablation import bench_ablation

    args = {
        "model": model,
        "layers": layers,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "how": how,
        "rounds": rounds,
        "threads": threads,
        "all_heads": all_heads,
    }
    res = _bench(
        "bench-ablation",
        args,
        out,
        "benchmarking head ablation …",
        lambda m: bench_ablation(
            m,
            layers=layers or None,
            n_chunks=n_chunks,
            chunk_len=chunk_len,
            how=cast("How", how),
            rounds=rounds,
            threads=threads,
            all_heads=all_heads,
        ),
        model,
    )
    print_metrics(res, as_json)


def bench_patching_cmd(
    model: ModelName = "smollm2-135m",
    n: int = typer.Option(8, "--n", help="IOI pairs."),
    layers: Annotated[
        list[int] | None,
        typer.Option("--layer", "-l", help="Layers whose heads are patched (repeat); default 5, 15, 25."),
    ] = None,
    rounds: int = typer.Option(15, "--rounds", help="Interleaved rounds (naive, fast, attribution)."),
    threads: Threads = 2,
    peer: bool = typer.Option(False, "--peer", help="Also time TransformerLens's patching module."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Patching every head's z at the final position on IOI pairs: naive vs fast vs attribution patching."""
    from interplab.bench.patching import bench_patching

    res = _bench(
        "bench-patching",
        {"model": model, "n": n, "layers": layers, "rounds": rounds, "peer": peer},
        out,
        "benchmarking patching …",
        lambda m: bench_patching(m, n=n, layers=layers or None, rounds=rounds, threads=threads, peer=peer),
        model,
    )
    print_metrics(res, as_json)


def bench_leace_cmd(
    n: int = typer.Option(8192, "--n", help="Rows."),
    d: int = typer.Option(576, "--d", help="Dimensions (576 = SmolLM2's d_model)."),
    classes: int = typer.Option(2, "--classes"),
    rounds: int = typer.Option(15, "--rounds"),
    threads: Threads = 2,
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """LEACE fit time: interplab vs EleutherAI's concept-erasure on the same data (interleaved rounds, medians)."""
    from interplab.bench.leace import bench_leace

    res = _bench(
        "bench-leace",
        {"n": n, "d": d, "classes": classes, "rounds": rounds, "threads": threads},
        out,
        "benchmarking LEACE fits …",
        lambda _: bench_leace(n=n, d=d, k=classes, rounds=rounds, threads=threads),
    )
    print_metrics(res, as_json)


def bench_sae_cmd(
    rows: int = typer.Option(32768, "--rows", help="Activation rows (Gaussian, d given)."),
    d: int = typer.Option(512, "--d", help="Input dimension."),
    n_features: int = typer.Option(4096, "--features"),
    k: int = typer.Option(32, "--k"),
    batch_size: int = typer.Option(1024, "--batch-size"),
    steps: int = typer.Option(8, "--steps", help="Steps per timing."),
    rounds: int = typer.Option(15, "--rounds", help="Interleaved rounds (interplab, SAELens)."),
    threads: Threads = 2,
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """TopK SAE training throughput (tokens/s), beside SAELens's trainer on the same activations where it is
    installed."""
    from interplab.bench.sae import bench_sae

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
    res = _bench("bench-sae", args, out, "benchmarking SAE training …", lambda _: bench_sae(**args))
    print_metrics(res, as_json)


def bench_grokking_cmd(
    steps: int = typer.Option(50, "--steps", help="Timed steps per round and thread count."),
    rounds: int = typer.Option(15, "--rounds", help="Interleaved rounds."),
    threads: str = typer.Option("1,2", "--threads", help="Torch thread counts to compare, e.g. 1,2."),
    p: int = typer.Option(113, "--p", help="Prime (Nanda et al.: 113)."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Grokking training-step speed (Nanda et al. defaults) per thread count, interleaved rounds, medians."""
    from interplab.bench.grokking import bench_grokking
    from interplab.train.grokking import GrokkingConfig, train_step

    with guard():
        try:
            ts = tuple(int(x) for x in threads.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--threads {threads!r}: use thread counts like 1,2.") from None
        if not ts or min(ts) < 1 or steps < 1 or rounds < 1:
            raise ValueError("--threads, --steps and --rounds must be positive.")
        cfg = GrokkingConfig(p=p)
        cfg.validate()

    def measure(_) -> dict[str, Any]:
        step, meta = train_step(cfg)
        return bench_grokking(step, steps=steps, rounds=rounds, threads=ts, epochs=cfg.epochs, meta=meta)

    args = {"steps": steps, "rounds": rounds, "threads": list(ts), "p": p}
    res = _bench("bench-grokking", args, out, "timing grokking steps …", measure)
    if as_json:
        print_json(res)
    else:
        for k, v in res.items():
            err.print(f"{k}: {v}", highlight=False)


def bench_sweep_cmd(
    cells: int = typer.Option(4, "--cells", help="Empty cells per sweep."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds (one sweep per backend each)."),
    backends: str = typer.Option("serial,process,ray", "--backends", help="Backends to time, e.g. serial,process."),
    max_parallel: int = typer.Option(2, "--max-parallel", help="Cells at once for the process and Ray backends."),
    speedup_cells: int = typer.Option(
        0, "--speedup-cells", help="Also time this many CPU-bound cells on 1 vs 2 workers (e.g. 8; 0: skip)."
    ),
    cell_seconds: float = typer.Option(30.0, "--cell-seconds", help="Length of one speed-up cell (calibrated)."),
    speedup_rounds: int = typer.Option(1, "--speedup-rounds", help="Interleaved rounds of the 1-vs-2-worker sweep."),
    out: str | None = typer.Option(None, "--out", help="Run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Overhead per cell of each sweep backend (serial, process, Ray), on empty cells (`interplab models`), and
    with --speedup-cells the speed-up of 2 workers over 1 on CPU-bound cells (`speedup_2_workers`)."""
    from interplab.bench.sweep import bench_sweep
    from interplab.io.runs import Run

    names = [b.strip() for b in backends.split(",") if b.strip()]
    args = {
        "cells": cells,
        "rounds": rounds,
        "backends": names,
        "max_parallel": max_parallel,
        "speedup_cells": speedup_cells,
        "cell_seconds": cell_seconds,
        "speedup_rounds": speedup_rounds,
    }
    with guard(), Run("bench-sweep", args, out=out) as run:
        with err.status("timing sweeps of empty cells …"):
            res = bench_sweep(
                cells=cells,
                rounds=rounds,
                backends=names,
                max_parallel=max_parallel,
                speedup_cells=speedup_cells,
                cell_seconds=cell_seconds,
                speedup_rounds=speedup_rounds,
            )
        run.save_json("bench.json", res)
        run.headline.update(res)
    print_metrics(res, as_json)
