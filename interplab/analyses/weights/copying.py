"""The copying score of an attention head, written once: :func:`ov_copying`. Both the head detectors
(:mod:`interplab.analyses.observational.heads`, classes ``copying`` and ``copy_suppression``) and
:func:`~interplab.analyses.weights.svd.head_circuits` call it, so they report the same number.

**Score** (McDougall et al. 2023, "Copy Suppression: Comprehensively Understanding an Attention Head",
whose OV-circuit analysis of GPT-2's L10H7 asks for what fraction of tokens the token itself is among the 10
most suppressed; Wang et al. 2022, "Interpretability in the Wild", score name movers' copying by the top 5).
For head ``(l, h)`` and a token ``t`` the direct-path OV output is the row
``r_t = W_E[t] W_V W_O W_U'`` ``[vocab]``: the logits the head writes when it attends to ``t``. The
*copying* score is the fraction of tokens ``t`` for which ``t`` is among the ``k`` largest entries of
``r_t`` (own rank ``< k``); the *copy-suppression* score the fraction for which it is among the ``k``
smallest. Both lie in ``[0, 1]``; ties count against the token (rank = number of *other* tokens whose logit
is ``>=`` its own), so a head that writes nothing the unembedding reads scores 0. Default ``k = 10``
(McDougall et al.'s choice).

**Tokens.** Every row is compared against the full vocabulary. The rows are a fixed sample of
``n_tokens`` distinct token ids drawn with ``seed`` (default 2048; all tokens when the vocabulary is not
larger), so the score is a fraction with standard error at most ``0.5 / sqrt(n_tokens)`` (0.011).

**Norms** are folded as :mod:`interplab.models.folding` describes: the pre-attention norm's gain (and LN
centring) into ``W_V``, Gemma 3's post-attention norm into ``W_O``, the final norm into ``W_U'``. The
per-token ``1/rms`` of the attended token and of the final residual scale a whole row ``r_t``, so they do
not change ranks; a shift shared by all logits (``W_U`` centring over the vocabulary) does not either.
Norm biases, positional embeddings and every layer between the embedding and the head are ignored (the
direct-path approximation of both papers; McDougall et al. read ``W_E`` through MLP0 instead).

**Null** (``n_null_rotations``): the same scores with a random rotation ``Q`` (Haar orthogonal,
``d_head x d_head``) inserted between ``W_V`` and ``W_O``: a random OV matrix with the head's own
singular values, whose alignment between what it reads and what it writes is destroyed. Per head the
null is the mean over the draws; :attr:`OVCopying.null_max` is its largest value over every head and
draw, the level a head with scrambled alignment reaches. Membership (:func:`copying_members`): a head
copies (suppresses copies) when its score is at least :data:`MIN_SCORE` (0.2: a fifth of all tokens are
in their own top (bottom) ``k``, where chance is about ``k / vocab``) **and** exceeds ``null_max`` by at least
:data:`NULL_MARGIN` (0.2). On SmolLM2-135M (k = 10, 2048 tokens) the null's maximum is 0.0015 and the top
copying heads score 0.70, 0.61, 0.48, 0.44, 0.41: distinct, where the eigenvalue ratio puts all five
at 0.994-0.999.

**Reference** (:func:`eigenvalue_copying`): Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits", section "Summarizing OV/QK matrices" (used by Olsson et al. 2022 as the copying half of their
induction-head definition): ``sum_i lambda_i / sum_i |lambda_i|`` over the eigenvalues of the full OV
circuit ``W_E W_OV W_U'``, in ``[-1, 1]``. It is kept for reference only: with a large vocabulary it is
near ±1 for most heads (SmolLM2-135M: 73 of 270 heads beyond ±0.9, the top twelve at >= 0.99), so it cannot
rank heads, and a head whose OV circuit is positive semi-definite but low rank scores 1 without copying.
The eigenvalues come from the d_head x d_head matrix ``K = W_O W_U' W_E W_V``: ``AB`` and ``BA`` have the
same nonzero eigenvalues (Sylvester's determinant identity), with ``A = W_E W_V`` and ``B = W_O W_U'``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from interplab.models.folding import FoldedWeights, folded_weights
from interplab.runtime import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = [
    "MIN_SCORE",
    "NULL_MARGIN",
    "OVCopying",
    "copying_fractions",
    "copying_members",
    "copying_ratio",
    "eigenvalue_copying",
    "ov_copying",
    "ov_eigenvalues",
    "random_rotations",
]

MIN_SCORE = 0.2
NULL_MARGIN = 0.2


# ------------------------------------------------------------------------------- the copying score
def _extremes(A: torch.Tensor, B: torch.Tensor, ids: torch.Tensor, k: int, screen: torch.Tensor, chunk: int, pre):
    """For rows ``A [n, e]`` and ``B [e, vocab]`` (one head), booleans ``[n]``: is ``ids[i]`` among the ``k``
    largest (``top``) / smallest (``bottom``) entries of the row ``A[i] @ B``? A row's rank among other tokens
    counts every other token whose logit is ``>=`` (``<=``) its own, so ties count against it.

    Exact, in two passes. Screening: the logits on the columns ``screen`` only; a row with at least ``k``
    screened columns clearly above (below) its own logit cannot be in the top (bottom) ``k`` of the full row
    ("clearly": by more than a rounding tolerance, since its own logit is recomputed here). Every other row
    is computed over the full vocabulary: its own logit is in the top ``k`` iff at most ``k`` of the ``k + 1``
    largest entries (its own included) are ``>=`` it. ``pre``: ``(B[:, ids], B[:, screen], max column norm of
    B)``, shared by the head and its rotations."""
    n = A.shape[0]
    B_own, Bs, b_max = pre
    top = torch.zeros(n, dtype=torch.bool)
    bot = torch.zeros(n, dtype=torch.bool)
    own = (A * B_own.T).sum(-1, keepdim=True)  # [n, 1]
    tol = 1e-4 * A.norm(dim=-1, keepdim=True) * b_max + 1e-30
    cand = []
    for s in range(0, n, chunk):
        d = (A[s : s + chunk] @ Bs).sub_(own[s : s + chunk])  # [c, m]: screened logits minus the own logit
        t = tol[s : s + chunk]
        above = d.clone().gt_(t).sum(1)  # in place on a float tensor, then a float sum: the fastest count
        below = d.lt_(-t).sum(1)
        cand.append(torch.nonzero((above < k) | (below < k)).flatten() + s)
    rows = torch.cat(cand)
    kk = min(k + 1, B.shape[1])
    for s in range(0, rows.numel(), chunk):
        r = rows[s : s + chunk]
        logits = A[r] @ B  # [c, vocab]
        o = logits.gather(1, ids[r, None])
        top[r] = (logits.topk(kk, dim=1).values >= o).sum(1) <= k
        bot[r] = (logits.topk(kk, dim=1, largest=False).values <= o).sum(1) <= k
    return top, bot


def copying_fractions(
    fw: FoldedWeights,
    token_ids: torch.Tensor,
    k: int = 10,
    rotations: torch.Tensor | None = None,
    n_screen: int = 4096,
    seed: int = 0,
    chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(copying, suppression)`` ``[1 + R, L, H]`` float32: for every head the fraction of ``token_ids`` whose
    own logit is among the ``k`` largest / smallest of ``W_E[t] W_V Q W_O W_U`` over the full vocabulary: index
    0 for the head itself (``Q = I``), ``1 + i`` for each of ``rotations [R, d_head, d_head]`` (the null; one
    ``W_O W_U`` product per head serves them all). Exact; a screening pass on ``n_screen`` random columns
    (drawn with ``seed``) skips the full row of every token that is clearly out of both extremes (see
    :func:`_extremes`)."""
    L, H = fw.W_V.shape[:2]
    vocab = fw.W_U.shape[1]
    g = torch.Generator().manual_seed(seed)
    screen = torch.randperm(vocab, generator=g)[: min(n_screen, vocab)].sort().values
    qs = [None] + ([] if rotations is None else list(rotations.to(fw.W_V)))
    cop = torch.zeros(len(qs), L, H)
    sup = torch.zeros(len(qs), L, H)
    E = fw.W_E[token_ids]  # [n, d]
    with torch.no_grad():
        for layer in range(L):
            A = torch.einsum("nd,hde->hne", E, fw.W_V[layer])  # [H, n, e]
            B = fw.W_O[layer] @ fw.W_U  # [H, e, vocab]
            for h in range(H):
                pre = (B[h][:, token_ids], B[h][:, screen], B[h].norm(dim=0).max())
                for i, q in enumerate(qs):
                    top, bot = _extremes(A[h] if q is None else A[h] @ q, B[h], token_ids, k, screen, chunk, pre)
                    cop[i, layer, h], sup[i, layer, h] = top.float().mean(), bot.float().mean()
    return cop, sup


def random_rotations(n: int, e: int, g: torch.Generator) -> torch.Tensor:
    """``[n, e, e]`` Haar-distributed orthogonal matrices (QR of a Gaussian with the sign fix)."""
    a = torch.randn(n, e, e, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


@dataclass
class OVCopying:
    """The copying scores of every head (see the module docstring), ``[n_layers, n_heads]`` float32 each:
    ``copying`` / ``suppression`` (fraction of the sampled tokens in their own top / bottom ``k``),
    ``copying_null`` / ``suppression_null`` (the rotation null, mean over the draws), ``null_max`` (per
    score, the largest null value over every head and draw), and the settings that produced them."""

    copying: torch.Tensor
    suppression: torch.Tensor
    copying_null: torch.Tensor
    suppression_null: torch.Tensor
    null_max: dict[str, float]
    token_ids: torch.Tensor
    k: int
    n_null_rotations: int
    seed: int
    seconds: float

    def settings(self) -> dict[str, Any]:
        """What produced the scores (JSON-able), for a Result's ``settings``."""
        return {
            "copying_score": (
                f"fraction of {self.token_ids.numel()} sampled tokens (seed {self.seed}) whose own logit is in the "
                f"top (copying) / bottom (copy suppression) {self.k} of W_E[t] W_V W_O W_U over the full vocabulary "
                "(McDougall et al. 2023)"
            ),
            "copying_k": self.k,
            "copying_tokens": int(self.token_ids.numel()),
            "copying_null": f"random d_head rotation between W_V and W_O (mean of {self.n_null_rotations} per head)",
            "copying_null_max": {c: round(v, 4) for c, v in self.null_max.items()},
            "copying_membership": f"score >= {MIN_SCORE} and score >= null_max + {NULL_MARGIN}",
            "copying_score_seconds": round(self.seconds, 3),
        }


def ov_copying(
    model: Model, k: int = 10, n_tokens: int = 2048, n_null_rotations: int = 1, seed: int = 0, fold_norms: bool = True
) -> OVCopying:
    """The copying and copy-suppression scores of every head and their rotation null (module docstring).

    Args:
        model: the model.
        k: a token counts when it is among the ``k`` largest (smallest) logits of its own OV row.
        n_tokens: rows scored: a fixed sample of this many distinct token ids (all when the vocabulary is
            not larger).
        n_null_rotations: random rotations in the null (0: no null; zeros).
        seed: seed of the token sample and the rotations.
        fold_norms: fold the norms into the weights (:mod:`interplab.models.folding`); False: raw weights.
    """
    if k < 1 or n_tokens < 1 or n_null_rotations < 0:
        raise ValueError(
            f"k and n_tokens must be at least 1 and n_null_rotations at least 0, got {k}, {n_tokens}, "
            f"{n_null_rotations}."
        )
    t0 = time.perf_counter()
    fw = folded_weights(model, fold_norms=fold_norms)
    vocab = fw.W_E.shape[0]
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(vocab) if n_tokens >= vocab else torch.randperm(vocab, generator=g)[:n_tokens].sort().values
    rots = random_rotations(n_null_rotations, fw.W_V.shape[-1], g) if n_null_rotations else None
    cop, sup = copying_fractions(fw, ids, k, rotations=rots, seed=seed)
    copying, suppression = cop[0], sup[0]
    nc, ns = (cop[1:], sup[1:]) if n_null_rotations else (torch.zeros_like(cop), torch.zeros_like(sup))
    return OVCopying(
        copying=copying,
        suppression=suppression,
        copying_null=nc.mean(0),
        suppression_null=ns.mean(0),
        null_max={"copying": float(nc.max()), "copy_suppression": float(ns.max())},
        token_ids=ids,
        k=k,
        n_null_rotations=n_null_rotations,
        seed=seed,
        seconds=time.perf_counter() - t0,
    )


def copying_members(score: torch.Tensor, null_max: float) -> torch.Tensor:
    """Boolean mask of the heads whose score (copying or copy suppression) is at least :data:`MIN_SCORE` and
    at least :data:`NULL_MARGIN` above ``null_max`` (the largest value of the rotation null)."""
    return (score >= MIN_SCORE) & (score >= null_max + NULL_MARGIN)


# ------------------------------------------------------------------------------- the reference statistic
def ov_eigenvalues(fw: FoldedWeights, center_unembed: bool = False) -> torch.Tensor:
    """Eigenvalues ``[L, H, d_head]`` (complex) of ``K = W_O W_U' W_E W_V`` per head = the nonzero eigenvalues
    of the full OV circuit ``W_E W_V W_O W_U'`` (``W_U'``: ``fw.W_U``, centred over the vocabulary when
    ``center_unembed``)."""
    W_U = fw.W_U - fw.W_U.mean(1, keepdim=True) if center_unembed else fw.W_U
    UE = (W_U @ fw.W_E).double()  # [d, d]
    M = fw.W_O.double() @ UE @ fw.W_V.double()  # [L, H, e, e]
    with torch_threads(1):  # batched d_head-sized eig: one thread is fastest on a loaded machine
        return torch.linalg.eigvals(M)


def copying_ratio(eig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratio, positive_fraction)`` of eigenvalues ``[..., e]``: ``sum(lambda) / sum(|lambda|)`` and
    ``sum(max(Re lambda, 0)) / sum(|lambda|)``; 0 where ``sum |lambda|`` is at most 1e-12 times its maximum."""
    absum = eig.abs().sum(-1)
    ok = absum > 1e-12 * absum.max().clamp_min(1e-300)
    ratio = torch.where(ok, eig.real.sum(-1) / absum.clamp_min(1e-300), torch.zeros_like(absum))
    positive = torch.where(ok, eig.real.clamp_min(0).sum(-1) / absum.clamp_min(1e-300), torch.zeros_like(absum))
    return ratio, positive


def eigenvalue_copying(model: Model, fold_norms: bool = True, center_unembed: bool = False) -> torch.Tensor:
    """Elhage et al.'s eigenvalue ratio ``sum(lambda) / sum(|lambda|)`` of every head's full OV circuit,
    ``[n_layers, n_heads]`` float32 — the reference statistic, not the copying score (module docstring).

    Args:
        model: the model.
        fold_norms: fold the norms into the weights (:mod:`interplab.models.folding`); False: raw weights.
        center_unembed: centre ``W_U`` over the vocabulary (TransformerLens's ``center_unembed``).
    """
    fw = folded_weights(model, fold_norms=fold_norms)
    return copying_ratio(ov_eigenvalues(fw, center_unembed))[0].float()
