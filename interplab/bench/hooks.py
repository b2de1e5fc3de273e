"""``interplab bench hooks``: the cost of caching activations relative to the plain forward."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from interplab.bench.protocol import DEFAULT_ROUNDS, interleave
from interplab.runtime import torch_threads

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["bench_hooks"]


def _resid_names(name: str) -> bool:
    return ".hook_resid_" in name


def _all_names(name: str) -> bool:
    return not name.endswith("hook_pattern")


def bench_hooks(
    model: Model,
    batch: int = 8,
    seq: int = 128,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = 2,
    threads: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Time a plain HF forward against ``model.run`` caching the residual streams (resid_pre/mid/post of
    every layer) and caching every hook point except attention patterns, under the shared protocol
    (:mod:`interplab.bench.protocol`; ``ratio_*`` is the ratio of minimums).

    Args:
        model: the model; its HF module gives the plain forward.
        batch, seq: random token ids (``seed``) of this shape (``seq`` capped at the context length).
        rounds, warmup: timed and untimed interleaved rounds.
        threads: torch intra-op threads while timing (restored afterwards).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.cfg.d_vocab, (batch, min(seq, model.cfg.n_ctx)), generator=g).to(model.device)

    def plain() -> torch.Tensor:
        with torch.no_grad():
            if model.cfg.family == "toy":
                return model.hf(tokens).logits
            return model.hf(input_ids=tokens, use_cache=False).logits

    variants = {
        "plain": plain,
        "cache_resid": lambda: model.run(tokens, cache=_resid_names),
        "cache_all": lambda: model.run(tokens, cache=_all_names),
    }
    with torch_threads(threads):
        t = interleave(variants, rounds=rounds, warmup=warmup)
        n_threads = torch.get_num_threads()
        plain_logits = plain()
        resid_logits, resid_cache = variants["cache_resid"]()
        all_logits, all_cache = variants["cache_all"]()
    n_bytes = sum(v.numel() * v.element_size() for k, v in all_cache.items() if not k.endswith("hook_result"))
    return {
        "model": model.name,
        "batch": batch,
        "seq": tokens.shape[1],
        "threads": n_threads,
        **t.compare("ratio_cache_resid", "cache_resid", "plain", digits=4),
        **t.compare("ratio_cache_all", "cache_all", "plain", digits=4),
        **t.times("plain"),
        **t.times("cache_resid"),
        **t.times("cache_all"),
        "n_tensors_resid": len(resid_cache),
        "n_tensors_all": len(all_cache),
        "cache_all_mb": round(n_bytes / 2**20, 1),
        "max_abs_diff_logits": float(
            max((resid_logits - plain_logits).abs().max(), (all_logits - plain_logits).abs().max())
        ),
        **t.protocol(),
    }
