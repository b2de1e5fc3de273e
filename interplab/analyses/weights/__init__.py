"""Attention heads read off their weights alone (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits", https://transformer-circuits.pub/2021/framework/index.html; TransformerLens's conventions,
``HookedTransformer.all_composition_scores``, ``FactoredMatrix``).

- :mod:`~interplab.analyses.weights.composition`: Q-, K-, V-composition between heads, with a random baseline;
- :mod:`~interplab.analyses.weights.svd`: OV and QK circuits by SVD, read in token space (:func:`head_circuits`);
- :mod:`~interplab.analyses.weights.copying`: the copying score (rank of the attended token in its own OV
  output, with a rotation null), one implementation, also used by the head detectors; Elhage et al.'s
  eigenvalue ratio for reference.

Weights follow TransformerLens's layout (``W_Q, W_K, W_V [H, d_model, d_head]``, ``W_O [H, d_head, d_model]``,
row-vector residual stream ``x @ W``); norms are folded in by :mod:`interplab.models.folding`.

>>> comp = composition_scores(model)
>>> circ = head_circuits(model)
"""

from interplab.analyses.weights.composition import (
    KINDS,
    CompositionKind,
    CompositionMethod,
    CompositionResult,
    composition_scores,
    random_composition_baseline,
)
from interplab.analyses.weights.copying import (
    OVCopying,
    copying_fractions,
    copying_members,
    copying_ratio,
    eigenvalue_copying,
    ov_copying,
    ov_eigenvalues,
)
from interplab.analyses.weights.svd import Circuit, HeadCircuitsResult, factored_svd, head_circuits, head_svds

__all__ = [
    "KINDS",
    "Circuit",
    "CompositionKind",
    "CompositionMethod",
    "CompositionResult",
    "HeadCircuitsResult",
    "OVCopying",
    "composition_scores",
    "copying_fractions",
    "copying_members",
    "copying_ratio",
    "eigenvalue_copying",
    "factored_svd",
    "head_circuits",
    "head_svds",
    "ov_copying",
    "ov_eigenvalues",
    "random_composition_baseline",
]
