"""The causal engine: interventions on clean/corrupt prompt pairs, run fast.

Every causal analysis of this room (activation patching, attribution patching, path patching, head ablation,
causal tracing, circuit discovery) is a set of runs of one model in which some activations are replaced. This
module holds what they share:

* :class:`Cell`: one patched site (a hook point and, optionally, one head / a position / neurons, or a window
  of hook points patched together);
* :func:`baselines`: the clean and corrupt runs with their per-prompt metric and their caches;
* :func:`end_metric`: the task metric from the residual stream entering the final norm, unembedding only each
  prompt's END position (the only one a prompt-pair metric reads);
* :func:`run_cells`: the per-prompt metric of a run with each cell patched (Meng et al. 2022; Wang et al. 2022;
  the conventions of Heimersheim & Nanda 2024, "How to use and interpret activation patching");
* :func:`probe_gradients`: gradients of a metric at any hook points, from zero probes (attribution patching,
  Nanda 2023).

The fast path
-------------
A patch at layer ``L`` leaves blocks ``0..L-1`` as they are in the base run, so they need not run again:
the base run's residual stream entering ``L`` (``blocks.L.hook_resid_pre``) is cached once, and the
patched runs start there (``Model.run(start_at_layer=L)``). Several variants of one layer (``k`` cells, or
``k`` ablated heads) go through one forward pass, stacked along the batch variant-major — rows
``v*n:(v+1)*n`` are variant ``v`` (:func:`stack_variants`) — and one hook function replaces, in each copy,
what that variant patches, through one stacked boolean mask and a single ``torch.where``
(:func:`where_variants`). :func:`run_cells` also stops at the residual stream entering the final norm
(``return_resid=True``) and unembeds only END (:func:`end_metric`), so the ``[batch, pos, vocab]`` logits
are never formed. The naive path (``method="naive"``) runs one full forward per cell; both give the same
numbers (tested to 1e-4; in practice bit-identical or within float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from interplab.hooks import Apply, HookContext, Intervention, Patch
from interplab.models.scoring import unembed_resid
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "Cell",
    "Method",
    "baselines",
    "end_metric",
    "probe_gradients",
    "resolve_position",
    "run_cells",
    "run_end_metric",
    "run_variants",
    "stack_variants",
    "stacked_patch",
    "where_variants",
]

Method = Literal["fast", "naive"]
"""``fast``: variants of a layer stacked from the cached residual stream; ``naive``: one full forward per cell."""


def resolve_position(pairs: PromptPairs, position: str | int | None) -> torch.Tensor | int | None:
    """A cell's position as a hook position: a named position of ``pairs`` (one token index per prompt, or
    one int when there is a single prompt), an absolute index, or None (every position)."""
    if position is None:
        return None
    if isinstance(position, str):
        if position not in pairs.positions:
            raise ValueError(
                f"position {position!r} is not a named position of task {pairs.task!r} "
                f"(it has {', '.join(pairs.positions)})."
            )
        p = pairs.positions[position]
        return p if len(p) > 1 else int(p[0])
    return int(position)


@dataclass(frozen=True)
class Cell:
    """One patched site: a hook point and, optionally, one head / a position / neurons.

    ``position``: a named position, an absolute index, or None (all positions); ``also``: further hook
    points patched together with ``hook`` (a window of layers, as in causal tracing)."""

    hook: str
    layer: int
    head: int | None = None
    position: str | int | None = None
    neurons: tuple[int, ...] | None = None
    also: tuple[str, ...] = ()

    @property
    def hooks(self) -> tuple[str, ...]:
        return (self.hook, *self.also)

    def intervention(self, pairs: PromptPairs, source: Any, hook: str | None = None) -> Patch:
        """The :class:`~interplab.hooks.Patch` of this cell at ``hook`` (default: its own) from ``source``."""
        return Patch(
            hook or self.hook,
            heads=self.head,
            positions=resolve_position(pairs, self.position),
            neurons=list(self.neurons) if self.neurons is not None else None,
            source=source,
        )

    def interventions(self, pairs: PromptPairs, source: Any) -> list[Patch]:
        return [self.intervention(pairs, source, h) for h in self.hooks]


# ====================================================================================== runs and metrics


def end_metric(model: Model, pairs: PromptPairs, resid_final: torch.Tensor) -> torch.Tensor:
    """Per-prompt metric from the residual stream entering the final norm ``[k*n, pos, d_model]`` (``k``
    stacked variants of the ``n`` prompts): only each prompt's END position is unembedded."""
    return pairs.metric_from_final(unembed_resid(model, pairs.end_logits(resid_final)))


def baselines(
    model: Model, pairs: PromptPairs, cache_names: Sequence[str] | set[str] = (), grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    """The clean and corrupt runs: ``(clean metric [n], corrupt metric [n], clean cache, corrupt cache)``,
    the caches holding ``cache_names``."""
    mask = pairs.run_mask()
    lc, cc = model.run(pairs.clean, cache=list(cache_names), attention_mask=mask, grad=grad)
    lx, cx = model.run(pairs.corrupt, cache=list(cache_names), attention_mask=mask, grad=grad)
    return pairs.metric_from_logits(lc).detach(), pairs.metric_from_logits(lx).detach(), cc, cx


def run_end_metric(
    model: Model,
    pairs: PromptPairs,
    interventions: Sequence[Intervention] = (),
    start_at_layer: int = 0,
    resid_cache: Mapping[str, torch.Tensor] | None = None,
    cache: Sequence[str] = (),
) -> tuple[torch.Tensor, Any]:
    """One run on the clean prompts with ``interventions``: ``(per-prompt metric [n] from END only, the run's
    cache of ``cache``)``. With ``resid_cache`` and ``start_at_layer > 0`` the run starts at that layer from
    ``resid_cache["blocks.{start_at_layer}.hook_resid_pre"]`` (valid when no intervention acts earlier)."""
    mask = pairs.run_mask()
    if resid_cache is not None and start_at_layer > 0:
        final, store = model.run(
            resid_cache[f"blocks.{start_at_layer}.hook_resid_pre"],
            start_at_layer=start_at_layer,
            return_resid=True,
            attention_mask=mask,
            interventions=interventions,
            cache=list(cache),
        )
    else:
        final, store = model.run(
            pairs.clean, return_resid=True, attention_mask=mask, interventions=interventions, cache=list(cache)
        )
    return end_metric(model, pairs, final), store


# ====================================================================================== stacked variants


def stack_variants(x: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` copies of a batch ``x`` ``[n, ...]`` along the batch, variant-major: ``[k*n, ...]``."""
    return x.repeat(k, *([1] * (x.ndim - 1)))


def where_variants(x: torch.Tensor, k: int, mask: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The activation ``x`` ``[k*n, ...]`` of ``k`` stacked variants with ``source`` (broadcastable to
    ``[n, ...]``) written where the variant's boolean ``mask`` ``[k, ...]`` is True — one ``torch.where``. The
    output keeps ``x``'s memory layout (e.g. keys seen through a transpose), as a clone would."""
    xs = x.view(k, x.shape[0] // k, *x.shape[1:])
    out = torch.empty_like(xs)
    torch.where(mask.to(x.device), source.to(device=x.device, dtype=x.dtype), xs, out=out)
    return out.view(x.shape)


def run_variants(
    model: Model,
    resid: torch.Tensor,
    layer: int,
    k: int,
    interventions: Sequence[Intervention],
    attention_mask: torch.Tensor | None = None,
    return_resid: bool = False,
) -> torch.Tensor:
    """The fast path's forward pass: ``k`` variants of a batch whose residual stream entering ``layer``
    (``blocks.{layer}.hook_resid_pre``) is ``resid`` ``[n, pos, d_model]``, stacked along the batch
    (:func:`stack_variants`) and run from ``layer`` to the end with ``interventions`` (which tell the
    variants apart). Returns the logits ``[k*n, pos, vocab]``, or with ``return_resid`` the residual stream
    entering the final norm."""
    stacked = stack_variants(resid, k)
    am = attention_mask.repeat(k, 1) if attention_mask is not None else None
    return model.run(
        stacked, start_at_layer=layer, return_resid=return_resid, attention_mask=am, interventions=interventions
    ).logits


def stacked_patch(
    pairs: PromptPairs, members: Sequence[tuple[int, Cell]], src: torch.Tensor, k: int
) -> Callable[[torch.Tensor, HookContext], torch.Tensor]:
    """An :class:`~interplab.hooks.Apply` function for ``k`` stacked variants: variant ``v`` gets ``src`` where
    the mask of its cell (``members``: ``(v, cell)`` pairs) is True. The cells' masks are stacked into one
    boolean ``[k, ...]`` mask on the first call (then reused) and applied by :func:`where_variants`."""
    masks: dict[tuple, torch.Tensor] = {}

    def stacked_mask(one: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        every = torch.ones([1] * one.ndim, dtype=torch.bool, device=one.device)
        per: list[torch.Tensor | None] = [None] * k
        for v, c in members:
            m = c.intervention(pairs, None, ctx.name).mask(one, ctx)
            m = every if m is None else m
            prev = per[v]
            per[v] = m if prev is None else prev | m
        full = [torch.zeros_like(every) if m is None else m for m in per]  # variants without a cell here: untouched
        shape = torch.broadcast_shapes(*(m.shape for m in full))
        return torch.stack([m.expand(shape) for m in full])

    def fn(x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        key = (ctx.name, (k, x.shape[0] // k, *x.shape[1:]), x.device)
        if key not in masks:
            masks[key] = stacked_mask(x.view(k, x.shape[0] // k, *x.shape[1:])[0], ctx)
        return where_variants(x, k, masks[key], src)

    return fn


@torch.no_grad()
def run_cells(
    model: Model,
    pairs: PromptPairs,
    cells: Sequence[Cell],
    base: torch.Tensor,
    source_cache: Any,
    base_cache: Any,
    method: Method = "fast",
    max_batch_tokens: int = 8192,
    extra_interventions: Sequence[Intervention] = (),
) -> tuple[torch.Tensor, int]:
    """Per-prompt metric ``[len(cells), n]`` when each cell is patched from ``source_cache`` into a run on
    ``base`` tokens; returns ``(metrics, number of forward passes)``.

    Args:
        model: the model.
        pairs: the prompt pairs (their metric, named positions and padding mask).
        cells: the sites to patch, one run (or one stacked variant) each.
        base: the tokens ``[n, pos]`` of the run patched into (``pairs.corrupt`` to denoise, ``pairs.clean``
            to noise).
        source_cache: the cache the patched values come from (it must hold every cell's hook points).
        base_cache: the base run's cache; the fast method needs ``blocks.L.hook_resid_pre`` of every cell
            layer ``L`` in it.
        method: ``"fast"`` (variants of a layer stacked from the cached residual stream, END-only
            unembedding; see the module docstring) or ``"naive"`` (one full forward per cell).
        max_batch_tokens: at most this many tokens per forward pass of the fast method (variants x prompts x
            positions).
        extra_interventions: interventions applied in every run before the patch (naive method only), e.g.
            causal tracing's embedding noise.
    """
    n = len(pairs)
    mask = pairs.run_mask()
    out = torch.empty(len(cells), n)
    n_fwd = 0
    if method == "naive":
        for i, c in enumerate(cells):
            logits = model.run(
                base, attention_mask=mask, interventions=[*extra_interventions, *c.interventions(pairs, source_cache)]
            ).logits
            out[i] = pairs.metric_from_logits(logits)
            n_fwd += 1
        return out, n_fwd
    if method != "fast":
        raise ValueError(f"method must be 'fast' or 'naive', not {method!r}.")
    if extra_interventions:
        raise ValueError("extra interventions are only supported with method='naive'.")
    p = base.shape[1]
    per_fwd = max(1, max_batch_tokens // (n * p))
    by_layer: dict[int, list[int]] = {}
    for i, c in enumerate(cells):
        by_layer.setdefault(c.layer, []).append(i)
    for layer, idxs in by_layer.items():
        resid = base_cache[f"blocks.{layer}.hook_resid_pre"]
        for g0 in range(0, len(idxs), per_fwd):
            group = [cells[i] for i in idxs[g0 : g0 + per_fwd]]
            k = len(group)
            by_hook: dict[str, list[tuple[int, Cell]]] = {}
            for v, c in enumerate(group):
                for h in c.hooks:
                    by_hook.setdefault(h, []).append((v, c))
            ivs = [
                Apply(hook, fn=stacked_patch(pairs, members, source_cache[hook], k))
                for hook, members in by_hook.items()
            ]
            final = run_variants(model, resid, layer, k, ivs, attention_mask=mask, return_resid=True)
            n_fwd += 1
            out[torch.tensor(idxs[g0 : g0 + per_fwd])] = end_metric(model, pairs, final).view(k, n)
    return out, n_fwd


# ====================================================================================== gradients


def probe_gradients(
    model: Model,
    tokens: torch.Tensor,
    hooks: Sequence[str],
    metric: Callable[[torch.Tensor], torch.Tensor],
    attention_mask: torch.Tensor | None = None,
    interventions: Sequence[Intervention] = (),
    return_resid: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients of a metric at hook points, the ingredient of attribution patching (Nanda 2023).

    One forward pass with a zero probe added at each of ``hooks`` and one backward pass of
    ``metric(output).sum()``. Probes, not the activations themselves, carry the gradient, so every hook
    point works (GQA keys/values expanded per query head, attention patterns).

    Args:
        model: the model.
        tokens: token ids ``[batch, pos]``.
        hooks: the hook points to differentiate at.
        metric: maps the run's output (logits, or the residual stream entering the final norm with
            ``return_resid``) to a per-prompt metric.
        attention_mask: the padding mask, if any.
        interventions: interventions applied before the probes (e.g. causal tracing's noise).
        return_resid: hand ``metric`` the final residual stream instead of logits (see :func:`end_metric`).

    Returns:
        ``(metric value detached, {hook: activation}, {hook: d metric / d activation})``.
    """
    probes: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}

    def probe(x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        d = torch.zeros_like(x, requires_grad=True)
        probes[ctx.name], values[ctx.name] = d, x.detach()
        return x + d

    with torch.enable_grad():
        out = model.run(
            tokens,
            attention_mask=attention_mask,
            grad=True,
            return_resid=return_resid,
            interventions=[*interventions, *(Apply(h, fn=probe) for h in hooks)],
        ).logits
        m = metric(out)
        grads = torch.autograd.grad(m.sum(), [probes[h] for h in hooks])
    return m.detach(), values, dict(zip(hooks, grads))
