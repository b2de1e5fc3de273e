"""Fine-tuning results (:mod:`interplab.finetune`) as HTML: the headline (held-out loss before and after, trainable
parameters, tokens/s), the loss curves, and the settings and data. LoRA: Hu et al. 2021.

The standalone page of ``interplab finetune`` (:func:`finetune_report`) and the model report's ``finetune`` section
(:func:`finetune_parts`) render the same parts."""

from __future__ import annotations

import json
from typing import Any

from interplab.report.html import Html, Report, figure, heading, table, text

__all__ = ["finetune_parts", "finetune_report"]


def _value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


def _sections(res: Any) -> list[tuple[str, list[Html]]]:
    return [
        ("Headline", [table([{"quantity": k, "value": v} for k, v in res.headline().items()])]),
        (
            "Loss curves",
            [
                figure(res.plot()),
                text(
                    "Held-out loss: mean next-token loss over every target token of the held-out sequences (text: "
                    "the end of the token stream, never trained on; pairs: a seeded random subset, completion tokens "
                    "only). Training loss: the batch of that step."
                ),
            ],
        ),
        (
            "Settings and data",
            [
                table([{"setting": k, "value": _value(v)} for k, v in res.config.items()]),
                table([{"data": k, "value": _value(v)} for k, v in res.data.items()]),
            ],
        ),
    ]


def _what(res: Any) -> str:
    what = (
        f"LoRA r={res.config['rank']}, alpha={res.config['alpha']} on {', '.join(res.config['targets'])}"
        if res.method == "lora"
        else "full fine-tuning"
    )
    return f"{what}; {res.steps} steps on {res.data['source']}"


def finetune_parts(res: Any) -> list[Html]:
    """The parts of a ``FinetuneResult`` (:class:`interplab.finetune.loop.FinetuneResult`) for one report section:
    what was tuned, the headline, held-out and training loss against the step, settings and data."""
    parts = [text(f"Fine-tuned from {res.base or 'a model'}: {_what(res)}.")]
    for title, ps in _sections(res):
        parts += [heading(title, 4), *ps]
    return parts


def finetune_report(res: Any) -> Report:
    """Headline, held-out and training loss against the step, settings and data of a ``FinetuneResult``."""
    rep = Report(f"Fine-tuning {res.base or 'a model'}", _what(res))
    for title, ps in _sections(res):
        rep.section(title, *ps)
    return rep
