"""Head-level comparison of a base model and its fine-tune on the same tokens.

**Attention change** — for every head, the Jensen–Shannon divergence between the base and the tuned model's
attention distributions of each query position (``blocks.L.attn.hook_pattern``, one row per query)::

    JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M),   M = ½ (P + Q)      (bits: log base 2, so 0 ≤ JS ≤ 1)

averaged over the query rows ``1 .. n-1`` (row 0 can only attend to itself) and over the probe sequences
(Lin 1991, "Divergence measures based on the Shannon entropy"). Identical patterns give exactly 0.

**Cross-model activation patching (CMAP)** — Prakash et al. (2024), "Fine-Tuning Enhances Existing
Mechanisms: A Case Study on Entity Tracking" (ICLR): run the *base* model and replace one component's output by
the *tuned* model's output on the same input; a component "carries the change" when that moves the base model's
metric towards the tuned model's. Here a component is one head's write into the residual stream
(``blocks.L.attn.hook_result``, so a change of the head's ``W_O`` travels with it) or one MLP layer
(``blocks.L.hook_mlp_out``). For a metric ``M`` (mean next-token loss on text, or the IOI logit difference)::

    recovered(c) = (M_base[c ← tuned] − M_base) / (M_tuned − M_base)

1 = patching ``c`` alone turns the base model's metric into the tuned model's; 0 = no effect (also by
definition when ``M_tuned = M_base``). A component whose tuned output equals the base output exactly on every
token is not run: patching it is the identity, its value is 0. Heads of one layer are run as stacked variants
from the base model's cached residual stream entering that layer (:func:`interplab.analyses.causal.engine.run_variants`,
the engine of activation patching). ``M_base`` is the plain base run; a patched head's layer recomputes its output as
the sum of its heads' results, which moves the metric by float rounding only (~1e-6 relative).
``recovered_all_heads`` / ``recovered_all_mlps``: every head (every MLP) of every layer patched at once, one full
run each.

**Screen** (``exact=k``, for large models): every component's recovered fraction is first estimated by attribution
patching (Nanda 2023, "Attribution Patching"; Syed et al. 2023): ``Σ_tokens (out_tuned − out_base) ·
∂M/∂out`` at the base run over ``M_tuned − M_base``, one forward and one backward pass; only the ``k`` heads (and
``k // 4`` MLPs) with the largest ``|estimate|`` are then patched exactly, the others are reported as NaN in the
exact table and keep their estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from interplab.analyses.causal.engine import probe_gradients, run_variants, where_variants
from interplab.hooks import Apply, HookContext, Patch
from interplab.models.scoring import unembed_resid

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = ["CMAPResult", "VariantMetric", "attention_js", "cross_model_patching", "js_divergence", "loss_metric"]

VariantMetric = Callable[[torch.Tensor, int], torch.Tensor]
"""``metric(final_resid [k*n, pos, d_model], k) -> [k]``: the mean metric of each of ``k`` stacked variants of the
``n`` inputs, read from the residual stream entering the final norm."""

_LN2 = math.log(2.0)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence (bits) over the last dimension, float64; exactly 0 where ``p == q``."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)
    xl = torch.special.xlogy
    js = 0.5 * (xl(p, p) - xl(p, m)).sum(-1) + 0.5 * (xl(q, q) - xl(q, m)).sum(-1)
    return (js / _LN2).clamp_min(0.0)


def attention_js(base: Model, tuned: Model, tokens: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """``[n_layers, n_heads]`` mean Jensen–Shannon divergence (bits) between the two models' attention patterns
    on ``tokens`` ``[n, pos]`` (see the module docstring), ``batch`` sequences per forward pass."""
    cfg = base.cfg
    if tokens.shape[1] < 2:
        raise ValueError(f"attention JS needs at least 2 positions per sequence, got {tokens.shape[1]}.")
    total = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)

    def want(name: str) -> bool:
        return name.endswith("attn.hook_pattern")

    for s in range(0, tokens.shape[0], batch):
        chunk = tokens[s : s + batch]
        _, cb = base.run(chunk, cache=want)
        _, ct = tuned.run(chunk, cache=want)
        for layer in range(cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_pattern"
            js = js_divergence(cb[name][:, :, 1:], ct[name][:, :, 1:])  # [b, h, q-1]
            total[layer] += js.mean(-1).sum(0).cpu()
        del cb, ct
    return (total / tokens.shape[0]).float()


def loss_metric(model: Model, tokens: torch.Tensor) -> VariantMetric:
    """The mean next-token cross-entropy (nats) of each stacked variant of ``tokens`` ``[n, pos]``, unembedded
    one variant at a time through ``model``'s own head (differentiable, for the attribution screen)."""
    n = tokens.shape[0]

    def metric(final: torch.Tensor, k: int) -> torch.Tensor:
        tgt = tokens[:, 1:].to(final.device).flatten()
        out = []
        for v in range(k):
            logits = unembed_resid(model, final[v * n : (v + 1) * n, :-1])
            out.append(F.cross_entropy(logits.float().flatten(0, 1), tgt))
        return torch.stack(out).double()

    return metric


@dataclass
class CMAPResult:
    """Cross-model activation patching: ``heads`` ``[n_layers, n_heads]`` and ``mlps`` ``[n_layers]`` recovered
    fractions (NaN where not patched exactly: an MLP of a model without MLPs, or a component the attribution screen
    left out), ``heads_estimate`` / ``mlps_estimate`` the attribution estimates of every component (None without a
    screen), the metrics of the base and tuned runs and the all-heads / all-MLPs recovered fractions (see the
    module docstring)."""

    heads: torch.Tensor
    mlps: torch.Tensor
    metric_base: float
    metric_tuned: float
    recovered_all_heads: float
    recovered_all_mlps: float
    n_forward: int
    heads_estimate: torch.Tensor | None = None
    mlps_estimate: torch.Tensor | None = None

    def top_heads(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest recovered fraction, ``(layer, head, recovered)``, ties by position
        (heads not patched exactly last)."""
        vals = self.heads.flatten()
        H = self.heads.shape[1]
        order = vals.nan_to_num(float("-inf")).argsort(descending=True, stable=True)[:k].tolist()
        return [(i // H, i % H, float(vals[i])) for i in order]


Cell = tuple[str, int, int | None]  # ("head", layer, head) or ("mlp", layer, None)


def _attribution(
    base: Model,
    tokens: torch.Tensor,
    cells: list[Cell],
    cb: Any,
    ct: Any,
    metric: VariantMetric,
    denom: float,
    attention_mask: torch.Tensor | None,
) -> dict[Cell, float]:
    """First-order estimate of each cell's recovered fraction (attribution patching, Nanda 2023; Syed et al. 2023):
    ``sum over tokens of (tuned − base output) · dM/d(output)`` at the base run, divided by ``M_tuned − M_base``."""
    hooks = sorted({_cell_hook(c) for c in cells})
    _, _, grads = probe_gradients(
        base, tokens, hooks, lambda final: metric(final, 1), attention_mask=attention_mask, return_resid=True
    )
    out: dict[Cell, float] = {}
    for c in cells:
        h = _cell_hook(c)
        diff = (ct[h] - cb[h]) * grads[h]
        if c[0] == "head":
            out[c] = float(diff[:, :, c[2]].sum()) / denom
        else:
            out[c] = float(diff.sum()) / denom
    return out


def _cell_hook(c: Cell) -> str:
    return f"blocks.{c[1]}.attn.hook_result" if c[0] == "head" else f"blocks.{c[1]}.hook_mlp_out"


@torch.no_grad()
def cross_model_patching(
    base: Model,
    tuned: Model,
    tokens: torch.Tensor,
    metric: VariantMetric,
    tuned_metric: VariantMetric | None = None,
    attention_mask: torch.Tensor | None = None,
    mlps: bool = True,
    exact: int | None = None,
    max_batch_tokens: int = 4096,
) -> CMAPResult:
    """Patch each head's (and MLP layer's) output of ``tuned`` into ``base`` on ``tokens`` ``[n, pos]`` and read
    ``metric`` (Prakash et al. 2024; see the module docstring).

    Args:
        base: the model patched into.
        tuned: the model whose outputs are patched in (same architecture).
        tokens: the inputs of both runs.
        metric: the per-variant metric, read through ``base``'s final norm and unembedding (differentiable when
            ``exact`` screens).
        tuned_metric: the same metric read through ``tuned``'s head (default ``metric``) for ``M_tuned``.
        attention_mask: the padding mask of ``tokens`` (IOI prompts), or None.
        mlps: also patch each MLP layer.
        exact: patch only this many heads exactly (and ``max(1, exact // 4)`` MLPs), those with the largest
            attribution estimate ``|·|`` (one forward and backward pass); None: every head and MLP exactly.
        max_batch_tokens: at most this many tokens (variants x inputs x positions) per forward pass.
    """
    cfg = base.cfg
    L, H = cfg.n_layers, cfg.n_heads
    n, p = tokens.shape
    has_mlp = mlps and cfg.d_mlp > 0
    names_b = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{i}.attn.hook_result" for i in range(L)]
    names_t = [f"blocks.{i}.attn.hook_result" for i in range(L)]  # derived from hook_z when read
    if has_mlp:
        names_b += [f"blocks.{i}.hook_mlp_out" for i in range(L)]
        names_t += [f"blocks.{i}.hook_mlp_out" for i in range(L)]
    fb, cb = base.run(tokens, cache=names_b, attention_mask=attention_mask, return_resid=True)
    ft, ct = tuned.run(tokens, cache=names_t, attention_mask=attention_mask, return_resid=True)
    m_base = float(metric(fb, 1)[0])
    m_tuned = float((tuned_metric or metric)(ft, 1)[0])
    del fb, ft
    denom = m_tuned - m_base
    heads = torch.zeros(L, H, dtype=torch.float64)
    mlp_vals = torch.full((L,), float("nan") if not has_mlp else 0.0, dtype=torch.float64)
    n_fwd = 2
    cells: list[Cell] = []
    for layer in range(L):
        rb, rt = cb[f"blocks.{layer}.attn.hook_result"], ct[f"blocks.{layer}.attn.hook_result"]
        cells += [("head", layer, h) for h in range(H) if not torch.equal(rb[:, :, h], rt[:, :, h])]
        mname = f"blocks.{layer}.hook_mlp_out"
        if has_mlp and not torch.equal(cb[mname], ct[mname]):
            cells.append(("mlp", layer, None))
    est_h = est_m = None
    if denom != 0.0 and exact is not None:
        head_cells = [c for c in cells if c[0] == "head"]
        mlp_cells = [c for c in cells if c[0] == "mlp"]
        if len(head_cells) > exact or len(mlp_cells) > max(1, exact // 4):
            est = _attribution(base, tokens, cells, cb, ct, metric, denom, attention_mask)
            n_fwd += 2  # a forward and a backward pass
            est_h = torch.zeros(L, H, dtype=torch.float64)
            est_m = torch.zeros(L, dtype=torch.float64)
            for c, v in est.items():
                if c[0] == "head":
                    est_h[c[1], c[2]] = v
                else:
                    est_m[c[1]] = v
            keep = sorted(head_cells, key=lambda c: -abs(est[c]))[:exact]
            keep += sorted(mlp_cells, key=lambda c: -abs(est[c]))[: max(1, exact // 4)]
            kept = set(keep)
            for c in set(cells) - kept:
                if c[0] == "head":
                    heads[c[1], c[2]] = float("nan")
                else:
                    mlp_vals[c[1]] = float("nan")
            cells = [c for c in cells if c in kept]
    if denom != 0.0:
        per_fwd = max(1, max_batch_tokens // max(1, n * p))
        by_layer: dict[int, list[Cell]] = {}
        for c in cells:
            by_layer.setdefault(c[1], []).append(c)
        for layer, layer_cells in by_layer.items():
            rname, mname = f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_mlp_out"
            resid = cb[f"blocks.{layer}.hook_resid_pre"]
            for g0 in range(0, len(layer_cells), per_fwd):
                group = layer_cells[g0 : g0 + per_fwd]
                k = len(group)
                head_sel = torch.zeros(k, 1, 1, H, 1, dtype=torch.bool)
                mlp_sel = torch.zeros(k, 1, 1, 1, dtype=torch.bool)
                for v, (kind, _, h) in enumerate(group):
                    if kind == "head":
                        head_sel[v, 0, 0, h, 0] = True
                    else:
                        mlp_sel[v] = True
                ivs = []
                if bool(head_sel.any()):
                    ivs.append(Apply(rname, fn=_stacked(k, head_sel, ct[rname])))
                if bool(mlp_sel.any()):
                    ivs.append(Apply(mname, fn=_stacked(k, mlp_sel, ct[mname])))
                final = run_variants(base, resid, layer, k, ivs, attention_mask=attention_mask, return_resid=True)
                n_fwd += 1
                vals = metric(final, k)
                for v, (kind, _, h) in enumerate(group):
                    r = (float(vals[v]) - m_base) / denom
                    if kind == "head":
                        heads[layer, h] = r
                    else:
                        mlp_vals[layer] = r
    all_heads = all_mlps = 0.0
    if denom != 0.0:
        ivs = [Patch(f"blocks.{i}.attn.hook_result", source=ct) for i in range(L)]
        f_all, _ = base.run(tokens, interventions=ivs, attention_mask=attention_mask, return_resid=True)
        all_heads = (float(metric(f_all, 1)[0]) - m_base) / denom
        n_fwd += 1
        if has_mlp:
            ivs = [Patch(f"blocks.{i}.hook_mlp_out", source=ct) for i in range(L)]
            f_all, _ = base.run(tokens, interventions=ivs, attention_mask=attention_mask, return_resid=True)
            all_mlps = (float(metric(f_all, 1)[0]) - m_base) / denom
            n_fwd += 1
    return CMAPResult(
        heads=heads.float(),
        mlps=mlp_vals.float(),
        metric_base=m_base,
        metric_tuned=m_tuned,
        recovered_all_heads=all_heads,
        recovered_all_mlps=all_mlps if has_mlp else float("nan"),
        n_forward=n_fwd,
        heads_estimate=est_h.float() if est_h is not None else None,
        mlps_estimate=est_m.float() if est_m is not None else None,
    )


def _stacked(k: int, mask: torch.Tensor, source: torch.Tensor) -> Callable[[torch.Tensor, HookContext], torch.Tensor]:
    """An :class:`~interplab.hooks.Apply` function writing ``source`` into the stacked variants where ``mask``
    ``[k, ...]`` is True (:func:`~interplab.analyses.causal.engine.where_variants`)."""

    def fn(x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        return where_variants(x, k, mask, source)

    return fn
