"""Causal tracing (Meng et al. 2022; :mod:`interplab.analyses.causal.tracing`) as HTML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from interplab.report.html import Report, table

if TYPE_CHECKING:
    from interplab.analyses.causal.tracing import TracingResult

__all__ = ["tracing_report"]


def tracing_report(
    res: TracingResult, model_name: str, corruption: str, refined: Mapping[str, Any] | None = None
) -> Report:
    """The report of ``interplab trace``: the average indirect effect, the first fact, and the heads and
    neurons of the peaks (``refined``, from :func:`~interplab.analyses.causal.tracing.refine`) when given."""
    rep = Report(f"Causal tracing — {model_name}", f"{len(res.traces)} fact(s), corruption {corruption}")
    rep.section("Average indirect effect", res.plot(), id="aie")
    rep.section("One fact", res.fact_plot(0), id="fact")
    if refined is not None:
        import pandas as pd

        parts = [table(pd.DataFrame(refined["heads"], columns=["layer", "head", "IE"]))]
        if refined.get("neurons"):
            parts.append(table(pd.DataFrame(refined["neurons"], columns=["layer", "neuron", "attribution", "IE"])))
        rep.section("Heads and neurons", *parts, id="refine")
    return rep
