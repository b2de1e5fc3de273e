"""Checkpoint series: the per-token losses of a list of checkpoints in training order on one text, and the steps
at which they change abruptly — the induction-head phase change of Olsson et al. (2022), "In-context Learning
and Induction Heads" (https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/), is
the step where many tokens' losses drop at once.

A *step* ``k`` goes from checkpoint ``k-1`` to ``k``; ``delta_k = loss_k - loss_{k-1}``. A token has an
**abrupt drop** at step ``k`` when ``delta_k < -threshold`` (default 1 nat: its probability grows by more
than e ≈ 2.7x in one step), an abrupt rise when ``delta_k > threshold``. Per step the result counts them
(``drops_per_step``, ``rises_per_step``); the *phase-change step* is the step with the most drops. Each
token also gets an *abruptness* — its largest single-step change over the summed absolute changes along
the series (1: everything happened in one step). All checkpoints share one tokenizer.

>>> series = diff_checkpoints(["run/ckpt-0", "run/ckpt-1000", "run/ckpt-2000"], threshold=1.0)
>>> series.headline()["phase_change_step"]
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.diffing.alignment import (
    ModelLike,
    as_model,
    model_label,
    prepare_tokens,
    series_losses,
    source_label,
    token_units,
)
from interplab.analyses.diffing.models import DiffResult, plot_escape, records, rounded, units_frame
from interplab.io.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["CheckpointSeriesResult", "EventKind", "diff_checkpoints"]

EventKind = Literal["drop", "rise", "both"]
SeriesFrame = Literal["steps", "events", "losses", "tokens"]
SeriesPlot = Literal["both", "steps", "trajectories"]
LOSSES_TABLE = "checkpoint_losses.parquet"


@dataclass
class CheckpointSeriesResult(Result):
    """Per-token losses of a series of checkpoints (in training order) on one text: ``losses``
    ``[n_checkpoints, n_units]``; unit columns as :class:`DiffResult`. Step ``k`` (1..n-1) goes from
    checkpoint ``k-1`` to ``k``; see the module docstring for the definitions of drops, rises and abruptness."""

    names: list[str]
    chunk: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor
    tokens: list[str]
    contexts: list[str]
    losses: torch.Tensor
    threshold: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "checkpoint_series"
    FILE: ClassVar[str] = "checkpoints.json"
    TABLES: ClassVar[dict[str, str]] = {LOSSES_TABLE: "losses"}  # one row per unit, a loss_<k> column per checkpoint

    @property
    def n_checkpoints(self) -> int:
        return int(self.losses.shape[0])

    @property
    def deltas(self) -> torch.Tensor:
        """``[n_steps, n_units]``: ``loss_k - loss_{k-1}`` for steps k = 1..n-1."""
        return self.losses[1:] - self.losses[:-1]

    @property
    def drops_per_step(self) -> list[int]:
        return (self.deltas < -self.threshold).sum(-1).tolist()

    @property
    def rises_per_step(self) -> list[int]:
        return (self.deltas > self.threshold).sum(-1).tolist()

    @property
    def mean_loss(self) -> list[float]:
        return self.losses.double().mean(-1).tolist()

    @property
    def abruptness(self) -> torch.Tensor:
        """``[n_units]``: largest single-step ``|delta|`` over the summed ``|delta|`` (nan where nothing changed)."""
        a = self.deltas.abs().double()
        tot = a.sum(0)
        return torch.where(tot > 0, a.max(0).values / tot.clamp_min(1e-300), torch.full_like(tot, float("nan")))

    def phase_change_step(self) -> dict[str, Any] | None:
        """The step with the most abrupt drops (None when no token drops by more than the threshold)."""
        drops = self.drops_per_step
        if not drops or max(drops) == 0:
            return None
        k = int(max(range(len(drops)), key=lambda i: (drops[i], -i))) + 1
        n = self.losses.shape[1]
        return {
            "step": k,
            "from": self.names[k - 1],
            "to": self.names[k],
            "n_drops": drops[k - 1],
            "frac_drops": rounded(drops[k - 1] / n),
            "mean_loss_change": rounded(self.deltas[k - 1].double().mean()),
        }

    def events(self, kind: EventKind = "drop") -> pd.DataFrame:
        """One row per abrupt change (``kind``: ``"drop"``, ``"rise"`` or ``"both"``), largest first."""
        import pandas as pd

        if kind not in ("drop", "rise", "both"):
            raise ValueError(f"kind must be 'drop', 'rise' or 'both', not {kind!r}.")
        d = self.deltas
        mask = (
            (d < -self.threshold)
            if kind == "drop"
            else (d > self.threshold)
            if kind == "rise"
            else (d.abs() > self.threshold)
        )
        steps, units = mask.nonzero(as_tuple=True)
        ab = self.abruptness
        rows = {
            "step": (steps + 1).tolist(),
            "from": [self.names[s] for s in steps.tolist()],
            "to": [self.names[s + 1] for s in steps.tolist()],
            "unit": units.tolist(),
            "chunk": self.chunk[units].tolist(),
            "position": self.position[units].tolist(),
            "token_id": self.token_id[units].tolist(),
            "token": [self.tokens[u] for u in units.tolist()],
            "context": [self.contexts[u] for u in units.tolist()],
            "loss_before": self.losses[steps, units].tolist(),
            "loss_after": self.losses[steps + 1, units].tolist(),
            "delta": d[steps, units].tolist(),
            "abruptness": ab[units].tolist(),
        }
        df = pd.DataFrame(rows)
        if len(df):
            df = (
                df.assign(_abs=df["delta"].abs())
                .sort_values("_abs", ascending=False, kind="stable")
                .drop(columns="_abs")
            )
        return df.reset_index(drop=True)

    def token_table(self) -> pd.DataFrame:
        """Per token type: occurrences, number of abrupt drops, the step with most of them, first and last mean loss."""
        import pandas as pd

        ev = self.events("drop")
        base = pd.DataFrame(
            {
                "token_id": self.token_id.tolist(),
                "token": self.tokens,
                "loss_first": self.losses[0].double().numpy(),
                "loss_last": self.losses[-1].double().numpy(),
            }
        )
        agg = (
            base.groupby(["token_id", "token"], sort=False)
            .agg(
                count=("loss_first", "size"),
                mean_loss_first=("loss_first", "mean"),
                mean_loss_last=("loss_last", "mean"),
            )
            .reset_index()
        )
        if len(ev):
            by_step: Any = ev.groupby(["token_id", "token", "step"]).size()
            by = by_step.rename("n").reset_index()
            best = by.sort_values(["n", "step"], ascending=[False, True]).drop_duplicates(["token_id", "token"])
            by_token: Any = ev.groupby(["token_id", "token"]).size()
            tot = by_token.rename("n_drops").reset_index()
            agg = agg.merge(tot, how="left", on=["token_id", "token"]).merge(
                best.rename(columns={"step": "main_step", "n": "drops_at_main_step"}),
                how="left",
                on=["token_id", "token"],
            )
        else:
            agg = agg.assign(n_drops=0, main_step=pd.NA, drops_at_main_step=0)
        agg["n_drops"] = agg["n_drops"].fillna(0).astype(int)
        agg["drops_at_main_step"] = agg["drops_at_main_step"].fillna(0).astype(int)
        return agg.sort_values(["n_drops", "count"], ascending=[False, False], kind="stable").reset_index(drop=True)

    def pair(self, i: int = 0, j: int = -1) -> DiffResult:
        """The two-model diff between checkpoints ``i`` (A) and ``j`` (B) — no recomputation."""
        return DiffResult(
            model_a=self.names[i],
            model_b=self.names[j],
            mode="tokens",
            chunk=self.chunk,
            position=self.position,
            token_id=self.token_id,
            tokens=self.tokens,
            contexts=self.contexts,
            loss_a=self.losses[i],
            loss_b=self.losses[j],
            settings={k: v for k, v in self.settings.items() if k != "names"},
        )

    def headline(self, k: int = 10) -> dict[str, Any]:
        ev = self.events("drop").head(k)
        tt = self.token_table()
        tt = tt[tt["n_drops"] > 0].head(k)
        return {
            "checkpoints": self.names,
            "n_checkpoints": self.n_checkpoints,
            "n_units": int(self.losses.shape[1]),
            "threshold": self.threshold,
            "mean_loss": [rounded(x) for x in self.mean_loss],
            "drops_per_step": self.drops_per_step,
            "rises_per_step": self.rises_per_step,
            "phase_change_step": self.phase_change_step(),
            "top_drops": [
                {
                    "step": int(r.step),
                    "token": r.token,
                    "context": r.context,
                    "loss_before": rounded(r.loss_before),
                    "loss_after": rounded(r.loss_after),
                    "delta": rounded(r.delta),
                    "abruptness": rounded(r.abruptness),
                }
                for r in records(ev)
            ],
            "top_tokens": [
                {
                    "token": r.token,
                    "token_id": int(r.token_id),
                    "count": int(r.count),
                    "n_drops": int(r.n_drops),
                    "main_step": int(r.main_step),
                    "drops_at_main_step": int(r.drops_at_main_step),
                }
                for r in records(tt)
            ],
        }

    def to_frame(self, which: SeriesFrame = "steps") -> pd.DataFrame:
        """``"steps"``: one row per step (drops, rises, mean loss before/after); ``"events"``: abrupt drops and
        rises; ``"losses"``: one row per unit with a ``loss_<k>`` column per checkpoint; ``"tokens"``: per token
        type."""
        import pandas as pd

        if which == "steps":
            ml = self.mean_loss
            return pd.DataFrame(
                {
                    "step": list(range(1, self.n_checkpoints)),
                    "from": self.names[:-1],
                    "to": self.names[1:],
                    "drops": self.drops_per_step,
                    "rises": self.rises_per_step,
                    "mean_loss_before": ml[:-1],
                    "mean_loss_after": ml[1:],
                }
            )
        if which == "events":
            return self.events("both")
        if which == "losses":
            df = pd.DataFrame(
                units_frame(
                    self.chunk.tolist(), self.position.tolist(), self.token_id.tolist(), self.tokens, self.contexts
                )
            )
            for c in range(self.n_checkpoints):
                df[f"loss_{c}"] = self.losses[c].numpy()
            return df
        if which == "tokens":
            return self.token_table()
        raise ValueError(f"which must be 'steps', 'events', 'losses' or 'tokens', not {which!r}.")

    def plot(self, kind: SeriesPlot = "both", k: int = 12) -> go.Figure:
        """``"steps"``: abrupt drops (down) and rises (up) per step with the mean loss per checkpoint;
        ``"trajectories"``: loss across checkpoints of the ``k`` largest drops; ``"both"`` (default): side by side."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "steps", "trajectories"):
            raise ValueError(f"kind must be 'both', 'steps' or 'trajectories', not {kind!r}.")
        steps = [f"{s}" for s in range(1, self.n_checkpoints)]
        drops = go.Bar(
            x=steps,
            y=[-x for x in self.drops_per_step],
            name=f"drops > {self.threshold:g} nats",
            marker={"color": "#54a24b"},
            hovertemplate="step %{x}<br>%{y} tokens<extra></extra>",
        )
        rises = go.Bar(
            x=steps,
            y=self.rises_per_step,
            name=f"rises > {self.threshold:g} nats",
            marker={"color": "#e45756"},
            hovertemplate="step %{x}<br>%{y} tokens<extra></extra>",
        )
        ev = self.events("drop").drop_duplicates("unit").head(k)
        xs = [plot_escape(n) for n in self.names]
        traj = [
            go.Scatter(
                x=list(range(self.n_checkpoints)),
                y=self.losses[:, u].tolist(),
                mode="lines+markers",
                name=f"{plot_escape(t)} @{c}:{p}",
                customdata=xs,
                hovertemplate="%{customdata}<br>loss %{y:.3f}<extra>" + plot_escape(t) + "</extra>",
            )
            for u, t, c, p in zip(ev["unit"], ev["token"], ev["chunk"], ev["position"])
        ]
        title = "Abrupt per-token loss changes between consecutive checkpoints"
        if kind == "steps":
            fig = go.Figure([drops, rises])
            fig.update_layout(barmode="relative")
            fig.update_xaxes(title_text="step (checkpoint k-1 → k)")
            fig.update_yaxes(title_text="tokens")
        elif kind == "trajectories":
            fig = go.Figure(traj)
            fig.update_xaxes(title_text="checkpoint")
            fig.update_yaxes(title_text="loss (nats)")
        else:
            fig = make_subplots(
                rows=1, cols=2, subplot_titles=("drops / rises per step", "largest drops: loss over checkpoints")
            )
            fig.add_trace(drops, row=1, col=1)
            fig.add_trace(rises, row=1, col=1)
            for tr in traj:
                fig.add_trace(tr, row=1, col=2)
            fig.update_layout(barmode="relative")
            fig.update_xaxes(title_text="step (checkpoint k-1 → k)", row=1, col=1)
            fig.update_yaxes(title_text="tokens", row=1, col=1)
            fig.update_xaxes(title_text="checkpoint", row=1, col=2)
            fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
        fig.update_layout(title={"text": title}, height=420, margin={"l": 60, "r": 20, "t": 70, "b": 60})
        return fig


def diff_checkpoints(
    models: Sequence[ModelLike],
    *,
    source: str | Path | None = None,
    text: str | None = None,
    tokens=None,
    n_chunks: int | None = 16,
    chunk_len: int = 128,
    prepend_bos: bool | None = None,
    threshold: float = 1.0,
    context: int = 10,
    batch_size: int = 8,
) -> CheckpointSeriesResult:
    """Per-token losses of a series of checkpoints (training order) on one text, and the steps at which
    tokens' losses change abruptly (phase changes; see the module docstring).

    ``models``: Models or names/directories (loaded one at a time, so a long series fits in memory).
    All checkpoints must share the first one's tokenizer (checked on the text). Other arguments as
    :func:`diff_models`; ``threshold`` in nats."""
    models = list(models)
    if len(models) < 2:
        raise ValueError(
            f"a checkpoint series needs at least 2 checkpoints (3 or more to see a phase change), got {len(models)}."
        )
    if not threshold > 0:
        raise ValueError(f"threshold must be positive (nats), got {threshold}.")
    first, loaded = as_model(models[0])
    try:
        t, use_bos, s = prepare_tokens(first, source, text, tokens, n_chunks, chunk_len, prepend_bos)
        units = token_units(first.tokenizer, t, use_bos, context)
        losses = series_losses(models, t, batch_size, first=first, text=s, prepend_bos=prepend_bos)
    finally:
        if loaded:
            del first
            gc.collect()
    names = [model_label(m) for m in models]
    settings = {
        "source": source_label(source, text, tokens),
        "n_chunks": int(t.shape[0]),
        "chunk_len": int(t.shape[1]),
        "prepend_bos": use_bos,
        "context": context,
        "threshold": threshold,
        "min_count": 3,
        "loss": "next-token cross-entropy (nats)",
        "event": "abrupt drop at step k: loss_k - loss_{k-1} < -threshold (rise: > threshold)",
        "method": "per-token loss across checkpoints (Olsson et al. 2022)",
    }
    return CheckpointSeriesResult(
        names=names,
        chunk=torch.tensor(units.chunk, dtype=torch.long),
        position=torch.tensor(units.position, dtype=torch.long),
        token_id=torch.tensor(units.token_id, dtype=torch.long),
        tokens=units.token,
        contexts=units.context,
        losses=losses.float(),
        threshold=float(threshold),
        settings=settings,
    )
