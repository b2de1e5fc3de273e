"""Toy models of superposition — Elhage et al. (2022), "Toy Models of Superposition" (Anthropic).

Model (their ReLU output model), many instances trained at once in one batched module:
``h = W x``, ``x' = ReLU(W^T h + b)``, with ``W`` stored as ``[n_instances, n_features, n_hidden]``
(row ``W_i`` is feature ``i``'s direction in the hidden space) and ``b`` ``[n_instances, n_features]``.
Data: each feature is ``U[0, 1]`` with probability ``p`` (the instance's feature probability, ``1 - S``
for sparsity ``S``), else 0. Loss: importance-weighted squared error, ``mean over batch and features``
per instance, summed over instances (so instances do not interact) — as their Colab. AdamW (weight decay 0.01,
torch default), lr 1e-3, batch 1024, W initialised with ``xavier_normal_`` on the ``[I, n, m]`` tensor, ``b = 0``
(their Colab).

Parts (``parts`` config):

* ``intro``: 5 features, 2 hidden dimensions, importance ``0.9^i``, feature probability
  ``20^-linspace(0, 1, 10)`` (10 instances), as their introduction figure, plus instances at
  ``intro_extra_probabilities`` (default 0.02, 0.01): with seed 0 the paper's sparsest instance
  (0.05) settles on two antipodal pairs (4 features, D_i = 1/2), while the sparser ones form the
  pentagon (D_i = 2/5, 72 degree angles); both are reported.
* ``geometry``: 200 features, 20 dimensions, uniform importance, feature probability
  ``10^-linspace(0, geometry_max_log10, geometry_instances)`` — by default ``20^-linspace(0, 1, 20)``,
  their Colab's "Feature geometry" sweep (10,000 steps, batch 1024); dimensions per feature
  ``D* = m / ||W||_F^2`` and per-feature dimensionality ``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2``
  (section "The Geometry of Superposition").
* ``phase``: 2 features into 1 dimension over a grid of feature-2 importance (feature 1 has 1) x feature
  density; each instance is classified as *feature 1 only*, *feature 2 only*, *superposition* (both
  represented, antipodal) or *none* — a feature is represented when ``||W_i|| >= 0.5`` (trained
  represented features have norm ~1; dropped ones ~0). Their section "Superposition as a phase change".

Each part is one :class:`~interplab.train.trainer.Trainer` run in ``RUN_DIR/<part>/`` (checkpoints,
resume, metrics), saved as ``model.safetensors`` with its feature probabilities and importances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from interplab.runtime import torch_threads
from interplab.train.result import TrainingResult
from interplab.train.trainer import Trainer, latest_checkpoint

PARTS = ("intro", "geometry", "phase")


@dataclass
class SuperpositionConfig:
    parts: tuple[str, ...] = PARTS
    steps: int = 10000
    batch: int = 1024
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 500
    ckpt_every: int = 2000
    threads: int = 1
    intro_features: int = 5
    intro_hidden: int = 2
    intro_instances: int = 10
    intro_extra_probabilities: tuple[float, ...] = (0.02, 0.01)  # sparser instances beyond the paper's sweep
    geometry_features: int = 200
    geometry_hidden: int = 20
    geometry_instances: int = 20
    geometry_max_log10: float = 1.3010299956639813  # log10(20): feature probability 1 ... 1/20, as their Colab
    geometry_probabilities: tuple[float, ...] = ()  # explicit feature probabilities (replaces the sweep above)
    phase_grid: int = 11
    phase_importance_log10: float = 1.0  # feature-2 importance in 10^[-x, x]
    phase_density_min_log10: float = -2.0  # densities 10^[min, 0]
    phase_replicas: int = 3  # independently initialised instances per cell; the lowest-loss one is classified

    def validate(self) -> None:
        bad = [p for p in self.parts if p not in PARTS]
        if bad or not self.parts:
            raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {list(self.parts)}.")
        if any(not 0 < p <= 1 for p in self.geometry_probabilities):
            raise ValueError(f"geometry_probabilities must be in (0, 1], got {list(self.geometry_probabilities)}.")
        if self.steps < 1 or self.batch < 1:
            raise ValueError("steps and batch must be at least 1.")


class ToyReLUModel(nn.Module):
    """``n_instances`` independent copies of ``x' = ReLU(W^T W x + b)`` (Elhage et al. 2022)."""

    importance: torch.Tensor  # buffers [n_instances, n_features]
    feature_probability: torch.Tensor

    def __init__(
        self,
        n_instances: int,
        n_features: int,
        n_hidden: int,
        importance: torch.Tensor,
        feature_probability: torch.Tensor,
        seed: int = 0,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.empty(n_instances, n_features, n_hidden)
        fan_in, fan_out = n_features * n_hidden, n_instances * n_hidden  # torch's xavier on a 3-D tensor
        W.normal_(0, math.sqrt(2.0 / (fan_in + fan_out)), generator=g)
        self.W = nn.Parameter(W)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))
        self.register_buffer("importance", importance.float().expand(n_instances, n_features).clone())
        self.register_buffer("feature_probability", feature_probability.float().expand(n_instances, n_features).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [batch, inst, feat]
        h = torch.einsum("bif,ifh->bih", x, self.W)
        return torch.relu(torch.einsum("bih,ifh->bif", h, self.W) + self.b)

    def sample(self, batch: int, g: torch.Generator) -> torch.Tensor:
        shape = (batch, *self.feature_probability.shape)
        feat = torch.rand(shape, generator=g)
        return torch.where(torch.rand(shape, generator=g) <= self.feature_probability, feat, torch.zeros(()))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        err = self.importance * (x - self(x)) ** 2
        return err.mean((0, 2)).sum()


# ------------------------------------------------------------------------------------------ measures
def d_star(W: torch.Tensor) -> torch.Tensor:
    """Dimensions per feature ``m / ||W||_F^2`` per instance (``W`` ``[I, n, m]``)."""
    return W.shape[-1] / (W.double() ** 2).sum((1, 2))


def feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    """``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2`` ``[I, n]`` (0 for features with ``W_i = 0``)."""
    W = W.double()
    norms = W.norm(dim=-1)
    Wh = W / norms.clamp_min(1e-12)[..., None]
    inter = torch.einsum("ifh,ijh->ifj", Wh, W) ** 2  # (W^_i . W_j)^2
    return torch.where(norms > 1e-6, norms**2 / inter.sum(-1).clamp_min(1e-30), torch.zeros_like(norms))


STICKY = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375, "1/3": 1 / 3}


def dimensionality_clusters(W: torch.Tensor, min_norm: float = 0.5, tol: float = 0.03) -> list[dict[str, int]]:
    """Per instance: how many represented features (``||W_i|| >= min_norm``) have a per-feature dimensionality
    within ``tol`` of each of the paper's sticky fractions (1, 3/4, 2/3, 1/2, 2/5, 3/8, 1/3), plus the rest."""
    D, norms = feature_dimensionality(W), W.double().norm(dim=-1)
    out = []
    for i in range(W.shape[0]):
        rep = D[i][norms[i] >= min_norm]
        row = {"represented": int(rep.numel())}
        used = torch.zeros(rep.numel(), dtype=torch.bool)
        for name, v in STICKY.items():
            hit = ((rep - v).abs() <= tol) & ~used
            used |= hit
            row[name] = int(hit.sum())
        row["other"] = int((~used).sum())
        out.append(row)
    return out


def superposition_score(W: torch.Tensor) -> torch.Tensor:
    """``sum_{j != i} (W^_i . W_j)^2`` ``[I, n]``: how much other features share feature ``i``'s direction."""
    W = W.double()
    Wh = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    inter = torch.einsum("ifh,ijh->ifj", Wh, W) ** 2
    return inter.sum(-1) - torch.diagonal(inter, dim1=1, dim2=2)


def polygon_angles(W2: torch.Tensor, min_norm: float = 0.5) -> list[float]:
    """Angles (degrees) between angularly adjacent represented features of one 2-D instance (``[n, 2]``)."""
    keep = W2.norm(dim=-1) >= min_norm
    th = torch.atan2(W2[keep, 1], W2[keep, 0]).double().sort().values
    if th.numel() < 2:
        return []
    d = torch.diff(torch.cat([th, th[:1] + 2 * math.pi]))
    return [float(x) for x in torch.rad2deg(d)]


def classify_phase(W: torch.Tensor, threshold: float = 0.5) -> list[str]:
    """2-in-1 instances ``[I, 2, 1]`` -> 'feature 1 only' / 'feature 2 only' / 'superposition' (both
    represented, antipodal: ``W_1 . W_2 < 0``) / 'both, same sign' (both represented in one direction, the
    degenerate dense solution at equal importance — not the paper's superposition) / 'none'."""
    W = W.double()
    n = W.norm(dim=-1)
    dot = (W[:, 0] * W[:, 1]).sum(-1)
    out = []
    for (a, b), d in zip((n >= threshold).tolist(), dot.tolist()):
        if a and b:
            out.append("superposition" if d < 0 else "both, same sign")
        else:
            out.append("feature 1 only" if a else "feature 2 only" if b else "none")
    return out


# ------------------------------------------------------------------------------------------ parts
def _part_setup(cfg: SuperpositionConfig, part: str) -> tuple[ToyReLUModel, dict]:
    if part == "intro":
        n, m, k = cfg.intro_features, cfg.intro_hidden, cfg.intro_instances
        imp = (0.9 ** torch.arange(n, dtype=torch.float64))[None]
        prob = torch.cat(
            [
                20.0 ** -torch.linspace(0, 1, k, dtype=torch.float64),
                torch.tensor(list(cfg.intro_extra_probabilities), dtype=torch.float64),
            ]
        )[:, None]
        k = prob.shape[0]
        meta = {
            "feature_probability": prob.flatten().tolist(),
            "importance": imp.flatten().tolist(),
            "paper_instances": cfg.intro_instances,
        }
    elif part == "geometry":
        n, m, k = cfg.geometry_features, cfg.geometry_hidden, cfg.geometry_instances
        imp = torch.ones(1, n, dtype=torch.float64)
        prob = (
            torch.tensor(list(cfg.geometry_probabilities), dtype=torch.float64)
            if cfg.geometry_probabilities
            else 10.0 ** -torch.linspace(0, cfg.geometry_max_log10, k, dtype=torch.float64)
        )[:, None]
        k = prob.shape[0]
        meta = {"feature_probability": prob.flatten().tolist(), "importance": [1.0]}
    else:
        g, R = cfg.phase_grid, cfg.phase_replicas
        n, m, k = 2, 1, g * g * R
        r = 10.0 ** torch.linspace(-cfg.phase_importance_log10, cfg.phase_importance_log10, g, dtype=torch.float64)
        dens = 10.0 ** torch.linspace(0, cfg.phase_density_min_log10, g, dtype=torch.float64)
        rr, dd = torch.meshgrid(r, dens, indexing="ij")  # instance = (i_importance * g + i_density) * R + replica
        rr, dd = rr.flatten().repeat_interleave(R), dd.flatten().repeat_interleave(R)
        imp = torch.stack([torch.ones(k, dtype=torch.float64), rr], 1)
        prob = dd[:, None]
        meta = {"importance_2": r.tolist(), "density": dens.tolist(), "replicas": R}
    model = ToyReLUModel(k, n, m, imp, prob, seed=cfg.seed)
    meta |= {"n_features": n, "n_hidden": m, "n_instances": k}
    return model, meta


def train_part(
    cfg: SuperpositionConfig, part: str, run_dir: Path, resume: bool, progress: bool, callbacks: list | None = None
) -> tuple[ToyReLUModel, dict, list[dict]]:
    from safetensors.torch import load_file, save_file

    d = Path(run_dir) / part
    model, meta = _part_setup(cfg, part)
    final = d / "model.safetensors"
    if resume and final.exists():
        model.load_state_dict(load_file(str(final)))
        from interplab.train.trainer import read_metrics

        return model, meta, read_metrics(d)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)  # their Colab: AdamW, default weight decay 0.01
    g = torch.Generator().manual_seed(cfg.seed + 1)
    ge = torch.Generator()

    def eval_fn(step: int) -> dict:
        ge.manual_seed(10_000 + cfg.seed)  # the same evaluation batch at every log step
        return {
            "loss": float(model.loss(model.sample(cfg.batch, ge))),
            "mean_d_star": float(d_star(model.W.detach()).mean()),
        }

    tr = Trainer.for_config(
        cfg,
        model,
        opt,
        lambda s: model.loss(model.sample(cfg.batch, g)),
        eval_fn,
        d,
        callbacks=callbacks,
        generators={"data": g},
        progress=progress,
        description=f"superposition {part}",
    )
    metrics = tr.fit(resume=resume and latest_checkpoint(d) is not None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(final))
    return model, meta, metrics


def analyse_part(part: str, model: ToyReLUModel, meta: dict) -> dict:
    W = model.W.detach()
    out: dict[str, Any] = {
        "part": part,
        **{k: v for k, v in meta.items() if k != "feature_probability"},
        "d_star": d_star(W).tolist(),
        "feature_norms": W.norm(dim=-1).tolist(),
        "feature_dimensionality": feature_dimensionality(W).tolist(),
        "superposition": superposition_score(W).tolist(),
        "bias": model.b.detach().tolist(),
    }
    if part == "intro":
        out["angles"] = [polygon_angles(W[i]) for i in range(W.shape[0])]
        out["wtw"] = torch.einsum("ifh,ijh->ifj", W, W).tolist()
    if part == "phase":
        R = meta["replicas"]
        g = torch.Generator().manual_seed(12345)
        with torch.no_grad():  # per-instance loss on a large evaluation batch; keep each cell's best replica
            x = model.sample(16384, g)
            per = (model.importance * (x - model(x)) ** 2).mean((0, 2))
        best = per.view(-1, R).argmin(1) + torch.arange(0, per.numel(), R)
        out["phase_all_replicas"] = classify_phase(W)
        out["phase_loss"] = per.tolist()
        out["best_instance"] = best.tolist()
        out["phase"] = [out["phase_all_replicas"][i] for i in best.tolist()]
        out["feature_probability"] = [meta["density"][(i // R) % len(meta["density"])] for i in best.tolist()]
        for key in ("d_star", "feature_norms", "feature_dimensionality", "superposition", "bias"):
            out[key] = [out[key][i] for i in best.tolist()]
        out["cell_W"] = W[best].squeeze(-1).tolist()
        return out
    out["feature_probability"] = meta["feature_probability"]
    if part == "geometry":
        out["dimensionality_clusters"] = dimensionality_clusters(W)
    return out


@dataclass(kw_only=True)
class SuperpositionResult(TrainingResult):
    metrics: dict[str, list[dict]]  # per part: one dict per logged step
    parts: dict[str, dict]  # per part: the analysis of its trained instances

    FILE: ClassVar[str] = "superposition.json"
    KIND: ClassVar[str] = "superposition"

    def to_frame(self):
        import pandas as pd

        rows = []
        for part, a in self.parts.items():
            for i, p in enumerate(a["feature_probability"]):
                rows.append(
                    {
                        "part": part,
                        "instance": i,
                        "feature_probability": p,
                        "d_star": a["d_star"][i],
                        "n_represented": sum(x >= 0.5 for x in a["feature_norms"][i]),
                        **({"phase": a["phase"][i]} if "phase" in a else {}),
                    }
                )
        return pd.DataFrame(rows)

    # ---- figures
    def plot_wtw(self):
        """WᵀW heatmaps and feature vectors of the intro instances."""
        from plotly.subplots import make_subplots

        a = self.parts["intro"]
        k = len(a["wtw"])
        fig = make_subplots(
            rows=1, cols=k, subplot_titles=[f"{p:.3g}" for p in a["feature_probability"]], vertical_spacing=0.12
        )
        for i in range(k):
            fig.add_heatmap(z=a["wtw"][i], zmin=-1, zmax=1, colorscale="RdBu", showscale=(i == 0), row=1, col=i + 1)
            fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
        return fig.update_layout(title="WᵀW per instance (intro: 5 features, 2 dims)", height=330)

    def plot_feature_norms(self):
        """Feature norms ‖W_i‖ per instance, coloured by superposition Σ_j≠i (Ŵ_i·W_j)²."""
        import plotly.graph_objects as go

        a = self.parts["intro"]
        fig = go.Figure()
        for i, p in enumerate(a["feature_probability"]):
            fig.add_bar(
                x=[f"1-S={p:.3g}"] * len(a["feature_norms"][i]),
                y=a["feature_norms"][i],
                marker={
                    "color": [min(1.0, s) for s in a["superposition"][i]],
                    "colorscale": "Viridis",
                    "cmin": 0,
                    "cmax": 1,
                },
                text=[f"f{j}" for j in range(len(a["feature_norms"][i]))],
                showlegend=False,
            )
        return fig.update_layout(barmode="group", title="‖W_i‖ per feature (colour: superposition)", height=330)

    def plot_d_star(self):
        import plotly.graph_objects as go

        a = self.parts["geometry"]
        x = [1 / p for p in a["feature_probability"]]
        fig = go.Figure()
        fig.add_scatter(x=x, y=a["d_star"], mode="lines+markers", name="D* = m/‖W‖²_F")
        for i, xi in enumerate(x):
            fig.add_scatter(
                x=[xi] * len(a["feature_dimensionality"][i]),
                y=a["feature_dimensionality"][i],
                mode="markers",
                marker={"size": 3, "color": "grey", "opacity": 0.3},
                showlegend=False,
            )
        for y in (1, 1 / 2, 2 / 5, 1 / 3):
            fig.add_hline(y=y, line={"dash": "dot", "color": "lightgrey"})
        fig.update_xaxes(type="log", title="1/(1-S)")
        return fig.update_layout(
            title="Dimensions per feature (geometry run)", yaxis_title="dimensions per feature", height=380
        )

    def plot_phase(self):
        import plotly.graph_objects as go

        a = self.parts["phase"]
        g = len(a["importance_2"])
        code = {"feature 1 only": 0, "superposition": 1, "feature 2 only": 2, "none": 3, "both, same sign": 4}
        z = [[code[a["phase"][i * g + j]] for j in range(g)] for i in range(g)]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=[f"{d:.3g}" for d in a["density"]],
                y=[f"{r:.3g}" for r in a["importance_2"]],
                zmin=0,
                zmax=4,
                colorscale=[[0, "#4c78a8"], [0.25, "#f58518"], [0.5, "#54a24b"], [0.75, "#bbbbbb"], [1, "#b279a2"]],
                text=[[a["phase"][i * g + j] for j in range(g)] for i in range(g)],
                hoverinfo="text+x+y",
            )
        )
        return fig.update_layout(
            title="2 features in 1 dimension: blue = feature 1 only, orange = superposition (antipodal), "
            "green = feature 2 only, purple = both in one direction, grey = none",
            xaxis_title="feature density 1-S",
            yaxis_title="relative importance of feature 2",
            height=420,
        )


def train(
    cfg: SuperpositionConfig, run_dir, resume: bool = False, progress: bool = True, callbacks: list | None = None
) -> SuperpositionResult:
    cfg.validate()
    parts, metrics = {}, {}
    with torch_threads(cfg.threads):
        for part in cfg.parts:
            model, meta, m = train_part(cfg, part, Path(run_dir), resume, progress, callbacks)
            parts[part] = analyse_part(part, model, meta)
            metrics[part] = m
    head: dict[str, Any] = {}
    if "intro" in parts:
        a = parts["intro"]
        head["intro_d_star"] = [round(x, 4) for x in a["d_star"]]

        def inst(i):
            return {
                "feature_probability": a["feature_probability"][i],
                "feature_dimensionality": [round(x, 4) for x in a["feature_dimensionality"][i]],
                "feature_norms": [round(x, 4) for x in a["feature_norms"][i]],
                "angles_deg": [round(x, 2) for x in a["angles"][i]],
            }

        head["intro_paper_sparsest"] = inst(a["paper_instances"] - 1)
        head["intro_highest_sparsity"] = inst(len(a["feature_probability"]) - 1)
    if "geometry" in parts:
        a = parts["geometry"]
        head["d_star"] = {f"{p:.4g}": round(v, 4) for p, v in zip(a["feature_probability"], a["d_star"])}
        head["feature_dimensionality_highest_sparsity"] = [round(x, 4) for x in a["feature_dimensionality"][-1]]
        near_half = [p for p, v in zip(a["feature_probability"], a["d_star"]) if abs(v - 0.5) <= 0.05]
        head["d_star_near_half_feature_probability"] = [min(near_half), max(near_half)] if near_half else None
        head["feature_dimensionality_clusters"] = {
            f"{p:.4g}": c for p, c in zip(a["feature_probability"], a["dimensionality_clusters"])
        }
    if "phase" in parts:
        from collections import Counter

        head["phase_counts"] = dict(Counter(parts["phase"]["phase"]))
    return SuperpositionResult.saved(
        cfg,
        run_dir,
        parts=parts,
        metrics=metrics,
        summary=head,
        settings={
            "paper": "Elhage et al. 2022, Toy Models of Superposition",
            "loss": "importance-weighted MSE, mean over batch and features, summed over instances",
        },
    )
