"""Shared by the log-likelihood tests (tiny model and SmolLM2): lm-evaluation-harness HFLM as the oracle, and a
multiple-choice item set run through Inspect on interplab's provider. Not a test module."""

from __future__ import annotations

from typing import Any

from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample

from interplab.evals.loglik import loglik_accuracy, loglik_choices


def lm_eval_logliks(model, items, batch_size: int = 3) -> list[list[float]]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hflm: Any = HFLM  # its __init__ takes **kwargs that its type hints do not show
    lm = hflm(pretrained=model.hf, tokenizer=model.tokenizer, batch_size=batch_size, max_length=128)
    reqs = [
        Instance(request_type="loglikelihood", doc={}, arguments=(ctx, c), idx=i)
        for ctx, choices, _ in items
        for i, c in enumerate(choices)
    ]
    flat = [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
    out, k = [], 0
    for _, choices, _ in items:
        out.append(flat[k : k + len(choices)])
        k += len(choices)
    return out


def run_items(items, model: str, tmp_path, batch_size: int = 4) -> tuple[list[Any], Any]:
    ds = MemoryDataset(
        [
            Sample(input=ctx, choices=choices, target=chr(65 + gold), id=i)
            for i, (ctx, choices, gold) in enumerate(items)
        ]
    )
    task = Task(dataset=ds, solver=loglik_choices(chat=False), scorer=loglik_accuracy())
    (log,) = inspect_eval(
        task, model=model, model_args={"batch_size": batch_size}, log_dir=str(tmp_path), display="none"
    )
    assert log.status == "success", log.error
    assert log.samples is not None
    return sorted(log.samples, key=lambda s: int(s.id)), log
