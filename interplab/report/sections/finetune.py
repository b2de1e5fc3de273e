"""Fine-tuning results (:mod:`interplab.finetune`) as an HTML report: the headline (held-out loss before and after,
trainable parameters, tokens/s), the loss curves, and the settings and data. LoRA: Hu et al. 2021."""

from __future__ import annotations

import json
from typing import Any

from interplab.report.html import Report, table

__all__ = ["finetune_report"]


def _pairs(what: str, d: dict[str, Any]):
    return table([{what: k, "value": json.dumps(v) if isinstance(v, list | dict) else v} for k, v in d.items()])


def finetune_report(res: Any) -> Report:
    """Headline, held-out and training loss against the step, settings and data of a ``FinetuneResult``."""
    h = res.headline()
    what = (
        f"LoRA r={res.config['rank']}, alpha={res.config['alpha']} on {', '.join(res.config['targets'])}"
        if res.method == "lora"
        else "full fine-tuning"
    )
    rep = Report(f"Fine-tuning {res.base or 'a model'}", f"{what}; {res.steps} steps on {res.data['source']}")
    rep.section("Headline", table([{"quantity": k, "value": v} for k, v in h.items()]))
    rep.section(
        "Loss curves",
        res.plot(),
        "Held-out loss: mean next-token loss over every target token of the held-out sequences (text: the end of the "
        "token stream, never trained on; pairs: a seeded random subset, completion tokens only). Training loss: the "
        "batch of that step.",
    )
    rep.section(
        "Settings and data",
        table(
            [{"setting": k, "value": json.dumps(v) if isinstance(v, list | dict) else v} for k, v in res.config.items()]
        ),
        table([{"data": k, "value": json.dumps(v) if isinstance(v, list | dict) else v} for k, v in res.data.items()]),
    )
    return rep
