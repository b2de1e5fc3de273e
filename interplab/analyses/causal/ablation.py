"""Ablation importance of attention heads on text: which heads does the model need to predict a corpus?

For every head ``(L, h)`` the head's output ``blocks.L.attn.hook_z[:, :, h]`` is replaced at every
position and the mean next-token loss on the corpus chunks is measured again; the head's
*importance* is the increase of that loss (nats per token). This is the mean/zero-ablation head
importance used throughout the circuits literature — e.g. Michel, Levy & Neubig (2019), "Are Sixteen
Heads Really Better than One?" (head masking), Olsson et al. (2022), "In-context Learning and
Induction Heads" (ablations of induction heads), Wang et al. (2022), "Interpretability in the Wild"
(mean ablation), Chan et al. (2022), "Causal Scrubbing" (resample ablation).

Definitions
-----------
* **Chunks.** ``n_chunks`` consecutive, non-overlapping windows of ``chunk_len`` tokens of a corpus
  (default the standard library's ``pydoc_data.topics``; :func:`interplab.tasks.token_chunks`), or any
  ``[n_chunks, chunk_len]`` token ids.
* **Loss of a chunk.** Mean next-token cross-entropy (nats) over its ``chunk_len - 1`` predictions.
* **Ablations** (the replacement of head ``h``'s ``z`` at every position of a chunk):

  - ``"zero"``: 0.
  - ``"mean"``: the head's mean ``z`` over the corpus chunks themselves (the clean run):
    ``mean_over="all"`` (default) averages over chunks *and* positions — one vector per head, the
    right choice for text, whose positions carry no fixed meaning; ``mean_over="position"`` averages
    over chunks only, one vector per head and position (same as ``Ablate(how="mean")`` with
    ``over=("batch",)``; with few chunks each chunk weighs ``1/n_chunks`` in its own replacement).
  - ``"resample"``: chunk ``i`` takes the head's ``z`` from chunk ``j(i) != i`` of the clean run (all
    positions), ``j(i) = (i + r_i) mod n`` with ``r_i`` uniform in ``1..n-1`` drawn from
    ``torch.Generator().manual_seed(seed)`` — the same draw as ``Ablate(how="resample", seed=seed)``
    on the whole batch of chunks. One draw is shared by all heads.

* **Importance.** Per chunk ``d_i = loss_i(ablated) - loss_i(clean)`` (a paired difference: the same
  text with and without the head); the importance is ``mean_i d_i`` (= the increase of the token-mean
  loss, as all chunks have the same length).
* **Confidence interval over chunks.** ``ci="t"`` (default): Student's t interval
  ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` (:func:`interplab.stats.confidence_interval`, on
  ``scipy.stats``). ``ci="bootstrap"``: percentile bootstrap over chunks (``n_boot`` resamples, seeded). Both
  treat chunks as independent draws of text; consecutive chunks of one document are not quite, so
  read the interval as a guide to chunk-to-chunk variability rather than a guarantee.
* **Non-induction important heads.** Induction heads are those of :mod:`interplab.analyses.observational.heads`'s
  ``induction`` class (computed by :func:`induction_scores`: score >= 0.3 and >= 0.2 above its null
  on deranged repeats), or, for a score tensor given by the caller, those with score >=
  ``induction_threshold`` (default 0.3). A head is *flagged* when it is among the ``top_k`` heads by
  importance, its confidence interval lies above 0, and it is not an induction head — the research
  idea's "important heads that are not induction heads".

Speed (the hot loop: 270 heads of SmolLM2)
------------------------------------------
``method="naive"`` runs one full forward pass per head (and batch of chunks) with an
``Ablate``/``Patch`` intervention. ``method="fast"`` (default) runs one clean pass that caches
``blocks.L.hook_resid_pre`` (and ``hook_z`` for mean/resample), then for each layer ``L`` restarts
the model at ``L`` (``Model.run(start_at_layer=L)``) with the ablated variants of that layer stacked
in the batch dimension — copy ``v`` of the chunks has head ``heads[v]`` replaced, via one ``Apply``
on ``hook_z`` with a boolean ``[variant, head]`` mask — so blocks ``0..L-1`` are computed once
instead of once per head (:func:`interplab.analyses.causal.engine.run_variants`, the engine of
activation patching; here the whole logits are kept, for the per-token losses). At most
``max_batch_tokens`` tokens go through one forward, which bounds memory (logits are ``[batch, pos, vocab]``;
default: at most 1 GiB of them). Both methods give the same numbers (tested to 1e-4; on SmolLM2 they are
bit-identical). The clean run keeps ``resid_pre`` (and ``z``) of every ablated layer for all chunks:
``n_chunks x chunk_len x d_model`` floats per layer (SmolLM2, 16 x 128: 4.7 MB).

What it buys: every variant still pays the blocks from ``L`` on and the unembedding, so the saving is
the prefix only — about half the blocks on average. On an idle 2-core CPU, where a forward over
several variants costs the same per token as separate ones, that is 1.5-1.6x for SmolLM2 (multiply-add
model: 1.62x for all 270 heads, below 2x even with a free unembedding); on a loaded machine the few
large batched forwards lose much less to contention than many small ones (3-4.5x measured); on a GPU,
which small batches underuse, the batching should pay as well (not measured here). See
``interplab bench ablation`` and BENCHMARKS.md.

Where things are: this module holds :class:`HeadAblationResult` and :func:`head_ablation_importance`; the clean
and ablated runs and the helpers the ablation analyses share are in :mod:`interplab.analyses.causal.ablation_runs`,
the induction scores and :func:`compare_induction_ablation` in :mod:`interplab.analyses.causal.induction_ablation`
(their public names are importable from here too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interplab.analyses.causal.ablation_runs import (
    HOWS,
    How,
    MeanOver,
    ablated_losses,
    ablation_runs,
    ablation_share,
    auto_batch_tokens,
    check_tokens,
    resample_index,
    resolve_heads,
)
from interplab.analyses.causal.engine import Method
from interplab.analyses.causal.induction_ablation import (
    InductionAblationComparison,
    compare_induction_ablation,
    induction_scores,
)
from interplab.io.results import Result, nan_to_none
from interplab.stats import CIMethod, confidence_interval

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "HeadAblationResult",
    "How",
    "InductionAblationComparison",
    "MeanOver",
    "ablated_losses",
    "ablation_share",
    "compare_induction_ablation",
    "head_ablation_importance",
    "induction_scores",
    "resample_index",
]

DEFAULT_INDUCTION_THRESHOLD = 0.3  # = interplab.analyses.observational.heads.THRESHOLDS["induction"]


# ====================================================================================== result


@dataclass
class HeadAblationResult(Result):
    """Loss increase from ablating each head, over text chunks.

    Tensors (``NaN`` for heads that were not evaluated): ``delta_loss``, ``ci_low``, ``ci_high``
    ``[n_layers, n_heads]``; ``per_chunk`` ``[n_layers, n_heads, n_chunks]`` (ablated minus clean loss
    of each chunk); ``baseline_per_chunk`` ``[n_chunks]``; ``induction_score`` and ``is_induction``
    ``[n_layers, n_heads]`` (float / bool) or None. Saved as ``head_ablation.json`` +
    ``head_ablation.safetensors``.
    """

    KIND: ClassVar[str] = "head_ablation"
    FILE: ClassVar[str] = "head_ablation.json"

    delta_loss: torch.Tensor
    ci_low: torch.Tensor
    ci_high: torch.Tensor
    per_chunk: torch.Tensor
    baseline_loss: float
    baseline_per_chunk: torch.Tensor
    induction_score: torch.Tensor | None = None
    is_induction: torch.Tensor | None = None
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.is_induction is None and self.induction_score is not None:
            self.is_induction = self.induction_score >= self.induction_threshold

    # ------------------------------------------------------------------ views
    @property
    def n_layers(self) -> int:
        return int(self.delta_loss.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.delta_loss.shape[1])

    @property
    def evaluated(self) -> torch.Tensor:
        """Boolean ``[n_layers, n_heads]``: which heads were ablated."""
        return ~torch.isnan(self.delta_loss)

    @property
    def top_k(self) -> int:
        return int(self.settings.get("top_k", 10))

    @property
    def induction_threshold(self) -> float:
        return float(self.settings.get("induction_threshold", DEFAULT_INDUCTION_THRESHOLD))

    def ranking(self) -> list[tuple[int, int, float, float, float]]:
        """All evaluated heads as ``(layer, head, delta_loss, ci_low, ci_high)``, largest loss increase first."""
        rows = [
            (layer, h, float(self.delta_loss[layer, h]), float(self.ci_low[layer, h]), float(self.ci_high[layer, h]))
            for layer in range(self.n_layers)
            for h in range(self.n_heads)
            if self.evaluated[layer, h]
        ]
        return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))

    def flagged(self) -> list[tuple[int, int, float, float]]:
        """Important heads that are not induction heads: in the top ``top_k`` by loss increase, with
        the whole confidence interval above 0 (``ci_low > 0``), and an induction score below the
        threshold. ``(layer, head, delta_loss, induction_score)``; empty without induction scores."""
        if self.induction_score is None or self.is_induction is None:
            return []
        out = []
        for layer, h, d, lo, _ in self.ranking()[: self.top_k]:
            if lo > 0 and not bool(self.is_induction[layer, h]):
                out.append((layer, h, d, float(self.induction_score[layer, h])))
        return out

    def headline(self, n: int | None = None) -> dict[str, Any]:
        """Baseline loss, the top heads ``[layer, head, delta_loss, ci_low, ci_high]`` and the flagged
        important non-induction heads ``[layer, head, delta_loss, induction_score]``."""
        n = self.top_k if n is None else n
        r4 = lambda x: round(x, 5)
        top = [[layer, h, r4(d), r4(lo), r4(hi)] for layer, h, d, lo, hi in self.ranking()[:n]]
        out = {
            "model": self.model_name,
            "how": self.settings.get("how"),
            "baseline_loss": r4(self.baseline_loss),
            "n_chunks": int(self.baseline_per_chunk.numel()),
            "chunk_len": self.settings.get("chunk_len"),
            "n_heads_ablated": int(self.evaluated.sum()),
            "ci": f"{self.settings.get('ci')} {self.settings.get('ci_level')}",
            "top_heads": top,
        }
        if self.induction_score is not None and self.is_induction is not None:
            ind = [
                (layer, h, float(self.induction_score[layer, h]))
                for layer in range(self.n_layers)
                for h in range(self.n_heads)
            ]
            ind.sort(key=lambda r: -r[2])
            out["induction_rule"] = self.settings.get("induction_rule")
            out["induction_heads"] = [[layer, h, r4(s)] for layer, h, s in ind if bool(self.is_induction[layer, h])]
            out["important_non_induction_heads"] = [[layer, h, r4(d), r4(s)] for layer, h, d, s in self.flagged()]
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per evaluated head: layer, head, delta_loss, ci_low, ci_high, rank (1 = most important),
        induction_score and flagged (important but not an induction head)."""
        import pandas as pd

        flagged = {(layer, h) for layer, h, _, _ in self.flagged()}
        rows = []
        for rank, (layer, h, d, lo, hi) in enumerate(self.ranking(), start=1):
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "delta_loss": d,
                    "ci_low": lo,
                    "ci_high": hi,
                    "rank": rank,
                    "induction_score": float(self.induction_score[layer, h])
                    if self.induction_score is not None
                    else float("nan"),
                    "flagged": (layer, h) in flagged,
                }
            )
        return pd.DataFrame(rows)

    def plot(self) -> go.Figure:
        """Heatmap layers × heads of the loss increase; hover shows the CI and induction score;
        flagged heads (important, not induction) are marked with ``*``."""
        import plotly.graph_objects as go

        flagged = {(layer, h) for layer, h, _, _ in self.flagged()}
        custom, text = [], []
        for layer in range(self.n_layers):
            crow, trow = [], []
            for h in range(self.n_heads):
                s = float(self.induction_score[layer, h]) if self.induction_score is not None else float("nan")
                lo, hi = float(self.ci_low[layer, h]), float(self.ci_high[layer, h])
                crow.append([f"{lo:.4f}", f"{hi:.4f}", "n/a" if math.isnan(s) else f"{s:.3f}"])
                trow.append("*" if (layer, h) in flagged else "")
            custom.append(crow)
            text.append(trow)
        z = nan_to_none(self.delta_loss.tolist())
        heat = go.Heatmap(
            z=z,
            x=list(range(self.n_heads)),
            y=list(range(self.n_layers)),
            customdata=custom,
            text=text,
            texttemplate="%{text}",
            colorscale="RdBu",
            zmid=0.0,
            colorbar={"title": {"text": "Δ loss"}},
            hovertemplate=(
                "layer %{y} head %{x}<br>Δ loss = %{z:.4f}<br>CI [%{customdata[0]}, %{customdata[1]}]"
                "<br>induction score %{customdata[2]}<extra></extra>"
            ),
        )
        fig = go.Figure(heat)
        name = self.model_name or "model"
        fig.update_layout(
            title={
                "text": f"Head ablation importance ({self.settings.get('how')}) — {name}; * = important, not induction"
            },
            xaxis_title="head",
            yaxis_title="layer",
            height=max(320, 18 * self.n_layers + 140),
            margin={"l": 60, "r": 20, "t": 50, "b": 50},
        )
        fig.update_xaxes(dtick=1)
        return fig


# ====================================================================================== the analysis


def head_ablation_importance(
    model: Model,
    tokens: torch.Tensor | None = None,
    *,
    text: str | Path | None = None,
    n_chunks: int = 16,
    chunk_len: int = 128,
    how: How = "zero",
    mean_over: MeanOver = "all",
    seed: int = 0,
    heads: Iterable[tuple[int, int]] | None = None,
    layers: int | Iterable[int] | None = None,
    method: Method = "fast",
    max_batch_tokens: int | None = None,
    ci: CIMethod = "t",
    ci_level: float = 0.95,
    n_boot: int = 2000,
    induction_score: torch.Tensor | str | None = "auto",
    induction_threshold: float = DEFAULT_INDUCTION_THRESHOLD,
    top_k: int = 10,
    backend: str = "serial",
    max_parallel: int | None = None,
    model_ref: str | None = None,
) -> HeadAblationResult:
    """Rank attention heads by the loss increase their ablation causes on text (Michel et al. 2019; Olsson et
    al. 2022; Wang et al. 2022; Chan et al. 2022 — see the module docstring).

    Args:
        model: the model.
        tokens: ``[n_chunks, chunk_len]`` token ids; if None, ``n_chunks`` chunks of ``chunk_len`` tokens of
            ``text``.
        text: a UTF-8 file, or None / ``"pydoc"`` for ``pydoc_data.topics`` (when ``tokens`` is None).
        n_chunks: chunks cut from ``text`` (at least 2, for a confidence interval over chunks).
        chunk_len: tokens per chunk (at least 2).
        how: ``"zero"``, ``"mean"`` or ``"resample"`` ablation of the head's ``z``.
        mean_over: for mean ablation, ``"all"`` (chunks and positions) or ``"position"`` (chunks only).
        seed: seed of the resample draw and of the bootstrap.
        heads: the ``(layer, head)`` pairs to ablate; or
        layers: whole layers; default every head.
        method: ``"fast"`` (prefix reuse, a layer's variants batched) or ``"naive"`` (one full forward per head).
        max_batch_tokens: tokens per forward pass (default: logits of at most 1 GiB).
        ci: ``"t"`` or ``"bootstrap"`` confidence interval over chunks (:mod:`interplab.stats`).
        ci_level: the interval's level.
        n_boot: bootstrap resamples (``ci="bootstrap"``).
        induction_score: a tensor ``[n_layers, n_heads]`` (induction heads: score >= ``induction_threshold``),
            ``"auto"`` (computed by :func:`induction_scores`, membership as in
            :mod:`interplab.analyses.observational.heads`) or None (no flagging).
        induction_threshold: the induction-head threshold for a given ``induction_score`` tensor.
        top_k: how many top heads may be flagged as important non-induction heads.
        backend: ``"serial"`` (in this process), ``"process"`` or ``"ray"``: the ablated layers are dealt out in
            one share per worker (:mod:`interplab.sweeps.split`), each of which loads the model by ``model_ref``
            and runs the clean pass and its layers' ablations with the serial run's batches — the same numbers.
        max_parallel: workers at once (default: the backend's).
        model_ref: what a worker passes to :func:`interplab.load` (default: the model's registry name, else the
            directory it was loaded from).
    """
    t0 = time.perf_counter()
    if backend != "serial":
        from interplab.sweeps.backends import check_backend

        check_backend(backend)
    if how not in HOWS:
        raise ValueError(f"how={how!r}: choose 'zero', 'mean' or 'resample'.")
    if mean_over not in ("all", "position"):
        raise ValueError(f"mean_over={mean_over!r}: choose 'all' (chunks and positions) or 'position' (chunks only).")
    if method not in ("fast", "naive"):
        raise ValueError(f"method={method!r}: choose 'fast' or 'naive'.")
    if ci not in ("t", "bootstrap"):
        raise ValueError(f"ci={ci!r}: choose 't' or 'bootstrap'.")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    source = "tokens"
    if tokens is None:
        from interplab.tasks import token_chunks

        if n_chunks < 2:
            raise ValueError(f"n_chunks must be at least 2 (a confidence interval over chunks), got {n_chunks}.")
        if chunk_len < 2:
            raise ValueError(f"chunk_len must be at least 2, got {chunk_len}.")
        tokens = token_chunks(model, source=text, n_chunks=n_chunks, chunk_len=chunk_len)
        source = "pydoc_data.topics" if text is None or str(text) == "pydoc" else str(text)
    tokens = check_tokens(model, tokens)
    n, p = tokens.shape
    if n < 2:
        raise ValueError(f"need at least 2 chunks for a confidence interval over chunks, got {n}.")
    head_list = resolve_heads(model, heads, layers)
    cfg = model.cfg
    if isinstance(induction_score, str):
        if induction_score != "auto":
            raise ValueError(
                f"induction_score must be a tensor [n_layers, n_heads], 'auto' or None, not {induction_score!r}."
            )
        ind, _null, is_ind = induction_scores(model, seed=seed)
        ind_rule = (
            "interplab.analyses.observational.heads induction class: score >= 0.3 and score - null "
            "(deranged repeats) >= 0.2"
        )
    elif induction_score is None:
        ind = is_ind = ind_rule = None
    else:
        ind = torch.as_tensor(induction_score, dtype=torch.float32).cpu()
        if tuple(ind.shape) != (cfg.n_layers, cfg.n_heads):
            raise ValueError(
                f"induction_score has shape {tuple(ind.shape)}; expected [n_layers, n_heads] = "
                f"{[cfg.n_layers, cfg.n_heads]}."
            )
        is_ind = ind >= induction_threshold
        ind_rule = f"given scores; induction head when score >= {induction_threshold}"
    t_ind = time.perf_counter() - t0

    budget = max_batch_tokens or auto_batch_tokens(model, p)
    if budget < p:
        raise ValueError(f"max_batch_tokens={budget} is smaller than one chunk ({p} tokens).")
    clean, ablated, n_forward, t_clean, t_abl = ablation_runs(
        model, tokens, head_list, how, mean_over, seed, method, budget, backend, max_parallel, model_ref
    )

    per_chunk = ablated - clean  # [L, H, n]
    delta = per_chunk.mean(-1)
    lo = torch.full_like(delta, float("nan"))
    hi = torch.full_like(delta, float("nan"))
    ev = ~torch.isnan(delta)
    if ev.any():
        lo_e, hi_e = confidence_interval(per_chunk[ev], level=ci_level, method=ci, n_boot=n_boot, seed=seed)
        lo[ev], hi[ev] = lo_e, hi_e
    settings = {
        "method_name": "head ablation importance (loss increase when one head's z is replaced at all positions)",
        "hook": "blocks.{L}.attn.hook_z",
        "how": how,
        "mean_over": mean_over if how == "mean" else None,
        "seed": seed,
        "source": source,
        "n_chunks": n,
        "chunk_len": p,
        "n_tokens_scored": n * (p - 1),
        "method": method,
        "max_batch_tokens": budget,
        "n_forward": n_forward,
        "backend": backend,
        "ci": ci,
        "ci_level": ci_level,
        "n_boot": n_boot if ci == "bootstrap" else None,
        "induction_rule": ind_rule,
        "induction_threshold": induction_threshold,
        "top_k": top_k,
        "n_heads_ablated": len(head_list),
        "seconds": {
            "induction_score": round(t_ind, 3),
            "clean": round(t_clean, 3),
            "ablation": round(t_abl, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    return HeadAblationResult(
        delta_loss=delta,
        ci_low=lo,
        ci_high=hi,
        per_chunk=per_chunk,
        baseline_loss=float(clean.mean()),
        baseline_per_chunk=clean,
        induction_score=ind,
        is_induction=is_ind,
        model_name=model.name,
        settings=settings,
    )
