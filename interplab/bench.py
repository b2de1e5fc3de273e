"""Benchmarks behind ``interplab bench``: the cost of caching relative to the plain forward.

Protocol (noise-robust on a shared 2-core machine): same model and input for every variant,
warm-up rounds, then interleaved rounds (plain, cache_resid, cache_all, in an order that rotates
each round); each variant's ratio is the median over rounds of (variant time / plain time in that
same round); milliseconds are medians too.
"""
from __future__ import annotations

import statistics
import time

import torch


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def bench_hooks(model, batch: int = 8, seq: int = 128, rounds: int = 7, warmup: int = 2, threads: int = 2, seed: int = 0) -> dict:
    """Time a plain HF forward against ``model.run`` caching the residual streams (resid_pre/mid/post of
    every layer) and caching every hook point except attention patterns."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.cfg.d_vocab, (batch, min(seq, model.cfg.n_ctx)), generator=g).to(model.device)

    def plain():
        with torch.no_grad():
            if model.cfg.family == "toy":
                return model.hf(tokens).logits
            return model.hf(input_ids=tokens, use_cache=False).logits

    def resid_names(n: str) -> bool:
        return ".hook_resid_" in n

    def all_names(n: str) -> bool:
        return not n.endswith("hook_pattern")

    variants = {
        "plain": plain,
        "cache_resid": lambda: model.run(tokens, cache=resid_names),
        "cache_all": lambda: model.run(tokens, cache=all_names),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    ratios: dict[str, list[float]] = {k: [] for k in variants if k != "plain"}
    order = list(variants)
    for r in range(warmup + rounds):
        rot = order[r % len(order):] + order[: r % len(order)]
        this = {k: _timed(variants[k])[0] for k in rot}
        if r >= warmup:
            for k, ms in this.items():
                times[k].append(ms)
            for k in ratios:
                ratios[k].append(this[k] / this["plain"])
    plain_logits = plain()
    resid_logits, resid_cache = variants["cache_resid"]()
    all_logits, all_cache = variants["cache_all"]()
    n_bytes = sum(all_cache[k].numel() * all_cache[k].element_size() for k in all_cache if not k.endswith("hook_result"))
    return {
        "model": model.name,
        "batch": batch,
        "seq": tokens.shape[1],
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "plain_ms": round(statistics.median(times["plain"]), 1),
        "cache_resid_ms": round(statistics.median(times["cache_resid"]), 1),
        "cache_all_ms": round(statistics.median(times["cache_all"]), 1),
        "ratio_cache_resid": round(statistics.median(ratios["cache_resid"]), 4),
        "ratio_cache_all": round(statistics.median(ratios["cache_all"]), 4),
        "ratio_cache_resid_rounds": [round(x, 4) for x in ratios["cache_resid"]],
        "ratio_cache_all_rounds": [round(x, 4) for x in ratios["cache_all"]],
        "n_tensors_resid": len(resid_cache),
        "n_tensors_all": len(all_cache),
        "cache_all_mb": round(n_bytes / 2**20, 1),
        "max_abs_diff_logits": float(max((resid_logits - plain_logits).abs().max(), (all_logits - plain_logits).abs().max())),
    }
