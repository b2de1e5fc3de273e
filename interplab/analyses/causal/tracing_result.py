"""The result of causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME,
§2.1): one fact's trace (:class:`FactTrace`), the token classes of ROME's Figure 2 (:data:`BUCKETS`,
:func:`bucket_of`), the average indirect effect over facts (:func:`average_indirect_effect`) and
:class:`TracingResult` with its peaks and the late last-token window. The procedure is
:func:`interplab.analyses.causal.tracing.causal_tracing`; the definitions are in its module's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.io.results import Result, nan_to_none

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "BUCKETS",
    "KINDS",
    "LATE_FRACTION",
    "SUBJECT_BUCKETS",
    "Corruption",
    "FactTrace",
    "Kind",
    "TracingResult",
    "average_indirect_effect",
    "bucket_of",
]


BUCKETS = ("subject_first", "subject_middle", "subject_last", "first_subsequent", "further", "last")
SUBJECT_BUCKETS = ("subject_first", "subject_middle", "subject_last")
"""The token classes of the subject's own tokens: where the headline residual ``peak`` is looked for."""
LATE_FRACTION = 0.5
"""The late last-token window: final layers where restoring the last token's residual restores at least this
fraction of the total effect (see the docstring of :mod:`~interplab.analyses.causal.tracing`)."""
Kind = Literal["resid", "mlp", "attn"]
"""The restored state: the residual stream after a layer, or the MLP / attention output over a window."""
KINDS: tuple[Kind, ...] = ("resid", "mlp", "attn")
Corruption = Literal["noise", "resample"]
"""``noise``: Gaussian noise on the subject's embeddings (ROME); ``resample``: another subject's tokens."""


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
    ``trivial`` in the late last-token window (:meth:`headline`, the docstring of
    :mod:`~interplab.analyses.causal.tracing`)."""

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
        """The layers of the trivial late last-token window (see the docstring of
        :mod:`~interplab.analyses.causal.tracing`): the longest run of final layers ``L`` in which restoring the
        residual stream at the last token restores at least ``fraction`` of the mean total effect,
        AIE_resid(L, last) ≥ ``fraction`` × TE. The last layer always belongs to it (restoring its output restores
        the clean output exactly); it is the whole window when the corruption did not lower p(answer) (TE ≤ 0).
        Empty without a residual map."""
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
