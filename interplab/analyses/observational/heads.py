"""Head detectors: score every attention head for a few well-known behaviours, each with a null baseline.

Every score is a number per ``(layer, head)``, computed from attention patterns read through the one
hook mechanism (``model.run(tokens, cache=<predicate on attn.hook_pattern>)``) or, for the copying
scores, from the weights. ``A[b, h, i, j]`` is the attention of query position ``i`` to key position
``j`` (``blocks.L.attn.hook_pattern``; patterns are per *query* head, so grouped-query attention plays
no role). ``o`` is 1 when a BOS token is put in front of the input, else 0 (SmolLM2 adds none).
Scores are averaged over query rows, then over sequences; ``stderr`` is the standard error over sequences.

Inputs
------
* **repeated**: ``repeated_tokens``: ``o`` BOS + a random sequence of ``L = seq_len`` distinct tokens,
  repeated twice (``x_0..x_{L-1} x_0..x_{L-1}``), so each token of the second copy, at ``i in
  [o+L, o+2L)``, has exactly one earlier occurrence, at ``i - L``.
* **deranged** (the null input for the two classes above): the same sequences, but the second copy is
  permuted by a random *derangement* ``pi`` (no fixed point): position ``o+L+k`` holds ``x_pi(k)``, whose
  earlier occurrence is at ``o+pi(k) != o+k``. Same tokens, same positions, same token statistics;
  only the alignment that the scores look for is gone.
* **text**: ``token_chunks`` of a natural-text corpus (default ``pydoc_data.topics``), or, for a model
  without a tokenizer (or ``text="random"``), random distinct tokens (``repeated_tokens(repeats=1)``).

Classes and their scores
------------------------
``induction`` (prefix matching) — Olsson et al. (2022), "In-context Learning and Induction Heads",
    and Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits"; the convention of
    TransformerLens's ``induction_score`` / ``head_detector``. On *repeated*::

        induction = mean_{i in [o+L, o+2L)} A[i, i - L + 1]

    (attention from a second-copy token to the token right *after* its earlier occurrence).
    Null baseline: the same expression on *deranged*.
``duplicate_token`` — Wang et al. (2022), "Interpretability in the Wild" (IOI); TransformerLens's
    ``duplicate_token_head``. On *repeated*: ``mean_{i in [o+L, o+2L)} A[i, i - L]`` (attention to the
    earlier occurrence of the same token). Null: the same on *deranged*.
``previous_token`` — Elhage et al. (2021); Olsson et al. (2022) (the first half of the induction
    circuit). On *text*: ``mean_{i in [o+1, n)} A[i, i - 1]`` (the BOS is never a target).
    Previous-token attention is positional, so no input destroys it; the null baseline is a *control
    key* instead: the expected attention on a randomly chosen other earlier key,
    ``mean_{i in [3, n)} mean_{j in [1, i-2]} A[i, j]`` (neither position 0, nor the target, nor the
    query itself) — what the score would be if the head did not single out ``i - 1``.
``sink`` (first token / attention sink) — Xiao et al. (2023), "Efficient Streaming Language Models
    with Attention Sinks". On *text*: ``mean_{i in [1, n)} A[i, 0]`` (position 0 is the BOS when there
    is one, else the first token). Null (control key): ``mean_{i in [2, n)} mean_{j in [1, i-1]} A[i, j]``.
``copying`` — From the weights: :func:`interplab.analyses.weights.copying.ov_copying`, the one copying
    score of interplab (also :func:`~interplab.analyses.weights.svd.head_circuits`'s): the fraction of
    tokens ``t`` (a fixed seeded sample of ``copying_tokens``, default 2048, compared with the full
    vocabulary) whose own logit is among the ``copying_k`` (default 10) largest of the head's direct-path
    OV output ``W_E[t] W_V W_O W_U`` (norms folded) — the statistic McDougall et al. (2023) use for the OV
    circuit of a copy-suppression head, with the sign reversed. In ``[0, 1]``.
    Null baseline: the same fraction with a random rotation ``Q`` (Haar orthogonal, ``d_head x d_head``)
    inserted between ``W_V`` and ``W_O`` (same singular values, alignment destroyed), mean over
    ``n_null_rotations`` draws per head; ``settings["copying_null_max"]`` is its largest value over all heads.
    Elhage et al.'s (2021) eigenvalue ratio ``sum(lambda) / sum(|lambda|)`` of ``W_E W_OV W_U`` (``W_U``
    centred over the vocabulary), which Olsson et al. (2022) use as the copying half of their
    induction-head definition, is kept in ``reference["copying_eigenvalue_ratio"]``: near ±1 for most heads
    of a model with a large vocabulary, it cannot rank heads (see :mod:`interplab.analyses.weights.copying`).
``copy_suppression`` — McDougall et al. (2023), "Copy Suppression: Comprehensively Understanding an
    Attention Head": heads whose OV circuit *lowers* the logit of the attended token. Score: the fraction
    of tokens whose own logit is among the ``copying_k`` *smallest* of their OV output; null as above. This
    is only the OV half of their definition; the QK half (attending to tokens the model is predicting) is
    not checked.

Membership rule
---------------
A head belongs to class ``c`` when ``score >= THRESHOLDS[c]`` **and** ``score - baseline >= MARGINS[c]``
(both can be overridden). Defaults: the head puts at least 40 % (previous token), 30 % (duplicate
token, induction) or 50 % (sink) of its attention, averaged over query rows, on the target, and at least
0.2 more than on the null input / control key. Copying and copy suppression use the rule of
:func:`~interplab.analyses.weights.copying.copying_members` instead, written as the same two numbers: the
score is at least 0.2 (a fifth of all tokens are in their own top / bottom ``k``) and its ``baseline``
is the largest value of the rotation null over *all* heads and draws (not the head's own null), with
margin 0.2 — a member beats every scrambled head clearly. :meth:`HeadScores.headline` lists only members.

Relation to TransformerLens (tested): ``transformer_lens.head_detector`` with ``error_measure="mul"``,
``exclude_bos=False``, ``exclude_current_token=False`` and its ``previous_token`` / ``duplicate_token``
/ ``induction`` detection patterns gives, per sequence of ``n`` tokens without BOS,
``sum_{i in R} A[i, t(i)] / n`` where ``R`` are the rows with a target; the scores here average over
``R`` instead, so ``score = TL * n / |R|`` exactly (``|R| = L`` on repeated tokens, ``n - 1`` for the
previous token). Their ``"abs"`` measure and the ``exclude_*`` variants are different definitions.

Not included: successor heads (Gould et al. 2023) need ordinal token families (numbers, days, months)
of a real tokenizer and an MLP0-extended embedding; they cannot be planted in a token-id model, so
there is no ground truth to validate them against here.

>>> res = head_scores(model)
>>> res.headline()["induction"]        # [[layer, head, score], ...] of the members, best first
>>> res.to_frame()                       # one row per layer, head and class
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.weights.copying import MIN_SCORE, NULL_MARGIN, OVCopying, eigenvalue_copying, ov_copying
from interplab.io.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "CLASSES",
    "MARGINS",
    "THRESHOLDS",
    "HeadScores",
    "deranged",
    "head_inputs",
    "head_scores",
    "repeated_offset_scores",
    "repeated_pattern_scores",
    "text_pattern_scores",
]

HeadClass = Literal["previous_token", "duplicate_token", "induction", "sink", "copying", "copy_suppression"]
FrameKind = Literal["long", "wide"]
CLASSES: tuple[HeadClass, ...] = (
    "previous_token",
    "duplicate_token",
    "induction",
    "sink",
    "copying",
    "copy_suppression",
)
ATTENTION_CLASSES: tuple[HeadClass, ...] = ("previous_token", "duplicate_token", "induction", "sink")
THRESHOLDS: dict[str, float] = {
    "previous_token": 0.4,
    "duplicate_token": 0.3,
    "induction": 0.3,
    "sink": 0.5,
    "copying": MIN_SCORE,
    "copy_suppression": MIN_SCORE,
}
MARGINS: dict[str, float] = {c: 0.2 for c in CLASSES} | {"copying": NULL_MARGIN, "copy_suppression": NULL_MARGIN}
PAPERS = {
    "previous_token": "Elhage et al. 2021; Olsson et al. 2022",
    "duplicate_token": "Wang et al. 2022 (IOI)",
    "induction": "Olsson et al. 2022 (prefix matching); Elhage et al. 2021",
    "sink": "Xiao et al. 2023 (attention sinks)",
    "copying": "McDougall et al. 2023 (own token in the top k of the OV output)",
    "copy_suppression": "McDougall et al. 2023 (own token in the bottom k of the OV output; OV half only)",
}
_PATTERN = "attn.hook_pattern"


# --------------------------------------------------------------------------------------------- scores
def repeated_offset_scores(pattern: torch.Tensor, seq_len: int, shifts, offset: int = 0) -> torch.Tensor:
    """Mean attention ``[batch, head, len(shifts)]`` from each second-copy row ``i in [offset+L, offset+2L)``
    to key ``i - L + 1 + k`` for each ``k`` in ``shifts`` (patterns ``[batch, head, query, key]`` of ``offset``
    BOS tokens + ``seq_len`` tokens repeated twice): ``k = 0`` is Olsson et al.'s induction target, ``k = -1``
    the duplicate token, ``k >= 1`` keys past the induction target (shifted induction circuits)."""
    L, o = seq_len, offset
    if pattern.shape[-1] < o + 2 * L:
        raise ValueError(f"pattern has {pattern.shape[-1]} positions; {o} + 2 x {L} are needed.")
    if any(not -L <= k < L for k in shifts):
        raise ValueError(f"shifts must lie in [-{L}, {L}), got {list(shifts)}.")
    p = pattern.float()
    rows = torch.arange(o + L, o + 2 * L, device=p.device)
    return torch.stack([p[..., rows, rows - L + 1 + k].mean(-1) for k in shifts], -1)


def repeated_pattern_scores(pattern: torch.Tensor, seq_len: int, offset: int = 0) -> dict[str, torch.Tensor]:
    """Per-sequence ``induction`` and ``duplicate_token`` scores ``[batch, head]`` from attention patterns
    ``[batch, head, query, key]`` of ``offset`` BOS tokens + a sequence of ``seq_len`` tokens repeated twice
    (rows ``i in [offset+L, offset+2L)``, targets ``i-L+1`` and ``i-L``)."""
    s = repeated_offset_scores(pattern, seq_len, (0, -1), offset)
    return {"induction": s[..., 0], "duplicate_token": s[..., 1]}


@functools.lru_cache(maxsize=16)
def _control_weights_cpu(n: int, first_row: int, last_key_offset: int) -> torch.Tensor:
    w = torch.zeros(n, n)
    rows = range(first_row, n)
    for i in rows:
        k = i - last_key_offset  # keys 1..k
        w[i, 1 : k + 1] = 1.0 / k
    return w / max(1, len(rows))


def _control_weights(n: int, first_row: int, last_key_offset: int, device) -> torch.Tensor:
    """``[n, n]`` weights averaging, over rows ``i in [first_row, n)``, the mean of ``A[i, 1..i-last_key_offset]``."""
    return _control_weights_cpu(n, first_row, last_key_offset).to(device)


def text_pattern_scores(pattern: torch.Tensor, offset: int = 0) -> dict[str, torch.Tensor]:
    """Per-sequence positional scores ``[batch, head]`` on any input (natural text or random tokens):
    ``previous_token`` (rows ``i >= offset+1``, target ``i-1``), ``sink`` (rows ``i >= 1``, target 0) and their
    control-key nulls ``previous_token_null`` and ``sink_null`` (see the module docstring)."""
    n = pattern.shape[-1]
    if n < 4 + offset:
        raise ValueError(f"positional scores need at least {4 + offset} positions, got {n}.")
    p = pattern.float()
    rows = torch.arange(offset + 1, n, device=p.device)
    return {
        "previous_token": p[..., rows, rows - 1].mean(-1),
        "previous_token_null": torch.einsum("bhqk,qk->bh", p, _control_weights(n, 3, 2, p.device)),
        "sink": p[..., 1:, 0].mean(-1),
        "sink_null": torch.einsum("bhqk,qk->bh", p, _control_weights(n, 2, 1, p.device)),
    }


# --------------------------------------------------------------------------------------------- inputs
def _derangement(n: int, g: torch.Generator) -> torch.Tensor:
    if n < 2:
        raise ValueError("a derangement needs at least 2 elements (seq_len >= 2).")
    while True:
        p = torch.randperm(n, generator=g)
        if not (p == torch.arange(n)).any():
            return p


def deranged(tokens: torch.Tensor, seq_len: int, offset: int = 0, seed: int = 0) -> torch.Tensor:
    """Copy of repeated-token inputs whose second copy is permuted by a random derangement per row."""
    g = torch.Generator().manual_seed(seed)
    out = tokens.clone()
    start = offset + seq_len
    for b in range(tokens.shape[0]):
        out[b, start : start + seq_len] = tokens[b, start + _derangement(seq_len, g)]
    return out


def head_inputs(
    model: Model,
    n_seqs: int = 32,
    seq_len: int | None = None,
    text: str | Path | None = None,
    text_len: int | None = None,
    prepend_bos: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The three token sets of :func:`head_scores` (``repeated``, ``deranged``, ``text``) with their offsets,
    lengths and the text source actually used — so anyone can recompute the scores on the same tokens."""
    from interplab.tasks import repeated_tokens, token_chunks

    use_bos = model.default_prepend_bos if prepend_bos is None else prepend_bos
    o = 1 if use_bos else 0
    n_ctx = model.cfg.n_ctx
    if seq_len is None:
        seq_len = min(50, (n_ctx - o) // 2)
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}.")
    if text_len is None:
        text_len = min(128, n_ctx)
    if n_seqs < 1:
        raise ValueError(f"n_seqs must be at least 1, got {n_seqs}.")
    rep, off = repeated_tokens(model, batch=n_seqs, seq_len=seq_len, seed=seed, prepend_bos=use_bos)
    null = deranged(rep, seq_len, off, seed=seed + 1)
    if text is None:
        text = "pydoc" if model.tokenizer is not None else "random"
    if str(text) == "random":  # distinct tokens when the vocabulary allows, else drawn with replacement
        txt, toff = repeated_tokens(
            model, batch=n_seqs, seq_len=text_len - o, repeats=1, seed=seed + 2, prepend_bos=use_bos
        )
    else:
        if model.tokenizer is None:
            raise ValueError(
                f"Model {model.name!r} has no tokenizer; use text='random' (CLI: --text random) for random token ids."
            )
        txt = token_chunks(model, text, n_chunks=n_seqs, chunk_len=text_len, prepend_bos=use_bos)
        toff = 1 if use_bos else 0
    return {
        "repeated": rep,
        "deranged": null,
        "text": txt,
        "offset": off,
        "text_offset": toff,
        "seq_len": seq_len,
        "text_len": int(txt.shape[1]),
        "text_source": str(text),
    }


# --------------------------------------------------------------------------------------------- result
def _mask(scores: torch.Tensor, base: torch.Tensor, threshold: float, margin: float) -> torch.Tensor:
    return (scores >= threshold) & (scores - base >= margin)


@dataclass
class HeadScores(Result):
    """Per-class head scores ``[n_layers, n_heads]`` with their null baselines.

    ``scores[c]``, ``baselines[c]``: tensors for each class ``c`` of :data:`CLASSES` (see the module
    docstring for the definitions); ``stderr[c]``: the standard error over sequences (attention classes
    only); ``reference``: statistics kept beside the scores but not used to rank or classify
    (``copying_eigenvalue_ratio``: Elhage et al.'s eigenvalue ratio; ``<class>_null_per_head``: each head's
    own rotation null of the copying classes, whose ``baseline`` is the largest over all heads);
    ``thresholds`` / ``margins``: the membership rule ``score >= threshold and score - baseline >= margin``;
    ``settings``: what produced them (inputs, lengths, seeds, timings)."""

    scores: dict[str, torch.Tensor]
    baselines: dict[str, torch.Tensor]
    stderr: dict[str, torch.Tensor] = field(default_factory=dict)
    reference: dict[str, torch.Tensor] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    margins: dict[str, float] = field(default_factory=lambda: dict(MARGINS))
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "head_scores"
    FILE: ClassVar[str] = "heads.json"
    FORMAT_VERSION: ClassVar[int] = 2  # 2: copying classes are top/bottom-k token fractions, not eigenvalue ratios

    # ------------------------------------------------------------------ views
    @property
    def classes(self) -> list[str]:
        return [c for c in CLASSES if c in self.scores] + [c for c in self.scores if c not in CLASSES]

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.scores.values())).shape[0])

    @property
    def n_heads(self) -> int:
        return int(next(iter(self.scores.values())).shape[1])

    def is_member(self, cls: str) -> torch.Tensor:
        """Boolean ``[n_layers, n_heads]``: which heads pass the membership rule of class ``cls``."""
        self._check(cls)
        return _mask(self.scores[cls], self.baselines[cls], self.thresholds[cls], self.margins[cls])

    def members(self, cls: str) -> list[tuple[int, int, float]]:
        """``[(layer, head, score), ...]`` of the heads in class ``cls``, highest score first."""
        m = self.is_member(cls)
        s = self.scores[cls]
        out = [(int(layer), int(head), float(s[layer, head])) for layer, head in m.nonzero().tolist()]
        return sorted(out, key=lambda t: (-t[2], t[0], t[1]))

    def top(self, cls: str, k: int = 5) -> list[tuple[int, int, float, float]]:
        """The ``k`` highest-scoring heads of class ``cls`` whether members or not:
        ``(layer, head, score, baseline)``."""
        self._check(cls)
        s, b = self.scores[cls], self.baselines[cls]
        flat = s.flatten().argsort(descending=True)[:k].tolist()
        return [(i // self.n_heads, i % self.n_heads, float(s.flatten()[i]), float(b.flatten()[i])) for i in flat]

    def _check(self, cls: str) -> None:
        if cls not in self.scores:
            raise ValueError(f"unknown head class {cls!r}; this result has {', '.join(self.classes)}.")

    def headline(self, digits: int = 4) -> dict[str, Any]:
        """Per class, the member heads sorted by score (descending) as ``[layer, head, score]``; and under
        ``"null_baseline"``, per class, ``[layer, head, baseline]`` for the same heads in the same order."""
        out: dict[str, Any] = {}
        nulls: dict[str, Any] = {}
        for c in self.classes:
            mem = self.members(c)
            out[c] = [[layer, head, round(score, digits)] for layer, head, score in mem]
            nulls[c] = [[layer, head, round(float(self.baselines[c][layer, head]), digits)] for layer, head, _ in mem]
        out["null_baseline"] = nulls
        return out

    def to_frame(self, kind: FrameKind = "long") -> pd.DataFrame:
        """``kind="long"``: one row per layer, head and class — ``score``, ``baseline``, ``stderr``,
        ``threshold``, ``member``. ``"wide"``: one row per head with ``<class>``, ``<class>_baseline`` and
        ``<class>_member`` columns, plus ``olsson_induction`` (induction member with a positive eigenvalue
        ratio: Olsson et al.'s prefix matching *and* their copying criterion) and ``copying_eigenvalue_ratio``."""
        import pandas as pd

        L, H = self.n_layers, self.n_heads
        if kind == "long":
            rows = []
            for c in self.classes:
                s, b, m = self.scores[c].tolist(), self.baselines[c].tolist(), self.is_member(c).tolist()
                se = self.stderr[c].tolist() if c in self.stderr else None
                for layer in range(L):
                    for head in range(H):
                        rows.append(
                            {
                                "layer": layer,
                                "head": head,
                                "class": c,
                                "score": s[layer][head],
                                "baseline": b[layer][head],
                                "stderr": se[layer][head] if se else float("nan"),
                                "threshold": self.thresholds[c],
                                "member": m[layer][head],
                            }
                        )
            return pd.DataFrame(rows)
        if kind == "wide":
            d: dict[str, Any] = {
                "layer": [layer for layer in range(L) for _ in range(H)],
                "head": [head for _ in range(L) for head in range(H)],
            }
            for c in self.classes:
                d[c] = self.scores[c].flatten().tolist()
                d[f"{c}_baseline"] = self.baselines[c].flatten().tolist()
                d[f"{c}_member"] = self.is_member(c).flatten().tolist()
            ratio = self.reference.get("copying_eigenvalue_ratio")
            if ratio is not None:
                d["copying_eigenvalue_ratio"] = ratio.flatten().tolist()
                if "induction" in self.scores:
                    d["olsson_induction"] = (self.is_member("induction") & (ratio > 0)).flatten().tolist()
            return pd.DataFrame(d)
        raise ValueError(f"kind must be 'long' or 'wide', not {kind!r}.")

    def plot(self, classes: list[str] | None = None) -> go.Figure:
        """Plotly heatmaps, layers (rows) x heads (columns), one panel per class; members are marked ●.
        Attention classes share a 0..1 colour scale (attention), copying classes another (token fraction)."""
        import html

        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        classes = classes or self.classes
        for c in classes:
            self._check(c)
        ncols = min(3, len(classes))
        nrows = math.ceil(len(classes) / ncols)
        titles = [f"{c.replace('_', ' ')} ({int(self.is_member(c).sum())})" for c in classes]
        fig = make_subplots(
            rows=nrows,
            cols=ncols,
            subplot_titles=titles,
            horizontal_spacing=0.06,
            vertical_spacing=0.12 if nrows > 1 else 0.0,
        )
        layers, heads = list(range(self.n_layers)), list(range(self.n_heads))
        for k, c in enumerate(classes):
            r, col = k // ncols + 1, k % ncols + 1
            s, b, m = self.scores[c].tolist(), self.baselines[c].tolist(), self.is_member(c).tolist()
            text = [["●" if m[i][j] else "" for j in heads] for i in layers]
            fraction = c in ("copying", "copy_suppression")
            fig.add_trace(
                go.Heatmap(
                    z=s,
                    x=heads,
                    y=layers,
                    customdata=b,
                    text=text,
                    texttemplate="%{text}",
                    textfont={"size": 9},
                    coloraxis="coloraxis2" if fraction else "coloraxis",
                    name=html.escape(c),
                    hovertemplate=(
                        f"{html.escape(c)}<br>layer %{{y}}, head %{{x}}<br>score %{{z:.3f}}"
                        "<br>null %{customdata:.3f}<extra></extra>"
                    ),
                ),
                row=r,
                col=col,
            )
            fig.update_xaxes(title_text="head" if r == nrows else None, dtick=1, row=r, col=col)
            fig.update_yaxes(title_text="layer" if col == 1 else None, autorange="reversed", row=r, col=col)
        title = f"Head detectors — {html.escape(self.model_name)}" if self.model_name else "Head detectors"
        fig.update_layout(
            title={"text": title + " (● = member)"},
            coloraxis={
                "colorscale": "Blues",
                "cmin": 0.0,
                "cmax": 1.0,
                "colorbar": {"title": {"text": "attention"}, "x": 1.02, "len": 0.45, "y": 0.78},
            },
            coloraxis2={
                "colorscale": "Reds",
                "cmin": 0.0,
                "cmax": 1.0,
                "colorbar": {"title": {"text": "token fraction"}, "x": 1.02, "len": 0.45, "y": 0.22},
            },
            height=max(360, nrows * (14 * self.n_layers + 120)),
            margin={"l": 60, "r": 90, "t": 80, "b": 50},
        )
        return fig


# --------------------------------------------------------------------------------------------- driver
class _Acc:
    """Running sums over sequences of per-sequence ``[batch, heads]`` scores, one row per layer."""

    def __init__(self, n_layers: int, n_heads: int):
        self.sum: dict[str, torch.Tensor] = {}
        self.sq: dict[str, torch.Tensor] = {}
        self.n = 0
        self.shape = (n_layers, n_heads)

    def add(self, layer: int, vals: dict[str, torch.Tensor]) -> None:
        for k, v in vals.items():
            v = v.double().cpu()
            if k not in self.sum:
                self.sum[k] = torch.zeros(self.shape, dtype=torch.float64)
                self.sq[k] = torch.zeros(self.shape, dtype=torch.float64)
            self.sum[k][layer] += v.sum(0)
            self.sq[k][layer] += (v * v).sum(0)

    def mean(self, k: str) -> torch.Tensor:
        return (self.sum[k] / self.n).float()

    def stderr(self, k: str) -> torch.Tensor:
        if self.n < 2:
            return torch.zeros(self.shape)
        m = self.sum[k] / self.n
        var = ((self.sq[k] - self.n * m * m) / (self.n - 1)).clamp_min(0)
        return (var / self.n).sqrt().float()


def _scan(model: Model, tokens: torch.Tensor, batch: int, fn) -> _Acc:
    """Run ``tokens`` in batches, caching only the attention patterns, and accumulate ``fn(pattern)``."""
    cfg = model.cfg
    acc = _Acc(cfg.n_layers, cfg.n_heads)
    for start in range(0, tokens.shape[0], batch):
        chunk = tokens[start : start + batch]
        _, cache = model.run(chunk, cache=lambda name: name.endswith(_PATTERN))
        for layer in range(cfg.n_layers):
            acc.add(layer, fn(cache[f"blocks.{layer}.{_PATTERN}"]))
        acc.n += chunk.shape[0]
        del cache
    return acc


def head_scores(
    model: Model,
    n_seqs: int = 32,
    batch: int = 8,
    seq_len: int | None = None,
    text: str | Path | None = None,
    text_len: int | None = None,
    prepend_bos: bool | None = None,
    seed: int = 0,
    copying: bool = True,
    n_null_rotations: int = 1,
    copying_k: int = 10,
    copying_tokens: int = 2048,
    ov: OVCopying | None = None,
    thresholds: dict[str, float] | None = None,
    margins: dict[str, float] | None = None,
) -> HeadScores:
    """Score every head of ``model`` for each class of :data:`CLASSES`, with null baselines.

    ``n_seqs`` sequences per input set, run ``batch`` at a time (memory holds one batch's patterns of every
    layer: ``n_layers x batch x n_heads x pos^2`` floats). ``seq_len``: the length of the random sequence
    that is repeated (default 50, or what fits the context); ``text``: ``"pydoc"`` (default with a
    tokenizer), a text file, or ``"random"`` (default without one); ``text_len``: tokens per text sequence
    (default 128 or the context). ``copying=False`` skips the weight-based classes; ``copying_k``,
    ``copying_tokens`` and ``n_null_rotations`` are those of
    :func:`~interplab.analyses.weights.copying.ov_copying`; ``ov``: its result for this model, already computed
    (e.g. for :func:`~interplab.analyses.weights.svd.head_circuits`), used instead of computing it. ``thresholds`` /
    ``margins`` override :data:`THRESHOLDS` / :data:`MARGINS` per class."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}.")
    for name, over in (("thresholds", thresholds), ("margins", margins)):
        bad = set(over or {}) - set(CLASSES)
        if bad:
            raise ValueError(f"unknown classes in {name}: {sorted(bad)}; valid: {', '.join(CLASSES)}.")
    t0 = time.perf_counter()
    inp = head_inputs(
        model, n_seqs=n_seqs, seq_len=seq_len, text=text, text_len=text_len, prepend_bos=prepend_bos, seed=seed
    )
    L, o = inp["seq_len"], inp["offset"]
    rep = _scan(model, inp["repeated"], batch, lambda p: repeated_pattern_scores(p, L, o))
    nul = _scan(model, inp["deranged"], batch, lambda p: repeated_pattern_scores(p, L, o))
    txt = _scan(model, inp["text"], batch, lambda p: text_pattern_scores(p, inp["text_offset"]))
    t_attn = time.perf_counter() - t0

    scores: dict[str, torch.Tensor] = {}
    base: dict[str, torch.Tensor] = {}
    se: dict[str, torch.Tensor] = {}
    scores["previous_token"], base["previous_token"] = txt.mean("previous_token"), txt.mean("previous_token_null")
    for c in ("duplicate_token", "induction"):
        scores[c], base[c], se[c] = rep.mean(c), nul.mean(c), rep.stderr(c)
    scores["sink"], base["sink"] = txt.mean("sink"), txt.mean("sink_null")
    se["previous_token"], se["sink"] = txt.stderr("previous_token"), txt.stderr("sink")
    reference: dict[str, torch.Tensor] = {}
    copy_settings: dict[str, Any] = {}
    t1 = time.perf_counter()
    if copying:
        cp: OVCopying = ov or ov_copying(
            model, k=copying_k, n_tokens=copying_tokens, n_null_rotations=n_null_rotations, seed=seed
        )
        for c, sc, null in (
            ("copying", cp.copying, cp.copying_null),
            ("copy_suppression", cp.suppression, cp.suppression_null),
        ):
            scores[c], base[c] = sc, torch.full_like(sc, cp.null_max[c])
            reference[f"{c}_null_per_head"] = null
        reference["copying_eigenvalue_ratio"] = eigenvalue_copying(model, center_unembed=True)
        copy_settings = cp.settings()
    t_copy = time.perf_counter() - t1
    ordered = {c: scores[c] for c in CLASSES if c in scores}
    return HeadScores(
        scores=ordered,
        baselines={c: base[c] for c in ordered},
        stderr=se,
        reference=reference,
        thresholds={c: float((thresholds or {}).get(c, THRESHOLDS[c])) for c in ordered},
        margins={c: float((margins or {}).get(c, MARGINS[c])) for c in ordered},
        model_name=model.name,
        settings={
            "method": (
                "head detectors (attention scores on repeated random tokens and text; OV copying: own token in the "
                "top / bottom k of the direct-path OV output)"
            ),
            "hook": f"blocks.{{L}}.{_PATTERN}",
            "n_seqs": n_seqs,
            "batch": batch,
            "seq_len": L,
            "offset": o,
            "prepend_bos": bool(o),
            "text_source": inp["text_source"],
            "text_len": inp["text_len"],
            "seed": seed,
            "null_inputs": {
                "duplicate_token": "deranged second copy",
                "induction": "deranged second copy",
                "previous_token": "control key (mean attention to one other earlier key)",
                "sink": "control key (mean attention to one other earlier key)",
                "copying": "largest copying score of any head with a random d_head rotation between W_V and W_O",
                "copy_suppression": "largest copy-suppression score of any head with a random d_head rotation",
            },
            "n_null_rotations": n_null_rotations if copying else 0,
            "attention_seconds": round(t_attn, 3),
            "copying_seconds": round(t_copy, 3),
            **copy_settings,
            "n_layers": model.cfg.n_layers,
            "n_heads": model.cfg.n_heads,
        },
    )
