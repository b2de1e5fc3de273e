"""Activation patching, attribution patching and path patching on clean/corrupt prompt pairs.

* **Activation patching** (Meng et al. 2022; Wang et al. 2022; the conventions of Heimersheim &
  Nanda 2024, "How to use and interpret activation patching"): run one input and overwrite one
  activation with its value from the other input. *Denoising* runs the corrupt prompt and restores a
  clean activation (is this component sufficient?); *noising* runs the clean prompt and inserts a
  corrupt activation (is it necessary?). Every cell is reported on one scale::

      value = (mean M_patched − mean M_corrupt) / (mean M_clean − mean M_corrupt)

  so 0 = the corrupt run's metric and 1 = the clean run's, in both directions (in noising, the
  important components are the ones whose value falls towards 0). Bootstrap confidence intervals
  resample prompts (the same resample for numerator and denominator).

* **Attribution patching** (Nanda 2023, "Attribution patching: activation patching at industrial
  scale"; Syed et al. 2023): the first-order estimate ``(a_source − a_base) · ∂M/∂a`` at the base
  run, from one forward and one backward pass for every cell at once; the gradients are taken on zero
  probes added at each hook point, so every hook point (GQA keys and values, patterns) works.
  (AtP*'s attention-softmax correction of Kramár et al. 2024 is not implemented.)

* **Path patching** (Wang et al. 2022, §3.1 and appendix): the effect of sender heads on the metric
  *only through* chosen receivers — receiver heads' queries/keys/values, or the logits directly.

Grids (``grid=``): ``resid`` (``hook_resid_pre`` layer × position), ``attn_out``, ``mlp_out`` (layer ×
position), ``heads`` (``hook_z``, layer × head, all positions or ``position=``), ``heads_by_pos``
(layer × head × position), ``q`` / ``k`` / ``v`` / ``pattern`` (layer × head; a ``pattern`` cell
patches the head's attention probabilities of the chosen query positions), ``neurons`` (chosen
``(layer, neuron)`` pairs of ``mlp.hook_post``). Positions are the task's named positions
(``IO``, ``S1``, ``S2``, ``END``…: one token index per prompt) unless ``positions="all"`` (absolute
indices; every prompt must then have the same length).

The fast method batches several patched variants of one layer into each forward pass, starts it at
that layer from the cached residual stream (``Model.run(start_at_layer=L)``) and unembeds only each
prompt's END position; the naive method runs one full forward per cell. Both give the same numbers
(tested to 1e-4).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interplab.hooks import Apply, HookContext, Patch
from interplab.io.results import nan_to_none, none_to_nan, read_json, write_json
from interplab.models.model import Model
from interplab.tasks.pairs import PromptPairs

GRIDS = ("resid", "attn_out", "mlp_out", "heads", "heads_by_pos", "q", "k", "v", "pattern", "neurons")
_HOOK = {
    "resid": "hook_resid_pre",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "heads": "attn.hook_z",
    "heads_by_pos": "attn.hook_z",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "pattern": "attn.hook_pattern",
    "neurons": "mlp.hook_post",
}
RESULT_FILE = "patching.json"


@dataclass(frozen=True)
class Cell:
    """One patched site: a hook point and, optionally, one head / a position / neurons."""

    hook: str
    layer: int
    head: int | None = None
    position: str | int | None = None  # named position, absolute index, or None = all
    neurons: tuple[int, ...] | None = None
    also: tuple[str, ...] = ()  # further hook points patched together with ``hook`` (a window of layers)

    @property
    def hooks(self) -> tuple[str, ...]:
        return (self.hook, *self.also)

    def intervention(self, pairs: PromptPairs, source, hook: str | None = None) -> Patch:
        return Patch(
            hook or self.hook,
            heads=self.head,
            positions=_positions(pairs, self.position),
            neurons=list(self.neurons) if self.neurons is not None else None,
            source=source,
        )

    def interventions(self, pairs: PromptPairs, source) -> list[Patch]:
        return [self.intervention(pairs, source, h) for h in self.hooks]


def _positions(pairs: PromptPairs, position):
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


# ====================================================================================== grids


def make_cells(
    model: Model,
    pairs: PromptPairs,
    grid: str,
    positions: str | Sequence | None = "named",
    position: str | int | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[Cell], tuple[int, ...], list[list[str]]]:
    """The cells of a grid, the grid's shape and its axis labels."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, not {grid!r}.")
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        if not 0 <= layer < cfg.n_layers:
            raise ValueError(
                f"layer {layer} is out of range: the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})."
            )
    kind = _HOOK[grid]
    if grid in ("mlp_out", "neurons") and not cfg.d_mlp:
        raise ValueError(f"grid {grid!r} needs MLP layers; this model is attention-only.")
    if positions == "named":
        pos_list: list = list(pairs.positions)
    elif positions == "all":
        if pairs.padded:
            raise ValueError(
                "positions='all' needs prompts of one length; this task's prompts differ in length — "
                "use the named positions (positions='named')."
            )
        pos_list = list(range(pairs.clean.shape[1]))
    elif positions is None:
        pos_list = [None]
    else:
        pos_list = list(positions)
    hook = lambda layer: f"blocks.{layer}.{kind}"
    if grid in ("resid", "attn_out", "mlp_out"):
        cells = [Cell(hook(layer), layer, position=p) for layer in layers for p in pos_list]
        return cells, (len(layers), len(pos_list)), [[str(x) for x in layers], [str(p) for p in pos_list]]
    if grid in ("heads", "q", "k", "v", "pattern"):
        cells = [Cell(hook(layer), layer, head=h, position=position) for layer in layers for h in range(cfg.n_heads)]
        return cells, (len(layers), cfg.n_heads), [[str(x) for x in layers], [str(h) for h in range(cfg.n_heads)]]
    if grid == "heads_by_pos":
        cells = [
            Cell(hook(layer), layer, head=h, position=p)
            for layer in layers
            for h in range(cfg.n_heads)
            for p in pos_list
        ]
        return (
            cells,
            (len(layers), cfg.n_heads, len(pos_list)),
            [[str(x) for x in layers], [str(h) for h in range(cfg.n_heads)], [str(p) for p in pos_list]],
        )
    if not neurons:
        raise ValueError("grid='neurons' needs neurons=[(layer, neuron), ...].")
    cells = []
    for layer, nidx in neurons:
        if not 0 <= int(nidx) < cfg.d_mlp:
            raise ValueError(f"neuron {nidx} is out of range: layer {layer} has {cfg.d_mlp} neurons.")
        cells.append(Cell(hook(int(layer)), int(layer), position=position, neurons=(int(nidx),)))
    return cells, (len(cells),), [[f"L{layer}N{nidx}" for layer, nidx in neurons]]


# ====================================================================================== result


def normalise(patched: torch.Tensor, clean: torch.Tensor, corrupt: torch.Tensor) -> torch.Tensor:
    """``(mean patched − mean corrupt) / (mean clean − mean corrupt)`` over the last dim (prompts)."""
    denom = clean.double().mean(-1) - corrupt.double().mean(-1)
    return ((patched.double().mean(-1) - corrupt.double().mean(-1)) / denom).float()


def bootstrap_normalised(
    patched: torch.Tensor,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap CI of :func:`normalise`, resampling prompts (one shared set of resamples)."""
    n = clean.shape[-1]
    if n < 2:
        nan = torch.full(patched.shape[:-1], float("nan"))
        return nan, nan.clone()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    pm = patched.double()[..., idx].mean(-1)  # [..., n_boot]
    cm, xm = clean.double()[idx].mean(-1), corrupt.double()[idx].mean(-1)
    vals = (pm - xm) / (cm - xm)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=vals.dtype)
    lo, hi = torch.nanquantile(vals, q, dim=-1)
    return lo.float(), hi.float()


@dataclass
class PatchingResult:
    """A patching grid: ``values`` (normalised, 0 = corrupt, 1 = clean) with CIs, the per-prompt
    patched metric ``per_prompt [*shape, n]`` and the clean/corrupt per-prompt baselines."""

    grid: str
    direction: str
    values: torch.Tensor
    ci_low: torch.Tensor
    ci_high: torch.Tensor
    per_prompt: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    labels: list[list[str]]
    task: str = ""
    metric: str = "logit_diff"
    model_name: str = ""
    method: str = "exact"  # exact | attribution
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def axis_names(self) -> list[str]:
        return {
            "resid": ["layer", "position"],
            "attn_out": ["layer", "position"],
            "mlp_out": ["layer", "position"],
            "heads_by_pos": ["layer", "head", "position"],
            "neurons": ["neuron"],
        }.get(self.grid, ["layer", "head"])

    def top(self, k: int = 10, by: str = "abs") -> list[tuple[list[str], float]]:
        """The ``k`` cells with the largest |value| (``by="abs"``), value or effect (1 − value, noising)."""
        flat = self.values.reshape(-1)
        score = {"abs": flat.abs(), "value": flat, "effect": 1 - flat}[by]
        score = torch.nan_to_num(score, nan=-math.inf)
        idx = score.argsort(descending=True)[:k]
        out = []
        for i in idx.tolist():
            coords, rem = [], i
            for size in reversed(self.values.shape):
                coords.append(rem % size)
                rem //= size
            coords = coords[::-1]
            out.append(([self.labels[d][c] for d, c in enumerate(coords)], float(flat[i])))
        return out

    def headline(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "direction": self.direction,
            "method": self.method,
            "task": self.task,
            "n_prompts": int(self.clean_metric.numel()),
            "clean_metric": float(self.clean_metric.mean()),
            "corrupt_metric": float(self.corrupt_metric.mean()),
            "top": [[*c, round(v, 4)] for c, v in self.top(10, "abs" if self.direction == "denoise" else "effect")],
        }

    def to_frame(self):
        import itertools

        import pandas as pd

        rows = []
        for coords in itertools.product(*[range(s) for s in self.values.shape]):
            r = {n: self.labels[d][c] for d, (n, c) in enumerate(zip(self.axis_names, coords))}
            r.update(
                value=float(self.values[coords]), ci_low=float(self.ci_low[coords]), ci_high=float(self.ci_high[coords])
            )
            rows.append(r)
        return pd.DataFrame(rows)

    def plot(self):
        import plotly.graph_objects as go

        v = self.values
        title = f"{self.method} patching ({self.direction}) — {self.grid} — {self.task} — {self.model_name}"
        if v.ndim == 1:
            fig = go.Figure(go.Bar(x=self.labels[0], y=v.tolist()))
        else:
            if v.ndim == 3:  # heads_by_pos: rows layer.head
                z = v.reshape(-1, v.shape[-1])
                y = [f"L{a}H{b}" for a in self.labels[0] for b in self.labels[1]]
                x = self.labels[2]
            else:
                z, y, x = v, self.labels[0], self.labels[1]
            lo, hi = self.ci_low.reshape(z.shape), self.ci_high.reshape(z.shape)
            custom = [[[f"{a:.3f}", f"{b:.3f}"] for a, b in zip(r1, r2)] for r1, r2 in zip(lo.tolist(), hi.tolist())]
            fig = go.Figure(
                go.Heatmap(
                    z=nan_to_none(z.tolist()),
                    x=x,
                    y=y,
                    customdata=custom,
                    colorscale="RdBu",
                    zmid=0.0,
                    colorbar={"title": {"text": "restored"}},
                    hovertemplate="%{y} / %{x}: %{z:.3f}<br>95% CI [%{customdata[0]}, %{customdata[1]}]<extra></extra>",
                )
            )
            fig.update_yaxes(title=self.axis_names[0] if v.ndim == 2 else "layer.head", autorange="reversed")
            fig.update_xaxes(title=self.axis_names[-1], type="category")
        fig.update_layout(
            title={"text": title},
            height=max(320, 16 * (v.shape[0] if v.ndim == 2 else v.numel() // max(1, v.shape[-1])) + 140),
        )
        return fig

    def to_dict(self) -> dict[str, Any]:
        nn = lambda t: nan_to_none(t.tolist())
        return {
            "kind": "patching",
            "format_version": 1,
            "grid": self.grid,
            "direction": self.direction,
            "method": self.method,
            "task": self.task,
            "metric": self.metric,
            "model": self.model_name,
            "labels": self.labels,
            "shape": list(self.values.shape),
            "values": nn(self.values.reshape(self.values.shape[0], -1)),
            "ci_low": nn(self.ci_low.reshape(self.values.shape[0], -1)),
            "ci_high": nn(self.ci_high.reshape(self.values.shape[0], -1)),
            "per_prompt": self.per_prompt.reshape(-1, self.per_prompt.shape[-1]).tolist(),
            "clean_metric": self.clean_metric.tolist(),
            "corrupt_metric": self.corrupt_metric.tolist(),
            "settings": self.settings,
            "headline": self.headline(),
        }

    def save(self, directory: str | Path, name: str = RESULT_FILE) -> Path:
        return write_json(directory, name, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PatchingResult:
        d, _ = read_json(path, RESULT_FILE, "patching")
        shape = tuple(d["shape"])
        t = lambda k: torch.tensor(none_to_nan(d[k])).reshape(shape)
        pp = torch.tensor(d["per_prompt"])
        return cls(
            grid=d["grid"],
            direction=d["direction"],
            values=t("values"),
            ci_low=t("ci_low"),
            ci_high=t("ci_high"),
            per_prompt=pp.reshape(*shape, pp.shape[-1]),
            clean_metric=torch.tensor(d["clean_metric"]),
            corrupt_metric=torch.tensor(d["corrupt_metric"]),
            labels=d["labels"],
            task=d["task"],
            metric=d["metric"],
            model_name=d["model"],
            method=d["method"],
            settings=d["settings"],
        )


# ====================================================================================== engine


def _end_metric(model: Model, pairs: PromptPairs, resid_final: torch.Tensor) -> torch.Tensor:
    """Metric from the residual stream entering the final norm ``[k*n, pos, d]``: only END is unembedded."""
    from interplab.models.scoring import unembed_resid

    return pairs.metric_from_final(unembed_resid(model, pairs.end_logits(resid_final)))


def baselines(model: Model, pairs: PromptPairs, cache_names=(), grad: bool = False):
    """(clean metric [n], corrupt metric [n], clean cache, corrupt cache)."""
    mask = pairs.run_mask()
    lc, cc = model.run(pairs.clean, cache=list(cache_names), attention_mask=mask, grad=grad)
    lx, cx = model.run(pairs.corrupt, cache=list(cache_names), attention_mask=mask, grad=grad)
    return pairs.metric_from_logits(lc).detach(), pairs.metric_from_logits(lx).detach(), cc, cx


@torch.no_grad()
def run_cells(
    model: Model,
    pairs: PromptPairs,
    cells: Sequence[Cell],
    base: torch.Tensor,
    source_cache,
    base_cache,
    method: str = "fast",
    max_batch_tokens: int = 8192,
    extra_interventions: Sequence = (),
) -> tuple[torch.Tensor, int]:
    """Per-prompt metric ``[len(cells), n]`` when each cell is patched from ``source_cache`` into a
    run on ``base`` tokens. ``base_cache`` must hold ``blocks.L.hook_resid_pre`` of the base run for
    every cell layer (fast method). Returns (metrics, number of forward passes)."""
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
                Apply(hook, fn=_stacked_patch(pairs, members, source_cache[hook], k))
                for hook, members in by_hook.items()
            ]
            stacked = resid.repeat(k, *([1] * (resid.ndim - 1)))
            am = mask.repeat(k, 1) if mask is not None else None
            final = model.run(
                stacked, start_at_layer=layer, return_resid=True, attention_mask=am, interventions=ivs
            ).logits
            n_fwd += 1
            out[torch.tensor(idxs[g0 : g0 + per_fwd])] = _end_metric(model, pairs, final).view(k, n)
    return out, n_fwd


def _stacked_patch(pairs: PromptPairs, members: list[tuple[int, Cell]], src: torch.Tensor, k: int):
    """An Apply function for ``k`` stacked variants: variant ``v`` gets ``src`` where its cell's mask is True.
    The cells' masks are stacked into one boolean ``[k, ...]`` mask on the first call (then reused) and
    applied with a single ``torch.where``."""
    masks: dict[tuple, torch.Tensor] = {}

    def stacked_mask(one: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        every = torch.ones([1] * one.ndim, dtype=torch.bool, device=one.device)
        per: list[torch.Tensor | None] = [None] * k
        for v, c in members:
            m = c.intervention(pairs, None, ctx.name).mask(one, ctx)
            m = every if m is None else m
            per[v] = m if per[v] is None else per[v] | m
        per = [torch.zeros_like(every) if m is None else m for m in per]  # variants without a cell here: untouched
        shape = torch.broadcast_shapes(*(m.shape for m in per))
        return torch.stack([m.expand(shape) for m in per])

    def fn(x, ctx: HookContext):
        xs = x.view(k, x.shape[0] // k, *x.shape[1:])
        key = (ctx.name, tuple(xs.shape), x.device)
        if key not in masks:
            masks[key] = stacked_mask(xs[0], ctx)
        out = torch.empty_like(xs)  # x's memory layout (e.g. keys seen through a transpose), as a clone would have
        torch.where(masks[key], src.to(device=x.device, dtype=x.dtype), xs, out=out)
        return out.view(x.shape)

    return fn


@torch.no_grad()
def activation_patching(
    model: Model,
    pairs: PromptPairs,
    grid: str = "resid",
    direction: str = "denoise",
    positions: str | Sequence | None = "named",
    position: str | int | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[tuple[int, int]] | None = None,
    method: str = "fast",
    max_batch_tokens: int = 8192,
    n_boot: int = 1000,
    seed: int = 0,
) -> PatchingResult:
    """Activation patching over a grid (see the module docstring). ``direction``: ``"denoise"`` (run
    corrupt, restore clean) or ``"noise"`` (run clean, insert corrupt)."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}.")
    t0 = time.perf_counter()
    cells, shape, labels = make_cells(model, pairs, grid, positions, position, layers, neurons)
    hooks = sorted({h for c in cells for h in c.hooks})
    resids = sorted({f"blocks.{c.layer}.hook_resid_pre" for c in cells})
    m_clean, m_corrupt, cc, cx = baselines(model, pairs, cache_names=set(hooks) | set(resids))
    src, base_cache, base = (cc, cx, pairs.corrupt) if direction == "denoise" else (cx, cc, pairs.clean)
    per, n_fwd = run_cells(model, pairs, cells, base, src, base_cache, method=method, max_batch_tokens=max_batch_tokens)
    per = per.view(*shape, len(pairs))
    vals = normalise(per, m_clean, m_corrupt)
    lo, hi = bootstrap_normalised(per, m_clean, m_corrupt, n_boot=n_boot, seed=seed)
    return PatchingResult(
        grid=grid,
        direction=direction,
        values=vals,
        ci_low=lo,
        ci_high=hi,
        per_prompt=per,
        clean_metric=m_clean,
        corrupt_metric=m_corrupt,
        labels=labels,
        task=pairs.task,
        metric=pairs.metric,
        model_name=model.name,
        method="exact",
        settings={
            "method": method,
            "positions": positions if isinstance(positions, str) else list(positions or []),
            "position": position,
            "n_forward": n_fwd + 2,
            "n_boot": n_boot,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


# ====================================================================================== attribution patching


def probe_gradients(
    model: Model,
    tokens,
    hooks: Sequence[str],
    metric,
    attention_mask: torch.Tensor | None = None,
    interventions: Sequence = (),
    return_resid: bool = False,
):
    """One forward pass with a zero probe added at each of ``hooks`` and one backward pass of
    ``metric(output).sum()`` (``output``: logits, or the residual stream entering the final norm with
    ``return_resid``). Probes, not the activations themselves, carry the gradient, so every hook point
    works (GQA keys/values expanded per query head, patterns). Returns ``(metric value detached,
    {hook: activation}, {hook: d metric / d activation})`` — the ingredients of attribution patching."""
    probes: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}

    def probe(x, ctx):
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


def attribution_patching(
    model: Model,
    pairs: PromptPairs,
    grid: str = "heads",
    direction: str = "denoise",
    positions: str | Sequence | None = "named",
    position: str | int | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[tuple[int, int]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> PatchingResult:
    """Attribution patching (Nanda 2023): linear estimate of :func:`activation_patching` on the same
    grid and scale, from one forward + backward pass of the base run and one forward of the source run."""
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
    per = per.view(*shape, n)
    vals = normalise(per, m_clean, m_corrupt)
    lo, hi = bootstrap_normalised(per, m_clean, m_corrupt, n_boot=n_boot, seed=seed)
    return PatchingResult(
        grid=grid,
        direction=direction,
        values=vals,
        ci_low=lo,
        ci_high=hi,
        per_prompt=per,
        clean_metric=m_clean,
        corrupt_metric=m_corrupt,
        labels=labels,
        task=pairs.task,
        metric=pairs.metric,
        model_name=model.name,
        method="attribution",
        settings={
            "positions": positions if isinstance(positions, str) else list(positions or []),
            "position": position,
            "n_forward": 2,
            "n_backward": 1,
            "n_boot": n_boot,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


def correlation(a: PatchingResult, b: PatchingResult) -> float:
    """Pearson correlation of two grids' values (e.g. attribution vs exact patching)."""
    x, y = a.values.reshape(-1).double(), b.values.reshape(-1).double()
    ok = ~(torch.isnan(x) | torch.isnan(y))
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


# ====================================================================================== path patching


@dataclass
class PathPatchingResult:
    """Path patching values ``[senders, receivers]`` on the activation-patching scale (noising: 1 = the
    clean metric, 0 = the corrupt one; an important path pulls the value towards 0)."""

    senders: list[tuple[int, int]]
    receivers: list[str]
    values: torch.Tensor
    per_prompt: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    model_name: str = ""
    task: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        eff = 1 - self.values
        flat = eff.reshape(-1).abs().argsort(descending=True)[:10]
        R = len(self.receivers)
        return {
            "receivers": self.receivers,
            "top": [
                [*self.senders[i // R], self.receivers[i % R], round(float(self.values.reshape(-1)[i]), 4)]
                for i in flat.tolist()
            ],
        }


@torch.no_grad()
def path_patching(
    model: Model,
    pairs: PromptPairs,
    senders: Sequence[tuple[int, int]] | None = None,
    receivers: Sequence[tuple[int, int]] | str = "logits",
    receiver_input: str = "q",
    receiver_position: str | int | None = "END",
) -> PathPatchingResult:
    """Path patching (Wang et al. 2022). For each sender head ``s``:

    1. run the clean prompt with ``s``'s output (``hook_z``) taken from the corrupt run and every other
       head frozen at its clean value (MLPs are recomputed, as in Wang et al.'s code); record the
       receivers' ``receiver_input`` (``q``, ``k`` or ``v``) at ``receiver_position``;
    2. run the clean prompt again with only those receiver inputs patched in; read the metric.

    With ``receivers="logits"`` step 1's metric is the answer (the path sender → logits not through
    other heads). Values use the activation-patching scale (1 = clean, 0 = corrupt)."""
    cfg = model.cfg
    if receiver_input not in ("q", "k", "v"):
        raise ValueError(f"receiver_input must be 'q', 'k' or 'v', not {receiver_input!r}.")
    if senders is None:
        senders = [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    senders = [(int(a), int(b)) for a, b in senders]
    for a, b in senders + ([] if isinstance(receivers, str) else [tuple(r) for r in receivers]):
        if not (0 <= a < cfg.n_layers and 0 <= b < cfg.n_heads):
            raise ValueError(
                f"head ({a}, {b}) is out of range: the model has {cfg.n_layers} layers x {cfg.n_heads} heads."
            )
    mask = pairs.run_mask()
    zs = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
    m_clean, m_corrupt, cc, cx = baselines(model, pairs, cache_names=zs)
    to_logits = isinstance(receivers, str)
    if to_logits and receivers != "logits":
        raise ValueError(f"receivers must be 'logits' or a list of (layer, head), not {receivers!r}.")
    rec = [] if to_logits else [(int(a), int(b)) for a, b in receivers]
    rec_hooks = sorted({f"blocks.{a}.attn.hook_{receiver_input}" for a, _ in rec})
    labels = ["logits"] if to_logits else [f"{a}.{b}.{receiver_input}" for a, b in rec]
    n = len(pairs)
    per = torch.empty(len(senders), len(labels), n)
    for i, (sl, sh) in enumerate(senders):
        ivs = [Patch(zs[sl], heads=[sh], source=cx)]
        for layer in range(sl + 1, cfg.n_layers):
            ivs.append(Patch(zs[layer], source=cc))
        others = [h for h in range(cfg.n_heads) if h != sh]
        if others:
            ivs.append(Patch(zs[sl], heads=others, source=cc))
        logits, cache = model.run(pairs.clean, attention_mask=mask, interventions=ivs, cache=rec_hooks)
        if to_logits:
            per[i, 0] = pairs.metric_from_logits(logits)
            continue
        for j, (rl, rh) in enumerate(rec):
            if rl <= sl:
                per[i, j] = m_clean
                continue
            hk = f"blocks.{rl}.attn.hook_{receiver_input}"
            iv = Patch(hk, heads=[rh], positions=_positions(pairs, receiver_position), source=cache[hk])
            per[i, j] = pairs.metric_from_logits(model.run(pairs.clean, attention_mask=mask, interventions=[iv]).logits)
    vals = normalise(per, m_clean, m_corrupt)
    return PathPatchingResult(
        senders=senders,
        receivers=labels,
        values=vals,
        per_prompt=per,
        clean_metric=m_clean,
        corrupt_metric=m_corrupt,
        model_name=model.name,
        task=pairs.task,
        settings={"receiver_input": receiver_input, "receiver_position": receiver_position},
    )
