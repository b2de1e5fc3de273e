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


def _interleaved(variants: dict, rounds: int, warmup: int) -> list[dict[str, float]]:
    """Call every variant once per round, in an order that rotates each round; ``warmup`` untimed rounds
    first. Returns one ``{variant: milliseconds}`` per timed round."""
    order = list(variants)
    out = []
    for r in range(warmup + rounds):
        rot = order[r % len(order) :] + order[: r % len(order)]
        this = {k: _timed(variants[k])[0] for k in rot}
        if r >= warmup:
            out.append(this)
    return out


def bench_hooks(
    model, batch: int = 8, seq: int = 128, rounds: int = 7, warmup: int = 2, threads: int = 2, seed: int = 0
) -> dict:
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
    per_round = _interleaved(variants, rounds, warmup)
    times = {k: [this[k] for this in per_round] for k in variants}
    ratios = {k: [this[k] / this["plain"] for this in per_round] for k in variants if k != "plain"}
    plain_logits = plain()
    resid_logits, resid_cache = variants["cache_resid"]()
    all_logits, all_cache = variants["cache_all"]()
    n_bytes = sum(
        all_cache[k].numel() * all_cache[k].element_size() for k in all_cache if not k.endswith("hook_result")
    )
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
        "max_abs_diff_logits": float(
            max((resid_logits - plain_logits).abs().max(), (all_logits - plain_logits).abs().max())
        ),
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
    block = (
        d * cfg.n_heads * e * 2
        + d * cfg.n_kv_heads * e * 2
        + d * cfg.d_mlp * (3 if cfg.gated_mlp else 2)
        + cfg.n_heads * e * chunk_len
    )  # per token; q.k and attn.v over ~chunk_len/2 keys each
    unembed = d * cfg.d_vocab
    full = cfg.n_layers * block + unembed
    clean = full * (1 if one_call else len(layers))
    naive = clean + len(layers) * cfg.n_heads * full
    fast = clean + sum(cfg.n_heads * ((cfg.n_layers - layer) * block + unembed) for layer in layers)
    return naive / fast


def bench_ablation(
    model,
    layers: list[int] | None = None,
    n_layers_timed: int = 3,
    n_chunks: int = 4,
    chunk_len: int = 128,
    how: str = "zero",
    rounds: int = 1,
    threads: int = 2,
    all_heads: bool = False,
    max_batch_tokens: int | None = None,
) -> dict:
    """Head-ablation importance (``interplab.analyses.causal.ablation``): the naive path (one full forward per
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
    from interplab.analyses.causal.ablation import head_ablation_importance
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
        return head_ablation_importance(
            model,
            tokens,
            how=how,
            layers=[layer],
            method=method,
            induction_score=None,
            max_batch_tokens=max_batch_tokens,
        )

    call("fast", n - 1)  # warm-up (allocator, kernels): the cheapest layer
    times: dict[str, dict[int, list[float]]] = {
        "naive": {layer: [] for layer in layers},
        "fast": {layer: [] for layer in layers},
    }
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
        "naive_s": round(naive_s, 4),
        "fast_s": round(fast_s, 4),
        "speedup": round(naive_s / fast_s, 3),
        "speedup_by_layer": {str(layer): round(med["naive"][layer] / med["fast"][layer], 3) for layer in layers},
        "pair_ratios": [round(x, 3) for x in pair_ratios],
        "median_pair_ratio": round(statistics.median(pair_ratios), 3),
        "naive_s_by_layer": {str(layer): round(v, 4) for layer, v in med["naive"].items()},
        "fast_s_by_layer": {str(layer): round(v, 4) for layer, v in med["fast"].items()},
        "forwards_per_layer": {"naive": naive_forwards, "fast": fast_forwards},
        "max_batch_tokens": max_batch_tokens or "auto",
        "max_abs_diff": max_diff,
        "max_abs_diff_delta_loss": max_diff_delta,
        "speedup_arithmetic_model": round(ablation_work_ratio(model.cfg, layers, tokens.shape[1]), 3),
        "speedup_arithmetic_model_all_heads": round(
            ablation_work_ratio(model.cfg, list(range(n)), tokens.shape[1], one_call=True), 3
        ),
        "extrapolated": False,
    }
    if all_heads:
        ms, r = _timed(
            lambda: head_ablation_importance(
                model, tokens, how=how, method="fast", induction_score=None, max_batch_tokens=max_batch_tokens
            )
        )
        n_all = n * model.cfg.n_heads
        naive_per_head = naive_s / out["heads_timed"]
        out.update(
            {
                "fast_all_heads_s": round(ms / 1000, 2),
                "all_heads": n_all,
                "naive_all_heads_s_extrapolated": round(naive_per_head * n_all, 1),
                "speedup_all_heads_extrapolated": round(naive_per_head * n_all / (ms / 1000), 3),
                "extrapolated": "naive_all_heads_s_extrapolated and speedup_all_heads_extrapolated scale the naive time "
                "per timed head to all heads; every other number is measured",
            }
        )
    return out


def _timed_s(fn) -> tuple[float, object]:
    ms, out = _timed(fn)
    return ms / 1000, out


def bench_patching(model, n: int = 20, rounds: int = 1, threads: int = 2, seed: int = 0, peer: bool = False) -> dict:
    """Activation patching of every head's ``hook_z`` at the final position (END) on ``n`` IOI pairs
    (denoising): the naive path (one full forward per head) against the fast one (per layer, the
    heads' variants stacked into one forward that starts at that layer from the cached residual stream
    and unembeds only END), and attribution patching (one forward + backward) on the same grid.

    Protocol: ``rounds`` (naive, fast) pairs, alternating which goes first; each call includes its own
    clean and corrupt runs. ``naive_s``/``fast_s`` are medians over rounds, ``speedup`` their ratio
    (``pair_ratios``: naive/fast per pair). ``max_abs_diff``: largest difference between the two paths'
    per-prompt patched logit differences; ``max_abs_diff_normalised``: on the normalised grid.
    ``attribution_corr``: Pearson correlation of the attribution grid with the exact one."""
    from interplab.analyses.causal.patching import activation_patching, attribution_patching, correlation
    from interplab.tasks.ioi import ioi

    torch.set_num_threads(threads)
    pairs = ioi(model, n=n, seed=seed)
    naive_t, fast_t, ratios = [], [], []
    res_n = res_f = None
    for r in range(rounds):
        order = ("naive", "fast") if r % 2 == 0 else ("fast", "naive")
        times = {}
        for meth in order:
            t, res = _timed_s(
                lambda meth=meth: activation_patching(
                    model, pairs, grid="heads", position="END", method=meth, n_boot=100
                )
            )
            times[meth] = t
            if meth == "naive":
                res_n = res
            else:
                res_f = res
        naive_t.append(times["naive"])
        fast_t.append(times["fast"])
        ratios.append(times["naive"] / times["fast"])
    t_att, att = _timed_s(lambda: attribution_patching(model, pairs, grid="heads", position="END", n_boot=100))
    naive_s, fast_s = statistics.median(naive_t), statistics.median(fast_t)
    out = {
        "model": model.name,
        "task": "ioi",
        "n_pairs": len(pairs),
        "cells": int(res_f.values.numel()),
        "position": "END",
        "rounds": rounds,
        "threads": threads,
        "naive_s": round(naive_s, 3),
        "fast_s": round(fast_s, 3),
        "speedup": round(naive_s / fast_s, 3),
        "pair_ratios": [round(x, 3) for x in ratios],
        "max_abs_diff": float((res_n.per_prompt - res_f.per_prompt).abs().max()),
        "max_abs_diff_normalised": float((res_n.values - res_f.values).abs().max()),
        "n_forward_naive": res_n.settings["n_forward"],
        "n_forward_fast": res_f.settings["n_forward"],
        "attribution_s": round(t_att, 3),
        "attribution_speedup_vs_naive": round(naive_s / t_att, 2),
        "attribution_corr": round(correlation(att, res_f), 4),
    }
    if peer:
        out.update(_tl_patching(model, pairs, res_f))
    return out


def _tl_patching(model, pairs, reference) -> dict:
    """TransformerLens's patching module (``transformer_lens.patching.generic_activation_patch``) on the
    same pairs and cells, with the HF model wrapped by ``HookedTransformer.from_pretrained(hf_model=...)``.
    TL patching needs one token length for the whole batch, so it is timed on the pairs of the most
    common length (reported as ``tl_n_pairs``); the interplab fast path is re-timed on that subset."""
    from collections import Counter

    import transformer_lens as tl
    from transformer_lens import patching

    from interplab.analyses.causal.patching import activation_patching

    lengths = pairs.mask.sum(1)
    common = Counter(lengths.tolist()).most_common(1)[0][0]
    sub = pairs.subset((lengths == common).nonzero().reshape(-1))
    import contextlib

    # HookedTransformer wants a name it knows or a local directory with config.json: give it the HF config
    # of the model in hand (in a directory removed once loaded), and let local directories pass its
    # official-name check for this call only.
    import json
    import os
    import sys
    import tempfile

    import transformer_lens.loading_from_pretrained as tl_loading

    cfg_d = model.hf.config.to_dict()
    cfg_d.pop("quantization_config", None)
    with tempfile.TemporaryDirectory(prefix="interplab-tl-") as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as fh:
            json.dump(cfg_d, fh)
        orig = tl_loading.get_official_model_name
        tl_loading.get_official_model_name = lambda n: n if os.path.isdir(n) else orig(n)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                hooked = tl.HookedTransformer.from_pretrained_no_processing(
                    model_dir, hf_model=model.hf, tokenizer=model.tokenizer, device="cpu", dtype=torch.float32
                )
        except Exception as e:  # noqa: BLE001 - report why the peer could not run
            return {"tl_error": f"{type(e).__name__}: {e}"[:300]}
        finally:
            tl_loading.get_official_model_name = orig
    clean, corrupt = sub.clean[:, :common], sub.corrupt[:, :common]
    ans, wrong = sub.answer_ids, sub.wrong_ids
    end = common - 1

    def metric(logits):
        lg = logits[:, end]
        return (lg[torch.arange(len(ans)), ans] - lg[torch.arange(len(ans)), wrong]).mean()

    import pandas as pd

    cfg = model.cfg
    index = pd.DataFrame([(L, h) for L in range(cfg.n_layers) for h in range(cfg.n_heads)], columns=["layer", "head"])

    def setter(corrupted, index_row, clean_act):
        corrupted[:, end, index_row[1]] = clean_act[:, end, index_row[1]]
        return corrupted

    with torch.no_grad():
        _, clean_cache = hooked.run_with_cache(clean)
        t_tl, tl_out = _timed_s(
            lambda: patching.generic_activation_patch(hooked, corrupt, clean_cache, metric, setter, "z", index_df=index)
        )
    t_ip, ip = _timed_s(lambda: activation_patching(model, sub, grid="heads", position="END", n_boot=100))
    ip_raw = ip.per_prompt.mean(-1).reshape(-1)
    return {
        "tl_n_pairs": len(sub),
        "tl_s": round(t_tl, 3),
        "interplab_fast_s_same_pairs": round(t_ip, 3),
        "tl_over_fast": round(t_tl / t_ip, 3),
        "tl_max_abs_diff": float((tl_out.reshape(-1).float() - ip_raw).abs().max()),
    }
