"""Activation patching on clean/corrupt prompt pairs (Meng et al. 2022; Wang et al. 2022; the conventions
of Heimersheim & Nanda 2024, "How to use and interpret activation patching").

Run one input and overwrite one activation with its value from the other input. *Denoising* runs the
corrupt prompt and restores a clean activation (is this component sufficient?); *noising* runs the clean
prompt and inserts a corrupt activation (is it necessary?). Every cell is reported on one scale::

    value = (mean M_patched − mean M_corrupt) / (mean M_clean − mean M_corrupt)

so 0 = the corrupt run's metric and 1 = the clean run's, in both directions (in noising, the important
components are the ones whose value falls towards 0). Bootstrap confidence intervals resample prompts (the
same resample for numerator and denominator).

Grids (``grid=``): ``resid`` (``hook_resid_pre`` layer × position), ``attn_out``, ``mlp_out`` (layer ×
position), ``heads`` (``hook_z``, layer × head, all positions or ``position=``), ``heads_by_pos`` (layer ×
head × position), ``q`` / ``k`` / ``v`` / ``pattern`` (layer × head; a ``pattern`` cell patches the head's
attention probabilities of the chosen query positions), ``neurons`` (chosen ``(layer, neuron)`` pairs of
``mlp.hook_post``). Positions are the task's named positions (``IO``, ``S1``, ``S2``, ``END``…: one token
index per prompt) unless ``positions="all"`` (absolute indices; every prompt must then have the same length).

The runs go through :mod:`interplab.analyses.causal.engine`: the fast method batches several patched
variants of one layer into each forward pass, starts it at that layer from the cached residual stream and
unembeds only each prompt's END position; the naive method runs one full forward per cell. Both give the
same numbers (tested to 1e-4). Attribution patching, its first-order estimate on the same grids and scale,
is in :mod:`interplab.analyses.causal.attribution`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.causal.engine import Cell, Method, baselines, run_cells
from interplab.io.results import Result, nan_to_none
from interplab.stats import bootstrap_indices
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "GRIDS",
    "Direction",
    "Grid",
    "PatchingResult",
    "Positions",
    "activation_patching",
    "bootstrap_normalised",
    "correlation",
    "make_cells",
    "normalise",
]

Grid = Literal["resid", "attn_out", "mlp_out", "heads", "heads_by_pos", "q", "k", "v", "pattern", "neurons"]
GRIDS: tuple[Grid, ...] = ("resid", "attn_out", "mlp_out", "heads", "heads_by_pos", "q", "k", "v", "pattern", "neurons")
Direction = Literal["denoise", "noise"]
"""``denoise``: run the corrupt prompt, restore a clean activation; ``noise``: run clean, insert corrupt."""
Positions = Literal["named", "all"] | Sequence[str | int] | None
"""The position axis of ``resid``/``attn_out``/``mlp_out``/``heads_by_pos`` grids: the task's named positions,
every absolute position, a list of either, or None (all positions at once)."""
_HOOK: dict[str, str] = {
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


# ====================================================================================== grids


def make_cells(
    model: Model,
    pairs: PromptPairs,
    grid: Grid,
    positions: Positions = "named",
    position: str | int | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[Cell], tuple[int, ...], list[list[str]]]:
    """The cells of a grid, the grid's shape and its axis labels (arguments as in :func:`activation_patching`)."""
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
        pos_list: list[str | int | None] = list(pairs.positions)
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
    idx = bootstrap_indices(n, n_boot, seed)
    pm = patched.double()[..., idx].mean(-1)  # [..., n_boot]
    cm, xm = clean.double()[idx].mean(-1), corrupt.double()[idx].mean(-1)
    vals = (pm - xm) / (cm - xm)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=vals.dtype)
    lo, hi = torch.nanquantile(vals, q, dim=-1)
    return lo.float(), hi.float()


@dataclass
class PatchingResult(Result):
    """A patching grid: ``values`` (normalised, 0 = corrupt, 1 = clean) with CIs, the per-prompt
    patched metric ``per_prompt [*shape, n]`` and the clean/corrupt per-prompt baselines. ``method``:
    ``"exact"`` (activation patching) or ``"attribution"`` (attribution patching)."""

    KIND: ClassVar[str] = "patching"
    FILE: ClassVar[str] = "patching.json"

    grid: Grid
    direction: Direction
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
    method: Literal["exact", "attribution"] = "exact"
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

    def top(self, k: int = 10, by: Literal["abs", "value", "effect"] = "abs") -> list[tuple[list[str], float]]:
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

    @classmethod
    def from_per_prompt(
        cls,
        model: Model,
        pairs: PromptPairs,
        per: torch.Tensor,
        m_clean: torch.Tensor,
        m_corrupt: torch.Tensor,
        *,
        grid: Grid,
        direction: Direction,
        labels: list[list[str]],
        method: Literal["exact", "attribution"],
        n_boot: int,
        seed: int,
        settings: dict[str, Any],
    ) -> PatchingResult:
        """The grid from the per-prompt patched metric ``per [*shape, n]``: normalised values (0 = corrupt,
        1 = clean) and their bootstrap CIs over prompts."""
        lo, hi = bootstrap_normalised(per, m_clean, m_corrupt, n_boot=n_boot, seed=seed)
        return cls(
            grid=grid,
            direction=direction,
            values=normalise(per, m_clean, m_corrupt),
            ci_low=lo,
            ci_high=hi,
            per_prompt=per,
            clean_metric=m_clean,
            corrupt_metric=m_corrupt,
            labels=labels,
            task=pairs.task,
            metric=pairs.metric,
            model_name=model.name,
            method=method,
            settings=settings,
        )

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
            r: dict[str, Any] = {n: self.labels[d][c] for d, (n, c) in enumerate(zip(self.axis_names, coords))}
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


def patch_cells(
    model: Model, pairs: PromptPairs, cells: Sequence[Cell], direction: Direction, method: Method, max_batch_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The clean and corrupt runs, then every cell patched (:func:`~interplab.analyses.causal.engine.run_cells`):
    ``(clean metric [n], corrupt metric [n], per-prompt metric [len(cells), n], forward passes)``."""
    hooks = sorted({h for c in cells for h in c.hooks})
    resids = sorted({f"blocks.{c.layer}.hook_resid_pre" for c in cells})
    m_clean, m_corrupt, cc, cx = baselines(model, pairs, cache_names=set(hooks) | set(resids))
    src, base_cache, base = (cc, cx, pairs.corrupt) if direction == "denoise" else (cx, cc, pairs.clean)
    per, n_fwd = run_cells(model, pairs, cells, base, src, base_cache, method=method, max_batch_tokens=max_batch_tokens)
    return m_clean, m_corrupt, per, n_fwd


def patching_share(
    model_ref: str, layers: list[int], pairs: PromptPairs, grid_args: tuple, options: dict[str, Any]
) -> tuple[list[int], torch.Tensor, int]:
    """A worker's share of :func:`activation_patching`: the model loaded by ``model_ref`` (one thread), the grid's
    cells rebuilt, and those in ``layers`` patched over every prompt; returns ``(cell indices, per-prompt metric
    [len(indices), n], forward passes)``."""
    from interplab.sweeps.split import worker_model

    with worker_model(model_ref) as model, torch.no_grad():
        cells, _, _ = make_cells(model, pairs, *grid_args)
        idx = [i for i, c in enumerate(cells) if c.layer in set(layers)]
        _, _, per, n_fwd = patch_cells(model, pairs, [cells[i] for i in idx], **options)
    return idx, per, n_fwd + 2


@torch.no_grad()
def activation_patching(
    model: Model,
    pairs: PromptPairs,
    grid: Grid = "resid",
    direction: Direction = "denoise",
    positions: Positions = "named",
    position: str | int | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[tuple[int, int]] | None = None,
    method: Method = "fast",
    max_batch_tokens: int = 8192,
    n_boot: int = 1000,
    seed: int = 0,
    backend: str = "serial",
    max_parallel: int | None = None,
    model_ref: str | None = None,
) -> PatchingResult:
    """Activation patching over a grid (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024; see the
    module docstring).

    Args:
        model: the model.
        pairs: clean/corrupt prompt pairs with their metric (:mod:`interplab.tasks`).
        grid: what is patched: ``resid``, ``attn_out``, ``mlp_out``, ``heads``, ``heads_by_pos``, ``q``,
            ``k``, ``v``, ``pattern`` or ``neurons``.
        direction: ``"denoise"`` (run corrupt, restore clean) or ``"noise"`` (run clean, insert corrupt).
        positions: the position axis of ``resid``/``attn_out``/``mlp_out``/``heads_by_pos`` grids:
            ``"named"`` (the task's named positions), ``"all"`` (every position; prompts of one length), a
            list of names or indices, or None (all positions patched at once).
        position: for ``heads``/``q``/``k``/``v``/``pattern``/``neurons`` grids, the one position patched (a
            name or an index); None patches every position.
        layers: the layers of the grid (default: all).
        neurons: for ``grid="neurons"``, the ``(layer, neuron)`` pairs of ``mlp.hook_post``.
        method: ``"fast"`` or ``"naive"`` (see :func:`interplab.analyses.causal.engine.run_cells`).
        max_batch_tokens: at most this many tokens per forward pass of the fast method.
        n_boot: bootstrap resamples of the prompts for the confidence intervals (at least 10).
        seed: seed of the bootstrap resamples.
        backend: ``"serial"`` (in this process), ``"process"`` or ``"ray"``: the grid's layers are dealt out in
            one share per worker (:mod:`interplab.sweeps.split`), each of which loads the model by ``model_ref``,
            runs the clean and corrupt prompts and patches its layers' cells over every prompt with the serial
            run's batches — the same numbers.
        max_parallel: workers at once (default: the backend's).
        model_ref: what a worker passes to :func:`interplab.load` (default: the model's registry name, else the
            directory it was loaded from).
    """
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}.")
    t0 = time.perf_counter()
    grid_args = (grid, positions, position, layers, neurons)
    cells, shape, labels = make_cells(model, pairs, *grid_args)
    if backend == "serial":
        m_clean, m_corrupt, per, n_fwd = patch_cells(model, pairs, cells, direction, method, max_batch_tokens)
    else:
        from interplab.sweeps.backends import check_backend
        from interplab.sweeps.split import deal, run_shares

        check_backend(backend)
        m_clean, m_corrupt, _, _ = baselines(model, pairs)
        per = torch.full((len(cells), len(pairs)), float("nan"))
        n_fwd = 0

        def keep(_layers: list[int], value: tuple[list[int], torch.Tensor, int]) -> None:
            nonlocal n_fwd
            idx, vals, k = value
            per[torch.tensor(idx)] = vals
            n_fwd += k

        options = {"direction": direction, "method": method, "max_batch_tokens": max_batch_tokens}
        shares = deal(sorted({c.layer for c in cells}), max_parallel)
        run_shares(patching_share, model, shares, (pairs, grid_args, options), keep, backend, max_parallel, model_ref)
    return PatchingResult.from_per_prompt(
        model,
        pairs,
        per.view(*shape, len(pairs)),
        m_clean,
        m_corrupt,
        grid=grid,
        direction=direction,
        labels=labels,
        method="exact",
        n_boot=n_boot,
        seed=seed,
        settings={
            "method": method,
            "backend": backend,
            "positions": positions if isinstance(positions, str) else list(positions or []),
            "position": position,
            "n_forward": n_fwd + 2,
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
