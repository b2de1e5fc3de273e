"""``interplab bench sae``: TopK SAE training throughput, and SAELens's trainer on the same activations side by side.

Both train a TopK SAE (same d, n_features, k, batch size, Adam, float32, CPU) on the same in-memory Gaussian
activation rows for the same number of steps, in the interleaved rounds of :mod:`interplab.bench.protocol`.
Time excludes setup (the activation-scale estimate and SAE construction): each call reports its own
training seconds."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from interplab.bench.protocol import DEFAULT_ROUNDS, Timings, interleave
from interplab.runtime import torch_threads


def _ours(x: torch.Tensor, d: int, n_features: int, k: int, batch_size: int, steps: int) -> float:
    from interplab.analyses.sae import SAEConfig, TensorData, train_sae

    cfg = SAEConfig(
        d_in=d,
        n_features=n_features,
        k=k,
        kind="topk",
        batch_size=batch_size,
        epochs=steps * batch_size / x.shape[0],
        lr=4e-4,
    )
    _, info = train_sae(TensorData(x), cfg, log_every=10**9)
    return info["seconds"] * steps / info["steps_run"]


def _saelens(x: torch.Tensor, d: int, n_features: int, k: int, batch_size: int, steps: int) -> float:
    # sae-lens: the optional extra sae-bench (the caller checks it is installed), absent from the dev environment.
    from sae_lens.config import SAETrainerConfig  # type: ignore[import-not-found]
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig  # type: ignore[import-not-found]
    from sae_lens.training.sae_trainer import SAETrainer  # type: ignore[import-not-found]

    def provider():
        g = torch.Generator().manual_seed(0)
        while True:
            perm = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0] - batch_size + 1, batch_size):
                yield x[perm[i : i + batch_size]]

    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(d_in=d, d_sae=n_features, k=k, normalize_activations="none", device="cpu")
    )
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=4e-4,
        lr_end=4e-4,
        device="cpu",
        n_batches_for_norm_estimate=1,
    )
    trainer = SAETrainer(cfg, sae, provider())

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # its tqdm bar
        t = time.perf_counter()
        trainer.fit()
    return time.perf_counter() - t


def saelens_version() -> str | None:
    """SAELens's installed version, or ``None`` where it cannot be imported."""
    import importlib.metadata as md
    import importlib.util

    if importlib.util.find_spec("sae_lens") is None:
        return None
    try:
        return md.version("sae-lens")
    except md.PackageNotFoundError:
        return None


def bench_sae(
    rows: int = 32768,
    d: int = 512,
    n_features: int = 4096,
    k: int = 32,
    batch_size: int = 1024,
    steps: int = 8,
    rounds: int = DEFAULT_ROUNDS,
    threads: int = 2,
    warmup: int = 0,
) -> dict[str, Any]:
    """TopK SAE (Gao et al. 2024) training throughput in tokens/s, interplab's ``train_sae`` beside SAELens's
    trainer where it is installed, under the shared protocol (:mod:`interplab.bench.protocol`).

    Args:
        rows, d: Gaussian activation rows of this width (seed 0), held in memory.
        n_features, k, batch_size: the SAE and its batch; Adam, float32, CPU.
        steps: training steps per timed call (setup excluded from the time).
        rounds, warmup: timed and untimed interleaved rounds; before them each library trains 2 steps untimed.
        threads: torch intra-op threads while timing (restored afterwards).

    ``tokens_per_s``: from the fastest call; ``speed_ratio``: interplab tokens/s over SAELens's, the ratio of
    minimums, with the median and range of per-round ratios beside it."""
    x = torch.randn(rows, d, generator=torch.Generator().manual_seed(0))
    ver = saelens_version()
    seconds: dict[str, list[float]] = {"interplab": []}
    variants: dict[str, Callable[[], float]] = {"interplab": lambda: _ours(x, d, n_features, k, batch_size, steps)}
    if ver:
        seconds["saelens"] = []
        variants["saelens"] = lambda: _saelens(x, d, n_features, k, batch_size, steps)
    with torch_threads(threads):
        _ours(x, d, n_features, k, batch_size, 2)  # warm-up
        if ver:
            _saelens(x, d, n_features, k, batch_size, 2)
        wall = interleave(variants, rounds=rounds, warmup=warmup, each=lambda v, s: seconds[v].append(s))
    t = Timings(seconds=seconds, warmup=warmup, load_before=wall.load_before, load_after=wall.load_after)
    tokens = steps * batch_size

    def tps(name: str) -> list[float]:
        return [tokens / s for s in t.seconds[name]]

    out: dict[str, Any] = {
        "config": f"TopK d={d} n_features={n_features} k={k} batch={batch_size} steps={steps} float32 CPU "
        f"threads={threads}",
        "tokens_per_s": round(tokens / t.min("interplab"), 1),
        "tokens_per_s_median": round(statistics.median(tps("interplab")), 1),
        "tokens_per_s_rounds": [round(v, 1) for v in tps("interplab")],
        "saelens_version": ver,
    }
    if ver:
        ratio = t.compare("speed_ratio", "saelens", "interplab")  # time ratio theirs / ours = speed ours / theirs
        out.update(
            {
                "saelens_tokens_per_s": round(tokens / t.min("saelens"), 1),
                "saelens_tokens_per_s_median": round(statistics.median(tps("saelens")), 1),
                "saelens_tokens_per_s_rounds": [round(v, 1) for v in tps("saelens")],
                **ratio,
            }
        )
    else:
        out["saelens"] = "not installed (pip install sae-lens): no side-by-side figure"
    out.update(t.protocol())
    return out
