"""Head detectors (:mod:`interplab.analyses.observational.heads`) as HTML: the score plot and a table of the
head classes with each member's score beside its null baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interplab.report.html import Html, Report, figure, table, text

if TYPE_CHECKING:
    from interplab.analyses.observational.heads import HeadScores

__all__ = ["head_classes_table", "heads_parts", "heads_report"]


def head_classes_table(res: HeadScores, margin: bool = False) -> Html:
    """One row per head class: members, threshold (and the margin over the null, with ``margin``) and the
    five highest-scoring heads as ``layer.head score / null``."""
    rows: list[dict[str, Any]] = []
    for c in res.classes:
        row: dict[str, Any] = {"class": c, "members": len(res.members(c)), "threshold": res.thresholds[c]}
        if margin:
            row["margin"] = res.margins[c]
        row["top (layer.head score / null)"] = ", ".join(f"{a}.{b} {s:.2f} / {n:.2f}" for a, b, s, n in res.top(c, 5))
        rows.append(row)
    return table(rows)


def heads_parts(res: HeadScores) -> list[Html]:
    """The model report's section (8 repeated random sequences and 8 text chunks)."""
    return [
        text(
            "Head detectors on 8 repeated random sequences and 8 text chunks (interplab heads for more): each "
            "score next to its null baseline; a head is a member of a class when it passes the threshold and beats "
            "the null by the margin. Data: heads.json"
        ),
        figure(res.plot()),
        head_classes_table(res),
    ]


def heads_report(res: HeadScores, model_name: str) -> Report:
    """The report of ``interplab heads``."""
    rep = Report(f"Head detectors — {model_name}")
    rep.section("Head detectors", res.plot(), head_classes_table(res, margin=True))
    return rep
