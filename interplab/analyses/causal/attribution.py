"""Attribution patching (Nanda 2023, "Attribution patching: activation patching at industrial scale";
Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit Discovery").

The first-order estimate of activation patching: for a cell with activation ``a`` the patched metric is
approximated by ``M(base) + (a_source − a_base) · ∂M/∂a`` at the base run, summed over the cell's entries —
one forward and one backward pass for every cell of a grid at once. The gradients are taken on zero probes
added at each hook point (:func:`interplab.analyses.causal.engine.probe_gradients`), so every hook point
works (GQA keys and values, attention patterns). Results use the scale and the :class:`PatchingResult` of
:mod:`interplab.analyses.causal.patching` (``method="attribution"``). AtP*'s attention-softmax correction
(Kramár et al. 2024) is not implemented: attribution misses effects through saturated attention.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from interplab.analyses.causal.engine import probe_gradients
from interplab.analyses.causal.patching import (
    Direction,
    Grid,
    PatchingResult,
    Positions,
    make_cells,
)
from interplab.hooks import HookContext
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["attribution_patching"]


def attribution_patching(
    model: Model,
    pairs: PromptPairs,
    grid: Grid = "heads",
    direction: Direction = "denoise",
    positions: Positions = "named",
    position: str | int | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[tuple[int, int]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> PatchingResult:
    """Attribution patching (Nanda 2023; Syed et al. 2023): the linear estimate of
    :func:`~interplab.analyses.causal.patching.activation_patching` on the same grid and scale, from one
    forward + backward pass of the base run and one forward pass of the source run.

    Args:
        model: the model.
        pairs: clean/corrupt prompt pairs with their metric (:mod:`interplab.tasks`).
        grid: what is patched (as in ``activation_patching``).
        direction: ``"denoise"`` (base = corrupt run, source = clean) or ``"noise"`` (the reverse).
        positions: the position axis of position grids (as in ``activation_patching``).
        position: the one position of head/neuron grids, or None for every position.
        layers: the layers of the grid (default: all).
        neurons: for ``grid="neurons"``, the ``(layer, neuron)`` pairs.
        n_boot: bootstrap resamples of the prompts for the confidence intervals (at least 10).
        seed: seed of the bootstrap resamples.
    """
    t0 = time.perf_counter()
    cells, shape, labels = make_cells(model, pairs, grid, positions, position, layers, neurons)
    hooks = sorted({c.hook for c in cells})
    base, src_tokens = (pairs.corrupt, pairs.clean) if direction == "denoise" else (pairs.clean, pairs.corrupt)
    mask = pairs.run_mask()
    src_logits, src_cache = model.run(src_tokens, cache=hooks, attention_mask=mask)
    m_base, values, grad = probe_gradients(model, base, hooks, pairs.metric_from_logits, attention_mask=mask)
    m_src = pairs.metric_from_logits(src_logits).detach()
    m_clean, m_corrupt = (m_src, m_base) if direction == "denoise" else (m_base, m_src)
    n = len(pairs)
    per = torch.empty(len(cells), n)
    contrib = {h: ((src_cache[h] - values[h]) * grad[h]).float() for h in hooks}
    for i, c in enumerate(cells):
        t = contrib[c.hook]
        m = c.intervention(pairs, None).mask(t, HookContext(c.hook, c.layer, c.hook.split(".", 2)[2], model))
        t = t if m is None else t * m
        per[i] = m_base + t.reshape(n, -1).sum(-1)
    return PatchingResult.from_per_prompt(
        model,
        pairs,
        per.view(*shape, n),
        m_clean,
        m_corrupt,
        grid=grid,
        direction=direction,
        labels=labels,
        method="attribution",
        n_boot=n_boot,
        seed=seed,
        settings={
            "positions": positions if isinstance(positions, str) else list(positions or []),
            "position": position,
            "n_forward": 2,
            "n_backward": 1,
            "n_boot": n_boot,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
