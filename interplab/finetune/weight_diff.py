"""What a fine-tune changed in the weights: per matrix, the size of the update relative to the weight and the
effective rank of the update (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models", which
argues that the update ``ΔW`` of adaptation has a low intrinsic rank; effective rank after Roy & Vetterli 2007,
"The effective rank: a measure of effective dimensionality").

For each parameter ``W`` present in both models (same name, same shape; tied parameters counted once):

* ``rel_norm = ||ΔW||_F / ||W_base||_F`` with ``ΔW = W_tuned − W_base`` (computed in float64);
* for a matrix, the singular values ``σ_1 ≥ σ_2 ≥ …`` of ``ΔW`` and its **effective rank**
  ``exp(H(p))`` with ``p_i = σ_i / Σ_j σ_j`` and ``H`` the Shannon entropy (nats): 1 for a rank-1 update, ``r``
  for ``r`` equal singular values, 0 by convention for ``ΔW = 0``; also the *stable rank*
  ``||ΔW||_F² / σ_1²`` and the fraction of ``||ΔW||_F²`` in the top singular value.

Per attention head (query head ``h`` of layer ``L``; grouped-query key/value weights expanded per query head, so
a change of a shared key/value head shows in every query head that reads it):
``head_rel[L, h] = sqrt(Σ_X ||ΔW_X[L, h]||²) / sqrt(Σ_X ||W_X[L, h]||²)`` over ``X ∈ {Q, K, V, O}``.

The whole update: ``rel_norm_total = ||Δθ|| / ||θ_base||`` over every shared parameter.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = ["effective_rank", "head_weight_change", "weight_update"]

_LAYER_RE = re.compile(r"\.(\d+)\.")


def effective_rank(singular_values: torch.Tensor) -> float:
    """Roy & Vetterli's (2007) effective rank ``exp(-Σ p_i log p_i)``, ``p_i = σ_i / Σ σ``; 0 when every σ is 0."""
    s = singular_values.double().clamp_min(0)
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s / total
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def _layer_of(name: str) -> int | None:
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def weight_update(base: Model, tuned: Model, spectrum: int = 8) -> tuple[list[dict[str, Any]], float]:
    """Per shared parameter of ``base`` and ``tuned``: ``name``, ``layer`` (None outside the blocks), ``shape``,
    ``norm`` (of the base weight), ``delta_norm``, ``rel_norm``, and for matrices ``effective_rank``,
    ``stable_rank``, ``top_sv_frac`` and the first ``spectrum`` singular values of the update ``singular_values``;
    and the relative norm of the whole update (see the module docstring)."""
    tuned_params = dict(tuned.hf.named_parameters())
    rows: list[dict[str, Any]] = []
    sq_w = sq_d = 0.0
    for name, p in base.hf.named_parameters():
        q = tuned_params.get(name)
        if q is None or q.shape != p.shape:
            continue
        w = p.detach().double().cpu()
        d = q.detach().double().cpu() - w
        nw, nd = float(w.norm()), float(d.norm())
        sq_w += nw * nw
        sq_d += nd * nd
        row: dict[str, Any] = {
            "name": name,
            "layer": _layer_of(name),
            "shape": list(p.shape),
            "norm": nw,
            "delta_norm": nd,
            "rel_norm": nd / nw if nw > 0 else (0.0 if nd == 0 else math.inf),
        }
        if p.ndim == 2:
            if nd == 0.0:
                sv = torch.zeros(min(p.shape), dtype=torch.float64)
            else:
                sv = torch.linalg.svdvals(d)
            top = float(sv[0]) if sv.numel() else 0.0
            row["effective_rank"] = effective_rank(sv)
            row["stable_rank"] = nd * nd / (top * top) if top > 0 else 0.0
            row["top_sv_frac"] = top * top / (nd * nd) if nd > 0 else 0.0
            row["singular_values"] = [float(x) for x in sv[:spectrum]]
        rows.append(row)
    total = math.sqrt(sq_d) / math.sqrt(sq_w) if sq_w > 0 else 0.0
    return rows, total


def head_weight_change(base: Model, tuned: Model) -> torch.Tensor:
    """``[n_layers, n_heads]`` relative change of each query head's ``W_Q``, ``W_K``, ``W_V`` and ``W_O`` together
    (see the module docstring)."""
    cfg = base.cfg
    out = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            num = torch.zeros(cfg.n_heads, dtype=torch.float64)
            den = torch.zeros(cfg.n_heads, dtype=torch.float64)
            qkv_b, qkv_t = base.adapter.qkv(layer), tuned.adapter.qkv(layer)
            pairs = [*zip(qkv_b, qkv_t), (base.adapter.w_o(layer), tuned.adapter.w_o(layer))]
            for wb, wt in pairs:
                b, t = wb.detach().double().cpu(), wt.detach().double().cpu()
                num += (t - b).square().flatten(1).sum(-1)
                den += b.square().flatten(1).sum(-1)
            out[layer] = num.sqrt() / den.sqrt().clamp_min(1e-300)
    return out.float()
