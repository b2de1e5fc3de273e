"""Exact edge patching and edge-circuit evaluation (the references of :mod:`~interplab.analyses.causal.edges`;
Hanna et al. 2024): the metric when one edge, or every edge outside a circuit, carries the corrupt (or mean)
activation, each downstream input computed from its own residual stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from interplab.analyses.causal.edge_graph import (
    QKV,
    check_edge_family,
    edge_graph,
    layer_downstream,
    mlp_input_hook,
    upstream_acts,
    upstream_hooks,
)
from interplab.analyses.causal.engine import end_metric
from interplab.hooks import Apply, Patch
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["edge_circuit_metric", "exact_edge_patching", "node_circuit_edges"]


def _run_layer(
    model: Model, resid: torch.Tensor, layer: int, cache: Sequence[str], interventions: Sequence[Any] = (), am=None
):
    """One block from ``resid`` (its hook_resid_pre): ``(resid_post, cache)``."""
    return model.run(
        resid,
        start_at_layer=layer,
        stop_at_layer=layer + 1,
        attention_mask=am,
        interventions=interventions,
        cache=list(cache),
        return_resid=layer + 1 == model.cfg.n_layers,
    )


def _stack_mask(mask: torch.Tensor | None, k: int) -> torch.Tensor | None:
    return None if mask is None else mask.repeat(k, 1)


@torch.no_grad()
def exact_edge_patching(
    model: Model,
    pairs: PromptPairs,
    edges: Sequence[tuple[int, int]],
    clean_cache: Mapping[str, torch.Tensor] | None = None,
    corrupt_cache: Mapping[str, torch.Tensor] | None = None,
    max_variants: int = 64,
) -> torch.Tensor:
    """The exact change of the mean metric when only edge ``(u, v)`` (indices into :func:`edge_graph`) carries
    the corrupt activation — ``v``'s input gets ``a_u(corrupt) − a_u(clean)`` added, everything else clean —
    for each edge: ``[len(edges)]`` (the scale of EAP scores). ``corrupt_cache``: the corrupt run's cache of the
    upstream hook points (or any reference of the same shapes, e.g. template means); ``clean_cache`` likewise for
    the clean run (each computed when missing); ``max_variants``: edges into one input per forward pass."""
    check_edge_family(model)
    cfg = model.cfg
    g = edge_graph(model)
    for u, v in edges:
        if not bool(g.valid[u, v]):
            raise ValueError(f"there is no edge {g.upstream[u]} -> {g.downstream[v]} in this model's graph.")
    mask = pairs.run_mask()
    n = len(pairs)
    resids = [f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)]
    mids = [mlp_input_hook(model, layer) for layer in range(cfg.n_layers)] if cfg.d_mlp else []
    if clean_cache is None:
        _, clean_cache = model.run(pairs.clean, cache=upstream_hooks(model), attention_mask=mask)
    if corrupt_cache is None:
        _, corrupt_cache = model.run(pairs.corrupt, cache=upstream_hooks(model), attention_mask=mask)
    final, cc = model.run(pairs.clean, cache=resids + mids, attention_mask=mask, return_resid=True)
    base = float(end_metric(model, pairs, final).mean())
    delta = [x - c for x, c in zip(upstream_acts(model, corrupt_cache), upstream_acts(model, clean_cache))]
    out = torch.empty(len(edges))
    by_v: dict[int, list[int]] = {}
    for i, (_, v) in enumerate(edges):
        by_v.setdefault(v, []).append(i)
    for v, idxs in by_v.items():
        name, layer = g.downstream[v], g.down_layer[v]
        for c0 in range(0, len(idxs), max_variants):
            chunk = idxs[c0 : c0 + max_variants]
            k = len(chunk)
            d = torch.cat([delta[edges[i][0]] for i in chunk])  # [k*n, p, d]
            if name == "logits":
                fin = final.repeat(k, 1, 1) + d.to(final.dtype)
                vals = end_metric(model, pairs, fin).view(k, n).mean(1)
            else:
                resid = cc[f"blocks.{layer}.hook_resid_pre"]
                rs = resid.repeat(k, 1, 1)
                am = _stack_mask(mask, k)
                if name.startswith("MLP"):
                    hook_in = mlp_input_hook(model, layer)
                    dd = d.to(rs.dtype)
                    add = Apply(hook_in, fn=lambda x, ctx, dd=dd: x + dd)
                    _, c1 = _run_layer(model, rs, layer, [f"blocks.{layer}.hook_mlp_out"], [add], am)
                    hk, heads = f"blocks.{layer}.hook_mlp_out", None
                else:
                    h, t = int(name.split(".")[1]), name.split(".")[2]
                    hk, heads = f"blocks.{layer}.attn.hook_{t}", [h]
                    _, c1 = _run_layer(model, rs + d.to(rs.dtype), layer, [hk], (), am)
                src = c1[hk]
                fin = model.run(
                    rs,
                    start_at_layer=layer,
                    attention_mask=am,
                    return_resid=True,
                    interventions=[Patch(hk, heads=heads, source=src)],
                ).logits
                vals = end_metric(model, pairs, fin).view(k, n).mean(1)
            out[torch.tensor(chunk)] = vals.float() - base
    return out


# ====================================================================================== circuits


@torch.no_grad()
def edge_circuit_metric(
    model: Model,
    pairs: PromptPairs,
    circuit: torch.Tensor,
    reference: Mapping[str, torch.Tensor],
    clean_cache: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-prompt metric ``[n]`` on the clean prompts when every edge outside ``circuit`` (a boolean ``[U, D]``
    mask over :func:`edge_graph`) carries the ``reference`` activation (a cache of the upstream hook points:
    the corrupt run's, or template means): ``x_v = x_v(run) + Σ_{u→v ∉ C} (a_u(ref) − a_u(run))``, computed
    layer by layer (each head's q, k and v from its own input; inputs that share the same missing edges are
    computed together)."""
    check_edge_family(model)
    cfg = model.cfg
    g = edge_graph(model)
    mask = pairs.run_mask()
    n = len(pairs)
    out_c = g.valid & ~circuit.to(torch.bool)  # edges carrying the reference
    ref = upstream_acts(model, reference)
    if clean_cache is None:
        _, clean_cache = model.run(pairs.clean, cache=["blocks.0.hook_resid_pre"], attention_mask=mask)
    resid = clean_cache["blocks.0.hook_resid_pre"].clone()
    run: list[torch.Tensor | None] = [None] * len(g.upstream)
    run[0] = resid.float()

    def missing(v: int) -> torch.Tensor | None:
        us = torch.nonzero(out_c[:, v]).reshape(-1).tolist()
        if not us:
            return None
        tot = torch.zeros_like(run[0])  # type: ignore[arg-type]
        for u in us:
            a = run[u]
            assert a is not None, g.edge_name(u, v)
            tot += ref[u] - a
        return tot

    H = cfg.n_heads
    for layer in range(cfg.n_layers):
        vs = layer_downstream(g, layer)
        qkv = [v for v in vs if not g.downstream[v].startswith("MLP")]
        groups: dict[bytes, list[int]] = {}
        for v in qkv:
            groups.setdefault(out_c[:, v].numpy().tobytes(), []).append(v)
        ivs: list[Any] = []
        needed = {key: vs_ for key, vs_ in groups.items() if out_c[:, vs_[0]].any()}
        if needed:
            keys = list(needed)
            ds = [missing(needed[key][0]) for key in keys]
            k = len(keys)
            rs = torch.cat([resid + dlt.to(resid.dtype) for dlt in ds if dlt is not None])
            names = [f"blocks.{layer}.attn.hook_{t}" for t in QKV]
            _, c1 = _run_layer(model, rs, layer, names, (), _stack_mask(mask, k))
            for t, hk in zip(QKV, names):
                full = c1[hk]  # [k*n, p, H, e]
                heads, srcs = [], []
                for gi, key in enumerate(keys):
                    for v in needed[key]:
                        h, tt = int(g.downstream[v].split(".")[1]), g.downstream[v].split(".")[2]
                        if tt == t:
                            heads.append(h)
                            srcs.append((h, full[gi * n : (gi + 1) * n, :, h]))
                if heads:
                    src = torch.zeros_like(full[:n])
                    for h, s in srcs:
                        src[:, :, h] = s
                    ivs.append(Patch(hk, heads=sorted(heads), source=src))
        want = [f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_attn_out"]
        if cfg.d_mlp:
            want.append(f"blocks.{layer}.hook_mlp_out")
        post, c2 = _run_layer(model, resid, layer, want, ivs, mask)
        res = c2[f"blocks.{layer}.attn.hook_result"]
        base_u = g.upstream.index(f"{layer}.0")
        for h in range(H):
            run[base_u + h] = res[:, :, h].float()
        if cfg.d_mlp:
            vm = g.downstream.index(f"MLP{layer}")
            dm = missing(vm)
            mlp_out = c2[f"blocks.{layer}.hook_mlp_out"]
            if dm is not None:
                dd = dm.to(resid.dtype)
                add = Apply(mlp_input_hook(model, layer), fn=lambda x, ctx, dd=dd: x + dd)
                _, c3 = _run_layer(model, resid, layer, [f"blocks.{layer}.hook_mlp_out"], [*ivs, add], mask)
                mlp_out = c3[f"blocks.{layer}.hook_mlp_out"]
                post = resid + c2[f"blocks.{layer}.hook_attn_out"] + mlp_out
            run[g.upstream.index(f"MLP{layer}")] = mlp_out.float()
        resid = post
    dl = missing(g.downstream.index("logits"))
    final = resid if dl is None else resid + dl.to(resid.dtype)
    return end_metric(model, pairs, final).float()


def node_circuit_edges(model: Model, nodes: Sequence[tuple[str, int, int | None]]) -> torch.Tensor:
    """The edge mask of a node-level circuit (:class:`~interplab.analyses.causal.circuits.CircuitResult`'s
    ``nodes``): every edge between kept nodes, from ``input`` and into ``logits``. With mean reference it gives
    the node-level circuit's metric (a removed node's every outgoing edge carries its mean)."""
    g = edge_graph(model)
    kept = {"input", "logits"}
    for kind, layer, h in nodes:
        kept.add(f"{layer}.{h}" if kind == "head" else f"MLP{layer}")
    up_ok = torch.tensor([u in kept for u in g.upstream])
    down_ok = torch.tensor([g.down_node(v) in kept for v in range(len(g.downstream))])
    return g.valid & up_ok[:, None] & down_ok[None, :]
