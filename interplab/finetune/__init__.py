"""Fine-tuning: LoRA (Hu et al. 2021, through PEFT) and full fine-tuning of any loadable model, seeded, checkpointed
and resumable, on texts, prompt/completion pairs, a file or a built-in corpus. The tuned directory opens with
``interplab.load``.

>>> from interplab.finetune import FinetuneConfig, finetune
>>> res = finetune("smollm2-135m", "corpus:pydoc", FinetuneConfig(steps=40, seq_len=64), out="runs/ft")
>>> res.heldout_loss_before, res.heldout_loss_after, res.model
"""

from interplab.finetune.config import FinetuneConfig
from interplab.finetune.data import FinetuneData, Sequences, load_data, read_jsonl
from interplab.finetune.loop import FinetuneResult, finetune, heldout_loss, lm_loss, lora_targets

__all__ = [
    "FinetuneConfig",
    "FinetuneData",
    "FinetuneResult",
    "Sequences",
    "finetune",
    "heldout_loss",
    "lm_loss",
    "load_data",
    "lora_targets",
    "read_jsonl",
]
