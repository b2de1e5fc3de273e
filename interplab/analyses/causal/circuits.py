"""Automated circuit discovery: ACDC-style pruning (Conmy et al. 2023, "Towards Automated Circuit Discovery
for Mechanistic Interpretability").

:func:`discover_circuit` prunes the graph whose nodes are attention heads (``hook_z``, one head each) and MLP
layers (``hook_mlp_out``), run natively on every supported family (GQA included — a node is a query head; its
key/value head is shared and left intact). Starting from the full model, nodes are visited from the output
backwards (layer by layer, the MLP before the heads of its layer) and a node is *removed* — mean-ablated —
when that changes the task metric by less than ``threshold`` × |metric of the full model|. Ablation is mean
ablation over the corrupt (for IOI: p_ABC) prompts of the same template at each position (Wang et al. 2022's
choice), so the circuit is judged on the clean prompts with everything outside it replaced by its average.
This is the node-level variant of ACDC: edges are not pruned one by one; the reported edges are the
residual-stream connections between kept nodes (every earlier node to every later one), each scored by path
patching when ``edge_scores=True`` (heads → heads' queries/keys/values).

Faithfulness = mean metric with everything outside the circuit ablated / mean metric of the full model (Wang
et al.'s F(C)/F(M)). The fast path reuses everything before the visited layer: while the layer-L nodes are
visited every earlier node is still in the circuit, so the run starts at layer L from the clean residual
stream, and only each prompt's END position is unembedded
(:func:`interplab.analyses.causal.engine.run_end_metric`). The IOI procedure that uses it is in
:mod:`interplab.analyses.causal.ioi`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interplab.analyses.causal.engine import end_metric, probe_gradients, run_end_metric
from interplab.analyses.causal.path_patching import path_patching
from interplab.hooks import Patch
from interplab.io.results import Result
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "CircuitResult",
    "Node",
    "all_nodes",
    "circuit_metric",
    "discover_circuit",
    "node_name",
    "template_means",
]

Node = tuple[str, int, int | None]
"""A circuit node: ``("head", layer, head)`` or ``("mlp", layer, None)``."""


def node_name(node: Node) -> str:
    """``"L.H"`` for a head, ``"MLPL"`` for an MLP layer."""
    kind, layer, h = node
    return f"{layer}.{h}" if kind == "head" else f"MLP{layer}"


def all_nodes(model: Model, mlps: bool = True) -> list[Node]:
    """Every head of ``model`` and, with ``mlps`` (and MLP layers), every MLP layer."""
    cfg = model.cfg
    nodes: list[Node] = [("head", layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    if mlps and cfg.d_mlp:
        nodes += [("mlp", layer, None) for layer in range(cfg.n_layers)]
    return nodes


def _node_hook(node: Node) -> str:
    kind, layer, _ = node
    return f"blocks.{layer}.attn.hook_z" if kind == "head" else f"blocks.{layer}.hook_mlp_out"


def template_means(
    pairs: PromptPairs, cache: Mapping[str, torch.Tensor], hooks: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per prompt, the mean activation over the prompts of the same template (``meta["template"]``; all
    prompts when absent) at each position: the mean-ablation reference, shaped like the activation."""
    groups: dict[Any, list[int]] = {}
    for i, m in enumerate(pairs.meta):
        groups.setdefault(m.get("template"), []).append(i)
    out = {}
    for h in hooks:
        x = cache[h]
        ref = torch.empty_like(x)
        for rows in groups.values():
            idx = torch.tensor(rows)
            ref[idx] = x[idx].mean(0, keepdim=True)
        out[h] = ref
    return out


def _ablations(nodes_out: Sequence[Node], ref: Mapping[str, torch.Tensor]) -> list[Patch]:
    heads: dict[int, list[int]] = {}
    ivs = []
    for kind, layer, h in nodes_out:
        if kind == "head":
            assert h is not None
            heads.setdefault(layer, []).append(h)
        else:
            hk = f"blocks.{layer}.hook_mlp_out"
            ivs.append(Patch(hk, source=ref[hk]))
    for layer, hs in heads.items():
        hk = f"blocks.{layer}.attn.hook_z"
        ivs.append(Patch(hk, heads=sorted(hs), source=ref[hk]))
    return ivs


@dataclass
class CircuitResult(Result):
    """A circuit found by :func:`discover_circuit`: the kept ``nodes``, the ``edges`` between them (with a
    path-patching score or None), the mean metric of the full model, of the circuit and with every candidate
    ablated, the faithfulness (circuit / full), and each visited node's metric change when it was removed."""

    KIND: ClassVar[str] = "circuit"
    FILE: ClassVar[str] = "circuit.json"

    nodes: list[Node]  # kept
    edges: list[tuple[str, str, float | None]]
    metric_full: float
    metric_circuit: float
    metric_empty: float
    faithfulness: float
    n_candidates: int
    threshold: float
    removed_effects: dict[str, float]  # node -> metric change when it was removed
    model_name: str = ""
    task: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def heads(self) -> list[list[int]]:
        return [[layer, h] for kind, layer, h in self.nodes if kind == "head" and h is not None]

    @property
    def mlps(self) -> list[int]:
        return [layer for kind, layer, _ in self.nodes if kind == "mlp"]

    def headline(self) -> dict[str, Any]:
        return {
            "heads": self.heads,
            "mlps": self.mlps,
            "n_nodes": len(self.nodes),
            "n_edges": len(self.edges),
            "faithfulness": round(self.faithfulness, 4),
            "metric_full": round(self.metric_full, 4),
            "metric_circuit": round(self.metric_circuit, 4),
            "metric_all_ablated": round(self.metric_empty, 4),
            "n_candidates": self.n_candidates,
            "threshold": self.threshold,
        }

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{"node": node_name(n), "kind": n[0], "layer": n[1], "head": n[2]} for n in self.nodes])

    def plot(self) -> go.Figure:
        """The circuit as a graph: nodes by layer (y) and head (x), edges between kept nodes."""
        import plotly.graph_objects as go

        pos = {}
        for kind, layer, h in self.nodes:
            pos[node_name((kind, layer, h))] = (h if kind == "head" else -1.5, layer + (0.5 if kind == "mlp" else 0))
        xs, ys = [], []
        for a, b, _ in self.edges:
            if a in pos and b in pos:
                xs += [pos[a][0], pos[b][0], None]
                ys += [pos[a][1], pos[b][1], None]
        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"width": 0.6, "color": "rgba(100,100,100,0.35)"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        names = list(pos)
        fig.add_trace(
            go.Scatter(
                x=[pos[n][0] for n in names],
                y=[pos[n][1] for n in names],
                mode="markers+text",
                text=names,
                textposition="top center",
                marker={"size": 12},
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
            )
        )
        fig.update_layout(
            title={
                "text": f"Circuit ({len(self.nodes)} nodes, faithfulness {self.faithfulness:.2f}) — "
                f"{self.task} — {self.model_name}"
            },
            xaxis_title="head (MLP at −1.5)",
            yaxis_title="layer",
            height=520,
        )
        return fig

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name in ("nodes", "edges"):
            return [tuple(x) for x in value]
        return value


@torch.no_grad()
def circuit_metric(
    model: Model,
    pairs: PromptPairs,
    removed: Sequence[Node],
    ref: Mapping[str, torch.Tensor],
    start: int = 0,
    resid_cache: Mapping[str, torch.Tensor] | None = None,
) -> float:
    """Mean metric on the clean prompts with ``removed`` nodes mean-ablated to ``ref`` (starting at layer
    ``start`` from ``resid_cache`` when given: valid only if no node before ``start`` is removed)."""
    m, _ = run_end_metric(model, pairs, _ablations(removed, ref), start, resid_cache)
    return float(m.mean())


@torch.no_grad()
def _circuit_run(
    model: Model, pairs: PromptPairs, removed: Sequence[Node], ref: Mapping[str, torch.Tensor], cache: Sequence[str]
) -> tuple[float, Any]:
    """The metric of :func:`circuit_metric` (from layer 0) and the same run's activations ``cache`` (one forward
    pass for both)."""
    m, store = run_end_metric(model, pairs, _ablations(removed, ref), cache=cache)
    return float(m.mean()), store


def _attribution_node_effects(
    model: Model, pairs: PromptPairs, nodes: Sequence[Node], ref: Mapping[str, torch.Tensor]
) -> dict[Node, float]:
    """First-order estimate of the mean-metric change when each node alone is mean-ablated:
    ``sum over positions of (ref − clean) · dM/d(activation)``, averaged over prompts."""
    hooks = sorted({_node_hook(nd) for nd in nodes})
    _, vals, grads = probe_gradients(
        model,
        pairs.clean,
        hooks,
        lambda final: end_metric(model, pairs, final).mean(),
        attention_mask=pairs.run_mask(),
        return_resid=True,
    )
    mask = pairs.mask.to(torch.float32)
    per_hook = {}
    for h in hooks:  # the product once per hook point, reduced per head (hook_z [n, pos, head, d]) or whole (MLP)
        t = (ref[h] - vals[h]) * grads[h]
        t = t.sum(-1) if h.endswith("hook_z") else t.reshape(*t.shape[:2], 1, -1).sum(-1)  # [n, pos, heads or 1]
        per_hook[h] = (
            (t.movedim(-1, 0).contiguous() * mask).sum(-1).mean(-1)
        )  # [heads or 1]: sum over positions, mean over prompts
    return {nd: float(per_hook[_node_hook(nd)][nd[2] if nd[0] == "head" else 0]) for nd in nodes}


@torch.no_grad()
def discover_circuit(
    model: Model,
    pairs: PromptPairs,
    threshold: float = 0.02,
    mlps: bool = True,
    candidates: Sequence[Node] | None = None,
    edge_scores: bool = False,
    screen: float | None = 0.25,
) -> CircuitResult:
    """ACDC-style node pruning (Conmy et al. 2023; see the module docstring).

    Args:
        model: the model.
        pairs: clean/corrupt prompt pairs; the corrupt prompts give the mean-ablation reference (per template
            in ``meta["template"]``, per position).
        threshold: a node is removed when removing it changes the mean metric by less than
            ``threshold × |full-model metric|``; in [0, 1).
        mlps: include the MLP layers as nodes.
        candidates: the nodes that may be pruned (default: every head and MLP); others stay in.
        edge_scores: score the edges between kept heads by path patching (into queries, keys and values).
        screen: before the exact pass, every node's ablation effect is estimated by attribution patching
            (Nanda 2023; one forward and backward pass) and nodes whose estimated |effect| is below
            ``screen × threshold × |full metric|`` are removed together (the exact pass then starts from that
            state; the final metric and faithfulness are always exact). If removing the screened nodes
            together moves the metric by ``threshold × |full metric|`` or more, the screen is discarded and
            every node is visited exactly (attribution misses effects through saturated attention — Kramár et
            al. 2024). None disables screening.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}.")
    t0 = time.perf_counter()
    cfg = model.cfg
    nodes = list(candidates) if candidates is not None else all_nodes(model, mlps)
    for kind, layer, h in nodes:
        if (
            not 0 <= layer < cfg.n_layers
            or (kind == "head" and (h is None or not 0 <= h < cfg.n_heads))
            or kind not in ("head", "mlp")
        ):
            raise ValueError(
                f"node {(kind, layer, h)} does not exist in a model with {cfg.n_layers} layers x {cfg.n_heads} heads."
            )
    hooks = sorted({_node_hook(n) for n in all_nodes(model, mlps)})
    resids = [f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)]
    _, cx = model.run(pairs.corrupt, cache=hooks, attention_mask=pairs.run_mask())
    ref = template_means(pairs, cx, hooks)
    full, cc = _circuit_run(model, pairs, [], ref, resids)  # the full model's metric and residual stream
    clean_cc = cc
    empty = circuit_metric(model, pairs, nodes, ref)
    scale = abs(full) if full != 0 else 1.0
    removed: list[Node] = []
    effects: dict[str, float] = {}
    n_eval = 2
    pool = nodes
    screen_ok = True
    if screen is not None and screen > 0:
        est = _attribution_node_effects(model, pairs, nodes, ref)
        removed = [nd for nd in nodes if abs(est[nd]) < screen * threshold * scale]
        pool = [nd for nd in nodes if nd not in removed]
    current = full
    if removed:  # the metric and residual stream with the screened nodes ablated (valid for every unvisited layer)
        current, cc = _circuit_run(model, pairs, removed, ref, resids)
    screen_ok = abs(current - full) < threshold * scale
    if removed and not screen_ok:  # the estimate missed real effects (e.g. saturated attention): no screening
        removed, pool, current, cc = [], nodes, full, clean_cc
    order = sorted(pool, key=lambda n: (n[1], n[0] == "mlp", n[2] or 0), reverse=True)
    for node in order:
        layer = node[1]
        trial = circuit_metric(model, pairs, removed + [node], ref, start=layer, resid_cache=cc)
        n_eval += 1
        effects[node_name(node)] = trial - current
        if abs(trial - current) < threshold * scale:
            removed.append(node)
            current = trial
    kept_set = set(nodes) - set(removed)
    kept = [n for n in all_nodes(model, mlps) if n in kept_set or (candidates is not None and n not in nodes)]
    final = circuit_metric(model, pairs, [n for n in all_nodes(model, mlps) if n not in kept], ref)
    edges: list[tuple[str, str, float | None]] = []
    for a in kept:
        for b in kept:
            if a[1] < b[1] or (a[1] == b[1] and a[0] == "head" and b[0] == "mlp"):
                edges.append((node_name(a), node_name(b), None))
    if edge_scores:
        heads = [(layer, h) for kind, layer, h in kept if kind == "head" and h is not None]
        scored = {}
        for inp in ("q", "k", "v"):
            pp = path_patching(
                model,
                pairs,
                senders=heads,
                receivers=heads,
                receiver_input=inp,
                receiver_position=None if inp != "q" else "END",
            )
            for i, s in enumerate(heads):
                for j, r in enumerate(heads):
                    if s[0] < r[0]:
                        key = (f"{s[0]}.{s[1]}", f"{r[0]}.{r[1]}")
                        scored[key] = scored.get(key, 0.0) + float(1 - pp.values[i, j])
        edges = [(a, b, scored.get((a, b))) for a, b, _ in edges]
    return CircuitResult(
        nodes=kept,
        edges=edges,
        metric_full=full,
        metric_circuit=final,
        metric_empty=empty,
        faithfulness=final / full if full else float("nan"),
        n_candidates=len(nodes),
        threshold=threshold,
        removed_effects=effects,
        model_name=model.name,
        task=pairs.task,
        settings={
            "ablation": "mean over corrupt prompts of the same template, per position",
            "n_evaluations": n_eval + 1,
            "screened_out": len(nodes) - len(pool),
            "screen": screen,
            "screen_discarded": bool(screen) and not screen_ok,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
