"""The controls that show what an SAE finds on data with no features (all run by ``interplab sae train``).

**PCA at equal L0**, both fitted on the training rows and scored on the held-out rows: ``pca_top`` keeps the top
``m = round(L0)`` principal components (a dense rank-m code); ``pca_topk`` keeps, per token, the ``m``
largest-magnitude coefficients over *all* principal components (a code with exactly the SAE's L0 in the PCA
basis — the fairer sparse baseline, used for the Gaussian check). **Recovery** of a known dictionary: for each
true atom the maximum cosine similarity with any decoder row; ``recovery`` is the fraction with maximum
cosine ≥ 0.9 (``mmcs`` the mean maximum cosine, as in Sharkey et al. 2022's toy-data checks).

**Synthetic controls** (:func:`run_synthetic_controls`): isotropic Gaussian; a mixture of 12 Gaussians; uniform
points in the unit square (d=2) and cube (d=3); sparse data with a known dictionary, scored by recovery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from interplab.analyses.sae.data import SYNTHETIC, SyntheticName, TensorData, make_synthetic
from interplab.analyses.sae.metrics import evaluate
from interplab.analyses.sae.model import SAE, SAEConfig
from interplab.analyses.sae.training import train_sae
from interplab.io.activations import ActivationDataset

__all__ = [
    "PCA",
    "PCAMode",
    "control_config",
    "control_entry",
    "fit_and_score",
    "recovery",
    "run_synthetic_controls",
]

PCAMode = Literal["top", "topk"]
"""How :meth:`PCA.reconstruct` keeps ``m`` coefficients: the top ``m`` components, or each row's ``m`` largest."""


class PCA:
    """PCA of the training rows (streamed covariance in float64). ``reconstruct(x, m, mode)``: ``"top"`` keeps
    the top ``m`` components, ``"topk"`` the ``m`` largest-magnitude coefficients of each row over all components."""

    def __init__(self, data: TensorData | ActivationDataset | torch.Tensor, batch_size: int = 16384):
        if isinstance(data, torch.Tensor):
            data = TensorData(data)
        d = data.d
        s = torch.zeros(d, dtype=torch.float64)
        ss = torch.zeros(d, d, dtype=torch.float64)
        n = 0
        for x in data.batches(batch_size, shuffle=False):
            x = x.double()
            s += x.sum(0)
            ss += x.T @ x
            n += x.shape[0]
        self.mean = s / n
        cov = ss / n - torch.outer(self.mean, self.mean)
        evals, evecs = torch.linalg.eigh(cov)
        order = evals.argsort(descending=True)
        self.explained = evals[order].clamp_min(0)
        self.components = evecs[:, order]  # [d, d], columns

    def reconstruct(self, x: torch.Tensor, m: int, mode: PCAMode = "topk") -> torch.Tensor:
        """``x`` through the PCA code that keeps ``m`` coefficients per row (see :data:`PCAMode`)."""
        c = (x.double() - self.mean) @ self.components
        if mode == "top":
            c[:, m:] = 0
        elif mode == "topk":
            if m < c.shape[1]:
                _, i = c.abs().topk(m, dim=-1)
                c = torch.zeros_like(c).scatter(-1, i, c.gather(-1, i))
        else:
            raise ValueError(f"PCA mode must be 'top' or 'topk', not {mode!r}.")
        return (c @ self.components.T + self.mean).float()


def recovery(sae: SAE, atoms: torch.Tensor, threshold: float = 0.9) -> dict[str, Any]:
    """Max cosine similarity of each true atom with the decoder rows: ``recovery`` (fraction ≥ threshold), ``mmcs``.

    Args:
        sae: the trained SAE.
        atoms: the true dictionary ``[n_atoms, d]``.
        threshold: the cosine at which an atom counts as recovered.
    """
    cos = F.normalize(atoms.float(), dim=-1) @ F.normalize(sae.W_dec.detach().float(), dim=-1).T
    best = cos.max(dim=1).values
    return {
        "recovery": float((best >= threshold).float().mean()),
        "mmcs": float(best.mean()),
        "n_atoms": int(atoms.shape[0]),
        "recovery_threshold": threshold,
    }


def _ev_gap(sae_scores: dict, pca_scores: dict) -> dict:
    """EV(SAE) - EV(PCA top-m coefficients) and its standard error over rows (the sampling noise), from the
    :func:`evaluate` results (``row_errors=True``) of both on the same rows."""
    dd = pca_scores["row_sq_err"] - sae_scores["row_sq_err"]
    tv = sae_scores["total_var"]
    return {"ev_gap_vs_pca_topk": float(dd.mean() / tv), "ev_gap_se": float(dd.std() / math.sqrt(len(dd)) / tv)}


def _brief(m: dict) -> dict:
    return {
        k: (round(v, 5) if isinstance(v, float) else v)
        for k, v in m.items()
        if k not in ("density", "n", "row_sq_err", "total_var")
    }


def fit_and_score(
    train: TensorData | ActivationDataset | torch.Tensor,
    test: TensorData | ActivationDataset | torch.Tensor,
    cfg: SAEConfig,
    atoms: torch.Tensor | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> tuple[SAE, dict[str, Any]]:
    """Train on ``train``; score on train and test; PCA at equal L0 (and the SAE-PCA gap); recovery if ``atoms``.

    Args:
        train, test: training and held-out rows.
        cfg: the SAE to train (:func:`train_sae`).
        atoms: the true dictionary ``[n_atoms, d]`` of known-dictionary data (adds ``recovery`` and ``mmcs``).
        checkpoint_dir, progress: passed to :func:`train_sae`.
    """
    sae, info = train_sae(train, cfg, checkpoint_dir=checkpoint_dir, progress=progress)
    tr, te = evaluate(sae, train), evaluate(sae, test, row_errors=True)
    p = PCA(train)
    m = max(1, round(te["l0"]))
    pk = evaluate(lambda x: p.reconstruct(x, m, "topk"), test, row_errors=True)
    out = {
        "train": _brief(tr),
        "test": _brief(te),
        "pca_m": m,
        "pca_top_ev": evaluate(lambda x: p.reconstruct(x, m, "top"), test)["explained_variance"],
        "pca_topk_ev": pk["explained_variance"],
        **_ev_gap(te, pk),
        "tokens_per_s": info["tokens_per_s"],
        "train_seconds": info["seconds"],
        "steps": info["steps"],
        "train_dead_frac_window": info["train_dead_frac"],
        "history": info["history"],
        "density_test": te["density"],
    }
    if atoms is not None:
        out.update(recovery(sae, atoms))
    return sae, out


def control_config(cfg: SAEConfig, d: int) -> SAEConfig:
    """The SAE used on a synthetic control of dimension ``d``: same kind, λ and seed, ``k = max(1, min(k, d // 8))``,
    ``n_features = max(64, 8 d)``, 4 epochs of 32k rows."""
    return SAEConfig(
        d_in=d,
        n_features=max(64, 8 * d),
        kind=cfg.kind,
        k=max(1, min(cfg.k, d // 8)),
        l1_coeff=cfg.l1_coeff,
        l0_coeff=cfg.l0_coeff,
        lr=1e-3,
        batch_size=512,
        epochs=4,
        seed=cfg.seed,
    )


def control_entry(sc: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one control kept in the result, from a :func:`fit_and_score` result."""
    return {
        "l0": sc["test"]["l0"],
        "explained_variance": sc["train"]["explained_variance"],
        "test_explained_variance": sc["test"]["explained_variance"],
        "test_dead_frac": sc["test"]["dead_frac"],
        **{
            k: sc[k]
            for k in (
                "pca_m",
                "pca_top_ev",
                "pca_topk_ev",
                "ev_gap_vs_pca_topk",
                "ev_gap_se",
                "recovery",
                "mmcs",
                "train_seconds",
            )
            if k in sc
        },
    }


def run_synthetic_controls(
    cfg: SAEConfig,
    names: Sequence[SyntheticName] = SYNTHETIC,
    n_train: int = 32768,
    n_test: int = 8192,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train and score the control SAE (:func:`control_config`) on each synthetic data set.

    Args:
        cfg: the main SAE's configuration (kind, λ, k and seed carry over).
        names: the synthetic sets (:data:`interplab.analyses.sae.data.SyntheticName`).
        n_train, n_test: rows of each set's splits.
        log: called with one line per control.
    """
    out = {}
    for name in names:
        data = make_synthetic(name, n_train=n_train, n_test=n_test, seed=cfg.seed)
        c = control_config(cfg, data["d"])
        _, sc = fit_and_score(data["train"], data["test"], c, atoms=data["atoms"])
        out[name] = control_entry(sc) | {"d": data["d"], "k": c.k, "n_features": c.n_features}
        if log:
            log(f"control {name}: held-out EV {sc['test']['explained_variance']:.3f} vs PCA {sc['pca_topk_ev']:.3f}")
    return out
