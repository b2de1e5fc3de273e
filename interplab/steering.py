"""Interventions a user names in words — a steering vector and ablated heads — turned into the one hook mechanism's
interventions (:mod:`interplab.hooks`), for ``interplab generate``/``chat`` and the Inspect provider's model args.

* **Steering** (activation addition, Turner et al. 2023, "Activation Addition: Steering Language Models Without
  Optimization"): ``scale × v`` is added to ``blocks.L.hook_resid_post`` at every position. ``v`` comes from a
  ``.safetensors`` file (one tensor ``[d_model]``, or the one named by ``steer_key``) or from two contrast prompts,
  written ``"A"-"B"``: the difference of the residual streams of A and B at layer ``L``, at their last tokens.
* **Ablation**: ``L.H,L.H`` zero-ablates those heads' outputs (``blocks.L.attn.hook_z``).

:func:`steering_norms` says how big the added vector is next to the residual stream it is added to (mean norm of
``blocks.L.hook_resid_post`` over a prompt's tokens): a vector many times the residual norm swamps the stream, and
what follows says more about that than about the direction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interplab.hooks import Ablate, AddVector, Intervention

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "contrast_vector",
    "interventions_from_args",
    "mean_difference",
    "parse_heads",
    "steering_norms",
    "steering_vector",
]

_CONTRAST = re.compile(r'^\s*"(?P<a>(?:[^"\\]|\\.)*)"\s*-\s*"(?P<b>(?:[^"\\]|\\.)*)"\s*$')


@torch.no_grad()
def mean_difference(
    model: Model, positive: Sequence[str], negative: Sequence[str], layer: int, prepend_bos: bool | None = None
) -> torch.Tensor:
    """Mean over pairs of ``resid_post[layer](positive[i]) − resid_post[layer](negative[i])`` at each text's last
    token (one pair: activation addition, Turner et al. 2023; many: contrastive activation addition, Rimsky et al.
    2024). Texts are tokenized as given, right-padded in one batch; ``prepend_bos=False`` for texts that already hold
    one (chat-templated ones)."""
    if len(positive) != len(negative) or not positive:
        raise ValueError(
            f"give as many positive as negative texts (at least one); got {len(positive)}, {len(negative)}."
        )
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} is outside 0..{model.cfg.n_layers - 1}.")
    hook = f"blocks.{layer}.hook_resid_post"

    def last(texts: Sequence[str]) -> torch.Tensor:
        ids, mask = model.to_tokens(list(texts), prepend_bos=prepend_bos, padding_side="right", return_mask=True)
        _, cache = model.run(ids, cache=[hook], attention_mask=mask)
        return cache[hook][torch.arange(len(texts)), mask.sum(1) - 1].float()

    return (last(positive) - last(negative)).mean(0)


def contrast_vector(model: Model, a: str, b: str, layer: int) -> torch.Tensor:
    """``resid_post[layer]`` of prompt ``a`` minus that of ``b``, at their last tokens (Turner et al. 2023)."""
    return mean_difference(model, [a], [b], layer)


def steering_vector(model: Model, spec: str, layer: int, key: str | None = None) -> torch.Tensor:
    """The vector named by ``spec``: a ``.safetensors`` file or ``"A"-"B"`` contrast prompts (module docstring)."""
    m = _CONTRAST.match(spec)
    if m:
        return contrast_vector(model, m["a"].replace('\\"', '"'), m["b"].replace('\\"', '"'), layer)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f'steer={spec}: neither a file nor contrast prompts; give FILE.safetensors or \'"A"-"B"\' '
            '(e.g. \'"Love"-"Hate"\').'
        )
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if key is None and len(tensors) != 1:
        raise ValueError(f"steer={path} holds {sorted(tensors)}: name one with steer_key=NAME.")
    vec = tensors[str(key)] if key is not None else next(iter(tensors.values()))
    if vec.ndim != 1 or vec.shape[0] != model.cfg.d_model:
        raise ValueError(
            f"steer={path}: the vector has shape {tuple(vec.shape)}; {model.name} needs [{model.cfg.d_model}]."
        )
    return vec.float()


def parse_heads(model: Model, spec: str) -> list[tuple[int, int]]:
    """``"L.H,L.H"`` as ``[(L, H), ...]``, checked against the model."""
    heads = []
    for part in spec.replace(" ", "").split(","):
        try:
            layer_s, head_s = part.split(".")
            layer, head = int(layer_s), int(head_s)
        except ValueError:
            raise ValueError(f"ablate={spec!r}: write heads as L.H,L.H (e.g. 12.3,14.0).") from None
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise ValueError(
                f"ablate: head {layer}.{head} does not exist ({model.cfg.n_layers} layers x {model.cfg.n_heads} heads)."
            )
        heads.append((layer, head))
    return heads


def interventions_from_args(model: Model, args: dict[str, Any]) -> list[Intervention]:
    """The interventions named by ``args``: ``steer`` (FILE or ``"A"-"B"``), ``steer_layer`` (or ``steer_hook``),
    ``steer_scale`` (default 1), ``steer_key``; ``ablate`` (``L.H,L.H``). Checked against ``model``."""
    out: list[Intervention] = []
    if args.get("steer") is not None:
        hook = args.get("steer_hook")
        layer = None
        if hook is None:
            if args.get("steer_layer") is None:
                raise ValueError("steer= needs steer_layer=L (or steer_hook=NAME): where to add the vector.")
            layer = int(args["steer_layer"])
            if not 0 <= layer < model.cfg.n_layers:
                raise ValueError(f"steer_layer={layer} is outside 0..{model.cfg.n_layers - 1} for {model.name}.")
            hook = f"blocks.{layer}.hook_resid_post"
        if hook not in model.hook_names():
            raise ValueError(f"steer_hook={hook!r} is not a hook point of {model.name} (see model.hook_names()).")
        if layer is None:
            m = re.match(r"blocks\.(\d+)\.", str(hook))
            layer = int(m.group(1)) if m else 0
        vec = steering_vector(model, str(args["steer"]), layer, args.get("steer_key"))
        out.append(AddVector(str(hook), vector=vec, scale=float(args.get("steer_scale", 1.0))))
    if args.get("ablate"):
        by_layer: dict[int, list[int]] = {}
        for layer, head in parse_heads(model, str(args["ablate"])):
            by_layer.setdefault(layer, []).append(head)
        out += [Ablate(f"blocks.{layer}.attn.hook_z", heads=hs, how="zero") for layer, hs in sorted(by_layer.items())]
    return out


@torch.no_grad()
def steering_norms(model: Model, vector: torch.Tensor, scale: float, hook: str, prompt: str) -> dict[str, float]:
    """``{"vector_norm": |scale × v|, "resid_norm": mean |resid| at hook over the prompt's tokens, "ratio"}``."""
    _, cache = model.run(model.to_tokens(prompt), cache=[hook])
    resid = float(cache[hook][0].float().norm(dim=-1).mean())
    vn = float(vector.float().norm()) * abs(scale)
    return {"vector_norm": round(vn, 4), "resid_norm": round(resid, 4), "ratio": round(vn / resid, 4) if resid else 0.0}
