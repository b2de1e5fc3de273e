"""Inspect AI's entry point into interplab (``[project.entry-points.inspect_ai] interplab = ...``): registers the
``interplab`` model provider, so ``inspect eval TASK --model interplab/smollm2-135m`` works from Inspect's own CLI.
The provider class is imported when a model is first built, not when Inspect scans its entry points."""

from __future__ import annotations

from typing import Any

from inspect_ai.model import modelapi


@modelapi(name="interplab")
def interplab() -> Any:
    from interplab.evals.provider import InterplabAPI

    return InterplabAPI


def _register_tasks() -> None:
    """The built-in tasks, so ``inspect eval interplab/framing`` finds them."""
    from interplab.evals import tasks as _tasks  # noqa: F401


_register_tasks()
