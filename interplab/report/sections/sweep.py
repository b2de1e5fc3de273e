"""A sweep's table (:mod:`interplab.sweeps`) as an HTML report: each numeric headline metric over the grid, the cells'
status, and the errors of failed cells.

Plots: the metric against the first grid key that is not a seed (x), one line per value of the next such key, and
the mean over the remaining keys (seeds, replicas) with each cell's value as a faint point, so the spread over seeds
is visible beside the mean.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from interplab.report.html import Report, figure, table, text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["sweep_report"]

_META = ("cell", "status", "error", "wall_s")
MAX_PLOTS = 8


def _is_seed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("seed", "seeds", "data_seed")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def _metrics(rows: list[dict[str, Any]], columns: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Numeric, non-boolean headline columns that vary over the complete cells (at most :data:`MAX_PLOTS`)."""
    out = []
    for c in columns:
        if c in keys or c in _META:
            continue
        vals = [r.get(c) for r in rows]
        nums = [_number(v) for v in vals]
        if any(v is not None and n is None for v, n in zip(vals, nums, strict=True)):
            continue  # text or booleans
        if len({n for n in nums if n is not None}) > 1:
            out.append(c)
    return out[:MAX_PLOTS]


def _plot(rows: list[dict[str, Any]], metric: str, keys: Sequence[str]) -> Any:
    import plotly.graph_objects as go

    axes = [k for k in keys if not _is_seed(k)] or list(keys)
    x, group = axes[0], (axes[1] if len(axes) > 1 else None)
    by_group: dict[Any, dict[Any, list[float]]] = {}
    for r in rows:
        y = _number(r.get(metric))
        if y is not None:
            by_group.setdefault(None if group is None else r[group], {}).setdefault(r[x], []).append(y)
    fig = go.Figure()
    for g, points in by_group.items():
        label = metric if group is None else f"{group}={g}"
        xs = [str(v) for v in points]
        fig.add_trace(
            go.Scatter(x=xs, y=[statistics.fmean(ys) for ys in points.values()], mode="lines+markers", name=label)
        )
        if any(len(ys) > 1 for ys in points.values()):  # several cells per point (seeds): each beside the mean
            fig.add_trace(
                go.Scatter(
                    x=[str(v) for v, ys in points.items() for _ in ys],
                    y=[y for ys in points.values() for y in ys],
                    mode="markers",
                    marker={"size": 5, "opacity": 0.35},
                    name=f"{label} (cells)",
                    showlegend=False,
                )
            )
    fig.update_layout(
        title=metric, xaxis_title=x, yaxis_title=metric, height=340, margin={"l": 50, "r": 20, "t": 40, "b": 40}
    )
    fig.update_xaxes(type="category")
    return fig


def sweep_report(df: pd.DataFrame, keys: Sequence[str], command: str) -> Report:
    """The report of ``interplab sweep``: one plot per varying numeric metric (:data:`MAX_PLOTS` at most), the
    cells' table and the failed cells' errors. ``df`` is the sweep's table, ``keys`` its grid keys."""
    rows = df.to_dict("records")
    done = [r for r in rows if r["status"] == "complete"]
    counts = Counter(r["status"] for r in rows)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    rep = Report(f"Sweep: interplab {command}", f"{len(rows)} cells over {', '.join(keys)} — {summary}")
    metrics = _metrics(done, [str(c) for c in df.columns], keys)
    if metrics:
        rep.section("Metrics over the grid", *[figure(_plot(done, m, keys)) for m in metrics])
    else:
        rep.section("Metrics over the grid", text("No numeric headline value varies over the complete cells."))
    shown = [*keys, "status", "wall_s", *metrics]
    rep.section("Cells", table(df[shown], max_rows=500))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        rep.section("Failed cells", table(failed, columns=[*keys, "cell", "error"]))
    return rep
