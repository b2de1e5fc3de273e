"""Causal tracing of factual recall, after Meng et al. (2022), "Locating and Editing Factual
Associations in GPT" (ROME), §2.1, with the resampling corruption of Zhang & Nanda (2023), "Towards
Best Practices of Activation Patching in Language Models: Metrics and Methods".

For a fact prompt ("The Eiffel Tower is located in the city of" → " Paris"):

1. *clean run*: p(answer) = p*;
2. *corrupted run*: the subject is made uninformative —
   ``corruption="noise"``: Gaussian noise N(0, ν²) added to the subject tokens' embeddings
   (``hook_embed``), ν = ``noise_scale`` (3, as ROME) × the standard deviation of subject-token
   embeddings over the fact set, ``n_samples`` draws per fact (ROME: 10);
   ``corruption="resample"`` (symmetric token replacement): the subject's tokens are replaced by
   another subject's, one run per subject (up to ``n_samples``). The candidates are the caller's
   ``resample_subjects`` (in their order) or else the built-in facts' subjects — the fact's own relation
   first, then any other relation, each tier shuffled by the seed, never a subject whose fact has the same
   answer (:func:`resample_candidates`). A candidate is *tried* when its prompt has the same number of
   tokens with every token outside the subject unchanged (so positions align), and *usable* when the
   model's own greedy prediction (top-1 next token) on it is not the answer's first token — the
   definition :func:`~interplab.tasks.facts.known_facts` uses for knowing a fact, so a usable
   corruption is one after which the model no longer gives the answer (:func:`draw_resamples`);
3. *corrupted-with-restoration runs*: the corrupted run with one clean state restored — the residual
   stream after layer L (``hook_resid_post``) at one token, or the MLP / attention output at one token
   over a *window* of ``window`` layers centred on L (ROME: 10, clipped at the ends).

The indirect effect of a state is IE = p_restored − p_corrupted; averaged over facts (AIE) per
layer and per token class: first / middle / last subject token, first subsequent token, further
tokens, last token (ROME's Figure 2 categories). The peak of the MLP map at the last subject token
in middle layers and of the attention map at the last token in late layers is ROME's GPT-2 XL
finding. :func:`refine` then patches single heads (``hook_z``) and scores single MLP neurons
(``mlp.hook_post``: attribution patching to rank, exact restoration of the top ones) at the peaks.

*Peaks.* Restoring the residual stream at the last token after the last layer restores the clean output
exactly (the logits are a function of that state alone): IE = p* − p_corrupted, the total effect TE, by
construction. At an earlier layer L the layers above can still read the corrupted subject positions, so
IE(L, last) is small until the fact has been moved to the last token and about TE after: restoring that
token's state then restores the answer itself. The maximum of the residual map is therefore usually in this
*late last-token window*, where it locates the read-out, not the recall.
:meth:`TracingResult.late_last_token_layers` defines the window as the longest run of final layers in which
restoring the last token's residual restores at least :data:`LATE_FRACTION` (half) of the mean total effect
(the last layer always belongs to it) — the layers from which the last token alone carries most of the
effect. The curve jumps from ≈ 0 to ≈ TE within a layer or two (SmolLM2-135M, "The Eiffel Tower is located
in the city of" → " Paris", noise: 0.02 at layer 22, 0.75 at 23, TE 0.68), so any fraction between about
0.1 and 0.8 gives the same window there; a stricter one breaks on the corrupted run's over- and undershoot
after the jump (layers 24–28 restore 84–88% of TE there). The headline ``peak`` is the residual peak over
the subject tokens (ROME's Figure 1a site), reported beside the MLP and attention peaks (Figures 1b, 1c);
the maximum over all maps is kept as ``peak_overall``, with ``trivial: true`` when it lies in that window.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.causal.engine import Cell, Method, probe_gradients, run_cells
from interplab.hooks import Apply, HookContext
from interplab.io.results import Result, nan_to_none
from interplab.tasks.facts import Fact, all_facts
from interplab.tasks.pairs import pairs_from_tokens

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "BUCKETS",
    "KINDS",
    "LATE_FRACTION",
    "SUBJECT_BUCKETS",
    "Corruption",
    "FactTrace",
    "Kind",
    "ResampleDraw",
    "TracingResult",
    "average_indirect_effect",
    "bucket_of",
    "causal_tracing",
    "draw_resamples",
    "embedding_noise_std",
    "refine",
    "resample_candidates",
    "subject_noise",
    "subject_span",
    "trace_fact",
]

BUCKETS = ("subject_first", "subject_middle", "subject_last", "first_subsequent", "further", "last")
SUBJECT_BUCKETS = ("subject_first", "subject_middle", "subject_last")
"""The token classes of the subject's own tokens: where the headline residual ``peak`` is looked for."""
LATE_FRACTION = 0.5
"""The late last-token window: final layers where restoring the last token's residual restores at least this
fraction of the total effect (see the module docstring)."""
Kind = Literal["resid", "mlp", "attn"]
"""The restored state: the residual stream after a layer, or the MLP / attention output over a window."""
KINDS: tuple[Kind, ...] = ("resid", "mlp", "attn")
Corruption = Literal["noise", "resample"]
"""``noise``: Gaussian noise on the subject's embeddings (ROME); ``resample``: another subject's tokens."""
_KIND_HOOK = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}


def subject_span(model: Model, prompt: str, subject: str) -> tuple[list[int], int, int]:
    """(token ids, first, last) subject token indices of ``prompt`` (the subject's first occurrence)."""
    tok = model.need_tokenizer()
    at = prompt.find(subject)
    if at < 0:
        raise ValueError(f"subject {subject!r} does not occur in the prompt {prompt!r}.")
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    first = len(tok(prompt[: at + 1], add_special_tokens=True)["input_ids"]) - 1
    last = len(tok(prompt[: at + len(subject)], add_special_tokens=True)["input_ids"]) - 1
    return ids, first, last


def bucket_of(pos: int, first: int, last: int, end: int) -> str:
    """The token class (one of :data:`BUCKETS`, or ``"before"`` the subject) of position ``pos`` for a subject
    spanning ``first..last`` in a prompt whose last token is ``end``."""
    if pos == end:
        return "last"
    if pos == last:  # a one-token subject counts as its last token (ROME's key position)
        return "subject_last"
    if pos == first:
        return "subject_first"
    if first < pos < last:
        return "subject_middle"
    if pos == last + 1:
        return "first_subsequent"
    if pos > last + 1:
        return "further"
    return "before"


@dataclass
class FactTrace:
    """One fact's trace: p(answer) of the clean and corrupted runs and, per kind, the restored probability
    ``effects[kind]`` ``[layer, pos]``."""

    prompt: str
    subject: str
    answer: str
    str_tokens: list[str]
    subject_range: tuple[int, int]
    p_clean: float
    p_corrupt: float
    effects: dict[str, torch.Tensor]  # kind -> [layer, pos] p_restored (not minus corrupt)
    resampled: list[str] = field(default_factory=list)  # resample corruption: the subjects of the corrupted runs
    n_resamples_tried: int = 0  # resample corruption: candidates with the subject's token layout
    n_resamples_usable: int = 0  # ... of which the model no longer predicts the answer

    def ie(self, kind: str) -> torch.Tensor:
        """The indirect effect ``[layer, pos]``: restored minus corrupted probability."""
        return self.effects[kind] - self.p_corrupt

    def to_json(self) -> dict[str, Any]:
        """The trace as plain JSON values (one line of a resumable ``traces.jsonl``, or of ``tracing.json``)."""
        return {
            "prompt": self.prompt,
            "subject": self.subject,
            "answer": self.answer,
            "str_tokens": self.str_tokens,
            "subject_range": list(self.subject_range),
            "p_clean": self.p_clean,
            "p_corrupt": self.p_corrupt,
            "effects": {k: v.tolist() for k, v in self.effects.items()},
            "resampled": self.resampled,
            "n_resamples_tried": self.n_resamples_tried,
            "n_resamples_usable": self.n_resamples_usable,
        }

    @classmethod
    def from_json(cls, t: dict[str, Any]) -> FactTrace:
        """The inverse of :meth:`to_json`."""
        a, b = t["subject_range"]
        return cls(
            t["prompt"],
            t["subject"],
            t["answer"],
            t["str_tokens"],
            (int(a), int(b)),
            t["p_clean"],
            t["p_corrupt"],
            {k: torch.tensor(v) for k, v in t["effects"].items()},
            list(t.get("resampled", [])),
            int(t.get("n_resamples_tried", 0)),
            int(t.get("n_resamples_usable", 0)),
        )


@dataclass
class TracingResult(Result):
    """Per-fact traces and the average indirect effect ``aie[kind]`` ``[layer, bucket]``. Saved as
    ``tracing.json`` (settings and the per-fact traces) + ``tracing.safetensors`` (the AIE maps). The headline's
    ``peak`` is the residual peak over the subject tokens; the overall maximum is ``peak_overall``, marked
    ``trivial`` in the late last-token window (:meth:`headline`, the module docstring)."""

    KIND: ClassVar[str] = "causal_tracing"
    FILE: ClassVar[str] = "tracing.json"

    traces: list[FactTrace]
    aie: dict[str, torch.Tensor]
    corruption: Corruption
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def total_effect(self) -> float:
        """The mean total effect over the traced facts: p_clean − p_corrupt."""
        return sum(t.p_clean - t.p_corrupt for t in self.traces) / max(1, len(self.traces))

    def late_last_token_layers(self, fraction: float = LATE_FRACTION) -> list[int]:
        """The layers of the trivial late last-token window (see the module docstring): the longest run of
        final layers ``L`` in which restoring the residual stream at the last token restores at least
        ``fraction`` of the mean total effect, AIE_resid(L, last) ≥ ``fraction`` × TE. The last layer always
        belongs to it (restoring its output restores the clean output exactly); it is the whole window when the
        corruption did not lower p(answer) (TE ≤ 0). Empty without a residual map."""
        if "resid" not in self.aie:
            return []
        col = self.aie["resid"][:, BUCKETS.index("last")]
        n = col.shape[0]
        te = self.total_effect()
        lo = n - 1
        if te > 0:
            while lo > 0 and float(col[lo - 1]) >= fraction * te:
                lo -= 1
        return list(range(lo, n))

    def peak(self, kind: str, positions: Sequence[str] | None = None) -> dict[str, Any]:
        """The cell of the largest AIE of map ``kind`` (over the token classes ``positions``, default all):
        ``{"component", "layer", "position", "aie", "trivial"}``, where ``trivial`` says the cell is a
        residual state in the late last-token window (:meth:`late_last_token_layers`)."""
        a = torch.nan_to_num(self.aie[kind], nan=-math.inf)
        if positions is not None:
            for j, name in enumerate(BUCKETS):
                if name not in positions:
                    a[:, j] = -math.inf
        i = int(a.argmax())
        layer, b = divmod(i, a.shape[1])
        trivial = kind == "resid" and BUCKETS[b] == "last" and layer in self.late_last_token_layers()
        return {
            "component": kind,
            "layer": layer,
            "position": BUCKETS[b],
            "aie": float(self.aie[kind][layer, b]),
            "trivial": trivial,
        }

    def headline(self) -> dict[str, Any]:
        """``peak``: the residual stream's peak over the subject tokens (ROME's Figure 1a site; with no residual
        map, the largest of the other peaks); ``peaks``: that and the MLP and attention peaks over all token
        classes (Figures 1b, 1c); ``peak_overall``: the maximum over all maps, ``trivial`` when it lies in the
        late last-token window ``late_last_token_layers`` (restoring the last token's residual there restores
        at least half the total effect ``total_effect``: it locates the read-out, not the recall). With
        resample corruption: candidate subjects tried and usable (the model no longer predicts the answer) and
        runs used, summed over facts, and the subjects used for a single fact."""
        peaks = {k: self.peak(k, SUBJECT_BUCKETS if k == "resid" else None) for k in self.aie}
        overall = [self.peak(k) for k in self.aie]
        pc = [t.p_clean for t in self.traces]
        px = [t.p_corrupt for t in self.traces]
        window = self.late_last_token_layers()
        h: dict[str, Any] = {
            "n_facts": len(self.traces),
            "corruption": self.corruption,
            "p_clean_mean": sum(pc) / max(1, len(pc)),
            "p_corrupt_mean": sum(px) / max(1, len(px)),
            "total_effect": self.total_effect(),
            "peak": peaks.get("resid") or (max(peaks.values(), key=lambda d: d["aie"]) if peaks else None),
            "peaks": peaks,
            "peak_overall": max(overall, key=lambda d: d["aie"]) if overall else None,
            "late_last_token_layers": [window[0], window[-1]] if window else None,
        }
        if self.corruption == "resample":
            h["n_resamples_tried"] = sum(t.n_resamples_tried for t in self.traces)
            h["n_resamples_usable"] = sum(t.n_resamples_usable for t in self.traces)
            h["n_resamples_used"] = sum(len(t.resampled) for t in self.traces)
            h["n_facts_skipped"] = len(self.settings.get("skipped", []))
            if len(self.traces) == 1:
                h["resampled_subjects"] = self.traces[0].resampled
        return h

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for kind, a in self.aie.items():
            for layer in range(a.shape[0]):
                for b, name in enumerate(BUCKETS):
                    rows.append({"component": kind, "layer": layer, "position": name, "aie": float(a[layer, b])})
        return pd.DataFrame(rows)

    def plot(self) -> go.Figure:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        kinds = list(self.aie)
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"{k} (AIE)" for k in kinds], shared_yaxes=True)
        for j, k in enumerate(kinds, start=1):
            a = self.aie[k]
            fig.add_trace(
                go.Heatmap(
                    z=nan_to_none(a.T.tolist()),
                    x=list(range(a.shape[0])),
                    y=list(BUCKETS),
                    colorscale="Purples",
                    showscale=j == len(kinds),
                    hovertemplate="layer %{x}, %{y}: AIE %{z:.4f}<extra></extra>",
                ),
                row=1,
                col=j,
            )
            fig.update_xaxes(title_text="layer", row=1, col=j)
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(
            title={"text": f"Causal tracing ({self.corruption}) — {self.model_name}, {len(self.traces)} facts"},
            height=360,
        )
        return fig

    def fact_plot(self, i: int = 0) -> go.Figure:
        """ROME-style per-fact map for one fact: layers × tokens, one panel per component."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        t = self.traces[i]
        kinds = list(t.effects)
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, shared_yaxes=True)
        labels = [f"{j}:{s!r}" for j, s in enumerate(t.str_tokens)]
        for j, k in enumerate(kinds, start=1):
            fig.add_trace(
                go.Heatmap(
                    z=t.effects[k].T.tolist(),
                    x=list(range(t.effects[k].shape[0])),
                    y=labels,
                    colorscale="Purples",
                    showscale=j == len(kinds),
                ),
                row=1,
                col=j,
            )
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(
            title={"text": f"p({t.answer!r}) restored — {t.prompt!r}"}, height=max(300, 22 * len(labels) + 120)
        )
        return fig

    def _encode(self, name: str, value: Any) -> Any:
        if name == "traces":
            return [t.to_json() for t in value]
        return super()._encode(name, value)

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "traces":
            return [FactTrace.from_json(t) for t in value]
        return value


def embedding_noise_std(model: Model, facts: Sequence[Fact]) -> float:
    """Standard deviation of the subject tokens' embeddings over ``facts`` (ROME's ν / 3)."""
    vals = []
    for f in facts:
        ids, a, b = subject_span(model, f.prompt, f.subject)
        _, cache = model.run(torch.tensor([ids]), cache=["hook_embed"], stop_at_layer=0)
        vals.append(cache["hook_embed"][0, a : b + 1].reshape(-1))
    return float(torch.cat(vals).float().std())


def subject_noise(model: Model, a: int, b: int, n_samples: int, std: float, scale: float, seed: int) -> Apply:
    """The Gaussian corruption: N(0, (scale·std)²) added to the ``hook_embed`` rows ``a..b`` of each of
    ``n_samples`` copies of the prompt (one seeded draw per copy)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_samples, b - a + 1, model.cfg.d_model, generator=g) * (scale * std)

    def add_noise(x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        x = x.clone()
        x[:, a : b + 1] += noise.to(x.dtype)
        return x

    return Apply("hook_embed", fn=add_noise)


def resample_candidates(fact: Fact, partners: Sequence[Fact], seed: int = 0) -> list[str]:
    """Subjects to resample ``fact``'s subject with, from ``partners``' subjects: those of the fact's own relation
    (template) first, then those of every other relation, each group shuffled by ``seed``; without the fact's
    own subject and without any subject that has a partner fact with the same answer (it would likely still
    give it). Token lengths are checked later, by :func:`draw_resamples`."""
    same_answer = {g.subject for g in partners if g.answer == fact.answer}
    groups: tuple[list[str], list[str]] = ([], [])
    seen = {fact.subject}
    for g in partners:
        if g.subject in seen or g.subject in same_answer:
            continue
        seen.add(g.subject)
        groups[g.template != fact.template].append(g.subject)
    rng = random.Random(seed)
    for grp in groups:
        rng.shuffle(grp)
    return groups[0] + groups[1]


@dataclass
class ResampleDraw:
    """The corrupted prompts of one fact's resample corruption (:func:`draw_resamples`)."""

    subjects: list[str]  # the subjects used, at most n_samples, in candidate order
    rows: list[list[int]]  # their prompts' token ids
    n_candidates: int  # distinct candidate subjects
    n_tried: int  # ... whose prompt has the clean prompt's tokens outside the subject (and so its length)
    n_usable: int  # ... of which the model's top-1 next token is not the answer's first token


@torch.no_grad()
def draw_resamples(
    model: Model, fact: Fact, candidates: Sequence[str], n_samples: int = 10, batch: int = 64
) -> ResampleDraw:
    """The resample corruption of ``fact`` (symmetric token replacement, Zhang & Nanda 2023): each candidate
    subject is put in place of the fact's; it is *tried* when the new prompt tokenises to the same length with
    every token outside the subject unchanged (so positions align), and *usable* when the model's greedy
    prediction (top-1 next token at the last position) on it is not the answer's first token — the corrupted
    prompt no longer gives the answer. The first ``n_samples`` usable ones are used.

    Args:
        model: the model (with a tokenizer).
        fact: the fact whose subject is replaced.
        candidates: subjects to try, in order of preference (e.g. :func:`resample_candidates`); duplicates and
            the fact's own subject are ignored.
        n_samples: at most this many usable subjects are used.
        batch: prompts per forward pass of the check.

    Raises:
        ValueError: when no candidate is usable, saying whether none had the subject's token length or the
            model still predicted the answer for all of them, and what to pass instead.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, not {n_samples}.")
    ids, a, b = subject_span(model, fact.prompt, fact.subject)
    ans, _ = model.first_token_id(fact.answer, "answer")
    tok = model.need_tokenizer()
    cands = [c for c in dict.fromkeys(candidates) if c and c != fact.subject]
    fits: list[tuple[str, list[int]]] = []
    for c in cands:
        alt = tok(fact.prompt.replace(fact.subject, c, 1), add_special_tokens=True)["input_ids"]
        if len(alt) == len(ids) and alt[:a] == ids[:a] and alt[b + 1 :] == ids[b + 1 :]:
            fits.append((c, alt))
    usable: list[tuple[str, list[int]]] = []
    for i in range(0, len(fits), batch):
        chunk = fits[i : i + batch]
        top1 = model.run(torch.tensor([r for _, r in chunk])).logits[:, -1].argmax(-1).tolist()
        usable += [f for f, t in zip(chunk, top1) if t != ans]
    k = b - a + 1
    give = (
        f"Give other subjects of {k} token(s) in this prompt (resample_subjects; on the command line "
        '--resample-subjects "A,B,C" or @FILE), or use noise corruption.'
    )
    if not fits:
        shown = ", ".join(repr(c) for c in cands[:5]) + (", …" if len(cands) > 5 else "")
        raise ValueError(
            f"no resample subject fits {fact.prompt!r}: the subject {fact.subject!r} is {k} token(s) there and none "
            f"of the {len(cands)} candidate(s) ({shown or 'none'}) tokenises to {k} with the rest of the prompt "
            f"unchanged. {give}"
        )
    if not usable:
        shown = ", ".join(repr(c) for c, _ in fits[:5]) + (", …" if len(fits) > 5 else "")
        raise ValueError(
            f"no usable resample for {fact.prompt!r}: the model still predicts {fact.answer!r} for all {len(fits)} "
            f"same-length subject(s) tried ({shown}). {give}"
        )
    used = usable[:n_samples]
    return ResampleDraw([c for c, _ in used], [r for _, r in used], len(cands), len(fits), len(usable))


def _window(layer: int, n_layers: int, window: int) -> list[int]:
    lo = max(0, layer - window // 2)
    hi = min(n_layers, layer - window // 2 + window)
    return list(range(lo, hi))


@torch.no_grad()
def trace_fact(
    model: Model,
    fact: Fact,
    corruption: Corruption = "noise",
    noise_std: float | None = None,
    noise_scale: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    kinds: Sequence[Kind] = KINDS,
    partners: Sequence[Fact] | None = None,
    seed: int = 0,
    method: Method = "fast",
    resample_subjects: Sequence[str] | None = None,
) -> FactTrace:
    """Trace one fact (Meng et al. 2022; see the module docstring).

    Args:
        model: the model (with a tokenizer).
        fact: the fact (prompt template, subject, answer).
        corruption: ``"noise"`` (Gaussian noise on the subject's embeddings) or ``"resample"`` (other subjects,
            :func:`draw_resamples`).
        noise_std: the embeddings' standard deviation ν/``noise_scale`` (:func:`embedding_noise_std`); needed
            for noise.
        noise_scale: the noise's multiple of ``noise_std`` (ROME: 3).
        n_samples: noise draws, or at most this many resampled subjects (the usable ones; see
            :func:`draw_resamples`).
        window: layers restored together for the MLP and attention kinds (ROME: 10).
        kinds: the states restored: ``"resid"``, ``"mlp"``, ``"attn"``.
        partners: facts whose subjects are resampled when ``resample_subjects`` is not given — same relation
            first, then any other (:func:`resample_candidates`); default the built-in facts.
        seed: seed of the noise / the resampled subjects' order.
        method: ``"fast"`` or ``"naive"`` (:func:`interplab.analyses.causal.engine.run_cells`).
        resample_subjects: with ``"resample"``, the candidate subjects to use, in this order (instead of
            ``partners``); those that do not fit the prompt's tokens or still give the answer are dropped.
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind {k!r}: choose from {KINDS}.")
    ids, a, b = subject_span(model, fact.prompt, fact.subject)
    ans, _ = model.first_token_id(fact.answer, "answer")
    p = len(ids)
    clean_row = torch.tensor([ids])
    extra: list[Apply] = []
    draw = None
    if corruption == "noise":
        if noise_std is None:
            raise ValueError("corruption='noise' needs noise_std (see embedding_noise_std).")
        corrupt = clean_row.repeat(n_samples, 1)
        extra = [subject_noise(model, a, b, n_samples, noise_std, noise_scale, seed)]
    elif corruption == "resample":
        if resample_subjects is not None:
            cands = list(resample_subjects)
        else:
            cands = resample_candidates(fact, all_facts() if partners is None else partners, seed)
        draw = draw_resamples(model, fact, cands, n_samples)
        corrupt = torch.tensor(draw.rows)
    else:
        raise ValueError(f"corruption must be 'noise' or 'resample', not {corruption!r}.")
    n = corrupt.shape[0]
    pairs = pairs_from_tokens("fact", clean_row.repeat(n, 1), corrupt, answer_ids=ans, wrong_ids=ans, metric="prob")
    names = [f"blocks.{layer}.{_KIND_HOOK[k]}" for k in kinds for layer in range(model.cfg.n_layers)]
    resids = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    lc, cc = model.run(clean_row, cache=names)
    p_clean = float(pairs.metric_from_final(lc[:, -1].expand(n, -1))[0])
    lx, cx = model.run(corrupt, cache=resids, interventions=extra)
    p_corrupt = float(pairs.metric_from_final(lx[:, -1]).mean())
    L = model.cfg.n_layers
    effects = {}
    for k in kinds:
        cells = []
        for layer in range(L):
            hooks = (
                [f"blocks.{layer}.{_KIND_HOOK[k]}"]
                if k == "resid"
                else [f"blocks.{x}.{_KIND_HOOK[k]}" for x in _window(layer, L, window)]
            )
            first = int(hooks[0].split(".")[1])
            for pos in range(a, p):  # states before the subject are identical in both runs: IE = 0
                cells.append(Cell(hooks[0], first, position=pos, also=tuple(hooks[1:])))
        per, _ = run_cells(
            model, pairs, cells, corrupt, cc, cx, method=method, extra_interventions=extra if method == "naive" else ()
        )
        eff = torch.full((L, p), p_corrupt)
        eff[:, a:] = per.mean(-1).view(L, p - a)
        effects[k] = eff
    return FactTrace(
        fact.prompt,
        fact.subject,
        fact.answer,
        model.to_str_tokens(clean_row[0]),
        (a, b),
        p_clean,
        p_corrupt,
        effects,
        resampled=draw.subjects if draw else [],
        n_resamples_tried=draw.n_tried if draw else 0,
        n_resamples_usable=draw.n_usable if draw else 0,
    )


def causal_tracing(
    model: Model,
    facts: Sequence[Fact],
    corruption: Corruption = "noise",
    noise_scale: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    kinds: Sequence[Kind] = KINDS,
    seed: int = 0,
    method: Method = "fast",
    partners: Sequence[Fact] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    checkpoint: str | Path | None = None,
    resample_subjects: Sequence[str] | None = None,
    backend: str = "serial",
    max_parallel: int | None = None,
    model_ref: str | None = None,
) -> TracingResult:
    """Causal tracing (Meng et al. 2022, §2.1; resampling after Zhang & Nanda 2023) over ``facts``; returns
    per-fact maps and the average indirect effect by token class.

    Args:
        model: the model (with a tokenizer).
        facts: the facts, which should be facts the model knows (:func:`interplab.tasks.facts.known_facts`).
        corruption: ``"noise"`` or ``"resample"`` (see the module docstring); with ``"resample"`` facts
            without a usable resample subject (:func:`draw_resamples`) are skipped (listed in
            ``settings["skipped"]``); when no fact is left the error says why and what to pass.
        noise_scale: ν = ``noise_scale`` × the std of the subject-token embeddings (ROME: 3).
        n_samples: noise draws / at most this many usable resampled subjects per fact (ROME: 10).
        window: layers restored together for the MLP and attention kinds (ROME: 10).
        kinds: the states restored: ``"resid"``, ``"mlp"``, ``"attn"``.
        seed: seed of fact ``i``'s corruption is ``seed + i``.
        method: ``"fast"`` or ``"naive"`` (:func:`interplab.analyses.causal.engine.run_cells`).
        partners: facts whose subjects are resampled, same relation first, then any relation
            (:func:`resample_candidates`; default: ``facts`` and the built-in facts).
        progress: called as ``progress(done, total)`` after each fact.
        checkpoint: a JSON-lines file; each finished fact is appended to it, and facts already in it (same
            prompt, subject, answer and settings) are read back instead of recomputed, so a killed run
            resumes where it stopped.
        resample_subjects: with ``"resample"``, the candidate subjects for every fact, in this order, instead
            of ``partners``' (e.g. for a fact of the user's own relation).
        backend: ``"serial"`` (in this process), ``"process"`` or ``"ray"``: the facts not yet in the checkpoint
            are dealt out in one share per worker, each of which loads the model by ``model_ref`` and
            traces its facts with the same per-fact seeds and noise scale, so the result equals the serial run
            (tested); each finished chunk is appended to the checkpoint.
        max_parallel: workers at once (default: the backend's).
        model_ref: what a worker passes to :func:`interplab.load` (default: the model's registry name, else the
            directory it was loaded from).
    """
    facts = list(facts)
    if not facts:
        raise ValueError("causal tracing needs at least one fact.")
    if backend != "serial":
        from interplab.sweeps.backends import check_backend

        check_backend(backend)
    t0 = time.perf_counter()
    std = embedding_noise_std(model, facts) if corruption == "noise" else None
    if resample_subjects is not None and corruption != "resample":
        raise ValueError("resample_subjects are only used with corruption='resample'.")
    partners = list(partners) if partners is not None else [*facts, *all_facts()]
    traces: list[FactTrace] = []
    skipped: list[str] = []
    key = {
        "model": model.name,
        "corruption": corruption,
        "noise_scale": noise_scale,
        "n_samples": n_samples,
        "window": window,
        "kinds": list(kinds),
        "seed": seed,
    }
    if resample_subjects is not None:  # only then, so checkpoints written before the option still resume
        key["resample_subjects"] = list(resample_subjects)
    done: dict[tuple, FactTrace] = {}
    ck = Path(checkpoint) if checkpoint else None
    if ck is not None and ck.exists():
        for line in ck.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if rec.get("key") == key:
                t = FactTrace.from_json(rec["trace"])
                done[(t.prompt, t.subject, t.answer, rec.get("index"))] = t
    gone: set[int] = set()  # facts the workers could not corrupt by resampling
    if backend != "serial":
        gone = _trace_in_workers(
            model,
            facts,
            done,
            ck,
            key,
            backend,
            max_parallel,
            model_ref,
            {
                "corruption": corruption,
                "noise_std": std,
                "noise_scale": noise_scale,
                "n_samples": n_samples,
                "window": window,
                "kinds": list(kinds),
                "partners": partners,
                "seed": seed,
                "method": method,
                "resample_subjects": resample_subjects,
            },
            skipped,
        )
    for i, f in enumerate(facts):
        old = done.get((f.prompt, f.subject, f.answer, i))
        if old is not None or i in gone:
            if old is not None:
                traces.append(old)
            if progress:
                progress(i + 1, len(facts))
            continue
        try:
            traces.append(
                trace_fact(
                    model,
                    f,
                    corruption=corruption,
                    noise_std=std,
                    noise_scale=noise_scale,
                    n_samples=n_samples,
                    window=window,
                    kinds=kinds,
                    partners=partners,
                    seed=seed + i,
                    method=method,
                    resample_subjects=resample_subjects,
                )
            )
            _append_checkpoint(ck, key, i, traces[-1].to_json())
        except ValueError as e:
            if corruption != "resample":
                raise
            skipped.append(str(e))
        if progress:
            progress(i + 1, len(facts))
    if not traces:
        raise ValueError(f"no fact could be traced: {skipped[0] if skipped else ''}")
    aie = average_indirect_effect(traces)
    return TracingResult(
        traces=traces,
        aie=aie,
        corruption=corruption,
        model_name=model.name,
        settings={
            "noise_scale": noise_scale,
            "noise_std": std,
            "n_samples": n_samples,
            "window": window,
            "seed": seed,
            "method": method,
            "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


def _append_checkpoint(ck: Path | None, key: dict[str, Any], index: int, trace: dict[str, Any]) -> None:
    """Append fact ``index``'s finished trace to the JSON-lines checkpoint (a line cut by a kill is skipped on
    resume)."""
    if ck is not None:
        ck.parent.mkdir(parents=True, exist_ok=True)
        with ck.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "index": index, "trace": trace}) + "\n")


def trace_chunk(model_ref: str, indices: list[int], facts: list[Fact], options: dict[str, Any]) -> list[dict]:
    """A worker's share of :func:`causal_tracing`: load the model by ``model_ref`` (one thread) and trace facts
    ``facts[i]`` for ``i`` in ``indices``, with seed ``options["seed"] + i``; returns ``{"index", "trace"}`` records
    (``{"index", "skipped"}`` for a fact resampling cannot corrupt)."""
    from interplab.sweeps.split import worker_model

    opts = dict(options)
    seed = opts.pop("seed")
    out: list[dict] = []
    with worker_model(model_ref) as model:
        for i in indices:
            f = facts[i]
            try:
                out.append({"index": i, "trace": trace_fact(model, f, seed=seed + i, **opts).to_json()})
            except ValueError as e:
                if opts["corruption"] != "resample":
                    raise
                out.append({"index": i, "skipped": str(e)})
    return out


def _trace_in_workers(
    model: Model,
    facts: list[Fact],
    done: dict[tuple, FactTrace],
    ck: Path | None,
    key: dict[str, Any],
    backend: str,
    max_parallel: int | None,
    model_ref: str | None,
    options: dict[str, Any],
    skipped: list[str],
) -> set[int]:
    """Trace the facts missing from ``done`` through a sweep backend (see :func:`causal_tracing`); fills
    ``done`` (and the checkpoint) with their traces and ``skipped`` with why resampling could not corrupt a fact;
    returns the indices of those facts, which the serial loop then passes over."""
    from interplab.sweeps.split import deal, run_shares

    todo = [i for i, f in enumerate(facts) if (f.prompt, f.subject, f.answer, i) not in done]
    if not todo:
        return set()
    why: dict[int, str] = {}

    def keep(_share: list[int], records: list[dict]) -> None:
        for rec in records:
            i = rec["index"]
            if "skipped" in rec:
                why[i] = rec["skipped"]
                continue
            t = FactTrace.from_json(rec["trace"])
            done[(t.prompt, t.subject, t.answer, i)] = t
            _append_checkpoint(ck, key, i, rec["trace"])

    run_shares(trace_chunk, model, deal(todo, max_parallel), (facts, options), keep, backend, max_parallel, model_ref)
    skipped.extend(why[i] for i in sorted(why))  # in fact order, as the serial loop lists them
    return set(why)


def average_indirect_effect(traces: Sequence[FactTrace]) -> dict[str, torch.Tensor]:
    """The average indirect effect ``[layer, bucket]`` per kind over ``traces`` (ROME's Figure 2): each fact's IE
    is averaged over its positions in a token class (:data:`BUCKETS`), then over the facts that have that class;
    NaN where no fact has it."""
    aie = {}
    for k in traces[0].effects:
        L = traces[0].effects[k].shape[0]
        tot = torch.zeros(L, len(BUCKETS), dtype=torch.float64)
        cnt = torch.zeros(len(BUCKETS), dtype=torch.float64)
        for t in traces:
            ie = t.ie(k).double()
            end = ie.shape[1] - 1
            per_b: dict[str, list[int]] = {}
            for pos in range(ie.shape[1]):
                per_b.setdefault(bucket_of(pos, *t.subject_range, end), []).append(pos)
            for j, name in enumerate(BUCKETS):
                if name in per_b:
                    tot[:, j] += ie[:, per_b[name]].mean(-1)
                    cnt[j] += 1
        aie[k] = (tot / cnt.clamp_min(1)).float()
        aie[k][:, cnt == 0] = float("nan")
    return aie


@torch.no_grad()
def refine(
    model: Model, facts: Sequence[Fact], result: TracingResult, n_samples: int = 10, top_k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Refine the peaks of a causal trace (Meng et al. 2022) to single components: the indirect effect of
    restoring one attention head (``hook_z``) at the attention peak's token class, for every head of every
    layer, and of single MLP neurons (``mlp.hook_post``) at the MLP peak's token class in the peak layer (all
    neurons ranked by attribution patching, Nanda 2023; the top ``top_k`` restored exactly). Noise
    corruption as in ``result``.

    Args:
        model: the model the trace was run on.
        facts: the traced facts.
        result: the :class:`TracingResult` of :func:`causal_tracing` (noise corruption).
        n_samples: noise draws per fact.
        top_k: heads reported and neurons restored exactly.
        seed: seed of fact ``i``'s noise is ``seed + i``.

    Returns:
        ``{"heads": [[layer, head, IE], ...], "head_ie": [L, H], "head_position": ...}`` and, with MLPs,
        ``"neurons": [[layer, neuron, attribution score, exact IE], ...]``, ``"neuron_layer"``,
        ``"neuron_position"``.
    """
    std = result.settings.get("noise_std") or embedding_noise_std(model, facts)
    scale = result.settings.get("noise_scale", 3.0)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out: dict[str, Any] = {}
    head_ie = torch.zeros(L, H)
    mlp_peak = result.peak("mlp") if "mlp" in result.aie and model.cfg.d_mlp else None
    attn_peak = result.peak("attn") if "attn" in result.aie else {"position": "last"}
    neuron_scores = torch.zeros(model.cfg.d_mlp or 0)
    runs = []  # per fact: what the exact neuron restorations reuse
    for i, f in enumerate(facts):
        ids, a, b = subject_span(model, f.prompt, f.subject)
        ans, _ = model.first_token_id(f.answer, "answer")
        p = len(ids)
        pos_of = {bk: [x for x in range(p) if bucket_of(x, a, b, p - 1) == bk] for bk in BUCKETS}
        hpos = (pos_of.get(attn_peak["position"]) or [p - 1])[-1]
        extra = [subject_noise(model, a, b, n_samples, std, scale, seed + i)]
        clean = torch.tensor([ids])
        corrupt = clean.repeat(n_samples, 1)
        pairs = pairs_from_tokens(
            "fact", clean.repeat(n_samples, 1), corrupt, answer_ids=ans, wrong_ids=ans, metric="prob"
        )
        zs = [f"blocks.{layer}.attn.hook_z" for layer in range(L)]
        _, cc = model.run(clean, cache=zs + ([f"blocks.{mlp_peak['layer']}.mlp.hook_post"] if mlp_peak else []))
        lx, cx = model.run(corrupt, cache=[f"blocks.{layer}.hook_resid_pre" for layer in range(L)], interventions=extra)
        p_corrupt = pairs.metric_from_final(lx[:, -1]).mean()
        cells = [Cell(zs[layer], layer, head=h, position=hpos) for layer in range(L) for h in range(H)]
        per, _ = run_cells(model, pairs, cells, corrupt, cc, cx)
        head_ie += (per.mean(-1) - p_corrupt).view(L, H) / len(facts)
        if mlp_peak is not None:
            npos = (pos_of.get(mlp_peak["position"]) or [b])[-1]
            hk = f"blocks.{mlp_peak['layer']}.mlp.hook_post"
            _, vals, grads = probe_gradients(
                model, corrupt, [hk], lambda lg, pairs=pairs: pairs.metric_from_final(lg[:, -1]), interventions=extra
            )
            delta = cc[hk][:, npos] - vals[hk][:, npos]  # [n, neurons]
            neuron_scores += (delta * grads[hk][:, npos]).mean(0) / len(facts)
            runs.append((pairs, corrupt, cc, cx, p_corrupt, npos))
    flat = head_ie.reshape(-1).argsort(descending=True)[:top_k]
    out["heads"] = [[int(i // H), int(i % H), round(float(head_ie.reshape(-1)[i]), 5)] for i in flat]
    out["head_ie"] = head_ie
    out["head_position"] = attn_peak["position"]
    if mlp_peak is not None:
        top = neuron_scores.argsort(descending=True)[:top_k].tolist()
        hk, layer = f"blocks.{mlp_peak['layer']}.mlp.hook_post", mlp_peak["layer"]
        exact = torch.zeros(len(top))
        for pairs, corrupt, cc, cx, p_corrupt, npos in runs:  # restore each top neuron exactly, batched
            cells = [Cell(hk, layer, position=npos, neurons=(nidx,)) for nidx in top]
            per, _ = run_cells(model, pairs, cells, corrupt, cc, cx)
            exact += (per.mean(-1) - p_corrupt) / len(facts)
        out["neurons"] = [
            [mlp_peak["layer"], int(nidx), round(float(neuron_scores[nidx]), 6), round(float(e), 6)]
            for nidx, e in zip(top, exact)
        ]
        out["neuron_layer"], out["neuron_position"] = mlp_peak["layer"], mlp_peak["position"]
    return out
