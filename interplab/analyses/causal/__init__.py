"""Causal analyses: interventions on runs (patching, path patching, ablation, causal tracing, circuit discovery, IOI)."""
