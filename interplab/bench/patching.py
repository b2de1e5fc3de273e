"""``interplab bench patching``: activation patching of heads, naive against fast, and attribution patching."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections import Counter
from typing import TYPE_CHECKING, Any

import torch

from interplab.bench.protocol import DEFAULT_ROUNDS, interleave, timed
from interplab.runtime import torch_threads

if TYPE_CHECKING:
    from interplab.analyses.causal.engine import Method
    from interplab.analyses.causal.patching import PatchingResult
    from interplab.models.model import Model
    from interplab.tasks import PromptPairs

__all__ = ["bench_patching"]


def bench_patching(
    model: Model,
    n: int = 8,
    rounds: int = DEFAULT_ROUNDS,
    threads: int = 2,
    seed: int = 0,
    peer: bool = False,
    layers: list[int] | None = None,
    n_layers_timed: int = 3,
    warmup: int = 1,
) -> dict[str, Any]:
    """Activation patching (Meng et al. 2022; Wang et al. 2022's IOI task) of every head's ``hook_z`` at the
    final position (END) of ``n`` IOI pairs, denoising: the naive path (one full forward per head) against
    the fast one (per layer, the heads' variants stacked into one forward that starts at that layer from the
    cached residual stream and unembeds only END), and attribution patching (Nanda 2023; one forward +
    backward) on the same grid; all three timed in the same interleaved rounds (:mod:`interplab.bench.protocol`).

    Args:
        model: the model.
        n: IOI pairs (``seed`` draws them). Kept small, with few layers, so that 15 rounds take minutes.
        rounds, warmup: timed and untimed interleaved rounds; each call includes its own clean and corrupt runs.
        threads: torch intra-op threads while timing (restored afterwards).
        peer: also time TransformerLens's patching module once (see :func:`_tl_patching`).
        layers: layers whose heads form the grid; default ``n_layers_timed`` layers at the centres of equal
            bins (5, 15, 25 of SmolLM2's 30); ``list(range(n_layers))`` for every head.

    ``speedup`` (naive / fast) and ``attribution_speedup_vs_naive`` are ratios of minimums, with their
    medians and per-round ranges beside them. ``*_all_heads_extrapolated``: the naive time per patched head
    scaled to every head of the model (the naive path costs one forward per head), against the attribution
    time, which does not grow with the grid. ``max_abs_diff``: largest difference between the two exact
    paths' per-prompt patched logit differences; ``attribution_corr``: Pearson correlation of the attribution
    grid with the exact one."""
    from interplab.analyses.causal import activation_patching, attribution_patching, correlation
    from interplab.tasks.ioi import ioi

    cfg = model.cfg
    if layers is None:
        k = max(1, min(n_layers_timed, cfg.n_layers))
        layers = sorted({int((i + 0.5) * cfg.n_layers / k) for i in range(k)})
    pairs = ioi(model, n=n, seed=seed)

    def exact(method: Method):
        return activation_patching(model, pairs, grid="heads", position="END", layers=layers, method=method, n_boot=100)

    variants = {
        "naive": lambda: exact("naive"),
        "fast": lambda: exact("fast"),
        "attribution": lambda: attribution_patching(
            model, pairs, grid="heads", position="END", layers=layers, n_boot=100
        ),
    }
    with torch_threads(threads):
        t = interleave(variants, rounds=rounds, warmup=warmup, keep=True)
        peer_out = _tl_patching(model, pairs, t.last["fast"]) if peer else {}
    res_n, res_f, att = t.last["naive"], t.last["fast"], t.last["attribution"]
    cells = int(res_f.values.numel())
    all_cells = cfg.n_layers * cfg.n_heads
    naive_per_cell = (t.min("naive")) / (cells + 2)  # one forward per head, plus the clean and corrupt runs
    naive_all = naive_per_cell * (all_cells + 2)
    return {
        "model": model.name,
        "task": "ioi",
        "n_pairs": len(pairs),
        "layers": layers,
        "cells": cells,
        "position": "END",
        "threads": threads,
        **t.compare("speedup", "naive", "fast"),
        **t.compare("attribution_speedup_vs_naive", "naive", "attribution", digits=2),
        **t.times("naive", "s", 3),
        **t.times("fast", "s", 3),
        **t.times("attribution", "s", 3),
        "max_abs_diff": float((res_n.per_prompt - res_f.per_prompt).abs().max()),
        "max_abs_diff_normalised": float((res_n.values - res_f.values).abs().max()),
        "n_forward_naive": res_n.settings["n_forward"],
        "n_forward_fast": res_f.settings["n_forward"],
        "attribution_corr": round(correlation(att, res_f), 4),
        "all_heads": all_cells,
        "naive_all_heads_s_extrapolated": round(naive_all, 2),
        "attribution_speedup_vs_naive_all_heads_extrapolated": round(naive_all / t.min("attribution"), 1),
        **t.protocol(),
        **peer_out,
    }


def _tl_patching(model: Model, pairs: PromptPairs, reference: PatchingResult) -> dict[str, Any]:
    """TransformerLens's patching module (``transformer_lens.patching.generic_activation_patch``) on the
    same pairs and every head, with the HF model wrapped by ``HookedTransformer.from_pretrained(hf_model=...)``;
    timed once each, TL then interplab's fast path (a peer comparison, not part of the rounds).
    TL patching needs one token length for the whole batch, so it is timed on the pairs of the most
    common length (reported as ``tl_n_pairs``); the interplab fast path is re-timed on that subset."""
    import pandas as pd
    import transformer_lens as tl
    import transformer_lens.loading_from_pretrained as tl_loading
    from transformer_lens import patching

    from interplab.analyses.causal.patching import activation_patching

    lengths = pairs.mask.sum(1)
    common = Counter(lengths.tolist()).most_common(1)[0][0]
    sub = pairs.subset((lengths == common).nonzero().reshape(-1))

    # HookedTransformer wants a name it knows or a local directory with config.json: give it the HF config
    # of the model in hand (in a directory removed once loaded), and let local directories pass its
    # official-name check for this call only.
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

    def metric(logits: torch.Tensor) -> torch.Tensor:
        lg = logits[:, end]
        return (lg[torch.arange(len(ans)), ans] - lg[torch.arange(len(ans)), wrong]).mean()

    cfg = model.cfg
    index = pd.DataFrame([(L, h) for L in range(cfg.n_layers) for h in range(cfg.n_heads)], columns=["layer", "head"])

    def setter(corrupted: torch.Tensor, index_row: Any, clean_act: torch.Tensor) -> torch.Tensor:
        corrupted[:, end, index_row[1]] = clean_act[:, end, index_row[1]]
        return corrupted

    with torch.no_grad():
        _, clean_cache = hooked.run_with_cache(clean)
        t_tl, tl_out = timed(
            # TransformerLens annotates the setter's third argument as an ActivationCache, but passes it
            # clean_cache[activation_name], a Tensor.
            lambda: patching.generic_activation_patch(
                hooked,
                corrupt,
                clean_cache,
                metric,
                setter,  # type: ignore[arg-type]
                "z",
                index_df=index,
            )
        )
    t_ip, ip = timed(lambda: activation_patching(model, sub, grid="heads", position="END", n_boot=100))
    ip_raw = ip.per_prompt.mean(-1).reshape(-1)
    return {
        "tl_n_pairs": len(sub),
        "tl_s": round(t_tl, 3),
        "interplab_fast_s_same_pairs": round(t_ip, 3),
        "tl_over_fast": round(t_tl / t_ip, 3),
        "tl_max_abs_diff": float((tl_out.reshape(-1).float() - ip_raw).abs().max()),
    }
