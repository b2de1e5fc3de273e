"""Analyses: plain functions of a model (and a task) that return a typed Result (:class:`interplab.io.results.Result`).

Rooms, by research question:

- ``weights``: what the weights say without running the model (composition, OV/QK SVD, copying);
- ``observational``: what a clean run shows (logit lens, logit PCA, direct logit attribution, head detectors);
- ``causal``: what changes under interventions (patching, path patching, ablation, causal tracing, circuits, IOI);
- ``diffing``: two models, or checkpoints of one, on the same text;
- ``representations``: probes, CCS, concept erasure;
- ``sae``: sparse autoencoders with their metrics and controls.
"""
