"""The graph of edge attribution patching (:mod:`~interplab.analyses.causal.edges`; Conmy et al. 2023, Syed et al.
2023, Hanna et al. 2024): upstream nodes (input, heads' writes, MLP outputs), downstream inputs (each head's q, k,
v input, each MLP's input, the logits), the edges between them, and the upstream activations of a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "QKV",
    "EdgeGraph",
    "Reference",
    "check_edge_family",
    "edge_graph",
    "layer_downstream",
    "mlp_input_hook",
    "reference_cache",
    "upstream_acts",
    "upstream_hooks",
]

Reference = Literal["corrupt", "mean"]
"""What an edge outside a circuit carries: the corrupt run's activation (Hanna et al. 2024) or the per-template
mean over the corrupt prompts (Wang et al. 2022; :func:`~interplab.analyses.causal.circuits.template_means`)."""

QKV = ("q", "k", "v")


# ====================================================================================== the graph


@dataclass(frozen=True)
class EdgeGraph:
    """The nodes and edges of a model's graph: ``upstream`` / ``downstream`` names (module docstring), each
    one's layer (``input``: −1, ``logits``: n_layers) and ``valid`` ``[U, D]``: True where the edge exists."""

    upstream: list[str]
    downstream: list[str]
    up_layer: list[int]
    down_layer: list[int]
    valid: torch.Tensor

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def edge_name(self, u: int, v: int) -> str:
        return f"{self.upstream[u]}->{self.downstream[v]}"

    def down_node(self, v: int) -> str:
        """The node a downstream input belongs to (``"L.H"`` for ``"L.H.q"``)."""
        name = self.downstream[v]
        return name.rsplit(".", 1)[0] if name.endswith((".q", ".k", ".v")) else name


def check_edge_family(model: Model) -> None:
    """Refuse a family whose heads' writes are not additive (a norm after attention, e.g. Gemma 3)."""
    if model.adapter.attn_output_norm(0) is not None:
        raise ValueError(
            f"{model.cfg.family} passes attention output through a norm before the residual stream, so a head's "
            "write is not additive and edges from single heads are not defined; use node-level circuits "
            "(interplab.analyses.causal.circuits.discover_circuit) for this family."
        )


def edge_graph(model: Model) -> EdgeGraph:
    """The graph of ``model`` (module docstring)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    mlp = cfg.d_mlp > 0
    up, upl, down, downl = ["input"], [-1], [], []
    up_kind = ["input"]
    for layer in range(L):
        up += [f"{layer}.{h}" for h in range(H)]
        upl += [layer] * H
        up_kind += ["head"] * H
        down += [f"{layer}.{h}.{t}" for h in range(H) for t in QKV]
        downl += [layer] * (3 * H)
        if mlp:
            up.append(f"MLP{layer}")
            upl.append(layer)
            up_kind.append("mlp")
            down.append(f"MLP{layer}")
            downl.append(layer)
    down.append("logits")
    downl.append(L)
    ul, dl = torch.tensor(upl), torch.tensor(downl)
    valid = ul[:, None] < dl[None, :]
    if mlp and not cfg.parallel_attn_mlp:
        is_head = torch.tensor([k == "head" for k in up_kind])
        is_mlp_in = torch.tensor([d.startswith("MLP") for d in down])
        valid |= (ul[:, None] == dl[None, :]) & is_head[:, None] & is_mlp_in[None, :]
    return EdgeGraph(up, down, upl, downl, valid)


def layer_downstream(g: EdgeGraph, layer: int) -> list[int]:
    """The indices of the downstream inputs of ``layer`` (its heads' q / k / v and its MLP)."""
    return [v for v, lv in enumerate(g.down_layer) if lv == layer]


# ====================================================================================== activations


def upstream_hooks(model: Model) -> list[str]:
    """The hook points holding the upstream nodes' writes (input, per-head results, MLP outputs)."""
    cfg = model.cfg
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.attn.hook_result" for layer in range(cfg.n_layers)]
    if cfg.d_mlp > 0:
        hooks += [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    return hooks


def upstream_acts(model: Model, cache: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every upstream node's write ``[n, pos, d]`` from a cache of :func:`upstream_hooks`, in graph order."""
    out = [cache["blocks.0.hook_resid_pre"]]
    for layer in range(model.cfg.n_layers):
        res = cache[f"blocks.{layer}.attn.hook_result"]
        out += [res[:, :, h] for h in range(model.cfg.n_heads)]
        if model.cfg.d_mlp > 0:
            out.append(cache[f"blocks.{layer}.hook_mlp_out"])
    return [t.detach().float() for t in out]


def reference_cache(model: Model, pairs: PromptPairs, cx: Mapping[str, torch.Tensor], reference: Reference) -> Any:
    """What corrupted edges carry: the corrupt cache ``cx`` itself, or its per-template means of the upstream
    hook points."""
    if reference == "corrupt":
        return cx
    if reference == "mean":
        from interplab.analyses.causal.circuits import template_means

        return template_means(pairs, cx, upstream_hooks(model))
    raise ValueError(f"reference must be 'corrupt' or 'mean', not {reference!r}.")


def mlp_input_hook(model: Model, layer: int) -> str:
    """The residual stream an MLP reads: ``hook_resid_mid`` (``hook_resid_pre`` with a parallel residual)."""
    return f"blocks.{layer}.hook_resid_pre" if model.cfg.parallel_attn_mlp else f"blocks.{layer}.hook_resid_mid"
