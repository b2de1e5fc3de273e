"""Deep double descent — Nakkiran, Kaplun, Bansal, Yang, Barak, Sutskever (2019), "Deep Double Descent: Where
Bigger Models and More Data Hurt" (model-wise and epoch-wise double descent, stronger with label noise); the
interpolation-threshold picture of Belkin, Hsu, Ma, Mandal (2019), "Reconciling modern machine-learning
practice and the classical bias–variance trade-off".

Set-up (small enough for a laptop CPU, on data that ships with scikit-learn): the 8×8 digits
(:func:`sklearn.datasets.load_digits`, 1,797 images, 10 classes), pixels scaled to [0, 1], a fixed random
split of ``n_train`` training images (default 500) and the rest (1,297) as the test set. A fraction
``noise`` of the training labels is replaced by a uniformly drawn *other* class (fixed per noise level and
seed; the test labels are clean). The model is a two-layer ReLU network ``64 → width → 10`` (``75·width + 10``
parameters), trained full-batch with Adam on the cross-entropy for ``steps`` steps from a seeded
initialisation, with no regularisation and no early stopping — the regime in which Nakkiran et al. see the
peak. Each (noise, seed, width) is one *cell*; the cells are independent and run through a sweep backend
(serial by default), and a finished cell is kept in ``RUN_DIR/cells/`` so a rerun (``--resume``) trains only
the missing ones.

What is measured, per noise level (test error averaged over seeds):

* **interpolation threshold**: the smallest width whose training error (on the noisy labels) is 0 — the
  effective model complexity reaching the training-set size, where the peak should sit;
* **model-wise peak**: the *classical minimum* is the lowest test error among widths below the threshold
  (the first width when none is below); the peak is the highest test error at widths at or above the classical
  minimum's, its *height* the peak minus the classical minimum (0 when test error only falls), and the *second
  descent* the peak minus the test error of the widest model;
* **epoch-wise**: the same three numbers along the training curve of the widest model (test error logged at
  ``n_evals`` log-spaced steps): the lowest early test error, the highest after it, and the final one.

Nakkiran et al.'s claims, as this module checks them: with label noise the test error peaks near the
interpolation threshold and falls again beyond it; the peak grows with the noise; without noise it is small or
absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from interplab.runtime import torch_threads
from interplab.sweeps.backends import check_backend
from interplab.train.result import TrainingResult

__all__ = ["DoubleDescentConfig", "DoubleDescentResult", "digits_split", "find_peaks", "run_cell", "train"]


@dataclass
class DoubleDescentConfig:
    widths: tuple[int, ...] = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512)
    noises: tuple[float, ...] = (0.0, 0.1, 0.2)
    seeds: tuple[int, ...] = (0,)
    n_train: int = 500
    steps: int = 3000
    lr: float = 3e-3
    n_evals: int = 24  # log-spaced steps at which train and test error are logged (epoch-wise curves)
    data_seed: int = 0  # the train/test split
    threads: int = 1
    backend: str = "serial"  # how cells run: serial | process | ray (interplab.sweeps backends)
    max_parallel: int = 0  # 0: the backend's default (the CPU count)

    def validate(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive integers, got {list(self.widths)}.")
        if not self.noises or any(not 0.0 <= p < 0.9 for p in self.noises):
            raise ValueError(f"noises must be fractions in [0, 0.9), got {list(self.noises)}.")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed.")
        if not 10 <= self.n_train <= 1697:
            raise ValueError(f"n_train must be in 10..1697 (the digits set has 1,797 images), got {self.n_train}.")
        if self.steps < 1 or self.n_evals < 1:
            raise ValueError("steps and n_evals must be at least 1.")
        check_backend(self.backend)


def digits_split(n_train: int, data_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: scikit-learn's digits, pixels / 16, a seeded random split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(data_seed))
    tr, te = perm[:n_train], perm[n_train:]
    return xt[tr], yt[tr], xt[te], yt[te]


def noisy_labels(y: torch.Tensor, noise: float, seed: int, n_classes: int = 10) -> torch.Tensor:
    """``y`` with a fraction ``noise`` (exactly ``round(noise * len(y))`` rows, seeded) moved to another class."""
    g = torch.Generator().manual_seed(10_007 * seed + round(noise * 1000))
    out = y.clone()
    idx = torch.randperm(len(y), generator=g)[: round(noise * len(y))]
    out[idx] = (out[idx] + torch.randint(1, n_classes, (len(idx),), generator=g)) % n_classes
    return out


def eval_steps(steps: int, n_evals: int) -> list[int]:
    """``n_evals`` log-spaced steps in ``1..steps`` (unique, sorted, always ending at ``steps``)."""
    pts = {max(1, min(steps, round(math.exp(math.log(steps) * i / max(n_evals - 1, 1))))) for i in range(n_evals)}
    return sorted(pts | {steps})


def run_cell(cfg: dict[str, Any], noise: float, seed: int, width: int) -> dict[str, Any]:
    """Train one network (``64 → width → 10``, ReLU) on the digits with ``noise`` label noise and seed ``seed``
    (full-batch Adam on cross-entropy, ``cfg['steps']`` steps); returns its final train/test error and loss and its
    curve at :func:`eval_steps`. A pure function of its arguments (the same numbers on every backend)."""
    with torch_threads(int(cfg.get("threads", 1))):
        x_tr, y_clean, x_te, y_te = digits_split(int(cfg["n_train"]), int(cfg["data_seed"]))
        y_tr = noisy_labels(y_clean, noise, seed)
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x_tr.shape[1], width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
        opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
        marks = set(eval_steps(int(cfg["steps"]), int(cfg["n_evals"])))
        curve: list[list[float]] = []

        def errors() -> tuple[float, float, float, float]:
            with torch.no_grad():
                o_tr, o_te = net(x_tr), net(x_te)
                return (
                    float((o_tr.argmax(1) != y_tr).float().mean()),
                    float((o_te.argmax(1) != y_te).float().mean()),
                    float(F.cross_entropy(o_tr, y_tr)),
                    float(F.cross_entropy(o_te, y_te)),
                )

        for step in range(1, int(cfg["steps"]) + 1):
            loss = F.cross_entropy(net(x_tr), y_tr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in marks:
                tr_err, te_err, _, _ = errors()
                curve.append([step, tr_err, te_err])
        tr_err, te_err, tr_loss, te_loss = errors()
    return {
        "noise": noise,
        "seed": seed,
        "width": width,
        "params": sum(p.numel() for p in net.parameters()),
        "train_error": tr_err,
        "test_error": te_err,
        "train_loss": tr_loss,
        "test_loss": te_loss,
        "curve": curve,
    }


def _cell_name(noise: float, seed: int, width: int) -> str:
    return f"noise{noise:g}-seed{seed}-width{width}.json"


def _peak(xs: list[Any], test: list[float], low: int, at: str, low_name: str) -> dict[str, Any]:
    """The minimum at index ``low`` (named ``low_name``), the highest test error at or after it (``peak_<at>``,
    its ``height`` above the minimum), the last test error and the ``second_descent`` from the peak to it."""
    j = low + max(range(len(test) - low), key=lambda i: test[low + i])
    return {
        f"{low_name}_{at}": xs[low],
        f"{low_name}_test_error": round(test[low], 4),
        f"peak_{at}": xs[j],
        "peak_test_error": round(test[j], 4),
        "height": round(test[j] - test[low], 4),
        "final_test_error": round(test[-1], 4),
        "second_descent": round(test[j] - test[-1], 4),
    }


def find_peaks(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per noise level (key ``f"{noise:g}"``): the interpolation threshold, the model-wise peak and the
    epoch-wise peak of the widest model, from the cells' seed-averaged errors (see the module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for noise in sorted({c["noise"] for c in cells}):
        rows = [c for c in cells if c["noise"] == noise]
        widths = sorted({c["width"] for c in rows})
        params = {c["width"]: c["params"] for c in rows}

        def mean(key: str, w: int, rows=rows) -> float:
            v = [c[key] for c in rows if c["width"] == w]
            return sum(v) / len(v)

        train = [mean("train_error", w) for w in widths]
        test = [mean("test_error", w) for w in widths]
        interp = next((i for i, e in enumerate(train) if e == 0.0), None)
        classical = min(range(interp), key=lambda i: test[i]) if interp else 0
        model_wise = _peak(widths, test, classical, "width", "classical_min")
        wide = [c["curve"] for c in rows if c["width"] == widths[-1]]
        steps = [p[0] for p in wide[0]]
        curve = [sum(cv[i][2] for cv in wide) / len(wide) for i in range(len(steps))]
        early = min(range(len(curve)), key=lambda i: curve[i])
        out[f"{noise:g}"] = {
            "interpolation_width": widths[interp] if interp is not None else None,
            "interpolation_params": params[widths[interp]] if interp is not None else None,
            **model_wise,
            "peak_params": params[model_wise["peak_width"]],
            "epoch_wise": {"width": widths[-1], **_peak(steps, curve, early, "step", "early_min")},
        }
    return out


@dataclass(kw_only=True)
class DoubleDescentResult(TrainingResult):
    cells: list[dict]  # one per cell: see run_cell
    metrics: list[dict] = field(default_factory=list)  # no per-step log: the cells hold the curves

    FILE: ClassVar[str] = "double_descent.json"
    KIND: ClassVar[str] = "double-descent"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in c.items() if k != "curve"} for c in self.cells])

    def plot(self):
        """Model-wise: test (solid) and train (dotted) error against width, one colour per noise level, the
        interpolation threshold marked."""
        import plotly.graph_objects as go

        fig = go.Figure()
        colours = ["#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd"]
        for i, noise in enumerate(sorted({c["noise"] for c in self.cells})):
            c = colours[i % len(colours)]
            widths = sorted({x["width"] for x in self.cells if x["noise"] == noise})

            def mean(key: str, noise=noise, widths=widths) -> list[float]:
                return [
                    float(np.mean([x[key] for x in self.cells if x["noise"] == noise and x["width"] == w]))
                    for w in widths
                ]

            fig.add_scatter(x=widths, y=mean("test_error"), name=f"test, noise {noise:g}", line={"color": c})
            fig.add_scatter(
                x=widths, y=mean("train_error"), name=f"train, noise {noise:g}", line={"color": c, "dash": "dot"}
            )
            w = self.summary["peaks"][f"{noise:g}"]["interpolation_width"]
            if w is not None:
                fig.add_vline(x=w, line={"color": c, "dash": "dash", "width": 1})
        fig.update_xaxes(type="log", title="hidden width (log)")
        return fig.update_layout(
            title="Model-wise double descent (dashed: interpolation threshold, train error 0)",
            yaxis_title="error",
            height=420,
        )

    def plot_epochs(self):
        """Epoch-wise: test error of the widest model against the training step, one line per noise level."""
        import plotly.graph_objects as go

        fig = go.Figure()
        wide = max(c["width"] for c in self.cells)
        for noise in sorted({c["noise"] for c in self.cells}):
            cv = [c["curve"] for c in self.cells if c["noise"] == noise and c["width"] == wide]
            steps = [p[0] for p in cv[0]]
            fig.add_scatter(
                x=steps,
                y=[sum(c[i][2] for c in cv) / len(cv) for i in range(len(steps))],
                name=f"test, noise {noise:g}",
            )
            fig.add_scatter(
                x=steps,
                y=[sum(c[i][1] for c in cv) / len(cv) for i in range(len(steps))],
                name=f"train, noise {noise:g}",
                line={"dash": "dot"},
            )
        fig.update_xaxes(type="log", title="step (log)")
        return fig.update_layout(title=f"Epoch-wise: width {wide}", yaxis_title="error", height=420)


def train(cfg: DoubleDescentConfig, run_dir, resume: bool = False, progress: bool = True) -> DoubleDescentResult:
    """Train every (noise, seed, width) cell that ``run_dir/cells/`` does not hold yet, through the sweep
    backend ``cfg.backend``; then find the peaks and save the Result (``double_descent.json``)."""
    from interplab.sweeps.backends import cached_cells
    from interplab.train.config import config_dict

    cfg.validate()
    keys = [(n, s, w) for n in cfg.noises for s in cfg.seeds for w in cfg.widths]
    cells, n_new = cached_cells(
        run_cell,
        config_dict(cfg),
        keys,
        Path(run_dir) / "cells",
        _cell_name,
        "double-descent-cell",
        backend=cfg.backend,
        max_parallel=cfg.max_parallel or None,
    )
    peaks = find_peaks(cells)
    summary = {
        "n_train": cfg.n_train,
        "n_cells": len(cells),
        "n_trained_now": n_new,
        "peaks": peaks,
        "peak_grows_with_noise": all(
            peaks[f"{a:g}"]["height"] <= peaks[f"{b:g}"]["height"]
            for a, b in zip(sorted(cfg.noises), sorted(cfg.noises)[1:], strict=False)
        ),
    }
    return DoubleDescentResult.saved(cfg, run_dir, cells=cells, summary=summary)
