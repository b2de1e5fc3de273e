"""Confidence intervals over independent samples (text chunks, prompts, seeds), on ``scipy.stats``.

- Student's t interval of a mean: ``mean ± t_{(1+level)/2, n-1} · s / √n`` (``scipy.stats.t.ppf``).
- Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the n samples with replacement, the
  interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled statistic. One seeded set of
  resample indices is shared by all rows, so intervals of different heads or cells are comparable.

Clustered means for evals (Miller 2024, "Adding Error Bars to Evals: A Statistical Approach to Language Model
Evaluations", arXiv:2411.00640): when the n observations come in G clusters (one item under several prompt
templates, questions sharing a passage) they are not independent, and the naive ``s / √n`` understates the
standard error by the square root of the design effect ``1 + (m - 1)·ICC``. :func:`clustered_mean` uses the
cluster-robust (sandwich) standard error of the mean, Miller's eq. 4 with the CR1 small-sample factor::

    SE_cl = sqrt( G / (G - 1) · Σ_c (Σ_{i∈c} (x_i - x̄))² ) / n

and a Student's t interval with ``G - 1`` degrees of freedom. A paired difference (the same item under two
conditions, Miller §4) is a clustered mean of the per-unit differences: :func:`paired_difference`.
:func:`template_spread` splits an items × templates table of effects into a template variance component
(two-way ANOVA without replication, method of moments) and the effect per template; :func:`minimum_detectable_effect`
is ``(z_{1-α/2} + z_{power}) · SE`` (Miller §5, power analysis).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats as _st

__all__ = [
    "CIMethod",
    "ClusteredMean",
    "TemplateSpread",
    "bootstrap_indices",
    "bootstrap_interval",
    "clustered_mean",
    "confidence_interval",
    "minimum_detectable_effect",
    "paired_difference",
    "t_quantile",
    "template_spread",
    "wilson_interval",
]

CIMethod = Literal["t", "bootstrap"]
ArrayLike = Sequence[Any] | np.ndarray | Any  # a list, a numpy array or a pandas Series


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


# ---------------------------------------------------------------------------------- clustered means (evals)


def minimum_detectable_effect(se: float, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true effect a two-sided test at ``1 - level`` detects with probability ``power``, given the
    standard error of the estimate: ``(z_{(1+level)/2} + z_{power}) · se`` (Miller 2024, §5; 2.80 · se at the
    defaults)."""
    if not (0 < level < 1 and 0 < power < 1):
        raise ValueError(f"level and power must lie in (0, 1), got {level}, {power}.")
    return float((_st.norm.ppf((1 + level) / 2) + _st.norm.ppf(power)) * se)


@dataclass(frozen=True)
class ClusteredMean:
    """A mean with its naive and cluster-robust standard errors and the clustered ``level`` interval."""

    mean: float
    se_clustered: float
    se_naive: float
    ci: tuple[float, float]
    n: int
    n_clusters: int
    mde: float
    level: float = 0.95

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        r = lambda x: round(float(x), digits)
        return {
            "effect": r(self.mean),
            "ci95" if self.level == 0.95 else f"ci{round(self.level * 100)}": [r(self.ci[0]), r(self.ci[1])],
            "se_clustered": r(self.se_clustered),
            "se_naive": r(self.se_naive),
            "n": self.n,
            "n_clusters": self.n_clusters,
            "mde": r(self.mde),
        }


def clustered_mean(values: ArrayLike, clusters: ArrayLike | None = None, level: float = 0.95) -> ClusteredMean:
    """Mean of ``values`` with the cluster-robust standard error (CR1, Miller 2024 eq. 4) and a t interval with
    ``G - 1`` degrees of freedom (``G`` clusters); ``clusters=None``: every value its own cluster (then the
    clustered SE is the naive ``s / √n``). Needs at least 2 clusters."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"clustered_mean needs a 1-D array of at least 2 values, got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("clustered_mean: values contain NaN or infinity; drop or fill them first.")
    n = len(x)
    if clusters is None:
        codes = np.arange(n)
    else:
        if len(clusters) != n:
            raise ValueError(f"clusters has {len(clusters)} labels for {n} values.")
        _, codes = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    g = int(codes.max()) + 1
    if g < 2:
        raise ValueError("a clustered standard error needs at least 2 clusters; all values share one.")
    mean = float(x.mean())
    sums = np.bincount(codes, weights=x - mean, minlength=g)
    se_cl = math.sqrt(g / (g - 1) * float(np.sum(sums**2))) / n
    se_naive = float(x.std(ddof=1)) / math.sqrt(n)
    half = t_quantile((1 + level) / 2, g - 1) * se_cl
    return ClusteredMean(
        mean=mean,
        se_clustered=se_cl,
        se_naive=se_naive,
        ci=(mean - half, mean + half),
        n=n,
        n_clusters=g,
        mde=minimum_detectable_effect(se_cl, level),
        level=level,
    )


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    clusters: ArrayLike | None = None,
    level: float = 0.95,
) -> ClusteredMean:
    """The mean paired difference ``a - b`` (row i of both: the same item and template under two conditions),
    clustered by ``clusters`` (Miller 2024, §4: pairing removes the item variance from the comparison)."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValueError(f"paired_difference needs equal-length conditions, got {xa.shape} and {xb.shape}.")
    return clustered_mean(xa - xb, clusters, level)


@dataclass(frozen=True)
class TemplateSpread:
    """How an effect varies with the prompt template: ``per_template`` (mean effect per template), ``sd`` (the
    template standard deviation from the variance component, 0 when the between-template variation is no larger
    than the item-by-template noise predicts) and ``sd_observed`` (the plain SD of the per-template means)."""

    per_template: dict[str, float]
    sd: float
    sd_observed: float
    variance_component: float


def template_spread(values: ArrayLike, items: ArrayLike, templates: ArrayLike) -> TemplateSpread:
    """Template variance component of ``values`` laid out items × templates (one value per item and template).

    Two-way random-effects ANOVA without replication, method of moments: with I items and T templates,
    ``MS_T = I · var(template means)`` and ``MS_E`` the residual mean square after removing item and template
    means; ``σ²_T = max(0, (MS_T - MS_E) / I)``. Items missing a template are dropped from the component (the
    per-template means use every value)."""
    x = np.asarray(values, dtype=np.float64)
    it = np.asarray([str(i) for i in items])
    tp = np.asarray([str(t) for t in templates])
    if not len(x) == len(it) == len(tp):
        raise ValueError("template_spread: values, items and templates must have the same length.")
    names = sorted(set(tp.tolist()), key=lambda t: (len(t), t))
    per = {t: float(x[tp == t].mean()) for t in names}
    observed = float(np.std(list(per.values()), ddof=1)) if len(per) > 1 else 0.0
    if len(names) < 2:
        return TemplateSpread(per, 0.0, observed, 0.0)
    _, row_of = np.unique(it, return_inverse=True)
    _, col_of = np.unique(tp, return_inverse=True)
    grid = np.full((int(row_of.max()) + 1, len(names)), np.nan)
    grid[row_of, col_of] = x
    grid = grid[~np.isnan(grid).any(1)]
    n_i, n_t = grid.shape
    if n_i < 2:
        return TemplateSpread(per, 0.0, observed, 0.0)
    grand = grid.mean()
    row, col = grid.mean(1, keepdims=True), grid.mean(0, keepdims=True)
    ms_t = n_i * float(((col - grand) ** 2).sum()) / (n_t - 1)
    ms_e = float(((grid - row - col + grand) ** 2).sum()) / ((n_i - 1) * (n_t - 1))
    comp = max(0.0, (ms_t - ms_e) / n_i)
    return TemplateSpread(per, math.sqrt(comp), observed, comp)


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (Wilson 1927): unlike a t interval it does not collapse to a
    point at 0 or 1 (0 of 8 refusals: [0, 0.32]). It assumes independent trials (no clustering)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}.")
    z = float(_st.norm.ppf((1 + level) / 2))
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)
