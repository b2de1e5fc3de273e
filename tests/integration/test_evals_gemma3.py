"""Gemma-3-270M through interplab's Inspect provider (skipped when its weight packages are not installed). Its GGUF
carries no chat template, so prompts are role lines after Gemma's BOS, a system instruction appears once; the
log-likelihoods of the batched shared-prefix pass equal a plain forward pass over each full row; greedy answers are
the same with and without the shared prefix and stop before the role-line prompt's next turn."""

from __future__ import annotations

import pytest
import torch
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser
from inspect_ai.solver import generate

import interplab
from tests.evals.loglik_oracle import run_items

pytestmark = pytest.mark.integration

SYSTEM = "You are a friendly and truthful assistant who answers questions about the world."
STATEMENTS = ["The Moon orbits the Earth.", "Water boils at 10 degrees Celsius at sea level.", "Paris is in France."]


@pytest.fixture(scope="module")
def gemma():
    from interplab.evals.provider import register_model
    from interplab.models.registry import REGISTRY, is_available

    if not is_available(REGISTRY["gemma3-270m"]):
        pytest.skip("optional model gemma3-270m not installed (" + REGISTRY["gemma3-270m"].install + ")")
    m = interplab.load("gemma3-270m")
    register_model("gemma3-270m", m)
    return m


def _turns(statement: str) -> list:
    return [ChatMessageSystem(content=SYSTEM), ChatMessageUser(content=f"{statement} Is that right?")]


def test_gemma3_prompt_logliks_and_greedy_answers(gemma, tmp_path, monkeypatch):
    from interplab.evals import provider

    api = provider.InterplabAPI("gemma3-270m")
    assert not api.has_chat_template
    text = api.prompt_text(_turns(STATEMENTS[0]))
    assert text.startswith("<bos>system: ") and text.count(SYSTEM) == 1 and text.endswith("\nassistant:")

    # log-likelihoods of " Yes" / " No" (shared-prefix pass: the system line opens every row) vs full rows
    items = [(api.prompt_text(_turns(s)) + " ", ["Yes", "No"], 0) for s in STATEMENTS]
    samples, _ = run_items(items, "interplab/gemma3-270m", tmp_path / "ll", batch_size=4)
    tok = gemma.tokenizer
    for s, (ctx, choices, _) in zip(samples, items, strict=True):
        ctx_ids = tok(ctx.rstrip(), add_special_tokens=False)["input_ids"]
        for got, c in zip(s.metadata["choice_logliks"], choices, strict=True):
            whole = tok(ctx.rstrip() + " " + c, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = gemma.hf(input_ids=torch.tensor([whole])).logits[0].float().log_softmax(-1)
            want = sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx_ids), len(whole)))
            assert got == pytest.approx(want, abs=2e-3)

    # greedy answers: the same with the shared prefix run once and with plain left padding; no next turn inside
    ds = MemoryDataset([Sample(input=_turns(s), id=i) for i, s in enumerate(STATEMENTS)])

    def answers(sub: str) -> dict[int, str]:
        (log,) = inspect_eval(
            Task(dataset=ds, solver=generate()),
            model="interplab/gemma3-270m",
            model_args={"batch_size": 4},
            max_tokens=16,
            log_dir=str(tmp_path / sub),
            display="none",
        )
        assert log.status == "success" and log.samples
        return {int(s.id): s.output.completion for s in log.samples}

    with_prefix = answers("prefix")
    monkeypatch.setattr(provider, "MIN_SHARED_PREFIX", 10**6)
    assert answers("plain") == with_prefix
    assert all("\nuser:" not in a for a in with_prefix.values())
