"""A plotly figure's traces, typed for the tests."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def traces(fig: go.Figure) -> tuple[Any, ...]:
    """``fig.data``: plotly documents it as a tuple of traces but leaves it unannotated (pyright infers a
    Figure from its ``self["data"]``), and a trace's attributes (``type``, ``z``, …) are set dynamically."""
    data = fig.data
    assert isinstance(data, tuple)
    return data
