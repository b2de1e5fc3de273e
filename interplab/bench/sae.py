"""``interplab bench sae``: TopK SAE training throughput, and SAELens's trainer on the same activations side by side.

Both train a TopK SAE (same d, n_features, k, batch size, Adam, float32, CPU) on the same in-memory Gaussian
activation rows for the same number of steps; rounds interleave the two (A B A B …) and the speed ratio is the
median of the per-round ratios, so load from other jobs on the machine hits both alike. Time excludes setup
(the activation-scale estimate and SAE construction)."""

from __future__ import annotations

import statistics
import time

import torch


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
    return info["steps_run"] * batch_size / info["seconds"]


def _saelens(x: torch.Tensor, d: int, n_features: int, k: int, batch_size: int, steps: int) -> float:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

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
    import os
    import sys

    t = time.perf_counter()
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # its tqdm bar
    try:
        trainer.fit()
    finally:
        sys.stderr.close()
        sys.stderr = stderr
    return steps * batch_size / (time.perf_counter() - t)


def saelens_version() -> str | None:
    try:
        import importlib.metadata as md

        import sae_lens  # noqa: F401

        return md.version("sae-lens")
    except Exception:
        return None


def bench_sae(
    rows: int = 32768,
    d: int = 512,
    n_features: int = 4096,
    k: int = 32,
    batch_size: int = 1024,
    steps: int = 24,
    rounds: int = 3,
    threads: int = 2,
) -> dict:
    from interplab.runtime import torch_threads

    with torch_threads(threads):
        x = torch.randn(rows, d, generator=torch.Generator().manual_seed(0))
        ver = saelens_version()
        ours, theirs = [], []
        _ours(x, d, n_features, k, batch_size, 2)  # warm-up
        if ver:
            _saelens(x, d, n_features, k, batch_size, 2)
        for _ in range(rounds):
            ours.append(_ours(x, d, n_features, k, batch_size, steps))
            if ver:
                theirs.append(_saelens(x, d, n_features, k, batch_size, steps))
    out = {
        "config": f"TopK d={d} n_features={n_features} k={k} batch={batch_size} steps={steps} float32 CPU threads={threads}",
        "tokens_per_s": round(statistics.median(ours), 1),
        "tokens_per_s_rounds": [round(v, 1) for v in ours],
        "saelens_version": ver,
    }
    if ver:
        out.update(
            {
                "saelens_tokens_per_s": round(statistics.median(theirs), 1),
                "saelens_tokens_per_s_rounds": [round(v, 1) for v in theirs],
                "speed_ratio_median": round(statistics.median(a / b for a, b in zip(ours, theirs)), 3),
            }
        )
    else:
        out["saelens"] = "not installed (pip install sae-lens) — no side-by-side figure"
    return out
