"""Weight-based analyses (:mod:`interplab.analyses.weights`) as HTML: composition scores beside their
random baseline (Elhage et al. 2021) and the OV circuits' copying scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interplab.analyses.observational.lens import display_token
from interplab.report.html import Html, figure, heading, table, text

if TYPE_CHECKING:
    from interplab.analyses.weights import CompositionResult, HeadCircuitsResult

__all__ = ["weights_parts"]


def weights_parts(comp: CompositionResult, circ: HeadCircuitsResult) -> list[Html]:
    """The model report's section: K-composition plot, the top pairs of each kind, copying scores."""
    rows: list[dict[str, Any]] = []
    for kind in comp.kinds:
        for l1, h1, l2, h2, score, z in comp.top_pairs(kind, 5):
            rows.append(
                {
                    "kind": kind,
                    "writer": f"{l1}.{h1}",
                    "reader": f"{l2}.{h2}",
                    "score": score,
                    "z vs random": z,
                    "random baseline": f"{comp.baseline_mean[kind]:.4f} ± {comp.baseline_std[kind]:.4f}",
                }
            )
    cop = [
        {
            "head": f"{a}.{b}",
            "copying": c,
            "reads": ", ".join(map(display_token, circ.tokens(a, b)["read+"][:5])),
            "writes": ", ".join(map(display_token, circ.tokens(a, b)["write+"][:5])),
        }
        for a, b, c in circ.top_copying(8)
    ]
    return [
        text(
            "Composition (Elhage et al. 2021): ||W_OV(writer) · W_QK/OV(reader)||_F normalised, next to the same "
            "score for random matrices of the same shapes; norm weights folded in, K/V expanded per query head."
        ),
        figure(comp.plot("K")),
        table(rows),
        heading("Copying scores of the OV circuits (Σλ / Σ|λ| of W_E W_OV W_U)"),
        figure(circ.plot("copying")),
        table(cop),
    ]
