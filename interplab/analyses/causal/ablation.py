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
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.causal.engine import Method, run_variants, where_variants
from interplab.hooks import Ablate, Apply, HookContext, Patch
from interplab.io.results import Result, nan_to_none
from interplab.models.scoring import sequence_losses
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
    "compare_induction_ablation",
    "head_ablation_importance",
    "induction_scores",
    "resample_index",
]

DEFAULT_INDUCTION_THRESHOLD = 0.3  # = interplab.analyses.observational.heads.THRESHOLDS["induction"]
How = Literal["zero", "mean", "resample"]
"""What replaces an ablated head's ``z``: 0, its mean over the corpus chunks, or another chunk's value."""
MeanOver = Literal["all", "position"]
"""Mean ablation's average: over chunks and positions (``all``) or over chunks only, per position."""
_HOWS: tuple[How, ...] = ("zero", "mean", "resample")


# ====================================================================================== helpers


def _check_tokens(model: Model, tokens) -> torch.Tensor:
    t = torch.as_tensor(tokens)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.is_floating_point():
        raise ValueError(f"tokens must be integer ids [n_chunks, chunk_len], got shape {tuple(t.shape)} {t.dtype}.")
    if t.shape[1] < 2:
        raise ValueError(f"chunks need at least 2 tokens (one prediction), got chunk_len={t.shape[1]}.")
    return model.as_tokens(t).cpu()


def _resolve_heads(model: Model, heads, layers) -> list[tuple[int, int]]:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if heads is not None and layers is not None:
        raise ValueError("give heads= or layers=, not both.")
    if layers is not None:
        layers = [layers] if isinstance(layers, int) else list(layers)
        for layer in layers:
            if not 0 <= int(layer) < n_layers:
                raise ValueError(f"layer {layer} is out of range: the model has layers 0..{n_layers - 1}.")
        return [(int(layer), h) for layer in sorted(set(layers)) for h in range(n_heads)]
    if heads is None:
        return [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    out = []
    for item in heads:
        try:
            layer, h = (int(x) for x in item)
        except (TypeError, ValueError):
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}.") from None
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"head ({layer}, {h}): layer {layer} is out of range; the model has layers 0..{n_layers - 1}."
            )
        if not 0 <= h < n_heads:
            raise ValueError(f"head ({layer}, {h}): head {h} is out of range; each layer has heads 0..{n_heads - 1}.")
        if (layer, h) not in out:
            out.append((layer, h))
    if not out:
        raise ValueError("heads= is empty; give at least one (layer, head) pair, or None for all heads.")
    return sorted(out)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def resample_index(n: int, seed: int = 0) -> torch.Tensor:
    """Which chunk each chunk takes its activation from in resample ablation: ``(i + r_i) mod n``,
    ``r_i`` uniform in ``1..n-1`` (never itself) — the draw of ``Ablate(how="resample", seed=seed)``."""
    if n < 2:
        raise ValueError("resample ablation needs at least 2 chunks (a chunk never takes its own activation).")
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n


def _replacement(
    z: torch.Tensor | None,
    how: How,
    mean_over: MeanOver,
    rows: slice,
    ridx: torch.Tensor | None,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replacement ``z`` for the chunks ``rows``, broadcastable to ``[rows, p, H, e]``."""
    if how == "zero":
        return torch.zeros((), dtype=like.dtype if like is not None else torch.float32)
    assert z is not None, "mean and resample ablation need the clean run's z"
    if how == "mean":
        dims = [0, 1] if mean_over == "all" else [0]
        return z.mean(dim=dims, keepdim=True)
    assert ridx is not None
    return z[ridx[rows]]


# ====================================================================================== induction score


def _repeat_setup(model: Model, batch: int, seq_len: int, seed: int):
    from interplab.tasks import repeated_tokens

    bos = model.default_prepend_bos if model.tokenizer is not None else False
    seq_len = min(seq_len, (model.cfg.n_ctx - int(bos)) // 2)
    if seq_len < 2:
        raise ValueError(f"the model's context n_ctx={model.cfg.n_ctx} is too short for repeated sequences.")
    tokens, offset = repeated_tokens(model, batch=batch, seq_len=seq_len, seed=seed)
    return tokens, offset, seq_len


def induction_scores(
    model: Model, n_seqs: int = 8, batch: int = 8, seq_len: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Induction score per head, its null baseline and membership, all ``[n_layers, n_heads]``:
    ``(score, null, is_induction)``.

    Exactly the ``induction`` class of :mod:`interplab.analyses.observational.heads` (Olsson et al. 2022: attention
    from each token of the second copy of a repeated random sequence to the token after its earlier
    occurrence; null = the same on a deranged second copy; a head is an induction head when
    ``score >= THRESHOLDS["induction"]`` (0.3) and ``score - null >= MARGINS["induction"]`` (0.2)), computed
    on ``n_seqs`` sequences without that module's text and weight-based classes, which this analysis
    does not need."""
    from interplab.analyses.observational.heads import MARGINS, THRESHOLDS, head_inputs, repeated_pattern_scores

    inp = head_inputs(model, n_seqs=n_seqs, seq_len=seq_len, text="random", seed=seed)
    L, o = inp["seq_len"], inp["offset"]
    n_layers = model.cfg.n_layers
    out = []
    for key in ("repeated", "deranged"):
        tot = torch.zeros(n_layers, model.cfg.n_heads, dtype=torch.float64)
        toks = inp[key]
        for b0 in range(0, toks.shape[0], batch):

            def grab(layer: int, tot: torch.Tensor = tot):
                def fn(p: torch.Tensor, ctx: HookContext) -> None:  # p [b, h, q, k]
                    tot[layer] += repeated_pattern_scores(p, L, o)["induction"].double().sum(0).cpu()

                return fn

            with torch.no_grad():
                model.run(
                    toks[b0 : b0 + batch],
                    interventions=[
                        Apply(f"blocks.{layer}.attn.hook_pattern", fn=grab(layer)) for layer in range(n_layers)
                    ],
                )
        out.append((tot / toks.shape[0]).float())
    score, null = out
    member = (score >= THRESHOLDS["induction"]) & (score - null >= MARGINS["induction"])
    return score, null, member


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


def _auto_batch_tokens(model: Model, chunk_len: int) -> int:
    """Default tokens per forward pass: the logits of one forward are ``[tokens, vocab]`` float32, kept
    at or below 1 GiB (SmolLM2: 5461 tokens, so the 9 variants of a layer on 4 chunks of 128 go through
    one pass), at most 16384 tokens, and at least one chunk."""
    return max(chunk_len, min(16384, (2**28) // max(1, model.cfg.d_vocab)))


def ablated_losses(
    model: Model,
    tokens: torch.Tensor,
    head_list: Sequence[tuple[int, int]],
    how: How,
    mean_over: MeanOver,
    seed: int,
    method: Method,
    budget: int,
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """The clean run and the ablated runs of :func:`head_ablation_importance`: ``(clean loss per chunk [n],
    ablated loss [n_layers, n_heads, n] (NaN for heads not in ``head_list``), forward passes, clean seconds,
    ablation seconds)``. Heads of one layer are batched the same way whichever other layers are asked for, so a
    worker given some of the layers computes exactly what the whole run computes for them."""
    n, p = tokens.shape
    cfg = model.cfg
    per_batch = max(1, budget // p)  # chunks per forward
    chunk_slices = _batches(n, per_batch)
    ridx = resample_index(n, seed) if how == "resample" else None
    layers_needed = sorted({layer for layer, _ in head_list})
    need_z = how != "zero"
    H = cfg.n_heads

    # ---- clean run: baseline loss, and what the ablations need (z), and the fast path's resid_pre
    t1 = time.perf_counter()
    names = [f"blocks.{layer}.attn.hook_z" for layer in layers_needed] if need_z else []
    if method == "fast":
        names += [f"blocks.{layer}.hook_resid_pre" for layer in layers_needed]
    clean_losses, stores = [], {nm: [] for nm in names}
    n_forward = 0
    with torch.no_grad():
        for rows in chunk_slices:
            logits, cache = model.run(tokens[rows], cache=names)
            n_forward += 1
            clean_losses.append(sequence_losses(logits, tokens[rows]))
            for nm in names:
                stores[nm].append(cache[nm])
            del logits, cache
    clean = torch.cat(clean_losses)
    acts = {nm: torch.cat(v) for nm, v in stores.items()}
    del stores
    t_clean = time.perf_counter() - t1

    # ---- ablated runs
    t2 = time.perf_counter()
    ablated = torch.full((cfg.n_layers, H, n), float("nan"))
    with torch.no_grad():
        if method == "naive":
            for layer, h in head_list:
                hook = f"blocks.{layer}.attn.hook_z"
                z = acts.get(hook)
                for rows in chunk_slices:
                    if how == "zero":
                        iv = Ablate(hook, heads=[h], how="zero")
                    elif how == "mean":
                        iv = Ablate(
                            hook,
                            heads=[h],
                            how="mean",
                            reference=z,
                            over=("batch", "pos") if mean_over == "all" else ("batch",),
                        )
                    else:
                        assert z is not None and ridx is not None
                        iv = Patch(hook, heads=[h], source=z[ridx[rows]])
                    logits = model.run(tokens[rows], interventions=[iv]).logits
                    n_forward += 1
                    ablated[layer, h, rows] = sequence_losses(logits, tokens[rows])
                    del logits
        else:
            for layer in layers_needed:
                hook = f"blocks.{layer}.attn.hook_z"
                resid = acts[f"blocks.{layer}.hook_resid_pre"]
                z = acts.get(hook)
                lheads = [h for lay, h in head_list if lay == layer]
                for rows in chunk_slices:
                    nb = rows.stop - rows.start
                    per_fwd = max(1, budget // (nb * p))  # variants per forward
                    repl = _replacement(z, how, mean_over, rows, ridx, like=resid)
                    for g0 in range(0, len(lheads), per_fwd):
                        group = lheads[g0 : g0 + per_fwd]
                        k = len(group)
                        mask = torch.zeros(k, 1, 1, H, 1, dtype=torch.bool)
                        for v, h in enumerate(group):
                            mask[v, 0, 0, h, 0] = True

                        def fn(x: torch.Tensor, ctx: HookContext, _mask=mask, _k=k, _repl=repl) -> torch.Tensor:
                            return where_variants(x, _k, _mask, _repl)

                        # variant-major: rows v*nb:(v+1)*nb are the chunks with head group[v] ablated
                        logits = run_variants(model, resid[rows], layer, k, [Apply(hook, fn=fn)])
                        n_forward += 1
                        losses = sequence_losses(logits, tokens[rows].repeat(k, 1)).view(k, nb)
                        for v, h in enumerate(group):
                            ablated[layer, h, rows] = losses[v]
                        del logits
    t_abl = time.perf_counter() - t2
    return clean, ablated, n_forward, t_clean, t_abl


def ablation_share(
    model_ref: str, layers: list[int], tokens: torch.Tensor, head_list: list[tuple[int, int]], options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """A worker's share of :func:`head_ablation_importance`: the model loaded by ``model_ref`` (one thread) and
    :func:`ablated_losses` for the heads of ``head_list`` in ``layers``."""
    from interplab.sweeps.split import worker_model

    with worker_model(model_ref) as model:
        mine = [(a, h) for a, h in head_list if a in set(layers)]
        return ablated_losses(model, tokens, mine, **options)


def _ablation_runs(
    model: Model,
    tokens: torch.Tensor,
    head_list: list[tuple[int, int]],
    how: How,
    mean_over: MeanOver,
    seed: int,
    method: Method,
    budget: int,
    backend: str,
    max_parallel: int | None,
    model_ref: str | None,
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """:func:`ablated_losses` in this process (``backend="serial"``) or with the layers dealt out to workers of
    a sweep backend (:mod:`interplab.sweeps.split`); the clean losses are every worker's (identical) clean run's,
    the seconds the workers' sums."""
    if backend == "serial":
        return ablated_losses(model, tokens, head_list, how, mean_over, seed, method, budget)
    from interplab.sweeps.split import deal, run_shares

    options = {"how": how, "mean_over": mean_over, "seed": seed, "method": method, "budget": budget}
    ablated = torch.full((model.cfg.n_layers, model.cfg.n_heads, tokens.shape[0]), float("nan"))
    got: dict[str, Any] = {"clean": None, "n_forward": 0, "t_clean": 0.0, "t_abl": 0.0}

    def keep(layers: list[int], value: tuple) -> None:
        clean, abl, n_fwd, t_c, t_a = value
        for a, h in head_list:
            if a in layers:
                ablated[a, h] = abl[a, h]
        got["clean"] = clean if got["clean"] is None else got["clean"]
        got["n_forward"] += n_fwd
        got["t_clean"] += t_c
        got["t_abl"] += t_a

    layers = sorted({a for a, _ in head_list})
    run_shares(
        ablation_share,
        model,
        deal(layers, max_parallel),
        (tokens, head_list, options),
        keep,
        backend,
        max_parallel,
        model_ref,
    )
    return got["clean"], ablated, got["n_forward"], got["t_clean"], got["t_abl"]


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
    if how not in _HOWS:
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
    tokens = _check_tokens(model, tokens)
    n, p = tokens.shape
    if n < 2:
        raise ValueError(f"need at least 2 chunks for a confidence interval over chunks, got {n}.")
    head_list = _resolve_heads(model, heads, layers)
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

    budget = max_batch_tokens or _auto_batch_tokens(model, p)
    if budget < p:
        raise ValueError(f"max_batch_tokens={budget} is smaller than one chunk ({p} tokens).")
    clean, ablated, n_forward, t_clean, t_abl = _ablation_runs(
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


# ====================================================================================== induction check


@dataclass
class InductionAblationComparison(Result):
    """Loss on the second half of repeated random sequences: clean, with the induction heads ablated
    together, and with ``n_random`` random sets of as many other heads ablated together. Saved as
    ``induction_ablation.json`` + ``induction_ablation.safetensors``."""

    KIND: ClassVar[str] = "induction_ablation"
    FILE: ClassVar[str] = "induction_ablation.json"

    induction_heads: list[tuple[int, int]]
    random_heads: list[list[tuple[int, int]]]
    clean_loss: float
    induction_loss: float
    random_losses: torch.Tensor  # [n_random]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def induction_increase(self) -> float:
        return self.induction_loss - self.clean_loss

    @property
    def random_increases(self) -> torch.Tensor:
        return self.random_losses - self.clean_loss

    @property
    def ratio(self) -> float:
        """Induction-head loss increase over the mean random-head loss increase (inf if that is <= 0)."""
        m = float(self.random_increases.mean())
        return self.induction_increase / m if m > 0 else float("inf")

    def headline(self) -> dict[str, Any]:
        r = self.random_increases
        return {
            "model": self.model_name,
            "how": self.settings.get("how"),
            "induction_heads": [list(x) for x in self.induction_heads],
            "clean_loss": round(self.clean_loss, 5),
            "induction_ablated_loss": round(self.induction_loss, 5),
            "induction_increase": round(self.induction_increase, 5),
            "random_increase_mean": round(float(r.mean()), 5),
            "random_increase_max": round(float(r.max()), 5),
            "n_random": int(r.numel()),
            "ratio_to_random_mean": round(self.ratio, 3) if math.isfinite(self.ratio) else None,
        }

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {"ablated": "none", "heads": "", "loss": self.clean_loss, "increase": 0.0},
            {
                "ablated": "induction",
                "heads": str(self.induction_heads),
                "loss": self.induction_loss,
                "increase": self.induction_increase,
            },
        ]
        for i, (hs, loss) in enumerate(zip(self.random_heads, self.random_losses.tolist())):
            rows.append({"ablated": f"random {i}", "heads": str(hs), "loss": loss, "increase": loss - self.clean_loss})
        return pd.DataFrame(rows)

    def plot(self) -> go.Figure:
        """Bars of the loss increase: the induction heads, then each random set of as many heads."""
        import plotly.graph_objects as go

        df = self.to_frame().iloc[1:]
        fig = go.Figure(go.Bar(x=df["ablated"], y=df["increase"], hovertext=df["heads"]))
        fig.update_layout(
            title={
                "text": f"Loss increase on repeated sequences ({self.settings.get('how')} ablation) — "
                f"{self.model_name or 'model'}"
            },
            yaxis_title="Δ loss (nats per token)",
            height=360,
        )
        return fig

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "induction_heads":
            return [(int(a), int(b)) for a, b in value]
        if name == "random_heads":
            return [[(int(a), int(b)) for a, b in hs] for hs in value]
        return value


def compare_induction_ablation(
    model: Model,
    induction_heads: Sequence[tuple[int, int]] | None = None,
    *,
    k: int = 5,
    n_random: int = 10,
    seed: int = 0,
    how: Literal["zero", "mean"] = "mean",
    batch: int = 8,
    seq_len: int = 32,
) -> InductionAblationComparison:
    """Does ablating the induction heads (Olsson et al. 2022) raise the loss on the second half of repeated
    random sequences far more than ablating as many random heads?

    The loss is the mean next-token cross-entropy on the predictions of tokens 2..seq_len of the second copy
    (the ones induction can predict). All listed heads are ablated together; each of the ``n_random`` random
    sets is drawn (seeded) from the other heads.

    Args:
        model: the model.
        induction_heads: ``(layer, head)`` pairs; None takes the ``k`` heads with the highest
            :func:`induction_scores`.
        k: how many heads to take when ``induction_heads`` is None.
        n_random: random head sets to compare with.
        seed: seed of the sequences and of the random sets.
        how: ``"zero"``, or ``"mean"`` = the heads' mean ``z`` over the same sequences and positions.
        batch: repeated sequences.
        seq_len: length of each half (clipped to the model's context).
    """
    if how not in ("zero", "mean"):
        raise ValueError(f"how={how!r}: choose 'zero' or 'mean'.")
    if n_random < 1:
        raise ValueError(f"n_random must be at least 1, got {n_random}.")
    tokens, offset, s = _repeat_setup(model, batch, seq_len, seed)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if induction_heads is None:
        sc = induction_scores(model, n_seqs=batch, batch=batch, seed=seed + 1)[0]
        top = torch.topk(sc.flatten(), k).indices.tolist()
        induction_heads = [(i // H, i % H) for i in top]
    ind = _resolve_heads(model, induction_heads, None)
    others = [(layer, h) for layer in range(L) for h in range(H) if (layer, h) not in ind]
    if len(others) < len(ind):
        raise ValueError(
            f"the model has {len(others)} heads besides the {len(ind)} induction heads; "
            "cannot draw as many random heads."
        )
    start = offset + s  # logits at positions start.. predict tokens start+1.. (second copy, after its first token)

    with torch.no_grad():
        clean_logits, cache = model.run(
            tokens, cache=[f"blocks.{layer}.attn.hook_z" for layer in range(L)] if how == "mean" else None
        )
        clean = float(sequence_losses(clean_logits, tokens, start).mean())

        def loss_with(hs):
            by_layer: dict[int, list[int]] = {}
            for layer, h in hs:
                by_layer.setdefault(layer, []).append(h)
            ivs = [
                Ablate(
                    f"blocks.{layer}.attn.hook_z",
                    heads=h,
                    how=how,
                    reference=cache[f"blocks.{layer}.attn.hook_z"] if how == "mean" else None,
                    over=("batch", "pos"),
                )
                for layer, h in by_layer.items()
            ]
            logits = model.run(tokens, interventions=ivs).logits
            return float(sequence_losses(logits, tokens, start).mean())

        ind_loss = loss_with(ind)
        g = torch.Generator().manual_seed(seed)
        rand_sets, rand_losses = [], []
        for _ in range(n_random):
            pick = torch.randperm(len(others), generator=g)[: len(ind)].tolist()
            hs = sorted(others[i] for i in pick)
            rand_sets.append(hs)
            rand_losses.append(loss_with(hs))
    return InductionAblationComparison(
        induction_heads=ind,
        random_heads=rand_sets,
        clean_loss=clean,
        induction_loss=ind_loss,
        random_losses=torch.tensor(rand_losses),
        model_name=model.name,
        settings={
            "how": how,
            "mean_over": "all" if how == "mean" else None,
            "batch": batch,
            "seq_len": s,
            "offset": offset,
            "seed": seed,
            "n_random": n_random,
            "loss_positions": f"predictions of tokens {start + 1}..{tokens.shape[1] - 1}",
        },
    )
