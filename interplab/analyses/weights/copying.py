"""The copying score of an attention head, written once (Elhage et al. 2021, "A Mathematical Framework for
Transformer Circuits", section "Summarizing OV/QK matrices" / "Copying / Primarily Positive Eigenvalues";
used by Olsson et al. 2022, "In-context Learning and Induction Heads", as the copying half of their
induction-head definition). :func:`~interplab.analyses.weights.svd.head_circuits` and the head detectors
(:mod:`interplab.analyses.observational.heads`) both call it.

**Score.** The eigenvalues of the full OV circuit ``W_E W_OV W_U'`` (``[vocab, vocab]``, ``W_OV = W_V W_O``);
a head that copies has mostly positive eigenvalues. ``copying = sum_i lambda_i / sum_i |lambda_i|`` in
``[-1, 1]`` (the eigenvalues of a real matrix come in conjugate pairs, so the numerator is real: it is the
trace); ``positive_fraction = sum_i max(Re lambda_i, 0) / sum_i |lambda_i|`` in ``[0, 1]``. The eigenvalues
come from the d_head x d_head matrix ``K = W_O W_U' W_E W_V``: for any ``A [n, m]``, ``B [m, n]``, ``AB``
and ``BA`` have the same nonzero eigenvalues (with multiplicity; Sylvester's determinant identity
``det(I_n - AB/t) = det(I_m - BA/t)``), here with ``A = W_E W_V`` and ``B = W_O W_U'``. A head whose full
OV circuit is (numerically) zero — ``sum |lambda| <= 1e-12`` times the largest over the heads — gets 0.

**Norms** are folded as :mod:`interplab.models.folding` describes: the pre-attention norm's gain (and LN
centring) into ``W_V``, Gemma 3's post-attention norm into ``W_O``, the final norm into ``W_U'``. The
per-token ``1/rms`` scale, norm biases, positional embeddings and every layer between the embedding and the
head are ignored (the direct-path approximation of both papers).

**Vocabulary centring** (``center_unembed``; TransformerLens's ``center_unembed``): ``W_U'`` minus its mean
over the vocabulary. The softmax ignores a shift shared by all logits; without the centring the mean
embedding direction (SmolLM2's largest singular direction by a factor of 5) dominates the circuit. The head
detectors centre (``center_unembed=True``); :func:`head_circuits` does not (on SmolLM2 the two agree with
correlation 0.96 over the 270 heads).

**Null baseline** (``n_null_rotations``; used by the head detectors): the same ratio with a random rotation
``Q`` (Haar orthogonal, ``d_head x d_head``) inserted between ``W_V`` and ``W_O`` (``eig(Q K)``), averaged
over the draws: it keeps the singular values of ``W_V`` and ``W_O`` and destroys their alignment
(``E[tr(Q K)] = 0`` for Haar ``Q``, so the null sits near 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from interplab.models.folding import FoldedWeights, folded_weights
from interplab.runtime import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = ["copying_null", "copying_ratio", "copying_scores", "ov_eigenvalues", "random_rotations"]


def ov_eigenvalues(fw: FoldedWeights, center_unembed: bool = False, rotations: torch.Tensor | None = None):
    """Eigenvalues ``[L, H, d_head]`` (complex) of ``K = W_O W_U' W_E W_V`` per head = the nonzero eigenvalues
    of the full OV circuit ``W_E W_V W_O W_U'`` (``W_U'``: ``fw.W_U``, centred over the vocabulary when
    ``center_unembed``). With ``rotations [n, e, e]``: the eigenvalues ``[n, L, H, e]`` of ``Q K`` per rotation."""
    W_U = fw.W_U - fw.W_U.mean(1, keepdim=True) if center_unembed else fw.W_U
    UE = (W_U @ fw.W_E).double()  # [d, d]
    M = fw.W_O.double() @ UE @ fw.W_V.double()  # [L, H, e, e]
    with torch_threads(1):  # batched d_head-sized eig: one thread is fastest on a loaded machine
        if rotations is None:
            return torch.linalg.eigvals(M)
        return torch.stack([torch.linalg.eigvals(q @ M) for q in rotations.double()])


def copying_ratio(eig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(copying, positive_fraction)`` of eigenvalues ``[..., e]``: ``sum(lambda) / sum(|lambda|)`` and
    ``sum(max(Re lambda, 0)) / sum(|lambda|)``; 0 where ``sum |lambda|`` is at most 1e-12 times its maximum."""
    absum = eig.abs().sum(-1)
    ok = absum > 1e-12 * absum.max().clamp_min(1e-300)
    copying = torch.where(ok, eig.real.sum(-1) / absum.clamp_min(1e-300), torch.zeros_like(absum))
    positive = torch.where(ok, eig.real.clamp_min(0).sum(-1) / absum.clamp_min(1e-300), torch.zeros_like(absum))
    return copying, positive


def random_rotations(n: int, e: int, g: torch.Generator) -> torch.Tensor:
    """``[n, e, e]`` Haar-distributed orthogonal matrices (QR of a Gaussian with the sign fix)."""
    a = torch.randn(n, e, e, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def copying_scores(model: Model, fold_norms: bool = True, center_unembed: bool = False) -> torch.Tensor:
    """Copying score ``sum(lambda) / sum(|lambda|)`` of every head's full OV circuit, ``[n_layers, n_heads]``
    float32 (Elhage et al. 2021; see the module docstring).

    Args:
        model: the model.
        fold_norms: fold the norms into the weights (:mod:`interplab.models.folding`); False: raw weights.
        center_unembed: centre ``W_U`` over the vocabulary (the head detectors' convention).
    """
    fw = folded_weights(model, fold_norms=fold_norms)
    return copying_ratio(ov_eigenvalues(fw, center_unembed))[0].float()


def copying_null(
    model: Model, n_rotations: int = 4, seed: int = 0, fold_norms: bool = True, center_unembed: bool = False
) -> torch.Tensor:
    """The rotation null of :func:`copying_scores`, ``[n_layers, n_heads]`` float32: the copying score with a
    Haar-random ``d_head`` rotation between ``W_V`` and ``W_O``, averaged over ``n_rotations`` draws (zeros
    for ``n_rotations=0``).

    Args:
        model: the model.
        n_rotations: random rotations averaged.
        seed: seed of the rotations (one set of draws serves every layer).
        fold_norms: as :func:`copying_scores`.
        center_unembed: as :func:`copying_scores`.
    """
    if n_rotations <= 0:
        return torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    fw = folded_weights(model, fold_norms=fold_norms)
    q = random_rotations(n_rotations, model.cfg.d_head, torch.Generator().manual_seed(seed))
    return copying_ratio(ov_eigenvalues(fw, center_unembed, rotations=q))[0].mean(0).float()
