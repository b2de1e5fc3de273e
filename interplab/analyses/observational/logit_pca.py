"""PCA of logits on a fixed set of random tokens, layer by layer (and across checkpoints): where the
trajectory of the model's predictions turns abruptly ("kinks").

**Where the technique comes from.** Projecting a model's outputs on a *fixed* set of inputs onto
principal components and reading the trajectory is the per-token-loss PCA of Olsson et al. (2022),
"In-context Learning and Induction Heads" (Transformer Circuits Thread), where models' trajectories
across training checkpoints turn sharply at the induction-head phase change, and the "essential
dynamics" of Hoogland et al. (2024), "The Developmental Landscape of In-Context Learning"
(arXiv:2402.02364), a PCA of the outputs of every checkpoint on fixed inputs in which developmental
stages show up as turning points. The *layer-by-layer* variant — the logits at every layer read
through the logit lens (nostalgebraist 2020) instead of the final logits of every checkpoint — follows
the research-idea list this project works from ("PCA of logits on a fixed set of random tokens, layer by
layer, to show kinks"); we know of no paper that does exactly this, so it is described here in full.

**Method.**

1. A fixed, seeded set of random token sequences: ``n_seqs`` x ``seq_len`` ids drawn uniformly from the
   tokenizer's vocabulary (a BOS token in front when the tokenizer adds one by default). Random tokens
   keep the points about the model rather than about a text.
2. For every layer ``L`` (and the embeddings, ``blocks.0.hook_resid_pre``, labelled ``embed``) the
   logit-lens logits ``unembed_resid(model, blocks.L.hook_resid_post)`` (final norm, unembedding, soft-cap)
   at every position; by default their log-softmax centred over the vocabulary (``space="logprobs"``,
   which equals the centred logits: it removes only the per-position constant that the softmax ignores),
   or the probabilities (``space="probs"``). Each layer's values at all positions, flattened, are one point
   in ``R^(n_seqs * pos * vocab)``.
3. The points of all layers (of all checkpoints, when a list is given) are centred on their common mean
   and projected onto common principal components. With ``N`` points and a huge dimension, PCA goes through
   the ``N x N`` Gram matrix (float64): ``G = X_c X_c^T = U S^2 U^T``, coordinates ``U S``, explained variance
   ``S_k^2 / sum S^2`` (so the ratios of all components sum to 1, and of the first ``k`` to at most 1).
   Signs follow scikit-learn's ``svd_flip`` (the largest-magnitude coordinate of each component is positive).
4. Kinks. With ``p_L`` the point of layer ``L``, the step ``s_L = |p_L - p_{L-1}|`` and the turning angle at
   ``L`` — the angle between ``p_L - p_{L-1}`` and ``p_{L+1} - p_L`` (0° = straight on, 90° = a right angle,
   180° = straight back) — are computed in the *full* space (from all components, i.e. exactly), not in the
   PC1–PC2 picture, which is only a projection. Layers are ranked by turning angle; the same is done along
   the checkpoints for every layer when several checkpoints are given (a training trajectory).
   Reading the angles: in a space this large, two *unrelated* steps are nearly orthogonal (≈ 90°, e.g. the
   layers of a random-weight model); steady progress in one direction shows as small angles, and a kink as
   an angle well above the trajectory's own typical turn (``median_turn_angle`` in the headline).

>>> res = logit_pca(interplab.load("smollm2-135m"))
>>> res.headline()["kinks"][:3], res.explained_variance_ratio
>>> logit_pca(["run/ckpt-0", "run/ckpt-1000", "run/ckpt-2000"]).headline()["training_kinks"]
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.io.results import Result
from interplab.models.scoring import unembed_resid

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["LogitPCAResult", "layer_points", "logit_pca", "pca_trajectory", "random_tokens"]

Space = Literal["logprobs", "probs"]
Along = Literal["layers", "checkpoints"]
SPACES: tuple[Space, ...] = ("logprobs", "probs")
_GRAM_COLS = 1 << 18  # columns per float64 Gram block


# ---------------------------------------------------------------------------------- inputs and points


def random_tokens(
    model: Model, n_seqs: int = 2, seq_len: int = 16, seed: int = 0, prepend_bos: bool | None = None
) -> torch.Tensor:
    """``[n_seqs, seq_len (+1 with BOS)]`` token ids drawn uniformly (seeded) from the tokenizer's vocabulary."""
    if n_seqs < 1 or seq_len < 1:
        raise ValueError(f"n_seqs and seq_len must be at least 1, got {n_seqs} and {seq_len}.")
    vocab = model.cfg.d_vocab
    if model.tokenizer is not None:
        vocab = min(vocab, len(model.tokenizer))
    g = torch.Generator().manual_seed(int(seed))
    t = torch.randint(0, vocab, (n_seqs, seq_len), generator=g)
    use_bos = model.default_prepend_bos if prepend_bos is None else prepend_bos
    if use_bos:
        if model.tokenizer is None or model.tokenizer.bos_token_id is None:
            raise ValueError(f"Model {model.name!r} has no BOS token; use prepend_bos=False.")
        t = torch.cat([torch.full((n_seqs, 1), model.tokenizer.bos_token_id, dtype=torch.long), t], dim=1)
    return t


def _layer_names(model: Model, include_embed: bool) -> tuple[list[str], list[str]]:
    names = (["blocks.0.hook_resid_pre"] if include_embed else []) + [
        f"blocks.{L}.hook_resid_post" for L in range(model.cfg.n_layers)
    ]
    labels = (["embed"] if include_embed else []) + [str(L) for L in range(model.cfg.n_layers)]
    return names, labels


def layer_points(
    model: Model, tokens: torch.Tensor, space: Space = "logprobs", include_embed: bool = True
) -> torch.Tensor:
    """``[n_layers (+1), n_seqs * pos * vocab]`` float32: each layer's logit-lens output on ``tokens``,
    centred log-softmax (``"logprobs"``) or softmax (``"probs"``), flattened. The last row is the model's own
    output (for ``"logprobs"``: ``logits.log_softmax(-1)`` centred over the vocabulary)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, not {space!r}.")
    names, _ = _layer_names(model, include_embed)
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    rows = []
    with torch.no_grad():
        _, cache = model.run(tokens, cache=names)
        for n in names:
            lg = unembed_resid(model, cache[n]).float()
            if space == "logprobs":
                lp = lg.log_softmax(-1)
                rows.append((lp - lp.mean(-1, keepdim=True)).flatten().cpu())
            else:
                rows.append(lg.softmax(-1).flatten().cpu())
            del lg
    return torch.stack(rows)


# ---------------------------------------------------------------------------------- PCA and trajectory geometry


def _gram(blocks: list[torch.Tensor]) -> torch.Tensor:
    """float64 Gram matrix of the rows of all blocks (same width), computed in column slices."""
    sizes = [b.shape[0] for b in blocks]
    off = [0]
    for s in sizes:
        off.append(off[-1] + s)
    G = torch.zeros(off[-1], off[-1], dtype=torch.float64)
    d = blocks[0].shape[1]
    for c0 in range(0, d, _GRAM_COLS):
        cols = [b[:, c0 : c0 + _GRAM_COLS].double() for b in blocks]
        for i in range(len(blocks)):
            for j in range(i + 1):
                g = cols[i] @ cols[j].T
                G[off[i] : off[i + 1], off[j] : off[j + 1]] += g
                if i != j:
                    G[off[j] : off[j + 1], off[i] : off[i + 1]] += g.T
    return G


def _pca_gram(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates ``[N, N]`` on all principal components (descending) and their variances (eigenvalues)."""
    N = G.shape[0]
    H = torch.eye(N, dtype=torch.float64) - 1.0 / N
    Gc = H @ G @ H
    Gc = (Gc + Gc.T) / 2
    evals, evecs = torch.linalg.eigh(Gc)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    idx = evecs.abs().argmax(0)
    signs = torch.sign(evecs[idx, torch.arange(N)])
    signs[signs == 0] = 1
    evecs = evecs * signs
    return evecs * evals.sqrt(), evals


def _angle(u: torch.Tensor, v: torch.Tensor) -> float:
    nu, nv = float(u.norm()), float(v.norm())
    if nu == 0 or nv == 0:
        return float("nan")
    c = float((u @ v) / (nu * nv))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _geometry(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a path ``[T, r]``: step lengths (nan at 0) and turning angles in degrees (nan at both ends)."""
    T = Y.shape[0]
    step = torch.full((T,), float("nan"), dtype=torch.float64)
    turn = torch.full((T,), float("nan"), dtype=torch.float64)
    for t in range(1, T):
        step[t] = (Y[t] - Y[t - 1]).norm()
    for t in range(1, T - 1):
        turn[t] = _angle(Y[t] - Y[t - 1], Y[t + 1] - Y[t])
    return step, turn


# ---------------------------------------------------------------------------------- result


@dataclass
class LogitPCAResult(Result):
    """Trajectories of the logit-lens outputs through common principal components.

    ``coords`` ``[n_checkpoints, n_layers, k]`` (the first ``k`` PCs); ``explained_variance_ratio`` ``[k]``;
    along layers, per checkpoint: ``step_length`` and ``turn_angle`` (degrees) ``[n_checkpoints, n_layers]``,
    measured in the full space; along checkpoints, per layer: ``ckpt_step_length`` and ``ckpt_turn_angle``
    (same shape; nan where undefined). ``layer_labels``: ``"embed"``, ``"0"``, ``"1"``, …"""

    coords: torch.Tensor
    explained_variance_ratio: torch.Tensor
    step_length: torch.Tensor
    turn_angle: torch.Tensor
    ckpt_step_length: torch.Tensor
    ckpt_turn_angle: torch.Tensor
    layer_labels: list[str]
    checkpoint_names: list[str]
    total_variance: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "logit_pca"
    FILE: ClassVar[str] = "logit_pca.json"

    @property
    def n_checkpoints(self) -> int:
        return int(self.coords.shape[0])

    def kinks(self, k: int = 3, along: Along = "layers", layer: int = -1) -> list[dict[str, Any]]:
        """The ``k`` largest turning angles: ``along="layers"`` (every checkpoint's path through its layers) or
        ``"checkpoints"`` (the path of layer ``layer`` — default the last — across checkpoints)."""
        out = []
        if along == "layers":
            ang = self.turn_angle
            for idx in torch.argsort(torch.nan_to_num(ang, nan=-1.0).flatten(), descending=True, stable=True)[
                :k
            ].tolist():
                c, t = divmod(idx, ang.shape[1])
                if math.isnan(float(ang[c, t])):
                    break
                row = {
                    "layer": self.layer_labels[t],
                    "angle": round(float(ang[c, t]), 3),
                    "step_in": _r(self.step_length[c, t]),
                    "step_out": _r(self.step_length[c, t + 1]),
                }
                if self.n_checkpoints > 1:
                    row = {"checkpoint": self.checkpoint_names[c], "index": c} | row
                out.append(row)
        elif along == "checkpoints":
            ang = self.ckpt_turn_angle[:, layer]
            for c in torch.argsort(torch.nan_to_num(ang, nan=-1.0), descending=True, stable=True)[:k].tolist():
                if math.isnan(float(ang[c])):
                    break
                out.append(
                    {
                        "checkpoint": self.checkpoint_names[c],
                        "index": c,
                        "layer": self.layer_labels[layer],
                        "angle": round(float(ang[c]), 3),
                        "step_in": _r(self.ckpt_step_length[c, layer]),
                        "step_out": _r(self.ckpt_step_length[c + 1, layer]),
                    }
                )
        else:
            raise ValueError(f"along must be 'layers' or 'checkpoints', not {along!r}.")
        return out

    def headline(self) -> dict[str, Any]:
        """Explained variance, the sharpest turns (kinks) and the longest step along the layers; with several
        checkpoints also the sharpest turns of the last layer across checkpoints."""
        evr = self.explained_variance_ratio.tolist()
        st = torch.nan_to_num(self.step_length, nan=-1.0)
        c, t = divmod(int(st.flatten().argmax()), st.shape[1])
        path = float(torch.nan_to_num(self.step_length[c], nan=0.0).sum())
        h: dict[str, Any] = {
            "checkpoints": self.checkpoint_names,
            "n_layers": len(self.layer_labels),
            "explained_variance": [round(v, 5) for v in evr],
            "explained_variance_total": round(sum(evr), 5),
            "kinks": self.kinks(3),
            "median_turn_angle": _r(torch.nanmedian(self.turn_angle))
            if not torch.isnan(self.turn_angle).all()
            else None,
            "largest_step": {
                "layer": self.layer_labels[t],
                "length": _r(st[c, t]),
                "frac_of_path": _r(float(st[c, t]) / path if path > 0 else float("nan")),
            }
            | ({"checkpoint": self.checkpoint_names[c]} if self.n_checkpoints > 1 else {}),
            "space": self.settings.get("space"),
        }
        if self.n_checkpoints >= 3:
            h["training_kinks"] = self.kinks(3, along="checkpoints")
        return h

    def to_frame(self, which: str = "points") -> pd.DataFrame:
        """``"points"``: one row per (checkpoint, layer) with PC coordinates, step lengths and angles;
        ``"variance"``: explained variance per component."""
        import pandas as pd

        if which == "variance":
            evr = self.explained_variance_ratio.tolist()
            return pd.DataFrame({"component": [f"PC{i + 1}" for i in range(len(evr))], "explained_variance_ratio": evr})
        if which != "points":
            raise ValueError(f"which must be 'points' or 'variance', not {which!r}.")
        rows = []
        for c, name in enumerate(self.checkpoint_names):
            for t, lab in enumerate(self.layer_labels):
                row: dict[str, Any] = {"checkpoint": name, "layer": lab}
                for i in range(self.coords.shape[-1]):
                    row[f"PC{i + 1}"] = float(self.coords[c, t, i])
                row.update(
                    {
                        "step_length": float(self.step_length[c, t]),
                        "turn_angle": float(self.turn_angle[c, t]),
                        "ckpt_step_length": float(self.ckpt_step_length[c, t]),
                        "ckpt_turn_angle": float(self.ckpt_turn_angle[c, t]),
                    }
                )
                rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, kind: str = "both") -> go.Figure:
        """``"trajectory"``: every checkpoint's path through its layers in the PC1–PC2 plane (labels = layers,
        the three sharpest turns ringed; with several checkpoints the last layer's path across them dotted);
        ``"angles"``: turning angle and step length per layer (full space); ``"both"`` (default): side by side."""
        import html

        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "trajectory", "angles"):
            raise ValueError(f"kind must be 'both', 'trajectory' or 'angles', not {kind!r}.")
        esc = [html.escape(n, quote=False) for n in self.checkpoint_names]
        k = self.coords.shape[-1]
        x = self.coords[..., 0].tolist()
        y = self.coords[..., 1].tolist() if k > 1 else [[0.0] * len(self.layer_labels) for _ in esc]
        multi = self.n_checkpoints > 1
        traj = [
            go.Scatter(
                x=x[c],
                y=y[c],
                mode="lines+markers+text",
                text=self.layer_labels,
                textposition="top center",
                name=esc[c] if multi else "layers",
                showlegend=multi,
                customdata=self.turn_angle[c].tolist(),
                hovertemplate="layer %{text}<br>turn %{customdata:.1f}°<extra>" + esc[c] + "</extra>",
            )
            for c in range(self.n_checkpoints)
        ]
        ring_x, ring_y = [], []
        for kk in self.kinks(3):
            c = kk.get("index", 0)
            t = self.layer_labels.index(kk["layer"])
            ring_x.append(x[c][t])
            ring_y.append(y[c][t])
        rings = go.Scatter(
            x=ring_x,
            y=ring_y,
            mode="markers",
            name="sharpest turns",
            hoverinfo="skip",
            marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "#e45756", "width": 2}},
        )
        extra = []
        if multi:
            extra.append(
                go.Scatter(
                    x=[x[c][-1] for c in range(self.n_checkpoints)],
                    y=[y[c][-1] for c in range(self.n_checkpoints)],
                    mode="lines",
                    line={"dash": "dot", "color": "grey"},
                    name="last layer across checkpoints",
                    hoverinfo="skip",
                )
            )
        lines = [
            go.Scatter(
                x=self.layer_labels,
                y=self.turn_angle[c].tolist(),
                mode="lines+markers",
                name=(esc[c] + " turn") if multi else "turning angle",
                showlegend=multi,
                hovertemplate="layer %{x}<br>%{y:.1f}°<extra></extra>",
            )
            for c in range(self.n_checkpoints)
        ]
        steps = [
            go.Bar(
                x=self.layer_labels,
                y=self.step_length[c].tolist(),
                name=(esc[c] + " step") if multi else "step length",
                showlegend=multi,
                opacity=0.6,
                hovertemplate="layer %{x}<br>step %{y:.3g}<extra></extra>",
            )
            for c in range(self.n_checkpoints)
        ]
        evr = self.explained_variance_ratio.tolist() + [0.0, 0.0]
        xl, yl = f"PC1 ({100 * evr[0]:.1f}%)", f"PC2 ({100 * evr[1]:.1f}%)"
        name = html.escape(self.settings.get("model", ""), quote=False)
        title = f"PCA of logit-lens {self.settings.get('space', 'logprobs')} on random tokens" + (
            f" — {name}" if name else ""
        )
        if kind == "trajectory":
            fig = go.Figure(traj + extra + [rings])
            fig.update_xaxes(title_text=xl)
            fig.update_yaxes(title_text=yl)
        elif kind == "angles":
            fig = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("turning angle (°)", "step length"))
            for tr in lines:
                fig.add_trace(tr, row=1, col=1)
            for tr in steps:
                fig.add_trace(tr, row=2, col=1)
            fig.update_xaxes(title_text="layer", type="category", row=2, col=1)
            fig.update_yaxes(range=[0, 180], row=1, col=1)
        else:
            fig = make_subplots(
                rows=1,
                cols=2,
                column_widths=[0.58, 0.42],
                subplot_titles=("trajectory through the layers (PC1–PC2)", "turning angle per layer (full space)"),
            )
            for tr in traj + extra + [rings]:
                fig.add_trace(tr, row=1, col=1)
            for tr in lines:
                fig.add_trace(tr, row=1, col=2)
            fig.update_xaxes(title_text=xl, row=1, col=1)
            fig.update_yaxes(title_text=yl, row=1, col=1)
            fig.update_xaxes(title_text="layer", type="category", row=1, col=2)
            fig.update_yaxes(title_text="degrees", range=[0, 180], row=1, col=2)
        fig.update_layout(title={"text": title}, height=480, margin={"l": 60, "r": 20, "t": 70, "b": 60})
        return fig

    # ---- persistence: logit_pca.json + logit_pca.safetensors, through the Result base


def _r(x, nd: int = 6):
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, nd)


# ---------------------------------------------------------------------------------- entry points


def _as_model(m) -> tuple[Model, bool]:
    """(model, loaded_here): names and directories are loaded (and freed by the caller)."""
    if isinstance(m, (str, Path)):
        import interplab

        return interplab.load(str(m)), True
    return m, False


def _name(m) -> str:
    return str(m) if isinstance(m, (str, Path)) else (m.name or "model")


def _trajectory(
    blocks: list[torch.Tensor],
    layer_labels: list[str],
    checkpoint_names: list[str],
    n_components: int,
    settings: dict[str, Any],
) -> LogitPCAResult:
    C, T = len(blocks), blocks[0].shape[0]
    if any(b.shape != blocks[0].shape for b in blocks):
        raise ValueError("every checkpoint must give the same number of points of the same dimension.")
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}.")
    Y, evals = _pca_gram(_gram(blocks))
    total = float(evals.sum())
    k = min(n_components, C * T)
    Yp = Y.view(C, T, -1)
    step = torch.full((C, T), float("nan"), dtype=torch.float64)
    turn = torch.full((C, T), float("nan"), dtype=torch.float64)
    cstep = torch.full((C, T), float("nan"), dtype=torch.float64)
    cturn = torch.full((C, T), float("nan"), dtype=torch.float64)
    for c in range(C):
        step[c], turn[c] = _geometry(Yp[c])
    for t in range(T):
        cstep[:, t], cturn[:, t] = _geometry(Yp[:, t])
    evr = evals[:k] / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    return LogitPCAResult(
        coords=Yp[..., :k].clone(),
        explained_variance_ratio=evr,
        step_length=step,
        turn_angle=turn,
        ckpt_step_length=cstep,
        ckpt_turn_angle=cturn,
        layer_labels=list(layer_labels),
        checkpoint_names=list(checkpoint_names),
        total_variance=total,
        settings=settings,
    )


def pca_trajectory(
    points,
    layer_labels: Sequence[str] | None = None,
    checkpoint_names: Sequence[str] | None = None,
    n_components: int = 3,
    settings: dict[str, Any] | None = None,
) -> LogitPCAResult:
    """PCA trajectory of arbitrary points: ``[n_layers, dim]`` (one path) or ``[n_checkpoints, n_layers, dim]``
    (a tensor or array). The geometry that :func:`logit_pca` applies to logit-lens outputs, for any points."""
    x = torch.as_tensor(points)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(
            "points must be [n_layers, dim] or [n_checkpoints, n_layers, dim] with n_layers >= 2, "
            f"got {tuple(x.shape)}."
        )
    C, T, _ = x.shape
    labels = list(layer_labels) if layer_labels is not None else [str(t) for t in range(T)]
    names = list(checkpoint_names) if checkpoint_names is not None else [str(c) for c in range(C)]
    if len(labels) != T or len(names) != C:
        raise ValueError(f"got {len(labels)} layer labels for {T} layers and {len(names)} names for {C} checkpoints.")
    return _trajectory([x[c] for c in range(C)], labels, names, n_components, dict(settings or {}))


def logit_pca(
    models,
    n_seqs: int = 2,
    seq_len: int = 16,
    seed: int = 0,
    space: Space = "logprobs",
    include_embed: bool = True,
    n_components: int = 3,
    prepend_bos: bool | None = None,
    max_elements: int = 1 << 28,
) -> LogitPCAResult:
    """PCA of the logit-lens outputs of every layer on a fixed seeded set of random tokens (see the module
    docstring). ``models``: a Model or name, or a list of checkpoints of one architecture (Models or
    names/directories, loaded one at a time) to trace the trajectory across training too.

    ``max_elements`` bounds the float32 values held (points x positions x vocabulary); past it the call
    refuses and says how to shrink the input, rather than exhausting memory."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, not {space!r}.")
    items = list(models) if isinstance(models, (list, tuple)) else [models]
    if not items:
        raise ValueError("logit_pca needs a model or a list of checkpoints.")
    blocks: list[torch.Tensor] = []
    names: list[str] = []
    tokens = labels = ref_cfg = None
    for i, m in enumerate(items):
        model, loaded = _as_model(m)
        try:
            if tokens is None:
                tokens = random_tokens(model, n_seqs, seq_len, seed, prepend_bos)
                _, labels = _layer_names(model, include_embed)
                ref_cfg = (model.cfg.n_layers, model.cfg.d_vocab)
                size = len(items) * len(labels) * tokens.numel() * model.cfg.d_vocab
                if size > max_elements:
                    raise ValueError(
                        f"{len(items)} checkpoint(s) x {len(labels)} layers x {tokens.numel()} positions x "
                        f"{model.cfg.d_vocab} vocabulary = {size:,} values exceed max_elements={max_elements:,}; "
                        "use fewer or shorter random "
                        "sequences (n_seqs, seq_len), fewer checkpoints, or raise max_elements."
                    )
            elif (model.cfg.n_layers, model.cfg.d_vocab) != ref_cfg:
                assert ref_cfg is not None  # set with tokens on the first checkpoint
                raise ValueError(
                    f"checkpoint {i} ({_name(m)}) has {model.cfg.n_layers} layers and vocabulary {model.cfg.d_vocab}; "
                    f"the first has {ref_cfg[0]} and {ref_cfg[1]}. Checkpoints must share the architecture."
                )
            blocks.append(layer_points(model, tokens, space=space, include_embed=include_embed))
            names.append(_name(m))
        finally:
            if loaded:
                del model
                gc.collect()
    assert tokens is not None and labels is not None  # items is non-empty, so the first pass set them
    settings = {
        "method": "PCA of logit-lens outputs on random tokens (after Olsson et al. 2022; Hoogland et al. 2024)",
        "hook": "blocks.{L}.hook_resid_post (embed: blocks.0.hook_resid_pre)",
        "space": space,
        "n_seqs": n_seqs,
        "seq_len": seq_len,
        "seed": seed,
        "positions": int(tokens.numel()),
        "include_embed": include_embed,
        "n_components": n_components,
        "model": names[0] if len(names) == 1 else f"{len(names)} checkpoints",
        "dim": int(blocks[0].shape[1]),
    }
    return _trajectory(blocks, labels, names, n_components, settings)
