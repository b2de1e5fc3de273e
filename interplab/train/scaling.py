"""Compute-optimal scaling — Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models"
("Chinchilla"), fitted on interplab's toy transformers; Kaplan et al. (2020), "Scaling Laws for Neural Language
Models", for the non-embedding parameter count and the IsoFLOP view.

Set-up: byte-level language models (vocabulary 256) on the bundled English corpus (``pydoc_data.topics``,
~466 kB; the first 90% of the bytes for training, the last 10% held out), two-layer
:class:`~interplab.models.toy.ToyTransformer` s (pre-LayerNorm, MLP width 4·d, 4 heads) of widths
``d_models``, each trained from a seeded initialisation for each token budget ``D`` in ``tokens``
(AdamW, linear warm-up over the first 5% of steps, cosine decay to 10% of ``lr`` at the budget — one run per
(N, D), as Hoffmann et al. do, not intermediate checkpoints of one long run). The loss ``L`` is the
cross-entropy on the held-out bytes (nats per byte). ``N`` is the non-embedding parameter count (Kaplan et
al.: at this scale the embedding and unembedding matrices are a large share of the parameters and bend the
power law); the total count is kept beside it. Compute is ``C = 6·N·D``. Budgets above the training split's
size repeat data (about four epochs at 1.6M tokens); Muennighoff et al. (2023) find up to ~4 epochs nearly as
good as fresh data. The model sizes are small because the corpus is: at larger sizes the compute-optimal token
count exceeds what four epochs of it hold.

Fits:

* **Approach 3** (Hoffmann et al.): ``L(N, D) = E + A/N^α + B/D^β``, fitted by minimising the Huber loss
  (δ = 1e-3) between ``log L`` and ``log L̂ = LSE(a − α log N, b − β log D, e)`` (``A = e^a``, ``B = e^b``,
  ``E = e^e``) from the best of their grid of starting points (BFGS with the exact gradient; they use L-BFGS — same
  minimiser for five parameters), as in their Appendix D.2. 95%
  intervals: percentile bootstrap over runs (``n_boot`` resamples, refitted from the point estimate).
* **Compute-optimal allocation** from the fit: for budget ``C``, ``N_opt = G·(C/6)^(β/(α+β))`` with
  ``G = (αA/(βB))^(1/(α+β))``, ``D_opt = C/(6 N_opt)``, and the tokens per parameter ``D_opt/N_opt``
  (≈ 20 for Chinchilla; it changes with C unless α = β).
* **Approach 2** (IsoFLOP, :func:`isoflop_optima`): at fixed compute C, each size's loss at ``D = C/6N`` is
  read off its loss-against-tokens curve; a parabola in ``log N`` through each profile gives the minimising
  ``N`` and ``N_opt ∝ C^a`` is fitted through them (Chinchilla: a ≈ 0.50).
* ``E`` is reported as not identified (``E_identified: false``) when the fit drives it to ~0: the losses of the
  grid are then far from the irreducible regime and only the power-law terms are measured.
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
from interplab.tasks.corpus import corpus_bytes
from interplab.train.result import TrainingResult

__all__ = [
    "ScalingConfig",
    "ScalingResult",
    "bootstrap_fit",
    "compute_optimal",
    "fit_chinchilla",
    "isoflop_optima",
    "run_cell",
    "train",
]

HUBER_DELTA = 1e-3
FIT_KEYS = ("E", "A", "B", "alpha", "beta")


@dataclass
class ScalingConfig:
    d_models: tuple[int, ...] = (8, 16, 32, 48)  # non-embedding parameters 1.8k ... 57k (1.5 decades)
    tokens: tuple[int, ...] = (25_000, 50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000)
    n_layers: int = 2
    n_ctx: int = 64
    batch: int = 16
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 0.1
    seed: int = 0
    text_file: str = ""  # default: the bundled pydoc corpus
    n_boot: int = 200
    budgets: tuple[float, ...] = (1e11, 1e12, 1e13, 1e15)  # FLOPs at which the compute-optimal N, D are reported
    threads: int = 1
    backend: str = "serial"  # how runs are spread: serial | process | ray (interplab.sweeps backends)
    max_parallel: int = 0  # 0: the backend's default

    def validate(self) -> None:
        if len(self.d_models) < 2 or len(self.tokens) < 2:
            raise ValueError("scaling needs at least two model widths (d_models) and two token budgets (tokens).")
        if any(d < 4 or d % 4 for d in self.d_models):
            raise ValueError(f"d_models must be multiples of 4 (4 heads), got {list(self.d_models)}.")
        if min(self.tokens) < self.batch * self.n_ctx:
            raise ValueError(f"every token budget must be at least one batch ({self.batch * self.n_ctx} tokens).")
        check_backend(self.backend)


def make_model(cfg: dict[str, Any], d_model: int):
    from interplab.models.toy import ToyConfig, ToyTransformer

    return ToyTransformer(
        ToyConfig(
            n_layers=int(cfg["n_layers"]),
            d_model=d_model,
            n_heads=4,
            d_head=d_model // 4,
            d_mlp=4 * d_model,
            d_vocab=256,
            n_ctx=int(cfg["n_ctx"]),
            normalization="LN",
            seed=int(cfg["seed"]),
        )
    )


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(non-embedding, total) parameter counts: the token and position embeddings and the unembedding are
    excluded from the first (Kaplan et al. 2020)."""
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("embed", "pos_embed", "unembed"))
    return total - emb, total


def run_cell(cfg: dict[str, Any], d_model: int, tokens: int) -> dict[str, Any]:
    """Train one model of width ``d_model`` on ``tokens`` training bytes and return its held-out loss (a pure
    function of its arguments: the same numbers on every backend)."""
    with torch_threads(int(cfg.get("threads", 1))):
        train_bytes, test_bytes = corpus_bytes(str(cfg.get("text_file", "")) or None)
        n_ctx, batch = int(cfg["n_ctx"]), int(cfg["batch"])
        model = make_model(cfg, d_model)
        n, n_total = param_counts(model)
        steps = max(1, tokens // (batch * n_ctx))
        opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
        warm = max(1, int(float(cfg["warmup"]) * steps))

        def lr_factor(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        g = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
        last = 0.0
        for _ in range(steps):
            start = torch.randint(0, train_bytes.numel() - n_ctx - 1, (batch,), generator=g)
            x = train_bytes[start[:, None] + torch.arange(n_ctx)]
            loss = F.cross_entropy(model(x).logits[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last = loss.item()
        windows = test_bytes[: (test_bytes.numel() // n_ctx) * n_ctx].view(-1, n_ctx)
        with torch.no_grad():
            total, count = 0.0, 0
            for chunk in windows.split(256):
                logits = model(chunk).logits[:, :-1]
                total += float(F.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1), reduction="sum"))
                count += chunk[:, 1:].numel()
    return {
        "d_model": d_model,
        "params": n,
        "params_total": n_total,
        "tokens": steps * batch * n_ctx,
        "token_budget": tokens,
        "steps": steps,
        "flops": 6.0 * n * steps * batch * n_ctx,
        "loss": total / count,
        "train_loss_last": last,
    }


# ------------------------------------------------------------------------------------------ fits
def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> tuple[float, np.ndarray]:
    """Huber loss of the log-sum-exp prediction of log L, and its gradient in ``theta = (a, b, e, α, β)``."""
    from scipy.special import huber, logsumexp, softmax

    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    r = logsumexp(terms, axis=0) - log_l
    w = softmax(terms, axis=0) * np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # d huber / d term, per run
    grad = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * log_n).sum(), -(w[1] * log_d).sum()])
    return float(np.sum(huber(HUBER_DELTA, r))), grad


def _minimise(starts: list[np.ndarray], log_n, log_d, log_l) -> np.ndarray:
    from scipy.optimize import minimize

    best, best_val = starts[0], math.inf
    for x0 in starts:
        r = minimize(
            _objective,
            x0,
            args=(log_n, log_d, log_l),
            jac=True,
            method="BFGS",
            options={"maxiter": 5000, "gtol": 1e-10},
        )
        if r.fun < best_val:
            best, best_val = r.x, r.fun
    return best


def _as_fit(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def fit_chinchilla(n: Any, d: Any, loss: Any) -> dict[str, float]:
    """Hoffmann et al.'s approach 3: ``L = E + A/N^α + B/D^β`` by Huber (δ=1e-3) regression of log-loss on the
    log-sum-exp form, BFGS from the best 8 of their grid of starting points (α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −.5, …, 1},
    a, b ∈ {0, 5, …, 25}); returns ``{"E", "A", "B", "alpha", "beta"}``."""
    log_n, log_d, log_l = np.log(np.asarray(n, float)), np.log(np.asarray(d, float)), np.log(np.asarray(loss, float))
    axes = np.meshgrid(
        np.arange(0.0, 26.0, 5.0),
        np.arange(0.0, 26.0, 5.0),
        np.arange(-1.0, 1.01, 0.5),
        *[np.arange(0.0, 2.01, 0.5)] * 2,
    )
    grid = np.stack([x.ravel() for x in axes], 1)  # [4500, 5] starting points
    # score every start at once, then run L-BFGS from the best few (from all 4,500 it is slow on CPU)
    from scipy.special import huber, logsumexp

    terms = np.stack(
        [
            grid[:, :1] - grid[:, 3:4] * log_n,
            grid[:, 1:2] - grid[:, 4:5] * log_d,
            np.broadcast_to(grid[:, 2:3], (len(grid), len(log_n))),
        ]
    )
    scores = huber(HUBER_DELTA, logsumexp(terms, axis=0) - log_l).sum(1)
    starts = [grid[i] for i in np.argsort(scores)[:8]]
    return _as_fit(_minimise(starts, log_n, log_d, log_l))


def bootstrap_fit(n: Any, d: Any, loss: Any, n_boot: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    """The fit with a 95% percentile-bootstrap interval per constant: runs resampled with replacement, each
    resample refitted from the full-data estimate. Returns ``{key: {"value", "low", "high"}}``."""
    n, d, loss = np.asarray(n, float), np.asarray(d, float), np.asarray(loss, float)
    point = fit_chinchilla(n, d, loss)
    theta0 = np.array([math.log(point["A"]), math.log(point["B"]), math.log(point["E"]), point["alpha"], point["beta"]])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(n), len(n))
        th = _minimise([theta0], np.log(n[i]), np.log(d[i]), np.log(loss[i]))
        draws.append(_as_fit(th))
    return {
        k: {
            "value": point[k],
            "low": float(np.percentile([x[k] for x in draws], 2.5)),
            "high": float(np.percentile([x[k] for x in draws], 97.5)),
        }
        for k in FIT_KEYS
    }


def compute_optimal(fit: dict[str, float], flops: float) -> dict[str, float]:
    """Hoffmann et al.'s efficient frontier of the fitted law at compute ``flops`` (C = 6ND):
    ``N_opt``, ``D_opt``, ``tokens_per_param`` and the predicted loss there."""
    a, b = fit["alpha"], fit["beta"]
    g = (a * fit["A"] / (b * fit["B"])) ** (1 / (a + b))
    n_opt = g * (flops / 6) ** (b / (a + b))
    d_opt = flops / (6 * n_opt)
    return {
        "flops": flops,
        "N_opt": n_opt,
        "D_opt": d_opt,
        "tokens_per_param": d_opt / n_opt,
        "loss": fit["E"] + fit["A"] / n_opt**a + fit["B"] / d_opt**b,
    }


def isoflop_optima(cells: list[dict[str, Any]], n_budgets: int = 8) -> dict[str, Any]:
    """Hoffmann et al.'s approach 2 on a grid of (N, D) runs: for ``n_budgets`` compute budgets C (log-spaced over
    the grid's range), each model size's loss at ``D = C/(6N)`` is read off its loss-against-tokens curve
    (linear in log D between the runs; sizes whose runs do not span that D are left out), and a parabola in
    ``log N`` through the lowest point of a profile of ≥ 3 sizes and up to two neighbours each side gives its
    minimising ``N`` — kept when the parabola opens upward
    and its vertex lies inside the profile's N range. Then the exponent ``a`` of ``N_opt ∝ C^a`` by least
    squares on the logs (None with fewer than two profiles; Chinchilla: a ≈ 0.50)."""
    curves: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for n in sorted({c["params"] for c in cells}):
        runs = sorted((c for c in cells if c["params"] == n), key=lambda c: c["tokens"])
        curves[n] = (np.log([r["tokens"] for r in runs]), np.array([r["loss"] for r in runs]))
    flops = [c["flops"] for c in cells]
    optima, profiles = [], []
    for budget in np.geomspace(min(flops), max(flops), n_budgets)[1:-1]:
        pts = []
        for n, (log_d, loss) in curves.items():
            x = math.log(budget / (6 * n))
            if len(log_d) >= 2 and log_d[0] <= x <= log_d[-1]:
                pts.append((n, float(np.interp(x, log_d, loss))))
        if len(pts) < 3:
            continue
        profiles.append({"flops": float(budget), "params": [p[0] for p in pts], "loss": [p[1] for p in pts]})
        x, y = np.log([p[0] for p in pts]), np.array([p[1] for p in pts])
        lo = min(max(int(np.argmin(y)) - 2, 0), len(x) - 3)  # the parabola through the lowest point's neighbours
        x, y = x[lo : lo + 5], y[lo : lo + 5]
        c2, c1, _ = np.polyfit(x, y, 2)
        vertex = -c1 / (2 * c2) if c2 > 0 else math.nan
        if c2 > 0 and x.min() <= vertex <= x.max():
            optima.append({"flops": float(budget), "N_opt": float(math.exp(vertex)), "n_sizes": len(pts)})
    a = None
    if len(optima) >= 2:
        a = float(np.polyfit(np.log([o["flops"] for o in optima]), np.log([o["N_opt"] for o in optima]), 1)[0])
    return {"profiles": profiles, "optima": optima, "exponent_a": a}


# ------------------------------------------------------------------------------------------ result
@dataclass(kw_only=True)
class ScalingResult(TrainingResult):
    cells: list[dict]  # one per cell: see run_cell
    metrics: list[dict] = field(default_factory=list)  # no per-step log: the cells hold the curves

    FILE: ClassVar[str] = "scaling.json"
    KIND: ClassVar[str] = "scaling"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.cells)

    def _fit(self) -> dict[str, float]:
        return {k: v["value"] for k, v in self.summary["fit"].items()}

    def plot(self):
        """Held-out loss against tokens, one line per model size, with the fitted law dashed."""
        import plotly.graph_objects as go

        fig = go.Figure()
        fit = self._fit()
        sizes = sorted({c["params"] for c in self.cells})
        for i, n in enumerate(sizes):
            runs = sorted((c for c in self.cells if c["params"] == n), key=lambda c: c["tokens"])
            colour = f"hsl({int(300 * i / max(1, len(sizes) - 1))},70%,45%)"
            xs = [c["tokens"] for c in runs]
            fig.add_scatter(
                x=xs, y=[c["loss"] for c in runs], mode="markers+lines", name=f"N={n:,}", line={"color": colour}
            )
            grid = np.geomspace(min(xs), max(xs), 40)
            fig.add_scatter(
                x=grid,
                y=fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / grid ** fit["beta"],
                mode="lines",
                line={"color": colour, "dash": "dash"},
                showlegend=False,
            )
        fig.update_xaxes(type="log", title="training tokens D (log)")
        return fig.update_layout(
            title="Held-out loss against tokens per model size (dashed: fitted L(N, D))",
            yaxis_title="loss (nats/byte)",
            height=420,
        )

    def plot_isoflop(self):
        """IsoFLOP profiles (losses read off each size's curve at D = C/6N), with each profile's parabola minimum."""
        import plotly.graph_objects as go

        fig = go.Figure()
        iso = self.summary["isoflop"]
        for p in iso["profiles"]:
            fig.add_scatter(x=p["params"], y=p["loss"], mode="markers+lines", name=f"C={p['flops']:.2g}")
        for o in iso["optima"]:
            fig.add_vline(x=o["N_opt"], line={"dash": "dot", "width": 1, "color": "grey"})
        fig.update_xaxes(type="log", title="non-embedding parameters N (log)")
        return fig.update_layout(
            title="IsoFLOP profiles (dotted: a parabola's minimum inside the grid)",
            yaxis_title="loss (nats/byte)",
            height=420,
        )


def train(cfg: ScalingConfig, run_dir, resume: bool = False, progress: bool = True) -> ScalingResult:
    """Train every (width, budget) run that ``run_dir/cells/`` does not hold yet, then fit the scaling law and
    save the Result (``scaling.json``)."""
    from interplab.sweeps.backends import cached_cells
    from interplab.train.config import config_dict

    cfg.validate()
    cd = config_dict(cfg)
    cells, n_new = cached_cells(
        run_cell,
        cd,
        [(d, t) for d in cfg.d_models for t in cfg.tokens],
        Path(run_dir) / "cells",
        lambda d, t: f"d{d}-tokens{t}.json",
        "scaling-cell",
        backend=cfg.backend,
        max_parallel=cfg.max_parallel or None,
    )
    n = [c["params"] for c in cells]
    d = [c["tokens"] for c in cells]
    loss = [c["loss"] for c in cells]
    fit = bootstrap_fit(n, d, loss, n_boot=cfg.n_boot, seed=cfg.seed)
    point = {k: v["value"] for k, v in fit.items()}
    optimal = [compute_optimal(point, c) for c in cfg.budgets]
    grid_flops = float(np.exp(np.mean(np.log([c["flops"] for c in cells]))))
    summary = {
        "n_runs": len(cells),
        "n_trained_now": n_new,
        "params_range": [min(n), max(n)],
        "decades_of_params": round(math.log10(max(n) / min(n)), 2),
        "tokens_range": [min(d), max(d)],
        "fit": fit,
        "tokens_per_param_optimal": compute_optimal(point, grid_flops)["tokens_per_param"],
        "tokens_per_param_optimal_at_flops": grid_flops,
        "compute_optimal": optimal,
        "isoflop": isoflop_optima(cells),
        "E_identified": point["E"] > 1e-3,
    }
    return ScalingResult.saved(cfg, run_dir, cells=cells, summary=summary)
