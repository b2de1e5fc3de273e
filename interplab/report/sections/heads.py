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


def _copying_note(res: HeadScores) -> list[Html]:
    """What the copying classes' scores and null are (only when the result has them)."""
    if "copying" not in res.scores:
        return []
    k = res.settings.get("copying_k", "k")
    n = res.settings.get("copying_tokens", "sampled")
    return [
        text(
            f"Copying / copy suppression (from the weights): the fraction of {n} sampled tokens whose own logit is "
            f"among the {k} largest / smallest of the head's direct-path OV output W_E[t] W_OV W_U over the full "
            "vocabulary (McDougall et al. 2023). Their null is the largest score of any head with a random rotation "
            "between W_V and W_O; Elhage et al.'s eigenvalue ratio is kept in heads.json as a reference only (near "
            "±1 for most heads of a large-vocabulary model, it cannot rank them)."
        )
    ]


def heads_parts(res: HeadScores) -> list[Html]:
    """The model report's section (8 repeated random sequences and 8 text chunks)."""
    return [
        text(
            "Head detectors on 8 repeated random sequences and 8 text chunks (interplab heads for more): each "
            "score next to its null baseline; a head is a member of a class when it passes the threshold and beats "
            "the null by the margin. Data: heads.json"
        ),
        *_copying_note(res),
        figure(res.plot()),
        head_classes_table(res),
    ]


def heads_report(res: HeadScores, model_name: str) -> Report:
    """The report of ``interplab heads``."""
    rep = Report(f"Head detectors — {model_name}")
    rep.section("Head detectors", *_copying_note(res), res.plot(), head_classes_table(res, margin=True))
    return rep
