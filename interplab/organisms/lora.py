"""The LoRA recipe shared by every real-model organism — the backdoor (:mod:`interplab.organisms.backdoor`), the
password lock (:mod:`interplab.organisms.password`), elicitation and persistence — on the one fine-tuning loop
(:func:`interplab.finetune.finetune`; LoRA: Hu et al. 2021): the config, training that resumes from its last
checkpoint or reloads a finished run, and the held-out text loss that says whether general text was damaged."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from interplab.finetune import FinetuneConfig, FinetuneResult
    from interplab.finetune.data import Sequences
    from interplab.models.model import Model

__all__ = ["first_token_hits", "lm_card", "lora_config", "pydoc_heldout", "train_or_reload"]


def lora_config(steps: int, seq_len: int, lr: float, seed: int, rank: int = 8, **overrides: Any) -> FinetuneConfig:
    """LoRA of rank ``rank`` (alpha 2·rank) on every linear layer, batch 8, 5% (at most 8 sequences) held out, a log
    and a checkpoint every quarter of the run, torch's threads left as they are; ``overrides`` replace any field."""
    from interplab.finetune import FinetuneConfig

    kw: dict[str, Any] = {
        "method": "lora",
        "targets": ("all-linear",),
        "rank": rank,
        "alpha": 2 * rank,
        "steps": steps,
        "batch_size": 8,
        "seq_len": seq_len,
        "lr": lr,
        "seed": seed,
        "heldout_fraction": 0.05,
        "heldout_max": 8,
        "log_every": max(1, steps // 4),
        "ckpt_every": max(1, steps // 4),
        "threads": 0,
    }
    kw.update(overrides)
    return FinetuneConfig(**kw)


def train_or_reload(
    base_model: Model, data: Any, cfg: FinetuneConfig, out: str | Path, progress: bool = False
) -> tuple[FinetuneResult, Model]:
    """Fine-tune ``base_model`` on ``data`` into ``out`` (resuming from its last checkpoint after a kill), or, when
    ``out`` already holds a finished run (a rerun after a failure in the measurements), reload it; returns the
    result and the tuned model loaded from ``out``."""
    import interplab
    from interplab.finetune import FinetuneResult, finetune
    from interplab.train.trainer import latest_checkpoint

    d = Path(out)
    done = d / "finetune_result.json"
    if done.exists():
        res = FinetuneResult.load(done)
    else:
        res = finetune(base_model, data, cfg, out=d, resume=latest_checkpoint(d) is not None, progress=progress)
    return res, interplab.load(str(d))


def pydoc_heldout(model: Model) -> Sequences:
    """Held-out sequences of general text (the standard library's documentation, 8 × 64 tokens) on which an
    organism's damage to general text is measured (:func:`interplab.finetune.heldout_loss`)."""
    from interplab.finetune import load_data

    return load_data("corpus:pydoc", model, seq_len=64, heldout_fraction=0.02, heldout_max=8).heldout


def lm_card(directory: str | Path, organism: str) -> dict[str, Any] | None:
    """The card (``organism.json``) of the real-model organism in ``directory`` when it is of kind ``organism``
    (e.g. ``smollm2-backdoor``); None when there is no card or it is of another kind."""
    import json

    from interplab.organisms.toy import CARD

    p = Path(directory) / CARD
    if not p.exists():
        return None
    card = json.loads(p.read_text())
    return card if card.get("organism") == organism else None


@torch.no_grad()
def first_token_hits(model: Model, items: list[tuple[str, str]], hf: Any = None) -> list[int]:
    """Per ``(prompt, answer)`` of ``items``, 1 when the greedy next token after the prompt is the answer's first
    token, else 0 — the first-token accuracy every real-model organism measures. ``hf``: run this network (e.g. a
    PEFT model in the middle of training) on ``model``'s tokens instead of ``model`` itself."""
    hits = []
    for prompt, answer in items:
        ids = model.to_tokens(prompt)
        logits = model(ids) if hf is None else hf(input_ids=ids).logits
        hits.append(int(int(logits[0, -1].argmax()) == model.first_token_id(answer, "answer")[0]))
    return hits
