"""Observational analyses: what a clean run of the model shows (logit lens, logit PCA, direct logit attribution,
head detectors)."""
