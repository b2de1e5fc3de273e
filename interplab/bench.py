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


def ablation_work_ratio(cfg, layers: list[int], chunk_len: int, one_call: bool = False) -> float:
    """Arithmetic (multiply-add) model of naive / fast for the heads of ``layers``: per call both paths
    run one clean forward; then the naive path runs one full forward per head, the fast one a suffix from
    layer L per head. ``one_call=False``: one call per layer (the protocol of :func:`bench_ablation`);
    ``True``: one call for all of ``layers``. A block costs its projections, MLP and causal attention
    scores; a full forward adds the unembedding.
    What the wall-clock speedup tends to on an otherwise idle machine, where batching adds no per-token
    efficiency (measured on 2 CPU cores)."""
    d, e = cfg.d_model, cfg.d_head
    block = (d * cfg.n_heads * e * 2 + d * cfg.n_kv_heads * e * 2 + d * cfg.d_mlp * (3 if cfg.gated_mlp else 2)
             + cfg.n_heads * e * chunk_len)  # per token; q.k and attn.v over ~chunk_len/2 keys each
    unembed = d * cfg.d_vocab
    full = cfg.n_layers * block + unembed
    clean = full * (1 if one_call else len(layers))
    naive = clean + len(layers) * cfg.n_heads * full
    fast = clean + sum(cfg.n_heads * ((cfg.n_layers - layer) * block + unembed) for layer in layers)
    return naive / fast


def bench_ablation(model, layers: list[int] | None = None, n_layers_timed: int = 3, n_chunks: int = 4, chunk_len: int = 128,
                   how: str = "zero", rounds: int = 1, threads: int = 2, all_heads: bool = False,
                   max_batch_tokens: int | None = None) -> dict:
    """Head-ablation importance (``interplab.analyses.ablation``): the naive path (one full forward per
    head) against the fast one (prefix computed once per layer, the layer's variants batched), on the
    same heads and chunks of the default corpus.

    Timed heads: every head of ``layers`` (default ``n_layers_timed`` layers at the centres of equal
    bins, e.g. 5, 15, 25 of SmolLM2's 30, so the mean suffix length matches the all-layer mean).
    Protocol: per round and layer one naive and one fast call back to back, in an order that
    alternates from pair to pair; each call includes its own clean run (baseline loss, references,
    and for the fast path the cached ``resid_pre``). ``naive_s`` / ``fast_s`` sum the per-layer
    medians over rounds; ``speedup = naive_s / fast_s``; ``pair_ratios`` lists naive/fast of every
    pair. Nothing is extrapolated unless ``all_heads`` asks for it, and such fields say so in their
    names. ``max_abs_diff``: largest |fast − naive| over the per-chunk loss increases of the timed heads.
    ``speedup_arithmetic_model`` (and ``_all_heads``, one call over every head): :func:`ablation_work_ratio`, the ratio of
    multiply-adds — the speedup to expect on an idle machine. On a loaded shared machine the measured
    ``speedup`` can be far higher: many small forwards suffer more from CPU contention than a few
    batched ones."""
    from interplab.analyses.ablation import head_ablation_importance
    from interplab.tasks import token_chunks

    torch.set_num_threads(threads)
    n = model.cfg.n_layers
    if layers is None:
        k = max(1, min(n_layers_timed, n))
        layers = sorted({int((i + 0.5) * n / k) for i in range(k)})
    for layer in layers:
        if not 0 <= layer < n:
            raise ValueError(f"layer {layer} is out of range: the model has layers 0..{n - 1}.")
    tokens = token_chunks(model, n_chunks=n_chunks, chunk_len=chunk_len)

    def call(method, layer):
        return head_ablation_importance(model, tokens, how=how, layers=[layer], method=method, induction_score=None,
                                        max_batch_tokens=max_batch_tokens)

    call("fast", n - 1)  # warm-up (allocator, kernels): the cheapest layer
    times: dict[str, dict[int, list[float]]] = {"naive": {layer: [] for layer in layers}, "fast": {layer: [] for layer in layers}}
    pair_ratios, max_diff, max_diff_delta, pair = [], 0.0, 0.0, 0
    fast_forwards = naive_forwards = 0
    for _ in range(rounds):
        for layer in layers:
            order = ("naive", "fast") if pair % 2 == 0 else ("fast", "naive")
            pair += 1
            res = {}
            for method in order:
                ms, r = _timed(lambda m=method: call(m, layer))
                times[method][layer].append(ms / 1000)
                res[method] = r
            pair_ratios.append(times["naive"][layer][-1] / times["fast"][layer][-1])
            a, b = res["fast"], res["naive"]
            max_diff = max(max_diff, float((a.per_chunk[layer] - b.per_chunk[layer]).abs().max()))
            max_diff_delta = max(max_diff_delta, float((a.delta_loss[layer] - b.delta_loss[layer]).abs().max()))
            fast_forwards, naive_forwards = a.settings["n_forward"], b.settings["n_forward"]
    med = {m: {layer: statistics.median(v) for layer, v in d.items()} for m, d in times.items()}
    naive_s, fast_s = sum(med["naive"].values()), sum(med["fast"].values())
    out = {
        "model": model.name,
        "how": how,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "threads": torch.get_num_threads(),
        "layers_timed": layers,
        "heads_timed": len(layers) * model.cfg.n_heads,
        "rounds": rounds,
        "naive_s": round(naive_s, 2),
        "fast_s": round(fast_s, 2),
        "speedup": round(naive_s / fast_s, 3),
        "speedup_by_layer": {str(layer): round(med["naive"][layer] / med["fast"][layer], 3) for layer in layers},
        "pair_ratios": [round(x, 3) for x in pair_ratios],
        "median_pair_ratio": round(statistics.median(pair_ratios), 3),
        "naive_s_by_layer": {str(layer): round(v, 2) for layer, v in med["naive"].items()},
        "fast_s_by_layer": {str(layer): round(v, 2) for layer, v in med["fast"].items()},
        "forwards_per_layer": {"naive": naive_forwards, "fast": fast_forwards},
        "max_batch_tokens": max_batch_tokens or "auto",
        "max_abs_diff": max_diff,
        "max_abs_diff_delta_loss": max_diff_delta,
        "speedup_arithmetic_model": round(ablation_work_ratio(model.cfg, layers, tokens.shape[1]), 3),
        "speedup_arithmetic_model_all_heads": round(ablation_work_ratio(model.cfg, list(range(n)), tokens.shape[1], one_call=True), 3),
        "extrapolated": False,
    }
    if all_heads:
        ms, r = _timed(lambda: head_ablation_importance(model, tokens, how=how, method="fast", induction_score=None,
                                                        max_batch_tokens=max_batch_tokens))
        n_all = n * model.cfg.n_heads
        naive_per_head = naive_s / out["heads_timed"]
        out.update({
            "fast_all_heads_s": round(ms / 1000, 2),
            "all_heads": n_all,
            "naive_all_heads_s_extrapolated": round(naive_per_head * n_all, 1),
            "speedup_all_heads_extrapolated": round(naive_per_head * n_all / (ms / 1000), 3),
            "extrapolated": "naive_all_heads_s_extrapolated and speedup_all_heads_extrapolated scale the naive time "
                            "per timed head to all heads; every other number is measured",
        })
    return out
