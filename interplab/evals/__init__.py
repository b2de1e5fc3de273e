"""Behavioural evals on Inspect AI: what a model *does*, with error bars (framing, "X and truthful", harmful
requests). ``datasets`` loads and validates the built-in item sets and templates (or a user's file), ``classify``
turns a generated answer into a label; the Inspect provider, scorers, tasks and statistics build on them."""
