"""Weight difference to a base model: per weight matrix the relative Frobenius norm ``‖W − W_base‖ / ‖W_base‖``
and the effective rank of ``W − W_base`` (Roy & Vetterli 2007: ``exp`` of the entropy of the normalised singular
values) — the view of a fine-tune (a LoRA update has rank ``r`` by construction) used to ask what a fine-tune
changed. Needs the base the organism was trained from (``interplab organism make toy --init-from BASE``); an
organism trained from scratch has no base, and this detector does not apply to it.

Score ``weight_diff``: the largest relative norm over matrices (a backdoor must write a new feature; a clean
fine-tune on the data the base already fits barely moves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from interplab.organisms.detectors import DetectorOutput

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.organisms.toy import ToyTask

__all__ = ["effective_rank", "scan", "weight_diffs"]


def effective_rank(m: torch.Tensor) -> float:
    """``exp(H(p))`` with ``p`` the singular values divided by their sum (Roy & Vetterli 2007)."""
    s = torch.linalg.svdvals(m.double())
    if float(s.sum()) == 0.0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def weight_diffs(model: Model, base: Model) -> list[dict]:
    """One row per 2-D weight: name, relative norm of the difference, effective rank of the difference."""
    a = dict(model.hf.named_parameters())
    b = dict(base.hf.named_parameters())
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError(
            "the base model has other weights or shapes than the organism; give the model it was tuned from."
        )
    rows = []
    for k, w in a.items():
        if w.ndim != 2:
            continue
        d = (w - b[k]).detach()
        ref = b[k].detach()
        rows.append(
            {
                "weight": k,
                "relative_norm": float(d.norm() / (ref.norm() + 1e-12)),
                "effective_rank": round(effective_rank(d), 3) if bool(d.any()) else 0.0,
            }
        )
    return rows


def scan(model: Model, task: ToyTask | None, base: Model | None = None, seed: int = 0) -> DetectorOutput:
    """Score ``weight_diff``: the largest relative norm of a weight's change (see the module docstring)."""
    if base is None:
        raise ValueError("weight_diff needs the base model the organism was tuned from (--base BASE).")
    rows = weight_diffs(model, base)
    top = max(rows, key=lambda r: r["relative_norm"])
    return DetectorOutput({"weight_diff": top["relative_norm"]}, {"largest": top, "per_weight": rows})
