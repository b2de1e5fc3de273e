"""Causal analyses: interventions on runs, on one engine (:mod:`~interplab.analyses.causal.engine`).

- :mod:`~interplab.analyses.causal.engine`: cells, clean/corrupt baselines, the END metric, patched runs with a
  layer's variants stacked from the cached residual stream, gradients at hook points.
- :mod:`~interplab.analyses.causal.patching`: activation patching (Meng et al. 2022; Wang et al. 2022;
  Heimersheim & Nanda 2024).
- :mod:`~interplab.analyses.causal.attribution`: attribution patching (Nanda 2023; Syed et al. 2023).
- :mod:`~interplab.analyses.causal.path_patching`: path patching (Wang et al. 2022).
- :mod:`~interplab.analyses.causal.ablation`: head-ablation importance on text (Michel et al. 2019; Olsson et
  al. 2022).
- :mod:`~interplab.analyses.causal.tracing`: causal tracing of factual recall (Meng et al. 2022).
- :mod:`~interplab.analyses.causal.circuits`: ACDC-style circuit discovery (Conmy et al. 2023).
- :mod:`~interplab.analyses.causal.edges`: edge attribution patching, EAP and EAP-IG (Syed et al. 2023; Hanna et
  al. 2024), with the graph in :mod:`~interplab.analyses.causal.edge_graph` and exact edge patching and
  edge-circuit faithfulness in :mod:`~interplab.analyses.causal.edge_patching`.
- :mod:`~interplab.analyses.causal.ioi`: the IOI procedure (Wang et al. 2022).
"""

from interplab.analyses.causal.ablation import (
    HeadAblationResult,
    InductionAblationComparison,
    compare_induction_ablation,
    head_ablation_importance,
    induction_scores,
)
from interplab.analyses.causal.attribution import attribution_patching
from interplab.analyses.causal.circuits import CircuitResult, discover_circuit
from interplab.analyses.causal.edges import EdgeAttributionResult, edge_attribution_patching, exact_edge_patching
from interplab.analyses.causal.engine import Cell, baselines, end_metric, probe_gradients, run_cells
from interplab.analyses.causal.ioi import IOIResult, ioi_circuit
from interplab.analyses.causal.patching import PatchingResult, activation_patching, correlation, make_cells
from interplab.analyses.causal.path_patching import PathPatchingResult, path_patching
from interplab.analyses.causal.tracing import FactTrace, TracingResult, causal_tracing, refine, trace_fact

__all__ = [
    "Cell",
    "CircuitResult",
    "EdgeAttributionResult",
    "FactTrace",
    "HeadAblationResult",
    "IOIResult",
    "InductionAblationComparison",
    "PatchingResult",
    "PathPatchingResult",
    "TracingResult",
    "activation_patching",
    "attribution_patching",
    "baselines",
    "causal_tracing",
    "compare_induction_ablation",
    "correlation",
    "discover_circuit",
    "edge_attribution_patching",
    "end_metric",
    "exact_edge_patching",
    "head_ablation_importance",
    "induction_scores",
    "ioi_circuit",
    "make_cells",
    "path_patching",
    "probe_gradients",
    "refine",
    "run_cells",
    "trace_fact",
]
