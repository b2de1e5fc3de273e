"""Refining the peaks of a causal trace (Meng et al. 2022, "Locating and Editing Factual Associations in GPT",
ROME) to single components: single attention heads restored exactly, single MLP neurons ranked by attribution
patching (Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale") and the top ones restored
exactly. Takes the :class:`~interplab.analyses.causal.tracing_result.TracingResult` of
:func:`interplab.analyses.causal.tracing.causal_tracing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from interplab.analyses.causal.engine import Cell, probe_gradients, run_cells
from interplab.analyses.causal.tracing_corruption import embedding_noise_std, subject_noise, subject_span
from interplab.analyses.causal.tracing_result import BUCKETS, TracingResult, bucket_of
from interplab.tasks.facts import Fact
from interplab.tasks.pairs import pairs_from_tokens

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["refine"]


@torch.no_grad()
def refine(
    model: Model, facts: Sequence[Fact], result: TracingResult, n_samples: int = 10, top_k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Refine the peaks of a causal trace (Meng et al. 2022) to single components: the indirect effect of
    restoring one attention head (``hook_z``) at the attention peak's token class, for every head of every
    layer, and of single MLP neurons (``mlp.hook_post``) at the MLP peak's token class in the peak layer (all
    neurons ranked by attribution patching, Nanda 2023; the top ``top_k`` restored exactly). Noise
    corruption as in ``result``.

    Args:
        model: the model the trace was run on.
        facts: the traced facts.
        result: the :class:`TracingResult` of :func:`causal_tracing` (noise corruption).
        n_samples: noise draws per fact.
        top_k: heads reported and neurons restored exactly.
        seed: seed of fact ``i``'s noise is ``seed + i``.

    Returns:
        ``{"heads": [[layer, head, IE], ...], "head_ie": [L, H], "head_position": ...}`` and, with MLPs,
        ``"neurons": [[layer, neuron, attribution score, exact IE], ...]``, ``"neuron_layer"``,
        ``"neuron_position"``.
    """
    std = result.settings.get("noise_std") or embedding_noise_std(model, facts)
    scale = result.settings.get("noise_scale", 3.0)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out: dict[str, Any] = {}
    head_ie = torch.zeros(L, H)
    mlp_peak = result.peak("mlp") if "mlp" in result.aie and model.cfg.d_mlp else None
    attn_peak = result.peak("attn") if "attn" in result.aie else {"position": "last"}
    neuron_scores = torch.zeros(model.cfg.d_mlp or 0)
    runs = []  # per fact: what the exact neuron restorations reuse
    for i, f in enumerate(facts):
        ids, a, b = subject_span(model, f.prompt, f.subject)
        ans, _ = model.first_token_id(f.answer, "answer")
        p = len(ids)
        pos_of = {bk: [x for x in range(p) if bucket_of(x, a, b, p - 1) == bk] for bk in BUCKETS}
        hpos = (pos_of.get(attn_peak["position"]) or [p - 1])[-1]
        extra = [subject_noise(model, a, b, n_samples, std, scale, seed + i)]
        clean = torch.tensor([ids])
        corrupt = clean.repeat(n_samples, 1)
        pairs = pairs_from_tokens(
            "fact", clean.repeat(n_samples, 1), corrupt, answer_ids=ans, wrong_ids=ans, metric="prob"
        )
        zs = [f"blocks.{layer}.attn.hook_z" for layer in range(L)]
        _, cc = model.run(clean, cache=zs + ([f"blocks.{mlp_peak['layer']}.mlp.hook_post"] if mlp_peak else []))
        lx, cx = model.run(corrupt, cache=[f"blocks.{layer}.hook_resid_pre" for layer in range(L)], interventions=extra)
        p_corrupt = pairs.metric_from_final(lx[:, -1]).mean()
        cells = [Cell(zs[layer], layer, head=h, position=hpos) for layer in range(L) for h in range(H)]
        per, _ = run_cells(model, pairs, cells, corrupt, cc, cx)
        head_ie += (per.mean(-1) - p_corrupt).view(L, H) / len(facts)
        if mlp_peak is not None:
            npos = (pos_of.get(mlp_peak["position"]) or [b])[-1]
            hk = f"blocks.{mlp_peak['layer']}.mlp.hook_post"
            _, vals, grads = probe_gradients(
                model, corrupt, [hk], lambda lg, pairs=pairs: pairs.metric_from_final(lg[:, -1]), interventions=extra
            )
            delta = cc[hk][:, npos] - vals[hk][:, npos]  # [n, neurons]
            neuron_scores += (delta * grads[hk][:, npos]).mean(0) / len(facts)
            runs.append((pairs, corrupt, cc, cx, p_corrupt, npos))
    flat = head_ie.reshape(-1).argsort(descending=True)[:top_k]
    out["heads"] = [[int(i // H), int(i % H), round(float(head_ie.reshape(-1)[i]), 5)] for i in flat]
    out["head_ie"] = head_ie
    out["head_position"] = attn_peak["position"]
    if mlp_peak is not None:
        top = neuron_scores.argsort(descending=True)[:top_k].tolist()
        hk, layer = f"blocks.{mlp_peak['layer']}.mlp.hook_post", mlp_peak["layer"]
        exact = torch.zeros(len(top))
        for pairs, corrupt, cc, cx, p_corrupt, npos in runs:  # restore each top neuron exactly, batched
            cells = [Cell(hk, layer, position=npos, neurons=(nidx,)) for nidx in top]
            per, _ = run_cells(model, pairs, cells, corrupt, cc, cx)
            exact += (per.mean(-1) - p_corrupt) / len(facts)
        out["neurons"] = [
            [mlp_peak["layer"], int(nidx), round(float(neuron_scores[nidx]), 6), round(float(e), 6)]
            for nidx, e in zip(top, exact)
        ]
        out["neuron_layer"], out["neuron_position"] = mlp_peak["layer"], mlp_peak["position"]
    return out
