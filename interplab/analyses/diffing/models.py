"""Two-model diff: the per-token loss of two models on the same text, and where they differ (Olsson et al.
2022, "In-context Learning and Induction Heads", https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/,
compare models and checkpoints through their per-token losses on a fixed set of tokens).

The loss of token ``t_p`` is the next-token cross-entropy ``-log softmax(logits[p-1])[t_p]`` in nats; the
first token of a chunk without BOS has no loss. The **difference** of a token is ``diff = loss_b - loss_a``:
positive where model A predicts the token better, negative where model B does.

**What the result holds** (:class:`DiffResult`): the losses of every token; the distribution of the
differences (histogram, quantiles); the contexts where they differ most in both directions (the token with
its ``context`` preceding tokens); and the differences aggregated by token type (per vocabulary item: count,
mean losses, mean and total difference). ``top_tokens`` ranks vocabulary items with at least
``min_count`` occurrences by ``|mean diff|``.

**Tokenizers.** The main path needs both models to tokenize the text identically ("same tokenizer":
the two tokenizers give the same ids for the whole text and follow the same BOS convention). When they do
not, ``alignment="auto"`` (the default) aligns on text (:mod:`interplab.analyses.diffing.alignment`) rather
than refusing. In that mode ``mode == "text"``, units take the place of tokens (``token_id`` is -1,
``top_tokens`` aggregates by the unit's text), ``mean_loss_*`` are nats per unit and the headline adds nats
per character. ``alignment="tokens"`` refuses models whose tokenizers differ (``ValueError``);
``alignment="text"`` forces the text path (on identical tokenizers it reproduces the token path: every cut
is common).

>>> res = diff_models("smollm2-135m", "path/to/finetuned", n_chunks=16)
>>> res.headline()["top_tokens"][:3]
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch

from interplab.analyses.diffing.alignment import (
    ALIGNMENTS,
    Alignment,
    ModelLike,
    aligned_units,
    analysed_text,
    as_model,
    get_text,
    model_label,
    prepare_tokens,
    same_tokenizer,
    series_losses,
    source_label,
    token_units,
    uses_bos,
)
from interplab.analyses.observational.lens import display_token
from interplab.io.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "QUANTILES",
    "DiffMode",
    "DiffResult",
    "diff_models",
    "plot_escape",
    "records",
    "rounded",
    "show_context",
    "units_frame",
]

DiffMode = Literal["tokens", "text"]
Direction = Literal["a_better", "b_better"]
DiffFrame = Literal["units", "tokens", "quantiles"]
DiffPlot = Literal["both", "hist", "tokens", "scatter"]
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
UNITS_TABLE = "diff_units.parquet"


def rounded(x: float | torch.Tensor, nd: int = 5) -> float | None:
    """``x`` rounded to ``nd`` digits, None when it is not finite (JSON has no NaN)."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, nd)


def records(df: Any) -> Iterator[Any]:
    """The rows of a DataFrame as named tuples (columns as attributes)."""
    return iter(df.itertuples(index=False))


def plot_escape(s: str) -> str:
    """A token made safe for plotly's HTML-subset text (shown literally)."""
    import html

    return html.escape(display_token(s), quote=False)


def show_context(s: str, width: int = 80) -> str:
    s = s.replace("\r", "\\r").replace("\n", "\u23ce").replace("\t", "\\t")
    return s if len(s) <= width else "\u2026" + s[-width:]


def units_frame(u_chunk, u_pos, u_id, u_tok, u_ctx) -> dict[str, Any]:
    return {"chunk": u_chunk, "position": u_pos, "token_id": u_id, "token": u_tok, "context": u_ctx}


@dataclass
class DiffResult(Result):
    """Per-token (or per aligned unit) losses of two models on the same text.

    Tensors are ``[n_units]``: ``loss_a``, ``loss_b`` (nats), ``chunk`` and ``position`` (where the unit is:
    chunk index and token position in the chunk, or the unit's index in the chunk in text mode) and
    ``token_id`` (-1 in text mode). ``tokens`` / ``contexts``: the unit's string and the text before it
    (up to ``settings["context"]`` tokens or units). ``diff = loss_b - loss_a`` (positive: A better)."""

    model_a: str
    model_b: str
    mode: DiffMode
    chunk: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor
    tokens: list[str]
    contexts: list[str]
    loss_a: torch.Tensor
    loss_b: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "model_diff"
    FILE: ClassVar[str] = "diff.json"
    TABLES: ClassVar[dict[str, str]] = {UNITS_TABLE: "units"}  # one row per unit, for pandas users

    @property
    def diff(self) -> torch.Tensor:
        return self.loss_b - self.loss_a

    @property
    def n_units(self) -> int:
        return int(self.loss_a.numel())

    @property
    def min_count(self) -> int:
        return int(self.settings.get("min_count", 3))

    def quantiles(self, qs: Sequence[float] = QUANTILES) -> dict[str, float]:
        """Quantiles of ``diff`` as ``{"q01": ..., "q50": ..., "q99": ...}``."""
        d = self.diff.double()
        vals = torch.quantile(d, torch.tensor(list(qs), dtype=torch.float64)).tolist()
        return {f"q{round(q * 100):02d}": float(v) for q, v in zip(qs, vals)}

    # ------------------------------------------------------------------ tables
    def token_table(self, min_count: int | None = None) -> pd.DataFrame:
        """Differences aggregated by token type (vocabulary item, or a unit's text in text mode): count,
        mean losses, mean / total / std of ``diff``, sorted by ``|mean_diff|`` (descending);
        rows with fewer than ``min_count`` occurrences are left out."""
        import pandas as pd

        df = pd.DataFrame(
            {
                "token_id": self.token_id.tolist(),
                "token": self.tokens,
                "loss_a": self.loss_a.double().numpy(),
                "loss_b": self.loss_b.double().numpy(),
            }
        )
        df["diff"] = df["loss_b"] - df["loss_a"]
        g = df.groupby(["token_id", "token"], sort=False)
        t = g.agg(
            count=("diff", "size"),
            mean_loss_a=("loss_a", "mean"),
            mean_loss_b=("loss_b", "mean"),
            mean_diff=("diff", "mean"),
            total_diff=("diff", "sum"),
            std_diff=("diff", "std"),
        ).reset_index()
        t = cast("pd.DataFrame", t[t["count"] >= (self.min_count if min_count is None else min_count)])
        t = t.assign(_abs=t["mean_diff"].abs()).sort_values(["_abs", "count"], ascending=[False, False], kind="stable")
        return t.drop(columns="_abs").reset_index(drop=True)

    def top_tokens(
        self, k: int = 10, min_count: int | None = None, direction: Direction | None = None
    ) -> list[dict[str, Any]]:
        """The ``k`` token types with the largest ``|mean diff|`` (``better``: which model predicts them better);
        ``direction="a_better"`` / ``"b_better"`` keeps only those with ``mean diff > 0`` / ``< 0``."""
        t = self.token_table(min_count)
        if direction == "a_better":
            t = t[t["mean_diff"] > 0]
        elif direction == "b_better":
            t = t[t["mean_diff"] < 0]
        elif direction is not None:
            raise ValueError(f"direction must be None, 'a_better' or 'b_better', not {direction!r}.")
        rows = []
        for r in records(t.head(k)):
            rows.append(
                {
                    "token": r.token,
                    "token_id": int(r.token_id),
                    "count": int(r.count),
                    "mean_loss_a": rounded(r.mean_loss_a),
                    "mean_loss_b": rounded(r.mean_loss_b),
                    "mean_diff": rounded(r.mean_diff),
                    "total_diff": rounded(r.total_diff),
                    "better": "A" if r.mean_diff > 0 else ("B" if r.mean_diff < 0 else "same"),
                }
            )
        return rows

    def top_contexts(self, k: int = 10) -> dict[str, list[dict[str, Any]]]:
        """The ``k`` single occurrences where A is much better (largest ``diff``) and where B is (smallest)."""
        d = self.diff
        out = {}
        for key, order in (
            ("a_better", torch.argsort(d, descending=True, stable=True)),
            ("b_better", torch.argsort(d, stable=True)),
        ):
            rows = []
            for i in order[:k].tolist():
                di = float(d[i])
                if (key == "a_better" and di <= 0) or (key == "b_better" and di >= 0):
                    break
                rows.append(
                    {
                        "chunk": int(self.chunk[i]),
                        "position": int(self.position[i]),
                        "token": self.tokens[i],
                        "context": self.contexts[i],
                        "loss_a": rounded(self.loss_a[i]),
                        "loss_b": rounded(self.loss_b[i]),
                        "diff": rounded(di),
                    }
                )
            out[key] = rows
        return out

    def headline(self, k: int = 10) -> dict[str, Any]:
        """Mean losses, the distribution of ``diff`` and the top token types and contexts."""
        d = self.diff.double()
        h: dict[str, Any] = {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "mode": self.mode,
            "n_units": self.n_units,
            "n_chunks": int(self.chunk.max()) + 1 if self.n_units else 0,
            "mean_loss_a": rounded(self.loss_a.double().mean()),
            "mean_loss_b": rounded(self.loss_b.double().mean()),
            "mean_diff": rounded(d.mean()),
            "std_diff": rounded(d.std()) if self.n_units > 1 else 0.0,
            "frac_a_better": rounded((d > 0).double().mean()),
            "frac_b_better": rounded((d < 0).double().mean()),
            "quantiles": {key: rounded(v) for key, v in self.quantiles().items()},
            "top_tokens": self.top_tokens(k),
            "top_tokens_by_direction": {d: self.top_tokens(min(k, 5), direction=d) for d in ("a_better", "b_better")},
            "top_contexts": self.top_contexts(min(k, 5)),
            "min_count": self.min_count,
        }
        if self.mode == "text" and self.settings.get("n_chars"):
            n_chars = self.settings["n_chars"]
            h["nats_per_char_a"] = rounded(self.loss_a.double().sum() / n_chars)
            h["nats_per_char_b"] = rounded(self.loss_b.double().sum() / n_chars)
        return h

    def to_frame(self, which: DiffFrame = "units") -> pd.DataFrame:
        """``"units"``: one row per token (unit) with its losses and ``diff``; ``"tokens"``: aggregated by
        token type (all of them, ``min_count=1``); ``"quantiles"``: the quantiles of ``diff``."""
        import pandas as pd

        if which == "units":
            df = pd.DataFrame(
                units_frame(
                    self.chunk.tolist(), self.position.tolist(), self.token_id.tolist(), self.tokens, self.contexts
                )
            )
            df["loss_a"] = self.loss_a.numpy()
            df["loss_b"] = self.loss_b.numpy()
            df["diff"] = self.diff.numpy()
            return df
        if which == "tokens":
            return self.token_table(min_count=1)
        if which == "quantiles":
            q = self.quantiles()
            return pd.DataFrame({"quantile": list(q), "diff": list(q.values())})
        raise ValueError(f"which must be 'units', 'tokens' or 'quantiles', not {which!r}.")

    # ------------------------------------------------------------------ plots
    def plot(self, kind: DiffPlot = "both", k: int = 15) -> go.Figure:
        """``"hist"``: histogram of ``diff``; ``"tokens"``: mean diff of the top ``k`` token types;
        ``"scatter"``: loss of A against loss of B per unit; ``"both"`` (default): histogram and token bars."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "hist", "tokens", "scatter"):
            raise ValueError(f"kind must be 'both', 'hist', 'tokens' or 'scatter', not {kind!r}.")
        d = self.diff.tolist()
        a, b = plot_escape(self.model_a), plot_escape(self.model_b)
        hist = go.Histogram(
            x=d,
            nbinsx=80,
            name="diff",
            marker={"color": "#4c78a8"},
            showlegend=False,
            hovertemplate="diff %{x}<br>%{y} units<extra></extra>",
        )
        top = self.token_table().head(k).iloc[::-1]
        bars = go.Bar(
            x=top["mean_diff"].tolist(),
            y=[f"{plot_escape(t)} ({n})" for t, n in zip(top["token"], top["count"])],
            orientation="h",
            showlegend=False,
            marker={"color": ["#e45756" if v > 0 else "#54a24b" for v in top["mean_diff"]]},
            hovertemplate="%{y}<br>mean diff %{x:.3f}<extra></extra>",
        )
        unit = "token" if self.mode == "tokens" else "unit"
        xlab = f"loss B − loss A (nats per {unit}; > 0: A better)"
        title = f"{a} vs {b}: mean loss {self.loss_a.mean():.3f} vs {self.loss_b.mean():.3f} nats per {unit}"
        if kind == "hist":
            fig = go.Figure(hist)
            fig.update_xaxes(title_text=xlab)
            fig.update_yaxes(title_text=f"{unit}s")
        elif kind == "tokens":
            fig = go.Figure(bars)
            fig.update_xaxes(title_text=f"mean diff per {unit} type (count ≥ {self.min_count})")
        elif kind == "scatter":
            fig = go.Figure(
                go.Scattergl(
                    x=self.loss_a.tolist(),
                    y=self.loss_b.tolist(),
                    mode="markers",
                    marker={"size": 3, "opacity": 0.5},
                    text=[plot_escape(t) for t in self.tokens],
                    hovertemplate="%{text}<br>A %{x:.3f}<br>B %{y:.3f}<extra></extra>",
                )
            )
            m = float(max(self.loss_a.max(), self.loss_b.max())) if self.n_units else 1.0
            fig.add_trace(
                go.Scatter(
                    x=[0, m],
                    y=[0, m],
                    mode="lines",
                    line={"dash": "dot", "color": "grey"},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
            fig.update_xaxes(title_text=f"loss {a}")
            fig.update_yaxes(title_text=f"loss {b}")
        else:
            fig = make_subplots(
                rows=1,
                cols=2,
                column_widths=[0.55, 0.45],
                horizontal_spacing=0.22,
                subplot_titles=("distribution of differences", f"top {unit} types by |mean diff|"),
            )
            fig.add_trace(hist, row=1, col=1)
            fig.add_trace(bars, row=1, col=2)
            fig.update_xaxes(title_text=xlab, row=1, col=1)
            fig.update_yaxes(title_text=f"{unit}s", row=1, col=1)
            fig.update_xaxes(title_text="mean diff (nats)", row=1, col=2)
        fig.update_layout(
            title={"text": title},
            height=max(380, 22 * min(k, len(top)) + 160) if kind != "hist" else 380,
            margin={"l": 60, "r": 20, "t": 70, "b": 60},
        )
        return fig


def diff_models(
    model_a: ModelLike,
    model_b: ModelLike,
    *,
    source: str | Path | None = None,
    text: str | None = None,
    tokens=None,
    n_chunks: int | None = 16,
    chunk_len: int = 128,
    prepend_bos: bool | None = None,
    alignment: Alignment = "auto",
    context: int = 10,
    min_count: int = 3,
    batch_size: int = 8,
) -> DiffResult:
    """Per-token losses of two models on the same text, and where they differ (see the module docstring).

    ``source``: ``None``/``"pydoc"`` (the stdlib's pydoc topics) or a UTF-8 text file; ``text``: the text
    itself; ``tokens``: token ids ``[n_chunks, chunk_len]`` instead of text (models without a tokenizer).
    ``n_chunks`` chunks of ``chunk_len`` tokens (``None``: as many as the text holds); ``alignment``:
    ``"auto"`` (tokens when the tokenizers agree on the text, else aligned on text), ``"tokens"`` (refuse
    different tokenizers) or ``"text"``. ``context``: tokens (units) of context kept per occurrence;
    ``min_count``: occurrences a token type needs to enter ``top_tokens``."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, not {alignment!r}.")
    a, loaded_a = as_model(model_a)
    b, loaded_b = as_model(model_b)
    name_a, name_b = model_label(model_a), model_label(model_b)
    settings = {
        "source": source_label(source, text, tokens),
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "prepend_bos": prepend_bos,
        "alignment": alignment,
        "context": context,
        "min_count": min_count,
        "loss": "next-token cross-entropy (nats)",
        "diff": "loss_b - loss_a",
        "method": "per-token loss comparison (Olsson et al. 2022)",
    }
    try:
        if tokens is not None:
            if alignment == "text":
                raise ValueError("alignment='text' needs text, not token ids.")
            t, use_bos, s = prepare_tokens(a, None, None, tokens, n_chunks, chunk_len, prepend_bos)
            mode, why = "tokens", "token ids given"
        else:
            for m in (a, b):
                if m.tokenizer is None:
                    raise ValueError(
                        f"Model {m.name!r} has no tokenizer; give token ids (tokens=[n_chunks, chunk_len]) "
                        "instead of text."
                    )
            s = analysed_text(a, get_text(source, text), n_chunks, chunk_len, uses_bos(a, prepend_bos))
            same, why = same_tokenizer(a, b, s, prepend_bos)
            if alignment == "tokens" and not same:
                raise ValueError(
                    f"the two models' tokenizers differ ({why}). Per-token comparison needs one tokenizer; "
                    "use alignment='auto' or 'text' to compare them on text units instead."
                )
            mode = "tokens" if same and alignment != "text" else "text"
        if mode == "tokens":
            if tokens is None:
                t, use_bos, _ = prepare_tokens(a, None, s, None, n_chunks, chunk_len, prepend_bos)
            units = token_units(a.tokenizer, t, use_bos, context)
            losses = series_losses([a, b], t, batch_size)
            settings.update({"n_chunks": int(t.shape[0]), "chunk_len": int(t.shape[1]), "prepend_bos": use_bos})
        else:
            assert s is not None  # the text path always has the text
            units, losses, info = aligned_units(a, b, s, n_chunks, chunk_len, prepend_bos, context, batch_size)
            settings.update(info)
            settings["char_spans"] = [list(x) for x in info["char_spans"]]
            settings["n_chunks"] = len(info["char_spans"])
        settings["tokenizers"] = why
    finally:
        if loaded_a:
            del a
        if loaded_b:
            del b
        gc.collect()
    return DiffResult(
        model_a=name_a,
        model_b=name_b,
        mode=mode,
        chunk=torch.tensor(units.chunk, dtype=torch.long),
        position=torch.tensor(units.position, dtype=torch.long),
        token_id=torch.tensor(units.token_id, dtype=torch.long),
        tokens=units.token,
        contexts=units.context,
        loss_a=losses[0].float(),
        loss_b=losses[1].float(),
        settings=settings,
    )
