"""An honest evaluation of an eraser: probes trained on the erased training split and scored on the erased
held-out split, beside the same probes on the raw data.

Why "equal class means" is not the end of the story: LEACE's guarantee (Belrose et al. 2023, Thm 3.1) is that
after erasure no *linear* predictor beats the constant predictor for any *convex* loss, which is equivalent to
equal class-conditional means. It says nothing about the 0-1 loss or about non-linear predictors.
:func:`interplab.analyses.representations.erasure.make_outlier_data` builds a data set where a few class-1
outliers cancel the bulk separation of the class means along one coordinate: after mean-difference or LEACE
erasure a logistic regression is at chance but an MLP, gradient-boosted trees or even a threshold on that
coordinate are far above the majority rate. :func:`evaluate_erasure` measures exactly that (linear probe accuracy
and log-loss against the label entropy; MLP; gradient-boosted trees; all on held-out data).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from interplab.analyses.representations.erasure.base import as_numpy
from interplab.io.results import Result

__all__ = ["ErasureResult", "evaluate_erasure", "label_entropy", "majority_acc", "probe_scores"]


def majority_acc(y: Any) -> float:
    """Accuracy of always predicting the most frequent class."""
    _, c = np.unique(as_numpy(y), return_counts=True)
    return float(c.max() / c.sum())


def label_entropy(y: Any) -> float:
    """Entropy of the label distribution in nats: the log-loss of the best constant predictor."""
    _, c = np.unique(as_numpy(y), return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def probe_scores(
    Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, nonlinear: bool, seed: int
) -> dict[str, float]:
    """Held-out scores of probes trained on ``(Xtr, ytr)``: ``linear_acc`` and ``linear_logloss`` (standardised
    logistic regression) and, with ``nonlinear``, ``mlp_acc``, ``gbt_acc`` (gradient-boosted trees) and their
    maximum ``nonlinear_acc``; ``seed`` seeds the MLP and the trees."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small problems: threads only contend (boosted trees ~15x faster on a busy 2-core box)
        return _probe_scores_1(Xtr, ytr, Xte, yte, nonlinear, seed)


def _probe_scores_1(Xtr, ytr, Xte, yte, nonlinear: bool, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.unique(np.concatenate([ytr, yte]))
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
    out = {
        "linear_acc": float(lr.score(Xte, yte)),
        "linear_logloss": float(log_loss(yte, lr.predict_proba(Xte), labels=labels)),
    }
    if nonlinear:
        mlp = make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, early_stopping=True, random_state=seed),
        ).fit(Xtr, ytr)
        gbt = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(Xtr, ytr)
        out["mlp_acc"] = float(mlp.score(Xte, yte))
        out["gbt_acc"] = float(gbt.score(Xte, yte))
        out["nonlinear_acc"] = max(out["mlp_acc"], out["gbt_acc"])
    return out


class _PerMethodFile:
    """``ErasureResult.FILE``: ``erasure_<method>.json`` for a result (one file per method, so that several
    methods can share a run directory), ``erasure.json`` on the class."""

    def __get__(self, obj: ErasureResult | None, owner: type) -> str:
        return "erasure.json" if obj is None else f"erasure_{obj.method}.json"


@dataclass
class ErasureResult(Result):
    """Held-out evaluation of one eraser: probes trained on the erased training split, scored on the test split."""

    KIND: ClassVar[str] = "erasure"
    FILE: ClassVar[str] = _PerMethodFile()  # type: ignore[assignment]

    method: str
    settings: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    majority_acc: float
    label_entropy: float
    rank: int
    fit_seconds: float
    mean_gap_after: float  # max |class-mean difference| on the erased test data, relative to before
    change_norm: float  # E‖x' − x‖² on the test data, per coordinate

    def headline(self) -> dict[str, Any]:
        h = {
            "method": self.method,
            "majority_acc": self.majority_acc,
            "label_entropy": self.label_entropy,
            "linear_acc_before": self.before["linear_acc"],
            "linear_acc_after": self.after["linear_acc"],
            "linear_logloss_before": self.before["linear_logloss"],
            "linear_logloss_after": self.after["linear_logloss"],
            "rank": self.rank,
            "fit_seconds": self.fit_seconds,
            "mean_gap_after": self.mean_gap_after,
            "mean_sq_change": self.change_norm,
        }
        for k in ("nonlinear_acc", "mlp_acc", "gbt_acc"):
            if k in self.after:
                h[f"{k}_before"] = self.before[k]
                h[f"{k}_after"] = self.after[k]
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()}

    def to_frame(self):
        import pandas as pd

        rows = [{"probe": k, "before": self.before[k], "after": self.after.get(k)} for k in self.before]
        return pd.DataFrame(rows)

    def plot(self):
        import plotly.graph_objects as go

        keys = [k for k in self.before if k.endswith("_acc")]
        fig = go.Figure(
            [
                go.Bar(name="before", x=keys, y=[self.before[k] for k in keys]),
                go.Bar(name="after", x=keys, y=[self.after[k] for k in keys]),
            ]
        )
        fig.add_hline(y=self.majority_acc, line_dash="dash", annotation_text="majority")
        fig.update_layout(
            barmode="group",
            title=f"{self.method}: held-out probe accuracy before / after erasure",
            yaxis_title="accuracy",
            yaxis_range=[0, 1],
        )
        return fig

    @classmethod
    def load(cls, path: str | Path, method: str = "leace") -> Self:
        """Read ``erasure_<method>.json`` from the run directory ``path`` (or the JSON file ``path``)."""
        p = Path(path)
        return super().load(p / f"erasure_{method}.json" if p.is_dir() else p)


def evaluate_erasure(
    eraser: Any,
    X: Any,
    y: Any,
    test_frac: float = 0.3,
    nonlinear: bool = True,
    seed: int = 0,
    method: str | None = None,
) -> ErasureResult:
    """Fit ``eraser`` on a training split of ``(X, y)`` and probe the erased held-out split: logistic
    regression accuracy and log-loss (compare with the label entropy, the loss of the best constant),
    an MLP and gradient-boosted trees (``nonlinear``); the same probes on the raw data give "before".
    Linear guardedness in the sense of Belrose et al. (2023) is what the linear probe tests.

    Args:
        eraser: an unfitted scikit-learn transformer with ``fit(X, y)`` / ``transform(X)`` (any eraser here).
        X: representations ``[n, d]`` (numpy or torch).
        y: concept labels ``[n]``.
        test_frac: held-out fraction (a stratified split); the probes are scored there.
        nonlinear: also probe with an MLP and gradient-boosted trees.
        seed: seeds the split and the non-linear probes.
        method: the name recorded in the result (default: the eraser's class name).
    """
    from sklearn.model_selection import train_test_split

    X = as_numpy(X).astype(np.float64)
    y = as_numpy(y).reshape(-1)
    Xtr, Xte, ytr, yte = (
        np.asarray(a) for a in train_test_split(X, y, test_size=test_frac, random_state=seed, stratify=y)
    )
    t = time.perf_counter()
    eraser.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t
    Etr, Ete = as_numpy(eraser.transform(Xtr)), as_numpy(eraser.transform(Xte))
    before = probe_scores(Xtr, ytr, Xte, yte, nonlinear, seed)
    after = probe_scores(Etr, ytr, Ete, yte, nonlinear, seed)
    cls = np.unique(yte)

    def gap(Z):
        m = np.stack([Z[yte == c].mean(0) for c in cls])
        return float(np.abs(m - m.mean(0)).max())

    return ErasureResult(
        method=method or type(eraser).__name__,
        settings={"eraser": repr(eraser), "test_frac": test_frac, "seed": seed, "n": len(X), "d": int(X.shape[1])},
        before=before,
        after=after,
        majority_acc=majority_acc(yte),
        label_entropy=label_entropy(yte),
        rank=int(getattr(eraser, "rank_", -1)),
        fit_seconds=round(fit_s, 4),
        mean_gap_after=gap(Ete) / max(gap(Xte), 1e-300),
        change_norm=float(((Ete - Xte) ** 2).mean()),
    )
