"""Confidence intervals over independent samples (text chunks, prompts, seeds), on ``scipy.stats``.

- Student's t interval of a mean: ``mean ± t_{(1+level)/2, n-1} · s / √n`` (``scipy.stats.t.ppf``).
- Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the n samples with replacement, the
  interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled statistic. One seeded set of
  resample indices is shared by all rows, so intervals of different heads or cells are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from scipy import stats as _st

__all__ = ["CIMethod", "bootstrap_indices", "bootstrap_interval", "confidence_interval", "t_quantile"]

CIMethod = Literal["t", "bootstrap"]


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``p`` in (0.5, 1)) of Student's t with ``df >= 1`` degrees of freedom."""
    if not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1, got {p}.")
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}.")
    return float(_st.t.ppf(p, df))


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> torch.Tensor:
    """``[n_boot, n]`` resample indices (with replacement) from a seeded generator."""
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10, got {n_boot}.")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=g)


def bootstrap_interval(
    values: torch.Tensor,
    statistic: Callable[[torch.Tensor], torch.Tensor] | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile-bootstrap interval of ``statistic`` (default: the mean) over the last dimension of ``values``
    ``[..., n]``; ``statistic`` maps ``[..., n_boot, n]`` to ``[..., n_boot]``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    v = values.double()
    idx = bootstrap_indices(v.shape[-1], n_boot, seed)
    boots = v[..., idx]
    boots = boots.mean(-1) if statistic is None else statistic(boots)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=boots.dtype)
    lo, hi = torch.quantile(boots, q, dim=-1)
    return lo, hi


def confidence_interval(
    values: torch.Tensor, level: float = 0.95, method: CIMethod = "t", n_boot: int = 2000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """CI of the mean over the last dimension of ``values`` ``[..., n]`` (n >= 2 independent samples), as float32.

    ``method="t"``: Student's t interval; ``"bootstrap"``: percentile bootstrap with ``n_boot`` resamples
    (one shared, seeded set of resample indices for all rows)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    v = values.double()
    n = v.shape[-1]
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 samples, got {n}.")
    if method == "t":
        mean = v.mean(-1)
        half = t_quantile((1 + level) / 2, n - 1) * v.std(-1, unbiased=True) / math.sqrt(n)
        return (mean - half).float(), (mean + half).float()
    if method == "bootstrap":
        lo, hi = bootstrap_interval(v, level=level, n_boot=n_boot, seed=seed)
        return lo.float(), hi.float()
    raise ValueError(f"ci must be 't' or 'bootstrap', not {method!r}.")
