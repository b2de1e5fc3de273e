"""``interplab bench ablation``: head-ablation importance, the naive path against the fast one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from interplab.bench.protocol import DEFAULT_ROUNDS, Timings, interleave, timed
from interplab.runtime import torch_threads

if TYPE_CHECKING:
    from interplab.analyses.causal.ablation import How
    from interplab.analyses.causal.engine import Method
    from interplab.models.model import Model

__all__ = ["ablation_work_ratio", "bench_ablation"]


def ablation_work_ratio(cfg: Any, layers: list[int], chunk_len: int, one_call: bool = False) -> float:
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
    model: Model,
    layers: list[int] | None = None,
    n_layers_timed: int = 3,
    n_chunks: int = 2,
    chunk_len: int = 64,
    how: How = "zero",
    rounds: int = DEFAULT_ROUNDS,
    threads: int = 2,
    all_heads: bool = False,
    max_batch_tokens: int | None = None,
    warmup: int = 1,
) -> dict[str, Any]:
    """Head-ablation importance (``interplab.analyses.causal.ablation``, Michel et al. 2019 style head
    ablation): the naive path (one full forward per head) against the fast one (prefix computed once per
    layer, the layer's variants batched), on the same heads and chunks of the default corpus, under the
    shared protocol (:mod:`interplab.bench.protocol`).

    Args:
        model: the model.
        layers: layers whose heads are timed; default ``n_layers_timed`` layers at the centres of equal
            bins (e.g. 5, 15, 25 of SmolLM2's 30, so the mean suffix length matches the all-layer mean).
        n_chunks, chunk_len: chunks of the default corpus (kept small so that 15 rounds take minutes).
        how: the ablation (``zero``, ``mean``, ``resample``).
        rounds, warmup: timed and untimed interleaved rounds. The variants are ``naive_L`` and ``fast_L``
            per layer (each call includes its own clean run); a round calls them all.
        threads: torch intra-op threads while timing (restored afterwards).
        all_heads: also time the fast path once on every head (the naive all-head time is then
            extrapolated, and the fields that say so are named ``*_extrapolated``).
        max_batch_tokens: the fast path's batch cap (``None``: its default).

    ``naive_s`` / ``fast_s``: the sums over layers of each variant's fastest call; ``speedup``: their ratio
    (the ratio of minimums), ``speedup_median`` / ``speedup_range``: over per-round ratios (a round's naive
    time over all layers / its fast time). ``max_abs_diff``: largest |fast − naive| over the per-chunk
    loss increases of the timed heads. ``speedup_arithmetic_model`` (and ``_all_heads``, one call over every
    head): :func:`ablation_work_ratio`, the ratio of multiply-adds — the speedup to expect on an idle
    machine."""
    from interplab.analyses.causal.ablation import head_ablation_importance
    from interplab.tasks import token_chunks

    n = model.cfg.n_layers
    if layers is None:
        k = max(1, min(n_layers_timed, n))
        layers = sorted({int((i + 0.5) * n / k) for i in range(k)})
    for layer in layers:
        if not 0 <= layer < n:
            raise ValueError(f"layer {layer} is out of range: the model has layers 0..{n - 1}.")
    tokens = token_chunks(model, n_chunks=n_chunks, chunk_len=chunk_len)

    def call(method: Method, layer_list: list[int] | None):
        return head_ablation_importance(
            model,
            tokens,
            how=how,
            layers=layer_list,
            method=method,
            induction_score=None,
            max_batch_tokens=max_batch_tokens,
        )

    def variant(m: Method, layer: int):
        return lambda: call(m, [layer])

    methods: tuple[Method, ...] = ("naive", "fast")
    variants = {f"{m}_L{layer}": variant(m, layer) for layer in layers for m in methods}
    with torch_threads(threads):
        n_threads = torch.get_num_threads()
        t = interleave(variants, rounds=rounds, warmup=warmup, keep=True)
        extra: dict[str, Any] = {}
        if all_heads:
            s, _ = timed(lambda: call("fast", None))
            extra["fast_all_heads_s"] = round(s, 2)
    max_diff = max_diff_delta = 0.0
    for layer in layers:
        a, b = t.last[f"fast_L{layer}"], t.last[f"naive_L{layer}"]
        max_diff = max(max_diff, float((a.per_chunk[layer] - b.per_chunk[layer]).abs().max()))
        max_diff_delta = max(max_diff_delta, float((a.delta_loss[layer] - b.delta_loss[layer]).abs().max()))
    fast_forwards = t.last[f"fast_L{layers[0]}"].settings["n_forward"]
    naive_forwards = t.last[f"naive_L{layers[0]}"].settings["n_forward"]
    naive_s = sum(t.min(f"naive_L{layer}") for layer in layers)
    fast_s = sum(t.min(f"fast_L{layer}") for layer in layers)
    totals = Timings(
        seconds={
            m: [sum(vals) for vals in zip(*(t.seconds[f"{m}_L{layer}"] for layer in layers), strict=True)]
            for m in ("naive", "fast")
        },
        warmup=warmup,
    )
    summary = totals.compare("speedup", "naive", "fast")
    out = {
        "model": model.name,
        "how": how,
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "threads": n_threads,
        "layers_timed": layers,
        "heads_timed": len(layers) * model.cfg.n_heads,
        "speedup": round(naive_s / fast_s, 3),
        "speedup_median": summary["speedup_median"],
        "speedup_range": summary["speedup_range"],
        "speedup_rounds": summary["speedup_rounds"],
        "naive_s": round(naive_s, 4),
        "fast_s": round(fast_s, 4),
        "speedup_by_layer": {str(layer): round(t.ratio(f"naive_L{layer}", f"fast_L{layer}"), 3) for layer in layers},
        "naive_s_by_layer": {str(layer): round(t.min(f"naive_L{layer}"), 4) for layer in layers},
        "fast_s_by_layer": {str(layer): round(t.min(f"fast_L{layer}"), 4) for layer in layers},
        "forwards_per_layer": {"naive": naive_forwards, "fast": fast_forwards},
        "max_batch_tokens": max_batch_tokens or "auto",
        "max_abs_diff": max_diff,
        "max_abs_diff_delta_loss": max_diff_delta,
        "speedup_arithmetic_model": round(ablation_work_ratio(model.cfg, layers, tokens.shape[1]), 3),
        "speedup_arithmetic_model_all_heads": round(
            ablation_work_ratio(model.cfg, list(range(n)), tokens.shape[1], one_call=True), 3
        ),
        "extrapolated": False,
        **t.protocol(),
    }
    if all_heads:
        n_all = n * model.cfg.n_heads
        naive_per_head = naive_s / out["heads_timed"]
        out.update(
            {
                **extra,
                "all_heads": n_all,
                "naive_all_heads_s_extrapolated": round(naive_per_head * n_all, 1),
                "speedup_all_heads_extrapolated": round(naive_per_head * n_all / extra["fast_all_heads_s"], 3),
                "extrapolated": "naive_all_heads_s_extrapolated and speedup_all_heads_extrapolated scale the naive "
                "time per timed head to all heads; every other number is measured (fast_all_heads_s: one call)",
            }
        )
    return out
