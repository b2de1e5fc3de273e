"""Contrast-Consistent Search (Burns et al. 2022, "Discovering Latent Knowledge in Language Models Without
Supervision"), its baselines on the same split, and the count of "truth-like" directions.

Given hidden states ``h⁺`` / ``h⁻`` of the contrast pair (statement answered " Yes" / " No"):

* **normalisation** per prompt template: each of ``h⁺`` and ``h⁻`` has its template's mean removed (and,
  with ``var_normalize``, is divided by its per-dimension standard deviation), which removes the direction
  that merely encodes which answer token was appended (Burns et al., §2.2);
* **CCS** (:class:`CCS`, a scikit-learn estimator): a probe ``p(x) = σ(wᵀx + b)`` trained without labels on
  ``L = mean[(p(x⁺) − (1 − p(x⁻)))²] + mean[min(p(x⁺), p(x⁻))²]`` (consistency + confidence), with
  ``n_restarts`` random initialisations (all trained at once), keeping the lowest loss; the prediction is
  ``½(p⁺ + 1 − p⁻) > ½``;
* **sign handling**: CCS cannot know which end of its direction means "true". We report the accuracy
  *oriented with the training labels* (the sign is flipped when the training accuracy is below ½ — this
  uses labels, so we say so) and the *unoriented* accuracy ``max(acc, 1 − acc)`` on the test split (what
  Burns et al. report); the same for every unsupervised baseline;
* **baselines**: random directions (mean over many), CRC-TPC (top principal component of the normalised
  contrast differences ``h⁺ − h⁻``, Burns et al.'s appendix; also CRC in their later work), supervised
  logistic regression on the differences (a ceiling), and the model's zero-shot answer (logit of " Yes"
  minus " No" on the bare prompt; also calibrated by thresholding at the median score, unsupervised);
* **truth-like directions** (Roger's critique, "What discovering latent knowledge did and did not find",
  2023, who found >20 orthogonal probes of similar accuracy; Farquhar et al. 2023, "Challenges with
  unsupervised LLM knowledge discovery"): fit CCS, project its direction out of the (normalised)
  representations, refit, repeat; count the directions, in order, whose held-out accuracy *oriented on the
  training rows* beats both the held-out majority rate and the 95th percentile of the same statistic for
  random directions (:func:`truth_like_directions`), and, separately, those whose CCS loss is at most
  ``max(2 × first, first + 0.01)``, whatever their accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, overload

import numpy as np
from sklearn.base import BaseEstimator

from interplab.io.results import Result

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.tasks.truth import ContrastDataset

__all__ = [
    "CCS",
    "CCSResult",
    "ccs_evaluate",
    "ccs_loss",
    "normalize_by_template",
    "planted_truth_data",
    "run_ccs",
    "truth_like_directions",
    "zero_shot_scores",
]


def normalize_by_template(
    h: np.ndarray, template: Sequence[int] | np.ndarray | None = None, var_normalize: bool = True
) -> np.ndarray:
    """Subtract each template's mean (and divide by its per-dimension std) — separately for h⁺ and h⁻
    (Burns et al. 2022, §2.2).

    Args:
        h: hidden states ``[n, d]`` of one side of the contrast pairs.
        template: the prompt template of every row (None: one template).
        var_normalize: also divide by each template's per-dimension standard deviation.
    """
    h = np.asarray(h, dtype=np.float64)
    t = np.zeros(len(h), dtype=int) if template is None else np.asarray(template)
    out = np.empty_like(h)
    for v in np.unique(t):
        m = t == v
        x = h[m] - h[m].mean(0)
        if var_normalize:
            x = x / (x.std(0) + 1e-8)
        out[m] = x
    return out


def ccs_loss(p_pos: Any, p_neg: Any) -> Any:
    """Burns et al.'s loss: consistency ``(p⁺ − (1 − p⁻))²`` + confidence ``min(p⁺, p⁻)²`` (means over rows).
    Works on numpy arrays and torch tensors; with a leading restart dimension it returns one loss per restart."""
    import torch

    if isinstance(p_pos, torch.Tensor):
        return ((p_pos - (1 - p_neg)) ** 2).mean(-1) + (torch.minimum(p_pos, p_neg) ** 2).mean(-1)
    p_pos, p_neg = np.asarray(p_pos), np.asarray(p_neg)
    return ((p_pos - (1 - p_neg)) ** 2).mean(-1) + (np.minimum(p_pos, p_neg) ** 2).mean(-1)


class CCS(BaseEstimator):
    """Contrast-Consistent Search (Burns et al. 2022): a probe ``p(x) = σ(w·x + b)`` on normalised hidden
    states (:func:`normalize_by_template`), trained without labels on the contrast pairs ``(x⁺, x⁻)`` to minimise
    :func:`ccs_loss` (consistency ``(p⁺ − (1 − p⁻))²`` + confidence ``min(p⁺, p⁻)²``).

    ``n_restarts`` probes are trained at once (full batch, AdamW as in Burns et al.'s code, initial weights
    ``N(0, 1/d)``, bias 0) and the one with the lowest final loss is kept. The sign of the direction is
    arbitrary (CCS cannot know which end means "true"); :func:`ccs_evaluate` reports both orientations.

    Args:
        n_restarts: random initialisations trained together.
        epochs: full-batch optimisation steps.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        random_state: seeds the initial weights.

    Fitted attributes: ``coef_`` (``w``, float64 ``[d]``), ``intercept_`` (``b``), ``loss_`` (the kept probe's
    final loss), ``n_features_in_``.
    """

    coef_: np.ndarray
    intercept_: float
    loss_: float

    def __init__(
        self,
        n_restarts: int = 10,
        epochs: int = 1000,
        lr: float = 1e-2,
        weight_decay: float = 0.01,
        random_state: int = 0,
    ):
        self.n_restarts = n_restarts
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, x_pos: np.ndarray, x_neg: np.ndarray) -> Self:
        """Train on the normalised hidden states ``x_pos`` / ``x_neg`` ``[n, d]`` of the two sides of each pair."""
        import torch

        from interplab.runtime import torch_threads

        with torch_threads(1):
            g = torch.Generator().manual_seed(self.random_state)
            Xp = torch.as_tensor(np.asarray(x_pos), dtype=torch.float32)
            Xn = torch.as_tensor(np.asarray(x_neg), dtype=torch.float32)
            d = Xp.shape[1]
            W = (torch.randn(self.n_restarts, d, generator=g) / math.sqrt(d)).requires_grad_(True)
            b = torch.zeros(self.n_restarts, 1, requires_grad=True)
            opt = torch.optim.AdamW([W, b], lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.epochs):
                opt.zero_grad()
                pp = torch.sigmoid(W @ Xp.T + b)
                pn = torch.sigmoid(W @ Xn.T + b)
                loss = ccs_loss(pp, pn)
                loss.sum().backward()
                opt.step()
            with torch.no_grad():
                losses = ccs_loss(torch.sigmoid(W @ Xp.T + b), torch.sigmoid(W @ Xn.T + b))
            i = int(losses.argmin())
            self.coef_ = W[i].detach().double().numpy()
            self.intercept_ = float(b.detach()[i, 0])
            self.loss_ = float(losses[i])
            self.n_features_in_ = d
        return self

    def prob(self, x: np.ndarray) -> np.ndarray:
        """``p(x) = σ(w·x + b)`` for the hidden states ``x [n, d]`` of one side."""
        return 1 / (1 + np.exp(-(np.asarray(x) @ self.coef_ + self.intercept_)))

    def predict_proba(self, x_pos: np.ndarray, x_neg: np.ndarray) -> np.ndarray:
        """Probability ``[n]`` that each statement is true: ``½(p(x⁺) + 1 − p(x⁻))``."""
        return 0.5 * (self.prob(x_pos) + 1 - self.prob(x_neg))

    def predict(self, x_pos: np.ndarray, x_neg: np.ndarray) -> np.ndarray:
        """1 where :meth:`predict_proba` exceeds ½, else 0."""
        return (self.predict_proba(x_pos, x_neg) > 0.5).astype(int)

    @property
    def direction_(self) -> np.ndarray:
        """The unit vector along ``w``."""
        return self.coef_ / (np.linalg.norm(self.coef_) + 1e-300)


def _acc(pred: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(pred).astype(int) == np.asarray(y).astype(int)).mean())


def _oriented(score_tr, y_tr, score_te, y_te) -> tuple[float, float, int]:
    """(label-oriented test accuracy, unoriented test accuracy, sign) for a score thresholded at 0."""
    sign = 1 if _acc(score_tr > 0, y_tr) >= 0.5 else -1
    a = _acc(sign * score_te > 0, y_te)
    raw = _acc(score_te > 0, y_te)
    return a, max(raw, 1 - raw), sign


def _probe_oriented(
    probe: CCS, hp: np.ndarray, hn: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[float, float, int]:
    """:func:`_oriented` for a CCS probe's score ``predict_proba − ½`` on the ``train`` / ``test`` rows."""
    return _oriented(
        probe.predict_proba(hp[train], hn[train]) - 0.5,
        y[train],
        probe.predict_proba(hp[test], hn[test]) - 0.5,
        y[test],
    )


def _random_direction_null(
    diff: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    R: np.ndarray,
    quantile: float = 0.95,
) -> float:
    """The ``quantile`` of the held-out accuracy of random directions, each oriented on the training rows exactly
    as a CCS direction is (:func:`truth_like_directions` explains why this is the null of CCS's statistic).

    Args:
        diff: contrast differences ``x⁺ − x⁻`` ``[n, d]`` (normalised).
        y: truth labels ``[n]``.
        train, test: row indices to orient on and to score on.
        R: random directions ``[k, d]`` (their norm does not matter; only the sign of ``diff · r`` is used).
        quantile: the quantile of the ``k`` held-out accuracies to return.
    """
    s_tr, s_te = diff[train] @ R.T, diff[test] @ R.T  # [n_train, k], [n_test, k]
    y_tr, y_te = np.asarray(y)[train].astype(bool)[:, None], np.asarray(y)[test].astype(bool)[:, None]
    sign = np.where(((s_tr > 0) == y_tr).mean(0) >= 0.5, 1.0, -1.0)  # the rule of _oriented, per direction
    acc = ((sign * s_te > 0) == y_te).mean(0)
    return float(np.quantile(acc, quantile))


def truth_like_directions(
    hp: np.ndarray,
    hn: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    max_dirs: int = 20,
    n_null: int = 1000,
    null_quantile: float = 0.95,
    first: CCS | None = None,
    **ccs_kw: Any,
) -> dict[str, Any]:
    """Truth-like directions (Roger 2023, "What discovering latent knowledge did and did not find"; Farquhar et al.
    2023, "Challenges with unsupervised LLM knowledge discovery"): fit CCS (Burns et al. 2022) on the training
    rows, record its loss and held-out accuracy, project its direction out of every row (orthogonally, in the
    normalised space), refit; repeat up to ``max_dirs`` times.

    **What counts as truth-like.** A direction's statistic is its held-out accuracy with the sign *oriented on
    the training rows* (``acc_oriented``; the unoriented ``max(acc, 1 − acc)`` is ≥ ½ by construction and biased
    upward on a small test set, so it is recorded but never tested). Direction ``i`` is truth-like when that
    accuracy is above both

    * the held-out **majority-class rate** (with imbalanced classes a direction must beat the constant guess), and
    * a **random-direction null**: the ``null_quantile`` (95th percentile) of the same statistic for ``n_null``
      random Gaussian directions ``r`` in the same space (orthogonal to the directions already projected out),
      each scored as ``r · (x⁺ − x⁻)`` and oriented on the training rows by the same rule. This is the same
      classifier as CCS's — ``½(σ(w·x⁺ + b) + 1 − σ(w·x⁻ + b)) > ½`` exactly when ``w · (x⁺ − x⁻) > 0`` — with
      the direction drawn at random instead of fitted, so the null holds the test-set size, the class balance,
      the orientation step and the correlation between the templates of one statement (rows of a statement
      are scored together, which a row-wise label permutation would ignore) exactly as they are for CCS. It also
      asks more than "above chance": where truth is linearly present, random directions already carry some of
      it, and a direction counts only when it beats what an arbitrary direction gets. Seeded by ``random_state``.

    The directions are tested **in their fixed order** and counting stops at the first that fails
    (fixed-sequence testing: the chance of any false "truth-like" stays at ``1 − null_quantile`` without a
    multiplicity correction): ``n_truth_like`` is 0 when the first CCS direction does not beat the thresholds.
    Each record says whether that direction passes on its own (``truth_like``), so a pass after a failure stays
    visible without being counted.

    Separately, ``n_low_loss`` counts the directions whose CCS loss is at most ``max(2 × first, first + 0.01)``,
    whatever their accuracy: Roger's and Farquhar et al.'s point that the CCS objective is satisfied by many
    directions unrelated to truth.

    Args:
        hp, hn: normalised hidden states ``[n, d]`` of the two sides of the pairs.
        y: truth labels ``[n]`` (used only to orient and to score).
        train, test: row indices to fit on and to score on.
        max_dirs: at most this many fit / project-out rounds.
        n_null: random directions in the null of each round.
        null_quantile: the quantile of the null a direction must beat.
        first: a :class:`CCS` already fitted on ``hp[train]``, ``hn[train]`` with ``ccs_kw`` (used as
            direction 0 instead of refitting it).
        **ccs_kw: :class:`CCS` settings; round ``i`` uses ``random_state + i``.

    Returns ``directions`` (per direction: ``ccs_loss``, ``acc_oriented``, ``acc_unoriented``, ``null`` — this
    round's null threshold — and ``truth_like``), ``n_truth_like``, ``null`` (direction 0's threshold),
    ``majority``, ``n_low_loss`` and the settings.
    """
    from interplab.analyses.representations.erasure import majority_acc

    if not 0 < null_quantile < 1:
        raise ValueError(f"null_quantile must be in (0, 1), got {null_quantile}.")
    if n_null < 1:
        raise ValueError(f"n_null must be at least 1, got {n_null}.")
    hp, hn = np.array(hp, dtype=np.float64), np.array(hn, dtype=np.float64)
    y = np.asarray(y)
    diff = hp - hn
    seed = ccs_kw.get("random_state", 0)
    R = np.random.default_rng([seed, 12]).standard_normal((n_null, hp.shape[1]))
    majority = majority_acc(y[test])
    U = np.zeros((hp.shape[1], 0))
    recs = []
    for i in range(min(max_dirs, hp.shape[1] - 1)):
        pp = hp - (hp @ U) @ U.T
        pn = hn - (hn @ U) @ U.T
        if i == 0 and first is not None:
            probe = first
        else:
            probe = CCS(**{**ccs_kw, "random_state": seed + i}).fit(pp[train], pn[train])
        oriented, unoriented, _ = _probe_oriented(probe, pp, pn, y, train, test)
        null = _random_direction_null(diff, y, train, test, R - (R @ U) @ U.T, null_quantile)
        recs.append(
            {
                "direction": i,
                "ccs_loss": probe.loss_,
                "acc_oriented": oriented,
                "acc_unoriented": unoriented,
                "null": null,
                "truth_like": bool(oriented > max(null, majority)),
            }
        )
        u = probe.direction_ - U @ (U.T @ probe.direction_)
        U = np.concatenate([U, (u / np.linalg.norm(u))[:, None]], axis=1)
    n = next((i for i, r in enumerate(recs) if not r["truth_like"]), len(recs))
    loss0 = recs[0]["ccs_loss"] if recs else 0.0
    n_loss = sum(r["ccs_loss"] <= max(2 * loss0, loss0 + 0.01) for r in recs)
    return {
        "directions": recs,
        "n_truth_like": int(n),
        "null": recs[0]["null"] if recs else float("nan"),
        "majority": majority,
        "n_low_loss": int(n_loss),
        "n_null": n_null,
        "null_quantile": null_quantile,
        "max_dirs": max_dirs,
        "hit_max": bool(recs and n == len(recs)),
    }


CCSTable = Literal["methods", "directions", "layers"]
"""The tables of a :class:`CCSResult`."""


@dataclass
class CCSResult(Result):
    """CCS and baselines on one split of one dataset at one layer (accuracies on the held-out rows): ``scores``
    (the headline numbers; ``n_truth_like_directions`` with its ``truth_like_null`` and ``majority_acc`` beside
    it, and the loss-based ``n_low_ccs_loss_directions``), the truth-like ``directions``, the supervised probe's
    ``layer_sweep`` and the ``settings``."""

    KIND: ClassVar[str] = "ccs"
    FILE: ClassVar[str] = "ccs.json"

    scores: dict[str, Any]
    directions: list[dict]
    layer_sweep: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        return dict(self.scores)

    def to_frame(self, which: CCSTable = "methods"):
        """``methods`` (CCS and baselines), ``directions`` (truth-like directions) or ``layers`` (the sweep)."""
        import pandas as pd

        if which == "directions":
            return pd.DataFrame(self.directions)
        if which == "layers":
            return pd.DataFrame(self.layer_sweep)
        h = self.scores
        rows = []
        for m, label in [
            ("ccs", "CCS"),
            ("crc", "CRC-TPC"),
            ("random", "random direction"),
            ("lr", "logistic regression (supervised)"),
            ("zero_shot", "zero-shot"),
        ]:
            if f"{m}_acc" in h:
                rows.append(
                    {
                        "method": label,
                        "acc (label-oriented / supervised)": h[f"{m}_acc"],
                        "acc unoriented max(a, 1-a)": h.get(f"{m}_acc_unoriented"),
                    }
                )
        return pd.DataFrame(rows)

    def plot(self):
        from plotly.subplots import make_subplots

        df = self.to_frame()
        fig = make_subplots(
            rows=1, cols=2, subplot_titles=("Held-out accuracy", "Truth-like directions (CCS, project out, refit)")
        )
        fig.add_bar(x=df["method"], y=df["acc (label-oriented / supervised)"], name="label-oriented", row=1, col=1)
        fig.add_bar(x=df["method"], y=df["acc unoriented max(a, 1-a)"], name="unoriented", row=1, col=1)
        dd = self.to_frame("directions")
        if len(dd):
            fig.add_scatter(
                x=dd["direction"], y=dd["acc_oriented"], mode="lines+markers", name="label-oriented acc", row=1, col=2
            )
            if "null" in dd:  # results saved before the null was added have none
                fig.add_scatter(
                    x=dd["direction"], y=dd["null"], mode="lines", line_dash="dot", name="null (95th pct)", row=1, col=2
                )
            if "majority_acc" in self.scores:
                maj = [self.scores["majority_acc"]] * len(dd)
                fig.add_scatter(x=dd["direction"], y=maj, mode="lines", line_dash="dash", name="majority", row=1, col=2)
            fig.add_scatter(x=dd["direction"], y=dd["ccs_loss"], mode="lines+markers", name="CCS loss", row=1, col=2)
        fig.update_layout(barmode="group", yaxis_range=[0, 1])
        return fig


def ccs_evaluate(
    hp: np.ndarray,
    hn: np.ndarray,
    y: Sequence[int] | np.ndarray,
    template: Sequence[int] | np.ndarray | None,
    train: np.ndarray,
    test: np.ndarray,
    zero_shot: np.ndarray | None = None,
    n_restarts: int = 10,
    epochs: int = 1000,
    n_random: int = 100,
    max_dirs: int = 20,
    n_null: int = 1000,
    null_quantile: float = 0.95,
    var_normalize: bool = True,
    seed: int = 0,
) -> CCSResult:
    """CCS (Burns et al. 2022) and its baselines (random directions, CRC-TPC, supervised logistic regression,
    zero-shot) on the same train/test rows, and the truth-like directions (Roger 2023).

    Args:
        hp, hn: raw hidden states ``[n, d]`` of the statements answered " Yes" / " No".
        y: truth labels ``[n]`` (used only to orient and to score, and by the supervised baseline).
        template: prompt template of every row (normalisation per template).
        train, test: row indices to fit on and to score on.
        zero_shot: per-row score (logit Yes − logit No), or None.
        n_restarts, epochs: :class:`CCS` settings.
        n_random: random directions averaged for the random baseline.
        max_dirs, n_null, null_quantile: :func:`truth_like_directions` settings (rounds; the random-direction null
            a direction's label-oriented held-out accuracy must beat, beside the majority rate).
        var_normalize: divide by the per-template standard deviation too.
        seed: seeds CCS and the random directions.
    """
    from interplab.analyses.representations.erasure import majority_acc
    from interplab.analyses.representations.probes import LinearProbe

    y = np.asarray(y).astype(int)
    hp_n = normalize_by_template(hp, template, var_normalize)
    hn_n = normalize_by_template(hn, template, var_normalize)
    h: dict[str, Any] = {}
    probe = CCS(n_restarts=n_restarts, epochs=epochs, random_state=seed).fit(hp_n[train], hn_n[train])
    h["ccs_acc"], h["ccs_acc_unoriented"], sign = _probe_oriented(probe, hp_n, hn_n, y, train, test)
    h["ccs_loss"] = probe.loss_
    h["ccs_sign_flipped_by_labels"] = sign < 0
    diff = hp_n - hn_n
    # random directions
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((n_random, diff.shape[1]))
    ro, ru = zip(*[_oriented(diff[train] @ r, y[train], diff[test] @ r, y[test])[:2] for r in R])
    h["random_acc"], h["random_acc_unoriented"] = float(np.mean(ro)), float(np.mean(ru))
    # CRC-TPC: top principal component of the contrast differences (training rows)
    dc = diff[train] - diff[train].mean(0)
    u = np.linalg.svd(dc, full_matrices=False)[2][0]
    h["crc_acc"], h["crc_acc_unoriented"], _ = _oriented(diff[train] @ u, y[train], diff[test] @ u, y[test])
    # supervised ceiling
    lr = LinearProbe().fit(diff[train], y[train])
    h["lr_acc"] = float(lr.score(diff[test], y[test]))
    h["lr_acc_unoriented"] = max(h["lr_acc"], 1 - h["lr_acc"])
    cos = lambda a, b: float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))
    h["cos_ccs_lr"] = cos(probe.coef_, lr.direction_)
    h["cos_ccs_crc"] = cos(probe.coef_, u)
    if zero_shot is not None:
        z = np.asarray(zero_shot, dtype=np.float64)
        h["zero_shot_acc"] = _acc(z[test] > 0, y[test])
        h["zero_shot_acc_unoriented"] = max(h["zero_shot_acc"], 1 - h["zero_shot_acc"])
        h["zero_shot_calibrated_acc"] = _acc(z[test] > np.median(z[test]), y[test])
    tl = truth_like_directions(
        hp_n,
        hn_n,
        y,
        train,
        test,
        max_dirs=max_dirs,
        n_null=n_null,
        null_quantile=null_quantile,
        first=probe,
        n_restarts=n_restarts,
        epochs=epochs,
        random_state=seed,
    )
    # truth-like: label-oriented held-out accuracy above the majority rate and the random-direction null, in order
    h["n_truth_like_directions"] = tl["n_truth_like"]
    h["truth_like_null"] = tl["null"]  # the null threshold of the first direction (each direction's: `directions`)
    h["majority_acc"] = majority_acc(y[test])
    h["n_low_ccs_loss_directions"] = tl["n_low_loss"]  # loss <= max(2 x first, first + 0.01), whatever their accuracy
    h["truth_like_hit_max"] = tl["hit_max"]
    h["n_train"], h["n_test"] = len(train), len(test)
    h = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
    return CCSResult(
        h,
        tl["directions"],
        settings={
            "n_restarts": n_restarts,
            "epochs": epochs,
            "n_random": n_random,
            "max_dirs": max_dirs,
            "n_null": n_null,
            "null_quantile": null_quantile,
            "var_normalize": var_normalize,
            "seed": seed,
        },
    )


def zero_shot_scores(
    model: Model, prompts: Sequence[str], answers: tuple[str, str] = (" Yes", " No"), batch_size: int = 16
) -> np.ndarray:
    """The zero-shot baseline of Burns et al. (2022): logit(answer[0]) − logit(answer[1]) at each prompt's last
    token (right padding).

    Args:
        model: the model to ask.
        prompts: the bare prompts (no answer appended).
        answers: the two answers whose first tokens are compared.
        batch_size: prompts per forward pass.
    """
    from interplab.models.scoring import last_token_logits

    a, _ = model.first_token_id(answers[0])
    b, _ = model.first_token_id(answers[1])
    return np.concatenate(
        [(row[:, a] - row[:, b]).float().cpu().numpy() for row in last_token_logits(model, prompts, batch_size)]
    )


@overload
def run_ccs(model: Model, dataset: ContrastDataset, *, return_acts: Literal[False] = ..., **kw: Any) -> CCSResult: ...
@overload
def run_ccs(
    model: Model, dataset: ContrastDataset, *, return_acts: Literal[True], **kw: Any
) -> tuple[CCSResult, dict[str, np.ndarray]]: ...


def run_ccs(
    model: Model,
    dataset: ContrastDataset,
    layer: int | None = None,
    test_frac: float = 0.3,
    seed: int = 0,
    batch_size: int = 16,
    return_acts: bool = False,
    **kw: Any,
) -> CCSResult | tuple[CCSResult, dict[str, np.ndarray]]:
    """Collect last-token residual streams of x⁺ and x⁻ at every layer, split by statement (all templates
    of a statement on one side), choose the layer (``None``: the best supervised probe on an inner split of
    the *training* rows — the test rows are never used to choose), and run :func:`ccs_evaluate` there.
    Also records a per-layer sweep of the supervised probe (held-out) and an easy → hard split
    (Hase et al. 2024). ``interplab ccs`` runs this (Burns et al. 2022).

    Args:
        model: the model whose residual streams are probed.
        dataset: contrast pairs (:func:`interplab.tasks.truth.make_truth_dataset`).
        layer: the layer to evaluate at (None: chosen on an inner split of the training rows).
        test_frac: held-out fraction of the statements.
        seed: seeds the splits, CCS and the random directions.
        batch_size: prompts per forward pass.
        return_acts: also return ``{"pos", "neg", "y"}`` (x⁺ and x⁻ residual streams and labels) at that layer.
        **kw: passed to :func:`ccs_evaluate` (``n_restarts``, ``epochs``, ``n_random``, ``max_dirs``, ...).
    """
    from interplab.analyses.representations.probes import LinearProbe, collect_activations, group_split

    acts_p = collect_activations(model, dataset.pos, batch_size=batch_size)
    acts_n = collect_activations(model, dataset.neg, batch_size=batch_size)
    z = zero_shot_scores(model, dataset.prompts, batch_size=batch_size)
    y = np.asarray(dataset.labels)
    groups = np.asarray(dataset.groups)
    train, test = group_split(groups, test_frac, seed)
    itr, ival = group_split(groups[train], 0.3, seed + 1)
    sweep = []
    for l in sorted(acts_p):
        dp = normalize_by_template(acts_p[l], dataset.template) - normalize_by_template(acts_n[l], dataset.template)
        inner = LinearProbe().fit(dp[train][itr], y[train][itr]).score(dp[train][ival], y[train][ival])
        held = LinearProbe().fit(dp[train], y[train]).score(dp[test], y[test])
        sweep.append({"layer": l, "lr_inner_val_acc": float(inner), "lr_test_acc": float(held)})
    given = layer is not None
    if layer is None:
        layer = int(max(sweep, key=lambda r: (r["lr_inner_val_acc"], -r["layer"]))["layer"])
    elif not -model.cfg.n_layers <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} is outside 0..{model.cfg.n_layers - 1}.")
    layer = layer % model.cfg.n_layers
    res = ccs_evaluate(acts_p[layer], acts_n[layer], y, dataset.template, train, test, zero_shot=z, seed=seed, **kw)
    res.scores = {"layer": layer, **res.scores}
    diff_ = len(set(dataset.difficulty)) > 1
    # easy -> hard: supervised probe and CCS trained on the easiest half of the statements, tested on the hardest 30%
    if diff_:
        from interplab.analyses.representations.probes import easy_hard_split

        easy, hard = easy_hard_split(dataset.difficulty, groups, 0.5, 0.3)
        hpn, hnn = (
            normalize_by_template(acts_p[layer], dataset.template),
            normalize_by_template(acts_n[layer], dataset.template),
        )
        dp = hpn - hnn
        res.scores["lr_easy_to_hard_acc"] = round(
            float(LinearProbe().fit(dp[easy], y[easy]).score(dp[hard], y[hard])), 4
        )
        pr = CCS(n_restarts=kw.get("n_restarts", 10), epochs=kw.get("epochs", 1000), random_state=seed).fit(
            hpn[easy], hnn[easy]
        )
        o, u, _ = _probe_oriented(pr, hpn, hnn, y, easy, hard)
        res.scores["ccs_easy_to_hard_acc"], res.scores["ccs_easy_to_hard_acc_unoriented"] = (
            round(o, 4),
            round(u, 4),
        )
    res.layer_sweep = sweep
    res.settings.update(
        {
            "dataset": dataset.name,
            "n_rows": len(dataset),
            "n_statements": len(dataset.statements),
            "n_templates": len(set(dataset.template)),
            "test_frac": test_frac,
            "layer_chosen_by": "given" if given else "inner validation split of the training rows",
        }
    )
    if return_acts:
        return res, {"pos": acts_p[layer], "neg": acts_n[layer], "y": y}
    return res


def planted_truth_data(
    n: int = 400, d: int = 32, n_templates: int = 2, strength: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic contrast pairs with one planted truth direction ``t``:
    ``h⁺ = base + yes_t + s·strength·t + ε``, ``h⁻ = base + no_t − s·strength·t + ε`` with ``s = ±1`` the truth,
    ``base`` a large per-statement component shared by the pair, ``yes_t``/``no_t`` per-template answer offsets.
    Returns ``(hp, hn, y, template, t)``."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal(d)
    t /= np.linalg.norm(t)
    y = rng.integers(0, 2, n)
    s = 2 * y - 1
    tmpl = np.arange(n) % n_templates
    base = rng.standard_normal((n, d)) * 2.0
    yes = rng.standard_normal((n_templates, d)) * 5
    no = rng.standard_normal((n_templates, d)) * 5
    hp = base + yes[tmpl] + strength * s[:, None] * t + rng.standard_normal((n, d))
    hn = base + no[tmpl] - strength * s[:, None] * t + rng.standard_normal((n, d))
    return hp, hn, y, tmpl, t
