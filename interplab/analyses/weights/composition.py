"""Q-, K- and V-composition scores between attention heads, read off the weights, with a random-matrix
baseline (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits",
https://transformer-circuits.pub/2021/framework/index.html; TransformerLens's ``all_composition_scores``).

Per head ``h`` of layer ``l`` (row-vector residual stream): ``W_OV = W_V W_O``, ``W_QK = W_Q W_K^T``
(``[d_model, d_model]``, rank <= d_head). Head ``h1`` in layer ``l1`` writes, head ``h2`` in a later layer
``l2 > l1`` reads; same-layer and backward pairs are NaN::

    score(M_left, M_right) = ||M_left M_right||_F / (||M_left||_F ||M_right||_F)
    Q:  M_left = W_OV(h1), M_right = W_QK(h2)      (h1's output feeds h2's queries)
    K:  M_left = W_OV(h1), M_right = W_QK(h2)^T    (... h2's keys)
    V:  M_left = W_OV(h1), M_right = W_OV(h2)      (... h2's values)

Computation (no d_model x d_model matrix per *pair*):
``||M_left M_right||_F^2 = tr(M_right^T M_left^T M_left M_right) = <M_left^T M_left, M_right M_right^T>_F``,
so each head contributes one symmetric Gram matrix per role — writer ``W_OV^T W_OV``, readers
``W_QK W_QK^T`` (Q), ``W_QK^T W_QK`` (K), ``W_OV W_OV^T`` (V), each built from d_head-sized factors
(e.g. ``W_O^T (W_V^T W_V) W_O``) — and all pairs of two layers are one matrix product of packed upper
triangles (``method="gram"``, d(d+1)/2 multiply-adds per pair). For models too large for that, the
same numbers come from ``[d_model, d_head]`` factors ``X`` with ``X X^T`` = the Gram matrix, as
``||X1^T X2||_F^2`` (``method="factored"``, d_head^2 d_model per pair). ``||M||_F^2`` is a Gram trace.

**Random baseline**: the score of ``(A1 B1, A2 B2)`` with independent standard-Gaussian factors of
the same shapes (``[d_model, d_head] @ [d_head, d_model]``), mean and std over ``n_baseline`` samples
(one sample set serves all three kinds: their matrices have the same shapes). The score is
invariant to rescaling either matrix, so matching the norms of the real factors changes nothing;
only d_model and d_head matter (the mean is close to ``1/sqrt(d_model)``: for independent random
matrices ``E||M1 M2||^2 / (||M1||^2 ||M2||^2) ~ 1/d_model``). A z-score ``(score - mean) / std``
says how far a pair stands above chance.

Norms are folded into the weights as :mod:`interplab.models.folding` describes (``fold_norms=False``:
raw weights). **Rotary** models: ``W_Q W_K^T`` is the QK circuit at relative distance 0 (rotary rotates
q and k by the position; TransformerLens ignores it the same way). **Grouped-query attention**: K and V
are expanded per query head (query head ``h`` uses KV head ``h // (n_heads / n_kv_heads)``, as HF's
``repeat_kv``), so all query heads of one KV group share W_K and W_V: as readers, their V-composition
differs only through their W_O, and their K-composition only through their W_Q (the K reader's Gram
matrix is ``W_K (W_Q^T W_Q) W_K^T``). Every score is per query head, shape ``[L, H, L, H]``.

>>> comp = composition_scores(model)
>>> comp.headline()["K"]["top"][:3]     # [[l1, h1, l2, h2, score, z], ...]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import torch

from interplab.io.results import Result
from interplab.models.folding import FoldedWeights, folded_weights
from interplab.runtime import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "KINDS",
    "CompositionKind",
    "CompositionMethod",
    "CompositionResult",
    "composition_scores",
    "random_composition_baseline",
]

CompositionKind = Literal["Q", "K", "V"]
CompositionMethod = Literal["auto", "gram", "factored"]
KINDS: tuple[CompositionKind, ...] = ("Q", "K", "V")


def random_composition_baseline(d_model: int, d_head: int, n_samples: int = 200, seed: int = 0) -> torch.Tensor:
    """The random baseline of the module docstring (Elhage et al. 2021): composition scores of ``n_samples``
    pairs of random rank-``d_head`` matrices
    ``(A1 B1, A2 B2)`` with standard-Gaussian factors ``A [d_model, d_head]``, ``B [d_head, d_model]``.
    Computed through d_head x d_head Gram matrices: ``||A1 M B2||^2 = tr(M^T A1^T A1 M B2 B2^T)``
    with ``M = B1 A2``. The distribution is the same for Q-, K- and V-composition (same shapes)."""
    g = torch.Generator().manual_seed(seed)
    d, e = d_model, d_head
    out = []
    for start in range(0, n_samples, 50):
        n = min(50, n_samples - start)
        A1, A2 = torch.randn(2, n, d, e, generator=g)
        B1, B2 = torch.randn(2, n, e, d, generator=g)
        Ga1, Ga2 = (A1.mT @ A1).double(), (A2.mT @ A2).double()  # [n, e, e]
        Gb1, Gb2 = (B1 @ B1.mT).double(), (B2 @ B2.mT).double()
        M = (B1 @ A2).double()
        num = (Ga1 @ M * (M @ Gb2)).sum((-2, -1))
        out.append((num / ((Ga1 * Gb1).sum((-2, -1)) * (Ga2 * Gb2).sum((-2, -1)))).sqrt())
    return torch.cat(out).float()


def _grams(fw: FoldedWeights, layer: int) -> dict[str, torch.Tensor]:
    """Per head of ``layer`` the d_model x d_model Gram matrices that composition needs, each built
    from d_head-sized factors: writer ``W_OV^T W_OV = W_O^T (W_V^T W_V) W_O``; readers
    ``Q: W_QK W_QK^T = W_Q (W_K^T W_K) W_Q^T``, ``K: W_QK^T W_QK = W_K (W_Q^T W_Q) W_K^T``,
    ``V: W_OV W_OV^T = W_V (W_O W_O^T) W_V^T``. ``[H, d, d]`` each."""
    Wq, Wk, Wv, Wo = fw.W_Q[layer], fw.W_K[layer], fw.W_V[layer], fw.W_O[layer]
    return {
        "W": Wo.mT @ (Wv.mT @ Wv) @ Wo,
        "Q": Wq @ (Wk.mT @ Wk) @ Wq.mT,
        "K": Wk @ (Wq.mT @ Wq) @ Wk.mT,
        "V": Wv @ (Wo @ Wo.mT) @ Wv.mT,
    }


def _composition(fw: FoldedWeights, kinds: Sequence[CompositionKind] = KINDS) -> dict[str, torch.Tensor]:
    """All composition scores ``[L, H, L, H]`` through Gram matrices: for ``M_left = W_OV(h1)`` and a
    right matrix ``R``, ``||M_left R||_F^2 = tr(R^T W_OV^T W_OV R) = <W_OV^T W_OV, R R^T>_F`` — a dot
    product of two symmetric d x d matrices, taken over their packed upper triangles (off-diagonal
    entries weighted by sqrt(2)), so all pairs of two layers are one matrix product; and
    ``||M||_F^2`` is the trace of its Gram matrix. Cost per pair: d(d+1)/2 multiply-adds."""
    L, H, d, _ = fw.W_Q.shape
    iu = torch.triu_indices(d, d)
    flat = iu[0] * d + iu[1]
    w2 = torch.where(iu[0] == iu[1], 1.0, 2.0).to(fw.W_Q.dtype)  # <A, B> = sum_diag a b + 2 sum_upper a b

    def pack(G, weight=False):  # [H, d, d] -> [H, d(d+1)/2]
        p = G.reshape(G.shape[0], -1).index_select(1, flat)
        return p.mul_(w2) if weight else p

    P = iu.shape[1]
    writers = torch.empty((max(L - 1, 0) * H, P), dtype=fw.W_Q.dtype)  # packed writer Grams, filled layer by layer
    w_norm = torch.empty(max(L - 1, 0) * H, dtype=fw.W_Q.dtype)
    scores = {kind: torch.full((L, H, L, H), float("nan")) for kind in kinds}
    for layer in range(L):
        g = _grams(fw, layer)
        if layer > 0:  # this layer reads: pair it with every earlier writer
            reader = torch.cat([pack(g[k]) for k in kinds])  # [n_kinds * H, P]
            r_norm = torch.cat([g[k].diagonal(dim1=-2, dim2=-1).sum(-1) for k in kinds]).clamp_min(0).sqrt()
            prod = writers[: layer * H] @ reader.T  # [layer * H, n_kinds * H]
            s = prod.clamp_min(0).sqrt() / (w_norm[: layer * H, None] * r_norm[None, :])
            s[~torch.isfinite(s)] = 0.0  # a head with an all-zero circuit composes with nothing
            s = s.view(layer, H, len(kinds), H)
            for i, kind in enumerate(kinds):
                scores[kind][:layer, :, layer] = s[:, :, i].float()
        if layer < L - 1:
            writers[layer * H : (layer + 1) * H] = pack(g["W"], weight=True)
            w_norm[layer * H : (layer + 1) * H] = g["W"].diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(0).sqrt()
        del g
    return scores


def _factors(fw: FoldedWeights, layer: int) -> dict[str, torch.Tensor]:
    """``[H, d, e]`` factors ``X`` with ``X X^T`` equal to the Gram matrices of :func:`_grams`, from
    QR decompositions ``W = Q R`` (so ``W^T W = R^T R``): writer ``W_O^T R_V^T``, readers
    ``Q: W_Q R_K^T``, ``K: W_K R_Q^T``, ``V: W_V R_O^T`` (``R_O`` from ``W_O^T``)."""
    Wq, Wk, Wv, Wo = fw.W_Q[layer], fw.W_K[layer], fw.W_V[layer], fw.W_O[layer]
    with torch_threads(1):
        Rq, Rk, Rv, Ro = (torch.linalg.qr(w).R for w in (Wq, Wk, Wv, Wo.mT))
    return {"W": Wo.mT @ Rv.mT, "Q": Wq @ Rk.mT, "K": Wk @ Rq.mT, "V": Wv @ Ro.mT}


def _composition_factored(fw: FoldedWeights, kinds: Sequence[CompositionKind] = KINDS) -> dict[str, torch.Tensor]:
    """Same scores as :func:`_composition` without any d x d matrix: ``<X1 X1^T, X2 X2^T>_F =
    ||X1^T X2||_F^2`` with the ``[d, e]`` factors of :func:`_factors`; cost per pair d_head^2 * d_model
    multiply-adds, memory O(heads * d_model * d_head). Used for models whose packed Gram matrices
    would not fit in ``_GRAM_BYTES``."""
    L, H, d, _ = fw.W_Q.shape
    scores = {kind: torch.full((L, H, L, H), float("nan")) for kind in kinds}
    writers, w_norm = [], []
    for layer in range(L):
        f = _factors(fw, layer)
        e = f["W"].shape[-1]
        if layer > 0:
            reader = torch.cat([f[k].permute(1, 0, 2).reshape(d, H * e) for k in kinds], 1)  # [d, n_kinds*H*e]
            r_norm = torch.cat([f[k].square().sum((-2, -1)) for k in kinds]).sqrt()
            prod = (torch.cat(writers, 1).T @ reader).square_()  # [layer*H*e, n_kinds*H*e]
            sq = prod.view(layer * H, e, len(kinds) * H, e).sum((1, 3))
            s = sq.sqrt() / (torch.cat(w_norm)[:, None] * r_norm[None, :])
            s[~torch.isfinite(s)] = 0.0
            s = s.view(layer, H, len(kinds), H)
            for i, kind in enumerate(kinds):
                scores[kind][:layer, :, layer] = s[:, :, i].float()
        if layer < L - 1:
            writers.append(f["W"].permute(1, 0, 2).reshape(d, H * e))
            w_norm.append(f["W"].square().sum((-2, -1)).sqrt())
    return scores


_GRAM_BYTES = 1 << 30


@dataclass
class CompositionResult(Result):
    """Q-, K- and V-composition scores between every pair of heads (writer ``l1, h1`` → reader
    ``l2, h2``, ``l1 < l2``), ``scores[kind][l1, h1, l2, h2]`` (NaN elsewhere), with the random-matrix
    baseline (mean, std per kind) — see the module docstring for definitions and conventions."""

    scores: dict[str, torch.Tensor]  # kind -> [L, H, L, H]
    baseline_mean: dict[str, float]
    baseline_std: dict[str, float]
    n_layers: int
    n_heads: int
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "composition_scores"
    FILE: ClassVar[str] = "composition.json"

    @property
    def kinds(self) -> list[str]:
        return list(self.scores)

    def zscores(self, kind: str) -> torch.Tensor:
        """``(score - baseline_mean) / baseline_std`` ``[L, H, L, H]``."""
        return (self.scores[kind] - self.baseline_mean[kind]) / self.baseline_std[kind]

    def top_pairs(self, kind: str, n: int = 10) -> list[list]:
        """The ``n`` highest-scoring pairs: ``[l1, h1, l2, h2, score, z]``."""
        s = self.scores[kind]
        flat = torch.nan_to_num(s, nan=-math.inf).flatten()
        n = min(n, int(torch.isfinite(s).sum()))
        vals, idx = flat.topk(n)
        L, H = self.n_layers, self.n_heads
        out = []
        for v, i in zip(vals.tolist(), idx.tolist()):
            l1, h1, l2, h2 = i // (H * L * H), (i // (L * H)) % H, (i // H) % L, i % H
            out.append(
                [l1, h1, l2, h2, round(v, 6), round((v - self.baseline_mean[kind]) / self.baseline_std[kind], 3)]
            )
        return out

    def headline(self, n: int = 5) -> dict[str, Any]:
        """Per kind: the top ``n`` pairs ``[l1, h1, l2, h2, score, z]``, the baseline, and the fraction of
        pairs more than 3 baseline stds above the baseline mean."""
        out: dict[str, Any] = {"model": self.model_name}
        for kind in self.kinds:
            s = self.scores[kind]
            valid = s[torch.isfinite(s)]
            cut = self.baseline_mean[kind] + 3 * self.baseline_std[kind]
            out[kind] = {
                "top": self.top_pairs(kind, n),
                "baseline_mean": round(self.baseline_mean[kind], 6),
                "baseline_std": round(self.baseline_std[kind], 6),
                "mean_score": round(float(valid.mean()), 6) if valid.numel() else None,
                "frac_above_3std": (round(float((valid > cut).float().mean()), 4) if valid.numel() else None),
            }
        return out

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per kind and head pair (``l1 < l2``) with score and z-score."""
        import pandas as pd

        L, H = self.n_layers, self.n_heads
        idx = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (L, H, L, H)), indexing="ij"), -1).reshape(-1, 4)
        keep = idx[:, 0] < idx[:, 2]
        idx = idx[keep]
        frames = []
        for kind in self.kinds:
            s = self.scores[kind].reshape(-1)[keep]
            frames.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "layer1": idx[:, 0].numpy(),
                        "head1": idx[:, 1].numpy(),
                        "layer2": idx[:, 2].numpy(),
                        "head2": idx[:, 3].numpy(),
                        "score": s.numpy(),
                        "z": ((s - self.baseline_mean[kind]) / self.baseline_std[kind]).numpy(),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def plot(self, kind: str | None = None) -> go.Figure:
        """Heatmap(s) writer head (rows, ``L.H``) × reader head (columns); ``kind`` one of Q/K/V, or None
        for the three side by side. Cells below the diagonal block structure (same or earlier layer) are blank."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        kinds = self.kinds if kind is None else [kind]
        for k in kinds:
            if k not in self.scores:
                raise ValueError(f"kind must be one of {self.kinds}, not {k!r}.")
        L, H = self.n_layers, self.n_heads
        labels = [f"{layer}.{h}" for layer in range(L) for h in range(H)]
        zmax = max(float(torch.nan_to_num(self.scores[k], nan=0).max()) for k in kinds) or 1.0
        fig = make_subplots(
            rows=1, cols=len(kinds), subplot_titles=[f"{k}-composition" for k in kinds], horizontal_spacing=0.04
        )
        for i, k in enumerate(kinds):
            z = self.scores[k].reshape(L * H, L * H)
            zl = [[None if math.isnan(v) else v for v in row] for row in z.tolist()]
            fig.add_trace(
                go.Heatmap(
                    z=zl,
                    x=labels,
                    y=labels,
                    colorscale="Viridis",
                    zmin=0,
                    zmax=zmax,
                    showscale=i == len(kinds) - 1,
                    colorbar={"title": {"text": "score"}},
                    hovertemplate=(
                        f"{k}: %{{y}} → %{{x}}<br>score %{{z:.3f}}<br>"
                        f"baseline {self.baseline_mean[k]:.3f} ± {self.baseline_std[k]:.3f}<extra></extra>"
                    ),
                ),
                row=1,
                col=i + 1,
            )
            fig.update_xaxes(title_text="reader head (layer.head)", type="category", row=1, col=i + 1)
            fig.update_yaxes(
                title_text="writer head" if i == 0 else None, type="category", autorange="reversed", row=1, col=i + 1
            )
        title = "Composition scores" + (f" — {self.model_name}" if self.model_name else "")
        fig.update_layout(
            title={"text": title}, height=max(420, min(900, 6 * L * H + 150)), width=max(500, 480 * len(kinds))
        )
        return fig

    # ---- persistence: composition.json + composition.safetensors, through the Result base
    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a result written by :meth:`save` (its directory or ``composition.json``)."""
        res = super().load(path)
        res.scores = {k: res.scores[k] for k in KINDS if k in res.scores}  # the kinds in Q, K, V order
        return res


def composition_scores(
    model: Model,
    kinds: Sequence[CompositionKind] = KINDS,
    fold_norms: bool = True,
    n_baseline: int = 200,
    seed: int = 0,
    method: CompositionMethod = "auto",
) -> CompositionResult:
    """Q-, K-, V-composition scores (Elhage et al. 2021) between every pair of heads in different
    layers, with a random-matrix baseline. See the module docstring for the exact definitions.

    Args:
        model: the model.
        kinds: which compositions to score, a non-empty subset of ``("Q", "K", "V")``.
        fold_norms: fold the norms into the weights (:mod:`interplab.models.folding`); False: raw weights.
        n_baseline: random matrix pairs in the baseline.
        seed: seed of the baseline's random matrices.
        method: ``"gram"`` (packed d x d Gram matrix per head; cheapest per pair, memory
            ~ 2 * n_heads_total * d_model^2 bytes), ``"factored"`` (d_model x d_head factors only), or
            ``"auto"`` (gram when its packed matrices fit in 1 GiB). Both give the same numbers.
    """
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}.")
    t0 = time.perf_counter()
    cfg = model.cfg
    fw = folded_weights(model, fold_norms=fold_norms, with_embed=False)
    if method not in ("auto", "gram", "factored"):
        raise ValueError(f"method must be 'auto', 'gram' or 'factored', not {method!r}.")
    if method == "auto":
        gram_bytes = (cfg.n_layers - 1) * cfg.n_heads * cfg.d_model * (cfg.d_model + 1) // 2 * 4
        method = "gram" if gram_bytes <= _GRAM_BYTES else "factored"
    scores = (_composition if method == "gram" else _composition_factored)(fw, kinds)
    b = random_composition_baseline(cfg.d_model, cfg.d_head, n_baseline, seed=seed)  # same shapes for every kind
    mean = {kind: float(b.mean()) for kind in kinds}
    std = {kind: float(b.std()) for kind in kinds}
    return CompositionResult(
        scores=scores,
        baseline_mean=mean,
        baseline_std=std,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        model_name=model.name,
        settings={
            "method": "composition scores (Elhage et al. 2021), TransformerLens conventions",
            "fold_norms": fold_norms,
            "norm_notes": fw.notes,
            "n_baseline": n_baseline,
            "seed": seed,
            "algorithm": method,
            "baseline": "Gaussian factors [d_model,d_head]@[d_head,d_model]",
            "d_model": cfg.d_model,
            "d_head": cfg.d_head,
            "n_kv_heads": cfg.n_kv_heads,
            "gqa": "K/V expanded per query head" if cfg.n_kv_heads != cfg.n_heads else "none",
            "positional": cfg.positional,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
