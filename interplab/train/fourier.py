"""Fourier analysis of modular-arithmetic transformers — Nanda, Chan, Lieberum, Smith & Steinhardt (2023),
"Progress measures for grokking via mechanistic interpretability" (ICLR 2023).

Notation: ``p`` prime, frequencies ``k = 1 .. (p-1)/2``, ``w_k = 2 pi k / p``. The Fourier basis of
functions on ``Z_p`` has rows ``1/sqrt(p)`` (constant), then ``cos(w_k x)`` and ``sin(w_k x)`` for each
``k``, each scaled to unit norm (:func:`fourier_basis`), so it is orthonormal.

* **embedding norms per frequency**: ``||F_cos_k W_E||^2 + ||F_sin_k W_E||^2`` (square-rooted), ``W_E`` the
  embedding rows of the ``p`` number tokens.
* **neuron frequencies**: the MLP activations at the ``=`` position on all ``p^2`` inputs, as a
  ``p x p`` table per neuron, are transformed by ``F A F^T``; the fraction of a neuron's variance
  (constant term excluded) explained by frequency ``k`` is the squared mass of the terms whose ``a`` or
  ``b`` factor is ``cos/sin(w_k .)`` and whose other factor is the constant or the same frequency.
  A neuron belongs to its best frequency when that fraction is at least ``fve_threshold``.
* **key frequencies**: the frequencies that at least ``min_neurons`` neurons belong to (Nanda et al.
  cluster the neurons by frequency in the same way).
* **restricted / excluded loss** (Nanda et al. section 5.1): the logits over all ``(a, b)`` are
  projected, for each output ``c``, onto the directions ``cos(w_k(a+b))`` and ``sin(w_k(a+b))`` of the
  key frequencies (``a-b`` for subtraction). *Restricted*: keep only those components plus the mean
  over ``(a, b)``; loss on the whole dataset. *Excluded*: remove those components; loss on the training
  set. The directions of different frequencies are orthogonal on the ``p x p`` grid, so both are exact
  projections.
* **Gini** of the norms of the ``p`` Fourier components of the embedding and of the neuron-logit map
  ``W_L = W_out W_U`` (Nanda et al. track both; they rise as the model becomes sparse in frequency).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "basis_norms",
    "embedding_freq_norms",
    "fourier_basis",
    "fourier_directions",
    "freq_norms",
    "gini",
    "key_frequencies",
    "neuron_frequencies",
    "restricted_excluded_logits",
]


def fourier_basis(p: int, dtype=torch.float64) -> tuple[torch.Tensor, list[str]]:
    """Orthonormal ``[p, p]`` basis (rows) and names ``["const", "cos 1", "sin 1", ...]``."""
    x = torch.arange(p, dtype=dtype)
    rows, names = [torch.ones(p, dtype=dtype)], ["const"]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    F = torch.stack(rows[:p])
    return F / F.norm(dim=1, keepdim=True), names[:p]


def basis_norms(W: torch.Tensor) -> torch.Tensor:
    """``W`` ``[p, d]`` (one row per residue) -> ``[p]`` norms of its Fourier components (rows of ``F W``)."""
    F, _ = fourier_basis(W.shape[0])
    return (F @ W.double()).norm(dim=1)


def freq_norms(component_norms: torch.Tensor) -> torch.Tensor:
    """``[p]`` component norms -> ``[(p-1)/2]`` norms per frequency ``k = 1..`` (cos and sin combined)."""
    c = component_norms[1:]
    n = c.shape[0] // 2
    return (c[: 2 * n].reshape(n, 2) ** 2).sum(1).sqrt()


def embedding_freq_norms(W_E: torch.Tensor) -> torch.Tensor:
    """Norm of the embedding ``W_E`` ``[p, d]`` per frequency (index 0 is frequency 1)."""
    return freq_norms(basis_norms(W_E))


def neuron_frequencies(acts: torch.Tensor, fve_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``acts`` ``[p, p, n]`` (neuron activations for every ``(a, b)``) -> ``(freq [n], fve [n])``: each
    neuron's best frequency (1-based; 0 = belongs to none) and the fraction of its variance it explains."""
    p = acts.shape[0]
    F, _ = fourier_basis(p)
    A = acts.double()
    n = A.shape[-1]
    C = (F @ A.reshape(p, p * n)).reshape(p, p, n)  # transform over a
    C = (C.permute(0, 2, 1) @ F.T).permute(0, 2, 1)  # then over b: 2D Fourier coefficients [p, p, n]
    C[0, 0] = 0.0
    power = C**2
    total = power.sum((0, 1)).clamp_min(1e-30)
    n_freq = (p - 1) // 2
    fve = torch.zeros(n_freq, acts.shape[-1], dtype=torch.float64)
    for k in range(1, n_freq + 1):
        idx = [2 * k - 1, 2 * k]
        keep = [0] + idx
        mass = power[idx][:, keep].sum((0, 1)) + power[[0]][:, idx].sum((0, 1))
        fve[k - 1] = mass / total
    best, arg = fve.max(0)
    freq = torch.where(best >= fve_threshold, arg + 1, torch.zeros_like(arg))
    return freq, best


def key_frequencies(acts: torch.Tensor, fve_threshold: float = 0.5, min_neurons: int | None = None) -> list[int]:
    """Frequencies that at least ``min_neurons`` neurons (default ``max(2, 1% of neurons)``) belong to."""
    freq, _ = neuron_frequencies(acts, fve_threshold)
    n = acts.shape[-1]
    m = max(2, int(0.01 * n)) if min_neurons is None else min_neurons
    counts = torch.bincount(freq, minlength=(acts.shape[0] - 1) // 2 + 1)
    return [k for k in range(1, counts.shape[0]) if counts[k] >= m]


def fourier_directions(p: int, freqs: list[int], op: str = "add") -> torch.Tensor:
    """``[2 len(freqs), p*p]`` orthonormal directions ``cos/sin(w_k (a +- b))`` over the flattened ``(a, b)`` grid."""
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]
    s = a + b if op == "add" else a - b
    rows = []
    for k in freqs:
        for f in (torch.cos, torch.sin):
            v = f(2 * math.pi * k * s / p).reshape(-1)
            rows.append(v / v.norm())
    return torch.stack(rows) if rows else torch.zeros(0, p * p, dtype=torch.float64)


def restricted_excluded_logits(
    logits: torch.Tensor, freqs: list[int], op: str = "add"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits`` ``[p*p, c]`` for every ``(a, b)`` (row ``a*p + b``) -> (restricted, excluded) logits."""
    p = round(math.sqrt(logits.shape[0]))
    L = logits.double()
    D = fourier_directions(p, freqs, op)
    proj = D.T @ (D @ L)
    return L.mean(0, keepdim=True) + proj, L - proj


def gini(x: torch.Tensor) -> float:
    """Gini coefficient of non-negative values (0: all equal; -> 1: all mass on one entry)."""
    v = x.double().flatten().abs().sort().values
    n = v.numel()
    if n == 0 or float(v.sum()) == 0.0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * v).sum() / (n * v.sum()))
