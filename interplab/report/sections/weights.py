"""Weight-based analyses (:mod:`interplab.analyses.weights`) as HTML: composition scores beside their
random baseline (Elhage et al. 2021) and the OV circuits' copying scores (top-k token fractions, with Elhage et
al.'s eigenvalue ratio beside them for reference)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interplab.analyses.observational.lens import display_token
from interplab.analyses.weights.copying import MIN_SCORE, NULL_MARGIN
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
            "copy suppression": round(float(circ.copy_suppression[a, b]), 4),
            "eigenvalue ratio": round(float(circ.eigenvalue_copying[a, b]), 4),
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
        heading("Copying scores of the OV circuits"),
        text(
            f"Copying: the fraction of {circ.settings.get('copying_tokens', 'the sampled')} sampled tokens whose own "
            f"logit is among the {circ.settings.get('copying_k', 'k')} largest of the head's direct-path OV output "
            "W_E[t] W_OV W_U over the full vocabulary (copy suppression: smallest; McDougall et al. 2023). Null: the "
            f"largest score of any head with a random rotation between W_V and W_O — copying "
            f"{circ.null_max['copying']:.3f}, copy suppression {circ.null_max['copy_suppression']:.3f}. Members "
            f"(score ≥ {MIN_SCORE} and ≥ null + {NULL_MARGIN}): {len(circ.members('copying'))} copying, "
            f"{len(circ.members('copy_suppression'))} copy suppression. The eigenvalue ratio Σλ / Σ|λ| (Elhage et "
            "al. 2021) is shown for reference; it saturates near ±1 with a large vocabulary."
        ),
        figure(circ.plot("copying")),
        table(cop),
    ]
