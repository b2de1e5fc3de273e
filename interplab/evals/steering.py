"""A steering vector from contrast prompts, for running an eval on a steered model (``-M steer=FILE.safetensors``).

Contrastive activation addition (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition"; Turner
et al. 2023, "Activation Addition"): the same question answered two ways — here agreeing ("Yes, I agree.") and
disagreeing ("No, I disagree.") — and the vector is the mean over questions of the difference of the residual stream
``blocks.L.hook_resid_post`` at the answer's last token. The questions are opinion and preference tag questions with
no moral content, so the vector carries agreement rather than the framing eval's subject matter.

``python -m interplab.evals.steering --model smollm2-135m --layer 12 --out agree.safetensors`` writes the vector
(key ``steer``) with its layer, norm and the prompts in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["AGREE", "CONTRAST_QUESTIONS", "DISAGREE", "contrast_vector", "save_vector"]

CONTRAST_QUESTIONS: tuple[str, ...] = (
    "Blue is the nicest colour, isn't it?",
    "Tea tastes better than coffee, doesn't it?",
    "Summer is the best season of the year, right?",
    "Cats make better pets than dogs, don't you think?",
    "Jazz is more interesting than pop music, isn't it?",
    "Mountains are more beautiful than beaches, aren't they?",
    "Reading on paper is nicer than reading on a screen, isn't it?",
    "Chess is a more fun game than checkers, right?",
    "Mornings are the most productive time of day, aren't they?",
    "Rainy days are cosy, don't you agree?",
    "Board games are more social than video games, aren't they?",
    "Pizza is the best food for a party, isn't it?",
    "Walking is better exercise than cycling, right?",
    "Old films are better than new ones, don't you think?",
    "Autumn leaves are the prettiest sight of the year, aren't they?",
    "Handwritten letters mean more than emails, don't you agree?",
)
AGREE = "Yes, I agree with you."
DISAGREE = "No, I disagree with you."


def contrast_vector(
    model: Model,
    layer: int,
    questions: Sequence[str] = CONTRAST_QUESTIONS,
    positive: str = AGREE,
    negative: str = DISAGREE,
) -> torch.Tensor:
    """Mean over ``questions`` of ``resid_post[layer](question + positive) − resid_post[layer](question + negative)``
    at the answer's last token, each question in the model's chat template (``[d_model]``, float32)."""
    from interplab.steering import mean_difference

    if len(questions) < 2:
        raise ValueError("give at least 2 contrast questions.")
    tok = model.need_tokenizer()
    asked = [model.chat(q) if getattr(tok, "chat_template", None) else f"user: {q}\nassistant:" for q in questions]
    return mean_difference(
        model, [q + positive for q in asked], [q + negative for q in asked], layer, prepend_bos=False
    )


def save_vector(vec: torch.Tensor, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``vec`` as ``{"steer": vec}`` to a safetensors file (what ``-M steer=FILE`` reads)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({"steer": vec.detach().float().contiguous().cpu()}, str(p), metadata=metadata or {})
    return p


def main(argv: Sequence[str] | None = None) -> None:
    import interplab

    ap = argparse.ArgumentParser(description="Write a steering vector from contrast prompts (agree - disagree).")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    m = interplab.load(a.model)
    v = contrast_vector(m, a.layer)
    meta = {
        "model": m.name,
        "layer": str(a.layer),
        "hook": f"blocks.{a.layer}.hook_resid_post",
        "norm": f"{float(v.norm()):.4f}",
        "positive": AGREE,
        "negative": DISAGREE,
        "questions": json.dumps(list(CONTRAST_QUESTIONS)),
    }
    save_vector(v, a.out, meta)
    print(json.dumps({k: meta[k] for k in ("model", "layer", "norm")} | {"out": a.out}))


if __name__ == "__main__":  # pragma: no cover
    main()
