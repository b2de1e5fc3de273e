"""Attention heads read off their weights alone: composition scores, OV/QK SVD, copying scores.

After Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits"
(https://transformer-circuits.pub/2021/framework/index.html), with TransformerLens's conventions
(``HookedTransformer.all_composition_scores``, ``FactoredMatrix``).

Conventions
-----------
Row-vector residual stream (``x @ W``), per head ``h`` of layer ``l``::

    W_OV = W_V @ W_O      [d_model, d_model]   what the head writes, given what it attends to
    W_QK = W_Q @ W_K^T    [d_model, d_model]   score(x_query, x_key) = x_query W_QK x_key^T

Both are rank <= d_head; their SVDs come from the factors (``factored_svd``):
``A @ B = (Q_a R_a)(R_b^T Q_b^T) = Q_a (R_a R_b^T) Q_b^T``, so the SVD of the d_model x d_model
product is the SVD of the d_head x d_head core, rotated back, and the product is never formed.

**Composition** (head ``h1`` in layer ``l1`` writing, head ``h2`` in a later layer ``l2 > l1``
reading; same-layer and backward pairs are NaN)::

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

**Norms** (``fold_norms=True``, the default): a head reads ``norm(x)``, not ``x``.
The scalar ``1/rms(x)`` (or ``1/std(x)``) depends on the token and is dropped — every score here
(composition, copying) is invariant to it. The norm's elementwise weight ``w`` is folded into the
reading matrices, ``W_Q, W_K, W_V <- diag(w) @ W`` (Gemma's RMSNorm multiplies by ``1 + w``: that is
what is folded); for LayerNorm the centring is folded too, ``W <- C diag(w) W`` with
``C = I - 11^T/d`` — and writing matrices are centred, ``W_O <- W_O C`` (TransformerLens's
``fold_ln`` + ``center_writing_weights``), since a direction along ``1`` is invisible to every
LayerNorm reader. RMSNorm has no centring. Norm biases and all attention biases are ignored (they are
not part of a circuit matrix). Gemma 3 also normalises q and k per head (``q_norm``/``k_norm``): their
weights are folded into the columns of W_Q / W_K; and it normalises the attention output before
adding it to the residual stream (``post_attention_layernorm``): its weight is folded into the columns
of W_O. For W_U (copying scores, output tokens) the final norm's weight (and centring, for LN) is folded
the same way: ``W_U <- C diag(w_final) W_U``. Gemma's final logit soft-cap is monotone and ignored.
``fold_norms=False`` uses the raw weights.

**Rotary** models: ``W_Q W_K^T`` is the QK circuit at relative distance 0 (rotary rotates q and k by
the position; TransformerLens ignores it the same way).

**Grouped-query attention**: K and V are expanded per query head (query head ``h`` uses KV head
``h // (n_heads / n_kv_heads)``, as HF's ``repeat_kv``), so all query heads of one KV group share
W_K and W_V: as readers, their V-composition differs only through their W_O, and their
K-composition only through their W_Q (the K reader's Gram matrix is ``W_K (W_Q^T W_Q) W_K^T``).
Every score is per query head, shape ``[L, H, L, H]``.

**SVD and tokens** (``head_circuits``): for ``W_OV = U S V^T`` the head reads along ``u_i`` and writes
``s_i v_i``; in token space the *read* tokens of direction ``i`` are those with the largest
``W_E u_i`` and the *written* tokens those with the largest ``v_i W_U`` (``W_U`` with the final norm
folded). The sign of a singular pair is arbitrary, ``(-u_i, -v_i)`` being the same pair, so each
direction has two poles: ``+`` (largest read scores → largest written logits) and ``-`` (most negative
→ most negative); we orient each pair so the ``+`` pole is the read side's larger extreme. For
``W_QK = U S V^T`` the ``+`` pole lists query tokens (largest ``W_E u_i``) and key tokens (largest
``W_E v_i``) that the head matches. Reading W_E at every layer is the *direct path* view: exact for
layer 0, an approximation deeper in the model.

**Copying score** (Elhage et al., "Copying / Primarily Positive Eigenvalues"): the eigenvalues of the
full OV circuit ``W_E W_OV W_U`` (``[vocab, vocab]``); a head that copies has mostly positive
eigenvalues. ``copying = sum_i lambda_i / sum_i |lambda_i|`` in ``[-1, 1]`` (the eigenvalues of a real
matrix come in conjugate pairs, so the numerator is real: it is the trace); ``positive_fraction =
sum_i max(Re lambda_i, 0) / sum_i |lambda_i|`` in ``[0, 1]``. The eigenvalues come from the
d_head x d_head matrix ``W_O W_U W_E W_V``: for any ``A [n, m]``, ``B [m, n]``, ``AB`` and ``BA`` have
the same nonzero eigenvalues (with multiplicity; Sylvester's determinant identity
``det(I_n - AB/t) = det(I_m - BA/t)``), here with ``A = W_E W_V`` and ``B = W_O W_U``. A head whose
full OV circuit is exactly zero gets 0. W_E and W_U are used as they are, not centred over the
vocabulary (on SmolLM2, whose embeddings share a large mean direction, centring both changes the
scores little: correlation 0.96 over the 270 heads).

>>> comp = composition_scores(model)
>>> comp.headline()["K"]["top"][:3]     # [[l1, h1, l2, h2, score, z], ...]
>>> circ = head_circuits(model)
>>> circ.copying[5, 3], circ.tokens(5, 3, "OV", 0)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from interplab.io.results import read_json, write_json

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "KINDS",
    "CompositionResult",
    "FoldedWeights",
    "HeadCircuitsResult",
    "NormInfo",
    "attn_input_norm",
    "composition_scores",
    "copying_scores",
    "factored_svd",
    "folded_weights",
    "head_circuits",
    "norm_info",
    "random_composition_baseline",
]

KINDS = ("Q", "K", "V")
COMPOSITION_FILE = "composition.json"
COMPOSITION_TENSORS = "composition.safetensors"
CIRCUITS_FILE = "head_circuits.json"
CIRCUITS_TENSORS = "head_circuits.safetensors"


# --------------------------------------------------------------------------------------------------
# norms


@dataclass
class NormInfo:
    """What a normalisation module does, as far as a linear analysis needs to know:
    ``y = weight * (C x if LN) / scale(x) + bias`` with ``scale = sqrt(mean(x^2) + eps)`` (RMS) or
    ``sqrt(var(x) + eps)`` (LN). ``weight`` is the *effective* elementwise weight (Gemma: ``1 + w``)."""

    kind: str  # "RMS", "LN" or "none"
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    eps: float = 0.0

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The norm's denominator for ``x [..., d]`` (shape ``[..., 1]``), computed as the module does."""
        if self.kind == "RMS":
            return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if self.kind == "LN":
            return (x.var(-1, keepdim=True, unbiased=False) + self.eps).sqrt()
        return torch.ones_like(x[..., :1])


def norm_info(module: nn.Module | None) -> NormInfo | None:
    """Describe a norm module (LayerNorm, RMSNorm of torch / Llama / Qwen2 / Mistral / Gemma 3, or
    Identity = no norm). Returns None for a module that is not a norm."""
    if module is None or isinstance(module, nn.Identity):
        return NormInfo("none")
    name = type(module).__name__
    w = getattr(module, "weight", None)
    if isinstance(module, nn.LayerNorm):
        return NormInfo(
            "LN",
            w.detach() if w is not None else None,
            module.bias.detach() if getattr(module, "bias", None) is not None else None,
            float(module.eps),
        )
    if isinstance(module, nn.RMSNorm):
        eps = module.eps if module.eps is not None else torch.finfo(w.dtype if w is not None else torch.float32).eps
        return NormInfo("RMS", w.detach() if w is not None else None, None, float(eps))
    if name.endswith("RMSNorm"):
        eps = getattr(module, "variance_epsilon", None)
        eps = getattr(module, "eps", 1e-6) if eps is None else eps
        if w is not None and "Gemma" in name:  # Gemma: x / rms * (1 + w)
            w = 1.0 + w.detach().float()
        return NormInfo("RMS", w.detach() if w is not None else None, None, float(eps))
    if name.endswith("LayerNorm"):
        b = getattr(module, "bias", None)
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        return NormInfo("LN", w.detach() if w is not None else None, b.detach() if b is not None else None, float(eps))
    return None


_ATTN_NORM_NAMES = ("input_layernorm", "ln_1", "ln1")


def attn_input_norm(model: Model, layer: int) -> nn.Module | None:
    """The norm module whose output layer ``layer``'s attention reads (None: it reads the raw stream)."""
    block = model.adapter.layer(layer)
    for n in _ATTN_NORM_NAMES:
        if hasattr(block, n):
            return getattr(block, n)
    return None


# --------------------------------------------------------------------------------------------------
# folded weights


@dataclass
class FoldedWeights:
    """Per-head weights with the norms folded in as described in the module docstring.
    ``W_Q, W_K, W_V`` ``[L, H, d_model, d_head]``, ``W_O`` ``[L, H, d_head, d_model]``,
    ``W_E`` ``[vocab, d_model]``, ``W_U`` ``[d_model, vocab]`` (final norm folded)."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    W_E: torch.Tensor
    W_U: torch.Tensor
    notes: list[str] = field(default_factory=list)


def _fold_read(w: torch.Tensor, ni: NormInfo | None) -> torch.Tensor:
    """``C diag(weight) W`` for ``W [..., d, e]``."""
    if ni is None or ni.kind == "none":
        return w
    if ni.weight is not None:
        w = ni.weight.to(w)[:, None] * w
    if ni.kind == "LN":
        w = w - w.mean(-2, keepdim=True)
    return w


def folded_weights(
    model: Model, fold_norms: bool = True, dtype: torch.dtype = torch.float32, with_embed: bool = True
) -> FoldedWeights:
    """The model's per-head weights, with norm weights (and LN centring) folded in when ``fold_norms``."""
    cfg = model.cfg
    notes: list[str] = []
    ad = model.adapter
    per_layer: list[tuple[torch.Tensor, ...]] = []
    ln_kinds: set[str] = set()
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            q, k, v = (t.detach().to(dtype) for t in ad.qkv(layer))  # [H, d, e], GQA expanded
            o = ad.w_o(layer).detach().to(dtype)  # [H, e, d]
            if fold_norms:
                mod = attn_input_norm(model, layer)
                ni = norm_info(mod)
                if ni is None:
                    notes.append(f"layer {layer}: attention input norm {type(mod).__name__} not understood; not folded")
                else:
                    ln_kinds.add(ni.kind)
                q, k, v = (_fold_read(w, ni) for w in (q, k, v))
                attn = ad.attn(layer)
                qn = norm_info(getattr(attn, "q_norm", None)) if hasattr(attn, "q_norm") else None
                kn = norm_info(getattr(attn, "k_norm", None)) if hasattr(attn, "k_norm") else None
                if qn is not None and qn.weight is not None:  # Gemma 3: per-head RMSNorm on q / k
                    q = q * qn.weight.to(q)
                if kn is not None and kn.weight is not None:
                    k = k * kn.weight.to(k)
                if layer == 0 and (qn is not None or kn is not None):
                    notes.append("q_norm / k_norm weights folded into the columns of W_Q / W_K")
                out_mod = ad.attn_out(layer)
                post = norm_info(out_mod) if out_mod is not attn else None
                if post is not None and post.kind != "none" and post.weight is not None:  # Gemma 3 post-attention norm
                    o = o * post.weight.to(o)
                    if layer == 0:
                        notes.append("post-attention norm weight folded into the columns of W_O")
                if ni is not None and ni.kind == "LN":
                    o = o - o.mean(-1, keepdim=True)
            per_layer.append((q, k, v, o))
        W_Q, W_K, W_V, W_O = (torch.stack(ts) for ts in zip(*per_layer))
        del per_layer
        if fold_norms:
            notes.insert(
                0,
                f"attention input norms: {', '.join(sorted(ln_kinds)) or 'none'} (weight folded into W_Q/W_K/W_V"
                + ("; LN centring folded into reading weights and W_O" if "LN" in ln_kinds else "")
                + ")",
            )
        W_E = model.W_E.to(dtype) if with_embed else torch.empty(0)
        W_U = model.W_U.to(dtype) if with_embed else torch.empty(0)
        if fold_norms and with_embed:
            nf = norm_info(model.adapter.ln_final())
            if nf is None:
                notes.append(f"final norm {type(model.adapter.ln_final()).__name__} not understood; W_U not folded")
            else:
                W_U = _fold_read(W_U, nf)
                notes.append(
                    f"final norm ({nf.kind}) weight folded into W_U" + (" with centring" if nf.kind == "LN" else "")
                )
    return FoldedWeights(W_Q, W_K, W_V, W_O, W_E, W_U, notes)


# --------------------------------------------------------------------------------------------------
# factored SVD


def factored_svd(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``A @ B`` for ``A [..., n, e]``, ``B [..., e, m]`` without forming the product:
    returns ``U [..., n, k]``, ``S [..., k]`` (descending), ``V [..., m, k]`` with
    ``A @ B = U diag(S) V^T`` and ``k = min(n, e, m)``. Computed in float64, returned in A's dtype."""
    dt = A.dtype
    A64, B64 = A.double(), B.double()
    Qa, Ra = torch.linalg.qr(A64)  # A = Qa Ra
    Qb, Rb = torch.linalg.qr(B64.mT)  # B^T = Qb Rb
    Uc, S, Vch = torch.linalg.svd(Ra @ Rb.mT, full_matrices=False)
    k = S.shape[-1]
    U, V = Qa @ Uc[..., :k], Qb @ Vch.mT[..., :k]
    return U.to(dt), S.to(dt), V.to(dt)


# --------------------------------------------------------------------------------------------------
# composition


def random_composition_baseline(d_model: int, d_head: int, n_samples: int = 200, seed: int = 0) -> torch.Tensor:
    """Composition scores of ``n_samples`` pairs of random rank-``d_head`` matrices
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


@contextlib.contextmanager
def _lapack_threads(n: int = 1):
    """Run batched small decompositions (QR, SVD, eig of d_head-sized matrices) on ``n`` threads:
    they gain nothing from more, and on a loaded machine OpenMP threads waiting on each other make
    them 10-100x slower. The previous thread count is restored on exit."""
    prev = torch.get_num_threads()
    torch.set_num_threads(min(n, prev))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _head_svds(fw: FoldedWeights) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """OV and QK SVD factors of every head, ``U [L,H,d,k], S [L,H,k], V [L,H,d,k]`` (one layer at a time)."""
    out: dict[str, list] = {"OV": [], "QK": []}
    with _lapack_threads(1):
        for layer in range(fw.W_Q.shape[0]):
            out["OV"].append(factored_svd(fw.W_V[layer], fw.W_O[layer]))
            out["QK"].append(factored_svd(fw.W_Q[layer], fw.W_K[layer].mT))
    return {k: tuple(torch.stack(x) for x in zip(*v)) for k, v in out.items()}


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


def _composition(fw: FoldedWeights, kinds=KINDS) -> dict[str, torch.Tensor]:
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
    with _lapack_threads(1):
        Rq, Rk, Rv, Ro = (torch.linalg.qr(w).R for w in (Wq, Wk, Wv, Wo.mT))
    return {"W": Wo.mT @ Rv.mT, "Q": Wq @ Rk.mT, "K": Wk @ Rq.mT, "V": Wv @ Ro.mT}


def _composition_factored(fw: FoldedWeights, kinds=KINDS) -> dict[str, torch.Tensor]:
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
class CompositionResult:
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

    # ---- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "composition_scores",
            "format_version": 1,
            "model": self.model_name,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "kinds": self.kinds,
            "baseline_mean": self.baseline_mean,
            "baseline_std": self.baseline_std,
            "settings": self.settings,
            "headline": self.headline(),
        }

    def save(self, directory: str | Path) -> Path:
        """``composition.json`` (settings, baseline, headline) + ``composition.safetensors`` (the
        ``[L, H, L, H]`` tensors, NaN where l1 >= l2). Returns the JSON path."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.scores.items()}, str(d / COMPOSITION_TENSORS))
        return write_json(d, COMPOSITION_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CompositionResult:
        from safetensors.torch import load_file

        d, p = read_json(path, COMPOSITION_FILE, "composition_scores")
        t = load_file(str(p.parent / COMPOSITION_TENSORS))
        return cls(
            scores={k: t[k] for k in d["kinds"]},
            baseline_mean=d["baseline_mean"],
            baseline_std=d["baseline_std"],
            n_layers=d["n_layers"],
            n_heads=d["n_heads"],
            model_name=d.get("model", ""),
            settings=d.get("settings", {}),
        )


def composition_scores(
    model: Model, kinds=KINDS, fold_norms: bool = True, n_baseline: int = 200, seed: int = 0, method: str = "auto"
) -> CompositionResult:
    """Q-, K-, V-composition scores (Elhage et al. 2021) between every pair of heads in different
    layers, with a random-matrix baseline. See the module docstring for the exact definitions.

    ``method``: ``"gram"`` (packed d x d Gram matrix per head; cheapest per pair, memory
    ~ 2 * n_heads_total * d_model^2 bytes), ``"factored"`` (d_model x d_head factors only), or
    ``"auto"`` (gram when its packed matrices fit in 1 GiB). Both give the same numbers."""
    import time

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


# --------------------------------------------------------------------------------------------------
# copying scores and the head circuits result


def _copying_from_eigs(eig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    absum = eig.abs().sum(-1)
    ok = absum > 1e-12 * absum.max().clamp_min(1e-300)
    copying = torch.where(ok, eig.real.sum(-1) / absum.clamp_min(1e-300), torch.zeros_like(absum))
    positive = torch.where(ok, eig.real.clamp_min(0).sum(-1) / absum.clamp_min(1e-300), torch.zeros_like(absum))
    return copying, positive


def _full_ov_eigenvalues(fw: FoldedWeights) -> torch.Tensor:
    """Eigenvalues ``[L, H, d_head]`` (complex) of ``W_O W_U W_E W_V`` per head = the nonzero
    eigenvalues of the full OV circuit ``W_E W_V W_O W_U``."""
    UE = (fw.W_U @ fw.W_E).double()  # [d, d]
    M = fw.W_O.double() @ UE @ fw.W_V.double()  # [L, H, e, e]
    with _lapack_threads(1):
        return torch.linalg.eigvals(M)


def copying_scores(model: Model, fold_norms: bool = True) -> torch.Tensor:
    """Copying score ``sum(lambda) / sum(|lambda|)`` of each head's full OV circuit ``[L, H]`` (see the module docstring)."""
    fw = folded_weights(model, fold_norms=fold_norms)
    return _copying_from_eigs(_full_ov_eigenvalues(fw))[0].float()


def _decode_ids(model: Model, ids: list[int]) -> list[str]:
    if model.tokenizer is None:
        return [f"#{i}" for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]


@dataclass
class HeadCircuitsResult:
    """Per head: singular values of the OV and QK circuits, the top singular directions read in token
    space, and the copying score of the full OV circuit — see the module docstring.

    Tensors: ``ov_singular``, ``qk_singular`` ``[L, H, k]`` (descending); ``copying``,
    ``positive_fraction`` ``[L, H]``; ``eigenvalues`` ``[L, H, d_head, 2]`` (real, imaginary) of the
    full OV circuit; token ids ``[L, H, n_directions, top_k]`` in ``token_ids[circuit][side]`` with
    sides ``read+``, ``write+``, ``read-``, ``write-`` for OV and ``query+``, ``key+``, ``query-``,
    ``key-`` for QK; the matching strings in ``tokens_str``."""

    ov_singular: torch.Tensor
    qk_singular: torch.Tensor
    copying: torch.Tensor
    positive_fraction: torch.Tensor
    eigenvalues: torch.Tensor
    token_ids: dict[str, dict[str, torch.Tensor]]
    tokens_str: dict[str, dict[str, list]]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.copying.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.copying.shape[1])

    def tokens(self, layer: int, head: int, circuit: str = "OV", direction: int = 0) -> dict[str, list[str]]:
        """Top tokens of one singular direction: ``{"read+": [...], "write+": [...], ...}`` (OV) or
        ``{"query+": ..., "key+": ...}`` (QK)."""
        return {side: v[layer][head][direction] for side, v in self.tokens_str[circuit].items()}

    def top_copying(self, n: int = 10) -> list[list]:
        """Heads with the highest copying score: ``[layer, head, copying]``."""
        vals, idx = self.copying.flatten().topk(min(n, self.copying.numel()))
        H = self.n_heads
        return [[i // H, i % H, round(v, 4)] for v, i in zip(vals.tolist(), idx.tolist())]

    def effective_rank(self, circuit: str = "OV") -> torch.Tensor:
        """``(sum s)^2 / sum s^2`` per head ``[L, H]`` (participation ratio of the singular values)."""
        s = self.ov_singular if circuit == "OV" else self.qk_singular
        return s.sum(-1).square() / s.square().sum(-1).clamp_min(1e-30)

    def headline(self, n: int = 5) -> dict[str, Any]:
        """The top copying heads (with their first OV direction's read → written tokens), the most
        negative (copy-suppressing candidates), and the fraction of heads with copying > 0.5."""

        def entry(lh):
            layer, head, score = lh
            t = self.tokens(layer, head, "OV", 0)
            return {"layer": layer, "head": head, "copying": score, "read": t["read+"][:5], "write": t["write+"][:5]}

        vals, idx = (-self.copying).flatten().topk(min(n, self.copying.numel()))
        H = self.n_heads
        neg = [[i // H, i % H, round(-v, 4)] for v, i in zip(vals.tolist(), idx.tolist())]
        return {
            "model": self.model_name,
            "top_copying": [entry(x) for x in self.top_copying(n)],
            "most_negative": neg,
            "frac_copying_above_0.5": round(float((self.copying > 0.5).float().mean()), 4),
            "mean_copying": round(float(self.copying.mean()), 4),
        }

    def to_frame(self, which: str = "heads") -> pd.DataFrame:
        """``which="heads"``: one row per head (copying, positive fraction, top singular values, effective
        ranks). ``"tokens"``: one row per head, circuit, direction, side and rank with the token."""
        import pandas as pd

        L, H = self.n_layers, self.n_heads
        if which == "heads":
            er_ov, er_qk = self.effective_rank("OV"), self.effective_rank("QK")
            rows = [
                {
                    "layer": layer,
                    "head": h,
                    "copying": float(self.copying[layer, h]),
                    "positive_fraction": float(self.positive_fraction[layer, h]),
                    "ov_sv1": float(self.ov_singular[layer, h, 0]),
                    "qk_sv1": float(self.qk_singular[layer, h, 0]),
                    "ov_effective_rank": float(er_ov[layer, h]),
                    "qk_effective_rank": float(er_qk[layer, h]),
                }
                for layer in range(L)
                for h in range(H)
            ]
            return pd.DataFrame(rows)
        if which == "tokens":
            rows = []
            for circuit, sides in self.tokens_str.items():
                for side, per in sides.items():
                    for layer in range(L):
                        for h in range(H):
                            for di, toks in enumerate(per[layer][h]):
                                ids = self.token_ids[circuit][side][layer, h, di].tolist()
                                for r, (t, i) in enumerate(zip(toks, ids)):
                                    rows.append(
                                        {
                                            "layer": layer,
                                            "head": h,
                                            "circuit": circuit,
                                            "direction": di,
                                            "side": side,
                                            "rank": r + 1,
                                            "token": t,
                                            "token_id": i,
                                        }
                                    )
            return pd.DataFrame(rows)
        raise ValueError(f"which must be 'heads' or 'tokens', not {which!r}.")

    def plot(self, kind: str = "copying") -> go.Figure:
        """``kind="copying"``: heatmap layers × heads of the copying score (hover: top read → written
        tokens); ``"spectrum"``: normalised OV and QK singular values of every head (lines)."""
        import html

        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from interplab.analyses.observational.lens import display_token

        def esc(ts):
            return html.escape(" ".join(display_token(t) for t in ts[:5]), quote=False)

        L, H = self.n_layers, self.n_heads
        if kind == "copying":
            hover = [
                [
                    f"{esc(self.tokens_str['OV']['read+'][layer][h][0])} → {esc(self.tokens_str['OV']['write+'][layer][h][0])}"
                    for h in range(H)
                ]
                for layer in range(L)
            ]
            fig = go.Figure(
                go.Heatmap(
                    z=self.copying.tolist(),
                    x=list(range(H)),
                    y=list(range(L)),
                    customdata=hover,
                    colorscale="RdBu",
                    zmin=-1,
                    zmax=1,
                    colorbar={"title": {"text": "copying"}},
                    hovertemplate="L%{y} H%{x}<br>copying %{z:.3f}<br>%{customdata}<extra></extra>",
                )
            )
            fig.update_xaxes(title_text="head", dtick=1)
            fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
            title = "Copying score (eigenvalues of W_E W_OV W_U)"
        elif kind == "spectrum":
            fig = make_subplots(rows=1, cols=2, subplot_titles=["OV singular values", "QK singular values"])
            for col, s in ((1, self.ov_singular), (2, self.qk_singular)):
                sn = s / s[..., :1].clamp_min(1e-30)
                for layer in range(L):
                    for h in range(H):
                        fig.add_trace(
                            go.Scatter(
                                y=sn[layer, h].tolist(),
                                mode="lines",
                                name=f"L{layer}H{h}",
                                line={"width": 1},
                                showlegend=False,
                                hovertemplate=f"L{layer}H{h}<br>i=%{{x}}<br>s_i/s_1=%{{y:.3f}}<extra></extra>",
                            ),
                            row=1,
                            col=col,
                        )
            fig.update_xaxes(title_text="singular direction")
            fig.update_yaxes(title_text="s_i / s_1", row=1, col=1)
            title = "Singular value spectra"
        else:
            raise ValueError(f"kind must be 'copying' or 'spectrum', not {kind!r}.")
        if self.model_name:
            title += f" — {html.escape(self.model_name, quote=False)}"
        fig.update_layout(title={"text": title}, height=max(360, 18 * L + 160))
        return fig

    # ---- persistence
    def _tensors(self) -> dict[str, torch.Tensor]:
        t = {
            "ov_singular": self.ov_singular,
            "qk_singular": self.qk_singular,
            "copying": self.copying,
            "positive_fraction": self.positive_fraction,
            "eigenvalues": self.eigenvalues,
        }
        for circuit, sides in self.token_ids.items():
            for side, ids in sides.items():
                t[f"ids.{circuit}.{side}"] = ids
        return {k: v.contiguous() for k, v in t.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "head_circuits",
            "format_version": 1,
            "model": self.model_name,
            "tokens": self.tokens_str,
            "settings": self.settings,
            "headline": self.headline(),
        }

    def save(self, directory: str | Path) -> Path:
        """``head_circuits.json`` (tokens, settings, headline) + ``head_circuits.safetensors``. Returns the JSON path."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file(self._tensors(), str(d / CIRCUITS_TENSORS))
        return write_json(d, CIRCUITS_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HeadCircuitsResult:
        from safetensors.torch import load_file

        d, p = read_json(path, CIRCUITS_FILE, "head_circuits")
        t = load_file(str(p.parent / CIRCUITS_TENSORS))
        ids: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in t.items():
            if k.startswith("ids."):
                _, circuit, side = k.split(".", 2)
                ids.setdefault(circuit, {})[side] = v
        return cls(
            ov_singular=t["ov_singular"],
            qk_singular=t["qk_singular"],
            copying=t["copying"],
            positive_fraction=t["positive_fraction"],
            eigenvalues=t["eigenvalues"],
            token_ids=ids,
            tokens_str=d["tokens"],
            model_name=d.get("model", ""),
            settings=d.get("settings", {}),
        )


def _extremes(D: torch.Tensor, M: torch.Tensor, top_k: int, chunk: int = 256):
    """For each row ``r`` of ``D [n, d]`` the token scores ``r @ M`` (``M [d, vocab]``): the ids of the
    ``top_k`` largest and smallest, and the largest and smallest value. Chunked over rows so the
    ``[chunk, vocab]`` block stays small; returns ``(top [n, k], bottom [n, k], max [n], min [n])``."""
    tops, bots, mx, mn = [], [], [], []
    with torch.no_grad():
        for i in range(0, D.shape[0], chunk):
            sc = D[i : i + chunk] @ M
            tv, ti = sc.topk(top_k, dim=-1)
            bv, bi = (-sc).topk(top_k, dim=-1)
            tops.append(ti), bots.append(bi), mx.append(tv[:, 0]), mn.append(-bv[:, 0])
    return torch.cat(tops), torch.cat(bots), torch.cat(mx), torch.cat(mn)


def head_circuits(model: Model, n_directions: int = 2, top_k: int = 10, fold_norms: bool = True) -> HeadCircuitsResult:
    """SVD of every head's OV and QK circuit, the top ``n_directions`` singular directions read in token
    space (``top_k`` tokens per pole), and copying scores (Elhage et al. 2021). See the module docstring."""
    import time

    if n_directions < 1 or top_k < 1:
        raise ValueError(f"n_directions and top_k must be at least 1, got {n_directions} and {top_k}.")
    t0 = time.perf_counter()
    cfg = model.cfg
    fw = folded_weights(model, fold_norms=fold_norms)
    svd = _head_svds(fw)
    eig = _full_ov_eigenvalues(fw)
    copying, positive = _copying_from_eigs(eig)
    L, H = cfg.n_layers, cfg.n_heads
    k = svd["OV"][1].shape[-1]
    n_dir = min(n_directions, k)
    top_k = min(top_k, cfg.d_vocab)
    # directions [L, H, n_dir, d]: OV read u (W_E), OV write v (W_U), QK query u (W_E), QK key v (W_E)
    dirs = {
        ("OV", "read"): svd["OV"][0],
        ("OV", "write"): svd["OV"][2],
        ("QK", "query"): svd["QK"][0],
        ("QK", "key"): svd["QK"][2],
    }
    dirs = {key: u[..., :n_dir].movedim(-1, -2) for key, u in dirs.items()}
    on_E = [("OV", "read"), ("QK", "query"), ("QK", "key")]
    ext_E = _extremes(torch.cat([dirs[key].reshape(-1, cfg.d_model) for key in on_E]), fw.W_E.T, top_k)
    ext_U = _extremes(dirs[("OV", "write")].reshape(-1, cfg.d_model), fw.W_U, top_k)
    n = L * H * n_dir
    ext = {key: tuple(t[i * n : (i + 1) * n] for t in ext_E) for i, key in enumerate(on_E)}
    ext[("OV", "write")] = ext_U
    token_ids: dict[str, dict[str, torch.Tensor]] = {"OV": {}, "QK": {}}
    for circuit, (a, b) in (("OV", ("read", "write")), ("QK", ("query", "key"))):
        # orient each singular pair: the + pole is the read (query) side's larger extreme
        _, _, vmax, vmin = ext[(circuit, a)]
        flip = (vmax < -vmin)[:, None]
        for side in (a, b):
            top, bot, _, _ = ext[(circuit, side)]
            plus, minus = torch.where(flip, bot, top), torch.where(flip, top, bot)
            token_ids[circuit][f"{side}+"] = plus.view(L, H, n_dir, top_k)
            token_ids[circuit][f"{side}-"] = minus.view(L, H, n_dir, top_k)
    uniq = torch.unique(torch.cat([t.flatten() for d in token_ids.values() for t in d.values()])).tolist()
    vocab = dict(zip(uniq, _decode_ids(model, uniq)))
    tokens_str = {
        c: {s: [[[[vocab[i] for i in row] for row in hd] for hd in lay] for lay in t.tolist()] for s, t in d.items()}
        for c, d in token_ids.items()
    }
    return HeadCircuitsResult(
        ov_singular=svd["OV"][1].float(),
        qk_singular=svd["QK"][1].float(),
        copying=copying.float(),
        positive_fraction=positive.float(),
        eigenvalues=torch.stack([eig.real, eig.imag], -1).float(),
        token_ids=token_ids,
        tokens_str=tokens_str,
        model_name=model.name,
        settings={
            "method": "OV/QK SVD and copying score (Elhage et al. 2021)",
            "fold_norms": fold_norms,
            "norm_notes": fw.notes,
            "n_directions": n_dir,
            "top_k": top_k,
            "copying": "sum(lambda)/sum(|lambda|) over eigenvalues of W_O W_U W_E W_V (= nonzero eigenvalues of W_E W_OV W_U)",
            "token_reading": "direct path: W_E for read/query/key sides, W_U (final norm folded) for the written side",
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
