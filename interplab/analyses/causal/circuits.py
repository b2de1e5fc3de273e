"""Automated circuit discovery and the IOI procedure.

:func:`discover_circuit` is ACDC-style pruning (Conmy et al. 2023, "Towards Automated Circuit
Discovery for Mechanistic Interpretability") over the graph whose nodes are attention heads
(``hook_z``, one head each) and MLP layers (``hook_mlp_out``), run natively on every supported
family (GQA included — a node is a query head; its key/value head is shared and left intact).
Starting from the full model, nodes are visited from the output backwards (layer by layer, the MLP
before the heads of its layer) and a node is *removed* — mean-ablated — when that changes the task
metric by less than ``threshold`` × |metric of the full model|. Ablation is mean ablation over the
corrupt (for IOI: p_ABC) prompts of the same template at each position (Wang et al. 2022's choice),
so the circuit is judged on the clean prompts with everything outside it replaced by its average.
This is the node-level variant of ACDC: edges are not pruned one by one; the reported edges are the
residual-stream connections between kept nodes (every earlier node to every later one), each scored
by path patching when ``edge_scores=True`` (heads → heads' queries/keys/values).

Faithfulness = mean metric with everything outside the circuit ablated / mean metric of the full
model (Wang et al.'s F(C)/F(M)). The fast path reuses everything before the visited layer: while the
layer-L nodes are visited every earlier node is still in the circuit, so the run starts at layer L
from the clean residual stream, and only each prompt's END position is unembedded.

:func:`ioi_circuit` runs the IOI procedure of Wang et al. on a model: logit difference, the fraction
of prompts preferring IO, head classes (name movers by direct logit attribution and END→IO
attention; S-inhibition heads by path patching into the name movers' queries; induction,
duplicate-token and previous-token heads by the detectors of :mod:`interplab.analyses.observational.heads`), and
the circuit found by :func:`discover_circuit` with its faithfulness.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interplab.analyses.causal.patching import _end_metric, activation_patching, path_patching, probe_gradients
from interplab.hooks import Patch
from interplab.io.results import read_json, write_json
from interplab.models.model import Model
from interplab.tasks.pairs import PromptPairs

Node = tuple[str, int, int | None]  # ("head", layer, head) | ("mlp", layer, None)
RESULT_FILE = "circuit.json"


def node_name(node: Node) -> str:
    kind, layer, h = node
    return f"{layer}.{h}" if kind == "head" else f"MLP{layer}"


def all_nodes(model: Model, mlps: bool = True) -> list[Node]:
    cfg = model.cfg
    nodes: list[Node] = [("head", layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    if mlps and cfg.d_mlp:
        nodes += [("mlp", layer, None) for layer in range(cfg.n_layers)]
    return nodes


def _node_hook(node: Node) -> str:
    kind, layer, _ = node
    return f"blocks.{layer}.attn.hook_z" if kind == "head" else f"blocks.{layer}.hook_mlp_out"


def template_means(pairs: PromptPairs, cache, hooks: Sequence[str]) -> dict[str, torch.Tensor]:
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


def _ablations(nodes_out: Sequence[Node], ref: dict[str, torch.Tensor]) -> list[Patch]:
    heads: dict[int, list[int]] = {}
    ivs = []
    for kind, layer, h in nodes_out:
        if kind == "head":
            heads.setdefault(layer, []).append(h)
        else:
            hk = f"blocks.{layer}.hook_mlp_out"
            ivs.append(Patch(hk, source=ref[hk]))
    for layer, hs in heads.items():
        hk = f"blocks.{layer}.attn.hook_z"
        ivs.append(Patch(hk, heads=sorted(hs), source=ref[hk]))
    return ivs


@dataclass
class CircuitResult:
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
        return [[layer, h] for kind, layer, h in self.nodes if kind == "head"]

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

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"node": node_name(n), "kind": n[0], "layer": n[1], "head": n[2]} for n in self.nodes])

    def plot(self):
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "circuit",
            "format_version": 1,
            "model": self.model_name,
            "task": self.task,
            "nodes": [list(n) for n in self.nodes],
            "edges": [list(e) for e in self.edges],
            "metric_full": self.metric_full,
            "metric_circuit": self.metric_circuit,
            "metric_empty": self.metric_empty,
            "faithfulness": self.faithfulness,
            "n_candidates": self.n_candidates,
            "threshold": self.threshold,
            "removed_effects": self.removed_effects,
            "settings": self.settings,
            "headline": self.headline(),
        }

    def save(self, directory: str | Path, name: str = RESULT_FILE) -> Path:
        return write_json(directory, name, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CircuitResult:
        d, _ = read_json(path, RESULT_FILE, "circuit")
        return cls(
            nodes=[tuple(n) for n in d["nodes"]],
            edges=[tuple(e) for e in d["edges"]],
            metric_full=d["metric_full"],
            metric_circuit=d["metric_circuit"],
            metric_empty=d["metric_empty"],
            faithfulness=d["faithfulness"],
            n_candidates=d["n_candidates"],
            threshold=d["threshold"],
            removed_effects=d["removed_effects"],
            model_name=d["model"],
            task=d["task"],
            settings=d["settings"],
        )


@torch.no_grad()
def circuit_metric(
    model: Model,
    pairs: PromptPairs,
    removed: Sequence[Node],
    ref: dict[str, torch.Tensor],
    start: int = 0,
    resid_cache=None,
) -> float:
    """Mean metric on the clean prompts with ``removed`` nodes mean-ablated (starting at layer ``start``
    from ``resid_cache`` when given: valid only if no node before ``start`` is removed)."""
    return _circuit_run(model, pairs, removed, ref, start, resid_cache)[0]


@torch.no_grad()
def _circuit_run(
    model: Model,
    pairs: PromptPairs,
    removed: Sequence[Node],
    ref: dict[str, torch.Tensor],
    start: int = 0,
    resid_cache=None,
    cache: Sequence[str] = (),
):
    """:func:`circuit_metric` and the same run's activations ``cache`` (one forward pass for both)."""
    ivs = _ablations(removed, ref)
    mask = pairs.run_mask()
    if resid_cache is not None and start > 0:
        final, store = model.run(
            resid_cache[f"blocks.{start}.hook_resid_pre"],
            start_at_layer=start,
            return_resid=True,
            attention_mask=mask,
            interventions=ivs,
            cache=list(cache),
        )
    else:
        final, store = model.run(
            pairs.clean, return_resid=True, attention_mask=mask, interventions=ivs, cache=list(cache)
        )
    return float(_end_metric(model, pairs, final).mean()), store


def _attribution_node_effects(
    model: Model, pairs: PromptPairs, nodes: Sequence[Node], ref: dict[str, torch.Tensor]
) -> dict[Node, float]:
    """First-order estimate of the mean-metric change when each node alone is mean-ablated:
    ``sum over positions of (ref − clean) · dM/d(activation)``, averaged over prompts."""
    hooks = sorted({_node_hook(nd) for nd in nodes})
    _, vals, grads = probe_gradients(
        model,
        pairs.clean,
        hooks,
        lambda final: _end_metric(model, pairs, final).mean(),
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
    """ACDC-style node pruning (see the module docstring). ``threshold``: a node is removed when removing
    it changes the mean metric by less than ``threshold × |full-model metric|``. ``candidates``: the
    nodes that may be pruned (default: every head and MLP); others stay in.

    ``screen``: before the exact pass, every node's ablation effect is estimated by attribution
    patching (Nanda 2023; one forward and backward pass) and nodes whose estimated |effect| is below
    ``screen × threshold × |full metric|`` are removed together (the exact pass then starts from that
    state; the final metric and faithfulness are always exact). If removing the screened nodes together
    moves the metric by ``threshold × |full metric|`` or more, the screen is discarded and every node is
    visited exactly (attribution misses effects through saturated attention — Kramár et al. 2024).
    ``None`` disables screening."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}.")
    t0 = time.perf_counter()
    cfg = model.cfg
    nodes = list(candidates) if candidates is not None else all_nodes(model, mlps)
    for kind, layer, h in nodes:
        if (
            not 0 <= layer < cfg.n_layers
            or (kind == "head" and not 0 <= h < cfg.n_heads)
            or kind not in ("head", "mlp")
        ):
            raise ValueError(
                f"node {(kind, layer, h)} does not exist in a model with {cfg.n_layers} layers x {cfg.n_heads} heads."
            )
    hooks = sorted({_node_hook(n) for n in all_nodes(model, mlps)})
    resids = [f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)]
    _, cx = model.run(pairs.corrupt, cache=hooks, attention_mask=pairs.run_mask())
    ref = template_means(pairs, cx, hooks)
    full, cc = _circuit_run(model, pairs, [], ref, cache=resids)  # the full model's metric and residual stream
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
        current, cc = _circuit_run(model, pairs, removed, ref, cache=resids)
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
        heads = [(n[1], n[2]) for n in kept if n[0] == "head"]
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


# ====================================================================================== IOI


@dataclass
class IOIResult:
    logit_diff: torch.Tensor  # [n] clean
    corrupt_logit_diff: torch.Tensor
    classes: dict[str, list[list[int]]]
    circuit: CircuitResult | None
    patching: Any = None  # PatchingResult of heads at END
    dla: torch.Tensor | None = None  # [L, H] mean direct effect on the logit difference
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # END -> IO / S1 / S2 [L, H]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        ld = self.logit_diff
        h = {
            "model": self.model_name,
            "n": int(ld.numel()),
            "logit_diff_mean": round(float(ld.mean()), 4),
            "logit_diff_std": round(float(ld.std()), 4) if ld.numel() > 1 else 0.0,
            "io_preferred_frac": round(float((ld > 0).float().mean()), 4),
            "corrupt_logit_diff_mean": round(float(self.corrupt_logit_diff.mean()), 4),
            "heads": self.classes,
        }
        if self.circuit is not None:
            h["circuit"] = {
                "heads": self.circuit.heads,
                "mlps": self.circuit.mlps,
                "faithfulness": round(self.circuit.faithfulness, 4),
                "n_nodes": len(self.circuit.nodes),
            }
        return h

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        if self.circuit is not None:
            self.circuit.save(d)
        if self.patching is not None:
            self.patching.save(d, "patching_heads_end.json")
        data = {
            "kind": "ioi",
            "format_version": 1,
            "logit_diff": self.logit_diff.tolist(),
            "corrupt_logit_diff": self.corrupt_logit_diff.tolist(),
            "classes": self.classes,
            "dla": None if self.dla is None else self.dla.tolist(),
            "attention": {k: v.tolist() for k, v in self.attention.items()},
            "settings": self.settings,
            "headline": self.headline(),
        }
        return write_json(d, "ioi.json", data)


def _ioi_attention_and_dla(model: Model, pairs: PromptPairs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """END→IO/S1/S2 attention per head, and each head's direct logit attribution on logit(IO) − logit(S)
    (:func:`~interplab.analyses.observational.dla.direct_logit_attribution`, final norm frozen — Wang et al.'s
    name-mover criterion), both averaged over prompts."""
    from interplab.analyses.observational.dla import direct_logit_attribution

    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    n = len(pairs)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(L)]
    att = {k: torch.zeros(L, H) for k in ("IO", "S1", "S2")}
    rows = torch.arange(n)
    end = pairs.positions["END"]
    with torch.no_grad():
        _, cache = model.run(pairs.clean, cache=names, attention_mask=pairs.run_mask())
        for layer in range(L):
            pat = cache[f"blocks.{layer}.attn.hook_pattern"][rows, :, end]  # [n, H, k]
            for k in att:
                att[k][layer] = pat[rows, :, pairs.positions[k]].mean(0)
    del cache
    dla = torch.zeros(L, H)
    for i in range(n):
        length = int(pairs.mask[i].sum())
        r = direct_logit_attribution(model, pairs.clean[i, :length], int(pairs.answer_ids[i]), int(pairs.wrong_ids[i]))
        dla += r.heads / n
    return att, dla


def ioi_circuit(
    model: Model,
    pairs: PromptPairs,
    threshold: float = 0.02,
    n_name_movers: int = 5,
    detector_seqs: int = 16,
    circuit: bool = True,
    mlps: bool = True,
    head_scores_result=None,
) -> IOIResult:
    """The IOI procedure of Wang et al. (2022) on ``model`` (see the module docstring)."""
    from interplab.analyses.observational.heads import head_scores

    t0 = time.perf_counter()
    if "IO" not in pairs.positions or "S2" not in pairs.positions:
        raise ValueError("ioi_circuit needs IOI pairs with IO/S1/S2/END positions (interplab.tasks.ioi.ioi).")
    att, dla = _ioi_attention_and_dla(model, pairs)
    H = model.cfg.n_heads
    flat = dla.reshape(-1)
    io_pref = (att["IO"] > att["S1"] + att["S2"]).reshape(-1)
    nm = [i for i in flat.argsort(descending=True).tolist() if flat[i] > 0 and io_pref[i]][:n_name_movers]
    neg = [i for i in flat.argsort().tolist() if flat[i] < 0 and io_pref[i]][: max(1, n_name_movers // 2)]
    name_movers = [[i // H, i % H] for i in nm]
    negative = [[i // H, i % H] for i in neg if flat[i] < -0.1 * float(flat[nm[0]] if nm else 1)]
    # S-inhibition: heads before the first name mover, attending END->S2, that matter at END (denoising),
    # confirmed by path patching into the name movers' queries.
    patch = activation_patching(model, pairs, grid="heads", position="END", n_boot=200)
    ld, ldx = patch.clean_metric, patch.corrupt_metric  # the clean / corrupt logit differences [n]
    first_nm = min((a for a, _ in name_movers), default=model.cfg.n_layers)
    cand = [(layer, h) for layer in range(first_nm) for h in range(H) if att["S2"][layer, h] > att["IO"][layer, h]]
    cand = sorted(cand, key=lambda x: -abs(float(patch.values[x[0], x[1]])))[:8]
    s_inhib: list[list[int]] = []
    if cand and name_movers:
        pp = path_patching(
            model,
            pairs,
            senders=cand,
            receivers=[tuple(x) for x in name_movers],
            receiver_input="q",
            receiver_position="END",
        )
        eff = (1 - pp.values).sum(-1)  # summed effect over the name movers
        s_inhib = [[a, b] for (a, b), e in zip(cand, eff.tolist()) if e > 0.05]
    hs = head_scores_result or head_scores(model, n_seqs=detector_seqs, copying=False)
    # strong direct effect without attending to IO (e.g. a head that attends to S2 and suppresses S)
    floor = float(flat[nm[-1]]) if nm else 0.0
    other = [
        [i // H, i % H]
        for i in flat.argsort(descending=True).tolist()[: 3 * n_name_movers]
        if flat[i] > max(floor, 0.0) and not io_pref[i]
    ]
    classes = {
        "name_movers": name_movers,
        "negative_name_movers": negative,
        "s_inhibition": s_inhib,
        "direct_not_io": other,
    }
    for c in ("induction", "duplicate_token", "previous_token"):
        classes[c] = [[a, b] for a, b, _ in hs.members(c)] if c in hs.scores else []
    circ = discover_circuit(model, pairs, threshold=threshold, mlps=mlps) if circuit else None
    return IOIResult(
        logit_diff=ld,
        corrupt_logit_diff=ldx,
        classes=classes,
        circuit=circ,
        patching=patch,
        dla=dla,
        attention=att,
        model_name=model.name,
        settings={
            "threshold": threshold,
            "n": len(pairs),
            "seconds": round(time.perf_counter() - t0, 3),
            "name_mover_rule": "top positive direct logit attribution with END->IO attention > END->S1 + END->S2",
            "direct_not_io_rule": "direct logit attribution above the weakest name mover, END->IO attention not dominant",
            "s_inhibition_rule": "earlier head attending END->S2 more than IO, path-patching effect > 0.05 via name movers' queries",
        },
    )
