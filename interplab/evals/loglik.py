"""Log-likelihood multiple choice for Inspect: a solver that scores every choice by its log-probability and a scorer
with ``acc`` and ``acc_norm``, as lm-evaluation-harness defines them (Gao et al. 2021-2024, ``multiple_choice``
output type):

- ``acc``: the choice with the largest summed log-probability ``Σ_t log p(c_t | context, c_<t)`` is the answer;
- ``acc_norm``: the largest log-likelihood divided by the choice's length in characters (``len(choice)``), which
  removes the bias towards short choices.

The context is the sample's messages through the model's chat template (``chat=True``, for instruct models; a model
without one gets ``role: content`` lines ending in ``assistant:`` and each choice after a space, lm-evaluation-harness's
target delimiter) or the sample's input text as it is (``chat=False``, lm-evaluation-harness's convention for
base-model benchmarks). The
per-choice log-likelihoods are kept in the log (``state.metadata["choice_logliks"]`` and the score's metadata).

On interplab's provider the solver calls :meth:`interplab.evals.provider.InterplabAPI.loglikelihood` (exact, batched);
on any other provider it asks for one generated token with its top-20 log-probabilities and reads each choice's first
token there (a choice outside the top 20 gets ``-inf``; exact only for one-token choices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from inspect_ai.model import GenerateConfig, ModelOutput, get_model
from inspect_ai.scorer import Score, Target, mean, scorer, stderr
from inspect_ai.solver import Generate, Solver, TaskState, solver

__all__ = ["choice_logliks", "loglik_accuracy", "loglik_choices", "softmax_pair"]

TOP_LOGPROBS = 20


def _choices(state: TaskState) -> list[str]:
    if state.choices and len(state.choices) > 0:
        return [c.value for c in state.choices]
    ch = state.metadata.get("choices")
    if not ch:
        raise ValueError(
            f"sample {state.sample_id!r} has no choices: give Sample(choices=[...]) or metadata['choices']."
        )
    return [str(c) for c in ch]


async def choice_logliks(state: TaskState, choices: Sequence[str], chat: bool = True) -> list[float]:
    """Log-likelihood of each of ``choices`` as the model's reply to ``state`` (see the module docstring)."""
    from interplab.evals.provider import InterplabAPI

    model = get_model()
    api = model.api
    if isinstance(api, InterplabAPI):
        context = api.prompt_text(state.messages) if chat else state.input_text
        if chat and not api.has_chat_template:
            context += " "  # "assistant: Yes", lm-evaluation-harness's target delimiter (the space joins the choice)
        return await api.loglikelihood(context, choices)
    out = await model.generate(
        state.messages if chat else state.input_text,
        config=GenerateConfig(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS, temperature=0.0),
    )
    first = out.choices[0].logprobs
    top = {t.token: t.logprob for t in first.content[0].top_logprobs or []} if first and first.content else {}
    vals = []
    for c in choices:
        hits = [lp for tok, lp in top.items() if tok.strip() and c.strip().startswith(tok.strip())]
        vals.append(max(hits) if hits else -math.inf)
    return vals


@solver
def loglik_choices(chat: bool = True) -> Solver:
    """Score the sample's choices (``Sample(choices=...)`` or ``metadata["choices"]``) by log-likelihood; the
    completion is the most likely choice. ``chat``: format the context with the model's chat template."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        choices = _choices(state)
        lls = await choice_logliks(state, choices, chat=chat)
        state.metadata["choice_logliks"] = lls
        state.metadata["choice_chars"] = [len(c) for c in choices]
        best = max(range(len(choices)), key=lambda i: lls[i])
        state.output = ModelOutput.from_content(model=str(get_model()), content=choices[best])
        return state

    return solve


def _target_index(target: Target, choices: list[str]) -> int:
    t = target.text
    if t in choices:
        return choices.index(t)
    if len(t) == 1 and t.isalpha() and ord(t.upper()) - 65 < len(choices):
        return ord(t.upper()) - 65
    if t.isdigit() and int(t) < len(choices):
        return int(t)
    raise ValueError(f"target {t!r} is neither one of the choices {choices}, nor a letter or index of one.")


@scorer(metrics={"acc": [mean(), stderr()], "acc_norm": [mean(), stderr()]})
def loglik_accuracy():
    """``acc`` and ``acc_norm`` (lm-evaluation-harness) of :func:`loglik_choices`; the target is the correct
    choice's text, letter (A, B, ...) or index. The per-choice log-likelihoods go into the score's metadata."""

    async def score(state: TaskState, target: Target) -> Score:
        choices = _choices(state)
        lls = state.metadata.get("choice_logliks")
        if lls is None:
            raise ValueError("loglik_accuracy needs the loglik_choices() solver before it.")
        gold = _target_index(target, choices)
        best = max(range(len(lls)), key=lambda i: lls[i])
        best_norm = max(range(len(lls)), key=lambda i: lls[i] / max(len(choices[i]), 1))
        return Score(
            value={"acc": float(best == gold), "acc_norm": float(best_norm == gold)},
            answer=choices[best],
            metadata={"choice_logliks": lls, "choices": choices, "gold": gold},
        )

    return score


def softmax_pair(a: float, b: float) -> float:
    """``p(a) / (p(a) + p(b))`` from two log-probabilities (0.5 when both are -inf)."""
    if a == -math.inf and b == -math.inf:
        return 0.5
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)
