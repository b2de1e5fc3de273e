"""Linear probes: logistic-regression probes as scikit-learn estimators, layer sweeps with held-out
evaluation, and the easy → hard generalisation split.

Probing follows Alain & Bengio (2016), "Understanding intermediate layers using linear classifier probes";
the easy → hard split follows Hase et al. (2024), "The Unreasonable Effectiveness of Easy Training Data for
Hard Tasks" (train on easy items, test on hard ones). Activations come from the one hook mechanism
(:func:`collect_activations` calls ``model.run(tokens, cache=[...])``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from interplab.analyses.representations.erasure import majority_acc
from interplab.io.results import Result

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["LinearProbe", "ProbeSweep", "collect_activations", "easy_hard_split", "group_split", "probe_layers"]


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe on standardised features (L2 penalty ``C``); scikit-learn compatible.

    ``direction_`` is the probe's weight vector in the *original* coordinates (the standardisation folded
    in), so it can be compared with other directions (CCS, mean differences) or used for steering.

    Args:
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: iterations of its solver.
        standardize: standardise each feature (on the training rows) before fitting.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 2000, standardize: bool = True):
        self.C = C
        self.max_iter = max_iter
        self.standardize = standardize

    def fit(self, X: Any, y: Any) -> Self:
        """Fit on features ``X [n, d]`` and labels ``y [n]``."""
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(0) if self.standardize else np.zeros(X.shape[1])
        self.scale_ = (X.std(0) + 1e-8) if self.standardize else np.ones(X.shape[1])
        self.lr_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit((X - self.mean_) / self.scale_, y)
        self.classes_ = self.lr_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _z(self, X):
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def decision_function(self, X):
        return self.lr_.decision_function(self._z(X))

    def predict_proba(self, X):
        return self.lr_.predict_proba(self._z(X))

    def predict(self, X):
        return self.lr_.predict(self._z(X))

    @property
    def direction_(self) -> np.ndarray:
        w = self.lr_.coef_ / self.scale_
        return w[0] if w.shape[0] == 1 else w


def collect_activations(
    model: Model,
    prompts: Sequence[str] | Any,
    layers: Sequence[int] | None = None,
    hook: str = "hook_resid_post",
    position: int = -1,
    batch_size: int = 16,
) -> dict[int, np.ndarray]:
    """``{layer: [n, d_model]}`` float32 activations of ``blocks.{layer}.{hook}`` at one position per prompt.

    ``prompts``: strings (tokenised with right padding) or a LongTensor ``[n, pos]``. ``position=-1`` is each
    prompt's last real token (pads skipped); ``position=i ≥ 0`` the i-th token. Right padding needs no mask
    under causal attention (real tokens never attend to later pads), so every model family works the same.

    Args:
        model: the model to run.
        prompts: strings or token ids ``[n, pos]``.
        layers: the layers to read (None: all).
        hook: the hook point within each block.
        position: the token position read in each prompt (-1: the last real token).
        batch_size: prompts per forward pass.
    """
    import torch

    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(l) % n_layers for l in layers]
    names = [f"blocks.{l}.{hook}" for l in layers]
    stop = (
        max(layers, default=n_layers - 1) + 1
    )  # blocks after the last requested layer and the unembedding are not run
    window: dict[str, Any] = {"stop_at_layer": stop} if stop < n_layers else {"return_resid": True}
    out: dict[int, list] = {l: [] for l in layers}
    is_text = isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], str)
    n = len(prompts)
    for i in range(0, n, batch_size):
        if is_text:
            toks, mask = model.to_tokens(list(prompts[i : i + batch_size]), padding_side="right", return_mask=True)
        else:
            toks = torch.as_tensor(prompts[i : i + batch_size])
            mask = torch.ones_like(toks)
        last = mask.sum(1) - 1
        pos = last if position == -1 else torch.full_like(last, position)
        if (pos > last).any() or (pos < 0).any():
            raise ValueError(
                f"position {position} is outside some prompts (shortest has {int(last.min()) + 1} tokens)."
            )
        _, cache = model.run(toks, cache=names, **window)
        rows = torch.arange(len(toks))
        for l, nm in zip(layers, names):
            out[l].append(cache[nm][rows, pos.to(cache[nm].device)].float().cpu().numpy())
    return {l: np.concatenate(v) for l, v in out.items()}


def group_split(
    groups: Sequence[int] | np.ndarray, test_frac: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` with every group (e.g. one statement in all its templates) on one side."""
    g = np.asarray(groups)
    uniq = np.unique(g)
    rng = np.random.default_rng(seed)
    test_groups = rng.choice(uniq, size=max(1, round(test_frac * len(uniq))), replace=False)
    te = np.isin(g, test_groups)
    return np.where(~te)[0], np.where(te)[0]


def easy_hard_split(
    difficulty: Sequence[float] | np.ndarray,
    groups: Sequence[int] | np.ndarray | None = None,
    easy_frac: float = 0.5,
    hard_frac: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)``: train on the ``easy_frac`` easiest groups, test on the ``hard_frac`` hardest
    (the middle is left out so easy and hard do not touch). Difficulty per row; groups keep a statement's
    rows together (default: each row its own group)."""
    d = np.asarray(difficulty, dtype=np.float64)
    g = np.arange(len(d)) if groups is None else np.asarray(groups)
    uniq = np.unique(g)
    gd = np.array([d[g == u].mean() for u in uniq])
    order = uniq[np.argsort(gd, kind="stable")]
    n_easy, n_hard = round(easy_frac * len(uniq)), round(hard_frac * len(uniq))
    if n_easy < 1 or n_hard < 1 or n_easy + n_hard > len(uniq):
        raise ValueError(
            f"easy_frac={easy_frac}, hard_frac={hard_frac} do not split {len(uniq)} groups into two non-empty parts."
        )
    easy, hard = order[:n_easy], order[len(uniq) - n_hard :]
    return np.where(np.isin(g, easy))[0], np.where(np.isin(g, hard))[0]


@dataclass
class ProbeSweep(Result):
    """Held-out accuracy of a linear probe at each layer (train and test rows fixed across layers)."""

    KIND: ClassVar[str] = "probe_sweep"
    FILE: ClassVar[str] = "probe_sweep.json"

    layers: list[int]
    train_acc: list[float]
    test_acc: list[float]
    majority_acc: float
    settings: dict

    @property
    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.test_acc))]

    def headline(self) -> dict:
        return {
            "best_layer": self.best_layer,
            "best_test_acc": round(max(self.test_acc), 4),
            "majority_acc": round(self.majority_acc, 4),
        }

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"layer": self.layers, "train_acc": self.train_acc, "test_acc": self.test_acc})

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure(
            [
                go.Scatter(x=self.layers, y=self.train_acc, name="train", mode="lines+markers"),
                go.Scatter(x=self.layers, y=self.test_acc, name="held-out", mode="lines+markers"),
            ]
        )
        fig.add_hline(y=self.majority_acc, line_dash="dash", annotation_text="majority")
        fig.update_layout(
            title="Linear probe accuracy by layer", xaxis_title="layer", yaxis_title="accuracy", yaxis_range=[0, 1]
        )
        return fig


def probe_layers(
    acts: dict[int, np.ndarray], y: Sequence[int] | np.ndarray, train: np.ndarray, test: np.ndarray, C: float = 1.0
) -> ProbeSweep:
    """Fit a :class:`LinearProbe` per layer on ``train`` rows and score it on ``test`` rows (Alain & Bengio 2016).

    Args:
        acts: ``{layer: [n, d]}`` activations (:func:`collect_activations`).
        y: labels ``[n]``.
        train, test: disjoint row indices (:func:`group_split` or :func:`easy_hard_split`).
        C: the probes' inverse regularisation strength.
    """
    y = np.asarray(y)
    if len(np.intersect1d(train, test)):
        raise ValueError("train and test rows overlap; use group_split or easy_hard_split.")
    layers = sorted(acts)
    tr, te = [], []
    for l in layers:
        p = LinearProbe(C=C).fit(acts[l][train], y[train])
        tr.append(float(p.score(acts[l][train], y[train])))
        te.append(float(p.score(acts[l][test], y[test])))
    return ProbeSweep(layers, tr, te, majority_acc(y[test]), {"C": C, "n_train": len(train), "n_test": len(test)})
