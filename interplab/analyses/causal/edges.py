"""Edge attribution patching (EAP; Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit
Discovery") and EAP with integrated gradients (EAP-IG; Hanna et al. 2024, "Have Faith in Faithfulness: Going
Beyond Circuit Overlap When Finding Model Mechanisms"), over the graph of heads and MLPs (Conmy et al. 2023).

The graph
---------
* upstream nodes (what writes into the residual stream): ``input`` (the residual stream entering block 0:
  embeddings and positions), each head ``"L.H"`` (its write ``hook_result``, ``z_h W_O[h]``) and each MLP
  ``"MLPL"`` (``hook_mlp_out``);
* downstream inputs (what reads it): each head's query, key and value input separately (``"L.H.q"``,
  ``"L.H.k"``, ``"L.H.v"``: the residual stream as that head's q / k / v path reads it, before the layer's norm),
  each MLP's input ``"MLPL"``, and ``"logits"`` (the residual stream entering the final norm);
* an edge ``u → v`` exists when ``u`` is in an earlier layer than ``v``, or ``u`` is a head and ``v`` the MLP of
  the same layer (not in parallel-residual models, whose MLP reads the layer's input). ``input`` feeds everything.

The input of ``v`` is the sum of the writes of every upstream node of ``v`` (plus biases): corrupting the
edge ``u → v`` adds ``a_u(corrupt) − a_u(clean)`` to ``v``'s input only.

Scores
------
* EAP: ``score(u, v) = Σ_pos (a_u(corrupt) − a_u(clean)) · ∂M/∂x_v`` at the clean run, averaged over prompts,
  where ``x_v`` is ``v``'s own input: the first-order estimate of the metric change when only that edge carries
  the corrupt activation. A head's q (k, v) input gradient is the vector-Jacobian product of ``∂M/∂q_h`` (from a
  zero probe on ``hook_q``; keys/values are expanded per query head under GQA) through that layer's own modules
  (norm, projection, q/k-norm, rotary), taken by autograd from the residual stream entering the layer — exact in
  every family. An MLP's input gradient is the VJP of ``∂M/∂mlp_out`` to the residual stream the MLP reads
  (``hook_resid_mid``, or ``hook_resid_pre`` in parallel-residual models).
* EAP-IG: the gradients are averaged over ``m`` runs whose input (the residual stream entering block 0) is
  interpolated ``corrupt + k/m (clean − corrupt)``, ``k = 1..m`` (Hanna et al. use ``m = 5``).
* With ``reference="mean"`` the corrupt activations above are replaced by the per-template means over the
  corrupt prompts (the ablation of :mod:`~interplab.analyses.causal.circuits`), in the scores, the interpolation
  and the circuits alike, so that scores estimate the circuits' own ablation.
* :func:`exact_edge_patching`: the reference — the metric when only the edge ``u → v`` carries the corrupt
  activation: ``v``'s input gets ``a_u(corrupt) − a_u(clean)`` added, every other input as in the clean run.
  For a head's q / k / v the layer is run once on the modified residual stream and only that head's q (k, v) is
  patched into a clean run (two runs, as path patching does).

Circuits
--------
:func:`edge_circuit_metric` runs the clean prompts with every edge outside a circuit carrying the reference
activation (the corrupt run's, as Hanna et al., or the per-template mean of the corrupt prompts, as
:mod:`~interplab.analyses.causal.circuits`): ``x_v = x_v(run) + Σ_{u→v ∉ C} (a_u(ref) − a_u(run))``, layer by
layer. Faithfulness is ``mean metric(circuit) / mean metric(full)`` (the scale of ``circuits.py``); the
normalised faithfulness ``(M(C) − M(ref))/(M(full) − M(ref))`` is reported beside it.

Layout: the graph and the upstream activations are in :mod:`~interplab.analyses.causal.edge_graph`, exact edge
patching and the circuit evaluation in :mod:`~interplab.analyses.causal.edge_patching`, the gradients, scores and
:class:`EdgeAttributionResult` here.

Families whose head writes pass through a norm before the residual stream (Gemma 3's post-attention norm) have
no additive per-head writes; their edges are refused (the q/k/v input gradients themselves work everywhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interplab.analyses.causal.edge_graph import (
    QKV,
    EdgeGraph,
    Reference,
    check_edge_family,
    edge_graph,
    mlp_input_hook,
    reference_cache,
    upstream_acts,
    upstream_hooks,
)
from interplab.analyses.causal.edge_patching import edge_circuit_metric, exact_edge_patching, node_circuit_edges
from interplab.analyses.causal.engine import baselines, end_metric
from interplab.hooks import Apply, HookContext
from interplab.io.results import Result
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "EdgeAttributionResult",
    "EdgeGraph",
    "Reference",
    "edge_attribution_patching",
    "edge_circuit_metric",
    "edge_graph",
    "exact_edge_patching",
    "input_gradients",
    "node_circuit_edges",
    "spearman",
    "top_edges",
]


# ====================================================================================== gradients


def input_gradients(
    model: Model,
    pairs: PromptPairs,
    resid0: torch.Tensor | None = None,
    on_gradient: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Gradients of the summed per-prompt metric w.r.t. every downstream input of the graph, each through its
    own path only (module docstring): ``(metric [n], {downstream index: gradient [n, pos, d_model]})``.

    ``resid0``: run from this residual stream entering block 0 instead of the clean prompts' (EAP-IG's
    interpolated inputs). ``on_gradient(v, gradient)``: called with each gradient as soon as it is computed,
    instead of keeping them all (the dict is then empty; memory stays that of one forward and backward pass)."""
    cfg = model.cfg
    g = edge_graph(model)
    index = {name: v for v, name in enumerate(g.downstream)}
    grads: dict[int, torch.Tensor] = {}

    def put(name: str, grad: torch.Tensor) -> None:
        if on_gradient is None:
            grads[index[name]] = grad.detach().float()
        else:
            on_gradient(index[name], grad.detach().float())

    mlp = cfg.d_mlp > 0
    probes: dict[str, torch.Tensor] = {}
    seen: dict[str, torch.Tensor] = {}

    def probe(x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        d = torch.zeros_like(x, requires_grad=True)
        y = x + d
        probes[ctx.name], seen[ctx.name] = d, y
        return y

    ivs: list[Any] = []
    if resid0 is not None:
        r0 = resid0.detach()
        ivs.append(Apply("blocks.0.hook_resid_pre", fn=lambda x, ctx: r0.to(x.dtype)))
    inputs = {f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)}
    if mlp:
        inputs |= {mlp_input_hook(model, layer) for layer in range(cfg.n_layers)}
    outs = [f"blocks.{layer}.attn.hook_{t}" for layer in range(cfg.n_layers) for t in QKV]
    if mlp:
        outs += [f"blocks.{layer}.hook_mlp_out" for layer in range(cfg.n_layers)]
    ivs += [Apply(h, fn=probe) for h in sorted(inputs) + outs]
    with torch.enable_grad():
        final = model.run(
            pairs.clean, attention_mask=pairs.run_mask(), grad=True, return_resid=True, interventions=ivs
        ).logits
        m = end_metric(model, pairs, final)
        got = torch.autograd.grad(m.sum(), [final] + [probes[h] for h in outs], retain_graph=True)
        d_out = dict(zip(outs, got[1:]))
        put("logits", got[0])
        heads = torch.arange(cfg.n_heads)
        for layer in range(cfg.n_layers):
            x = seen[f"blocks.{layer}.hook_resid_pre"]
            for t in QKV:
                name = f"blocks.{layer}.attn.hook_{t}"
                y, dy = seen[name], d_out[name]
                # every head's VJP in one batched backward pass: row h keeps only head h's output gradient
                go_ = torch.zeros((cfg.n_heads, *dy.shape), dtype=dy.dtype, device=dy.device)
                go_[heads, :, :, heads] = dy.movedim(2, 0)
                (gx,) = torch.autograd.grad(y, x, grad_outputs=go_, retain_graph=True, is_grads_batched=True)
                for h in range(cfg.n_heads):
                    put(f"{layer}.{h}.{t}", gx[h])
            if mlp:
                name = f"blocks.{layer}.hook_mlp_out"
                (gx,) = torch.autograd.grad(
                    seen[name], seen[mlp_input_hook(model, layer)], grad_outputs=d_out[name], retain_graph=True
                )
                put(f"MLP{layer}", gx)
    return m.detach(), grads


# ====================================================================================== EAP / EAP-IG


@dataclass
class EdgeAttributionResult(Result):
    """Edge scores ``[upstream, downstream]`` (NaN where no edge exists): the estimated change of the mean
    metric when only that edge carries the corrupt activation (EAP, or EAP-IG with ``ig_steps > 1``); the clean
    and corrupt per-prompt metrics; the circuits evaluated (top-k edges: size, metric, faithfulness); and, when
    computed, exact edge patching of some edges with the Spearman rank correlation."""

    KIND: ClassVar[str] = "edge_attribution"
    FILE: ClassVar[str] = "edges.json"

    upstream: list[str]
    downstream: list[str]
    scores: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    method: str = "eap"
    ig_steps: int = 1
    circuits: list[dict[str, Any]] = field(default_factory=list)
    exact: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    task: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def ranked(self, k: int | None = None) -> list[tuple[str, str, float]]:
        """The edges by |score|, largest first: ``(upstream, downstream, score)``."""
        s = self.scores.reshape(-1)
        ok = ~torch.isnan(s)
        idx = torch.nonzero(ok).reshape(-1)
        order = idx[s[idx].abs().argsort(descending=True)]
        if k is not None:
            order = order[:k]
        D = len(self.downstream)
        return [(self.upstream[i // D], self.downstream[i % D], float(s[i])) for i in order.tolist()]

    def headline(self) -> dict[str, Any]:
        h: dict[str, Any] = {
            "method": self.method,
            "ig_steps": self.ig_steps,
            "reference": self.settings.get("reference", "corrupt"),
            "n_edges": int((~torch.isnan(self.scores)).sum()),
            "metric_clean": round(float(self.clean_metric.mean()), 4),
            "metric_corrupt": round(float(self.corrupt_metric.mean()), 4),
            "top_edges": [[f"{u}->{v}", round(s, 5)] for u, v, s in self.ranked(10)],
        }
        if self.circuits:
            h["circuits"] = [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items() if k != "edges"}
                for c in self.circuits
            ]
        if self.exact:
            h["exact_spearman"] = self.exact.get("spearman")
            h["exact_n_edges"] = self.exact.get("n_edges")
        return h

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: upstream, downstream, score, |score| rank (1 = largest)."""
        import pandas as pd

        rows = [
            {"upstream": u, "downstream": v, "score": s, "rank": i + 1} for i, (u, v, s) in enumerate(self.ranked())
        ]
        return pd.DataFrame(rows)

    def plot(self) -> go.Figure:
        """The score matrix (upstream × downstream)."""
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Heatmap(
                z=[[float(f"{v:.4g}") for v in row] for row in self.scores.tolist()],  # 4 digits keep pages small
                x=self.downstream,
                y=self.upstream,
                colorscale="RdBu",
                zmid=0,
                hovertemplate="%{y} -> %{x}: %{z:.4g}<extra></extra>",
            )
        )
        fig.update_layout(
            title={"text": f"Edge scores ({self.method}) — {self.task} — {self.model_name}"},
            xaxis_title="downstream input",
            yaxis_title="upstream node",
            height=700,
        )
        return fig


def edge_attribution_patching(
    model: Model,
    pairs: PromptPairs,
    ig_steps: int = 1,
    top_k: Sequence[int] = (),
    reference: Reference = "corrupt",
    exact_edges: int = 0,
) -> EdgeAttributionResult:
    """EAP (``ig_steps=1``; Syed et al. 2023) or EAP-IG (``ig_steps=m > 1``; Hanna et al. 2024) edge scores on
    ``pairs`` (module docstring), and the faithfulness and size of the top-``k`` circuits for each ``k`` of
    ``top_k`` (edges outside the circuit carry the ``reference`` activation).

    Args:
        model: the model (not a family with a post-attention norm, e.g. Gemma 3).
        pairs: clean/corrupt prompt pairs with their metric (same token length per pair).
        ig_steps: interpolation steps of EAP-IG (1: plain EAP at the clean input; the paper uses 5).
        top_k: circuit sizes (edges) to evaluate.
        reference: what a corrupted edge carries, in the scores and in the circuits: ``"corrupt"`` (the corrupt
            run, Hanna et al.) or ``"mean"`` (per-template means of the corrupt prompts, as ``circuits.py``).
        exact_edges: also patch this many edges exactly (the top ones by |score|, :func:`exact_edge_patching`)
            and report the Spearman rank correlation of score and exact effect (0: none; -1: every edge).
    """
    check_edge_family(model)
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be at least 1 (1 = plain EAP), got {ig_steps}.")
    t0 = time.perf_counter()
    g = edge_graph(model)
    with torch.no_grad():
        m_clean, m_corrupt, cc, cx = baselines(model, pairs, upstream_hooks(model))
    ref = reference_cache(model, pairs, cx, reference)
    r_clean, r_ref = cc["blocks.0.hook_resid_pre"], ref["blocks.0.hook_resid_pre"]
    scores = _edge_scores(model, pairs, upstream_acts(model, ref), upstream_acts(model, cc), r_clean, r_ref, ig_steps)
    scores[~g.valid] = float("nan")
    res = EdgeAttributionResult(
        upstream=g.upstream,
        downstream=g.downstream,
        scores=scores,
        clean_metric=m_clean,
        corrupt_metric=m_corrupt,
        method="eap" if ig_steps == 1 else "eap-ig",
        ig_steps=ig_steps,
        model_name=model.name,
        task=pairs.task,
        settings={"reference": reference, "top_k": list(top_k)},
    )
    res.settings["seconds_scores"] = round(time.perf_counter() - t0, 3)
    for k in top_k:
        chosen = top_edges(scores, k)
        metric = float(edge_circuit_metric(model, pairs, chosen, ref, clean_cache=cc).mean())
        res.circuits.append(_circuit_summary(g, chosen, k, metric, m_clean))
    if top_k:
        empty = float(edge_circuit_metric(model, pairs, torch.zeros_like(g.valid), ref, clean_cache=cc).mean())
        for c in res.circuits:
            full = float(m_clean.mean())
            c["metric_empty"] = empty
            c["faithfulness_normalised"] = (c["metric"] - empty) / (full - empty) if full != empty else float("nan")
    if exact_edges:
        chosen = [(u, v) for u, v, _ in res.ranked(None if exact_edges < 0 else exact_edges)]
        pairs_idx = [(g.upstream.index(u), g.downstream.index(v)) for u, v in chosen]
        ex = exact_edge_patching(model, pairs, pairs_idx, clean_cache=cc, corrupt_cache=ref)
        est = torch.tensor([float(scores[u, v]) for u, v in pairs_idx])
        rho = spearman(est, ex) if len(ex) > 2 else float("nan")
        res.exact = {
            "n_edges": len(ex),
            "spearman": round(rho, 4),
            "edges": [f"{a}->{b}" for a, b in chosen],
            "exact": ex.tolist(),
            "estimate": est.tolist(),
        }
    res.settings["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _edge_scores(
    model: Model,
    pairs: PromptPairs,
    ref_acts: Sequence[torch.Tensor],
    clean_acts: Sequence[torch.Tensor],
    r_clean: torch.Tensor,
    r_ref: torch.Tensor,
    ig_steps: int,
) -> torch.Tensor:
    """``[U, D]``: Σ_pos (a_u(ref) − a_u(clean)) · ∂M/∂x_v, averaged over prompts and over the ``ig_steps``
    interpolated inputs ``r_ref + k/m (r_clean − r_ref)`` (the clean input alone when ``ig_steps == 1``)."""
    pm = pairs.mask.to(torch.float32)[:, :, None]
    A = torch.stack([(x - c) * pm for x, c in zip(ref_acts, clean_acts)]).reshape(len(ref_acts), -1)  # [U, n*p*d]
    scores = torch.zeros(len(ref_acts), len(edge_graph(model).downstream))
    w = 1.0 / (len(pairs) * ig_steps)

    def accumulate(v: int, grad: torch.Tensor) -> None:
        scores[:, v] += (A @ grad.reshape(-1)) * w

    for k in range(1, ig_steps + 1):
        r0 = None if ig_steps == 1 else r_ref + (k / ig_steps) * (r_clean - r_ref)
        input_gradients(model, pairs, r0, on_gradient=accumulate)
    return scores


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties get their average rank)."""
    import numpy as np
    from scipy.stats import rankdata

    ra, rb = rankdata(a.numpy()), rankdata(b.numpy())
    return float(np.corrcoef(ra, rb)[0, 1])


def top_edges(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The boolean ``[U, D]`` mask of the ``k`` edges with the largest |score| (NaN: no edge)."""
    s = scores.abs().nan_to_num(-1.0).reshape(-1)
    chosen = torch.zeros_like(s, dtype=torch.bool)
    k = max(0, min(k, int((~torch.isnan(scores)).sum())))
    if k:
        chosen[s.argsort(descending=True)[:k]] = True
    return chosen.view(scores.shape)


def _circuit_summary(
    g: EdgeGraph, chosen: torch.Tensor, k: int, metric: float, m_clean: torch.Tensor
) -> dict[str, Any]:
    full = float(m_clean.mean())
    nodes = set()
    for u, v in torch.nonzero(chosen).tolist():
        nodes.add(g.upstream[u])
        nodes.add(g.down_node(v))
    return {
        "top_k": k,
        "n_edges": int(chosen.sum()),
        "n_nodes": len(nodes),
        "metric": metric,
        "metric_full": full,
        "faithfulness": metric / full if full != 0 else float("nan"),
    }
