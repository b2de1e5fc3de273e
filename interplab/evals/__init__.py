"""Behavioural evals on Inspect AI: what a model *does*, with error bars (framing, "X and truthful", harmful
requests). ``datasets`` loads and validates the built-in item sets and templates (or a user's file), ``classify``
turns a generated answer into a label; the ``interplab`` model provider (:mod:`.provider`), log-likelihood multiple
choice (:mod:`.loglik`), the built-in tasks (:mod:`.tasks`), their statistics (:mod:`.analysis`) and running them
(:mod:`.run`) build on them. Importing the package registers the provider with Inspect (as the entry point does)."""

from interplab.evals import _registry as _registry
