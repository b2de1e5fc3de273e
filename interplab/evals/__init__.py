"""Behavioural evals on Inspect AI: the ``interplab`` model provider (:mod:`.provider`), log-likelihood multiple
choice (:mod:`.loglik`), the built-in tasks (:mod:`.tasks`), their statistics (:mod:`.analysis`) and running them
(:mod:`.run`). Importing the package registers the provider with Inspect (as the entry point does)."""

from interplab.evals import _registry as _registry
