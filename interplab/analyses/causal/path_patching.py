"""Path patching (Wang et al. 2022, "Interpretability in the Wild", §3.1 and appendix): the effect of sender
heads on the metric *only through* chosen receivers — receiver heads' queries/keys/values, or the logits.

For each sender head ``s``:

1. run the clean prompt with ``s``'s output (``hook_z``) taken from the corrupt run and every other head
   frozen at its clean value (MLPs are recomputed, as in Wang et al.'s code); record the receivers'
   ``receiver_input`` (``q``, ``k`` or ``v``) at ``receiver_position``;
2. run the clean prompt again with only those receiver inputs patched in; read the metric.

With ``receivers="logits"`` step 1's metric is the answer (the path sender → logits not through other heads).
Values use the activation-patching scale of :mod:`interplab.analyses.causal.patching` (1 = clean, 0 = corrupt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.causal.engine import baselines, resolve_position
from interplab.analyses.causal.patching import normalise
from interplab.hooks import Patch
from interplab.io.results import Result
from interplab.tasks.pairs import PromptPairs

if TYPE_CHECKING:
    import pandas as pd

    from interplab.models.model import Model

__all__ = ["PathPatchingResult", "ReceiverInput", "path_patching"]

ReceiverInput = Literal["q", "k", "v"]


@dataclass
class PathPatchingResult(Result):
    """Path patching values ``[senders, receivers]`` on the activation-patching scale (noising: 1 = the
    clean metric, 0 = the corrupt one; an important path pulls the value towards 0); ``per_prompt``
    ``[senders, receivers, n]`` and the clean/corrupt per-prompt metrics."""

    KIND: ClassVar[str] = "path_patching"
    FILE: ClassVar[str] = "path_patching.json"

    senders: list[tuple[int, int]]
    receivers: list[str]
    values: torch.Tensor
    per_prompt: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    model_name: str = ""
    task: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        eff = 1 - self.values
        flat = eff.reshape(-1).abs().argsort(descending=True)[:10]
        R = len(self.receivers)
        return {
            "receivers": self.receivers,
            "top": [
                [*self.senders[i // R], self.receivers[i % R], round(float(self.values.reshape(-1)[i]), 4)]
                for i in flat.tolist()
            ],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per (sender, receiver): sender layer and head, receiver, value and effect (1 − value)."""
        import pandas as pd

        rows = [
            {
                "sender_layer": s[0],
                "sender_head": s[1],
                "receiver": r,
                "value": float(self.values[i, j]),
                "effect": float(1 - self.values[i, j]),
            }
            for i, s in enumerate(self.senders)
            for j, r in enumerate(self.receivers)
        ]
        return pd.DataFrame(rows)

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "senders":
            return [(int(a), int(b)) for a, b in value]
        return value


@torch.no_grad()
def path_patching(
    model: Model,
    pairs: PromptPairs,
    senders: Sequence[tuple[int, int]] | None = None,
    receivers: Sequence[tuple[int, int]] | Literal["logits"] = "logits",
    receiver_input: ReceiverInput = "q",
    receiver_position: str | int | None = "END",
) -> PathPatchingResult:
    """Path patching (Wang et al. 2022; see the module docstring).

    Args:
        model: the model.
        pairs: clean/corrupt prompt pairs with their metric.
        senders: the sender heads ``(layer, head)`` (default: every head).
        receivers: the receiver heads ``(layer, head)``, or ``"logits"`` (the direct path to the output).
        receiver_input: which input of the receivers is patched: ``"q"``, ``"k"`` or ``"v"``.
        receiver_position: the position where the receivers' inputs are patched (a named position or an
            index), or None for every position.
    """
    cfg = model.cfg
    if receiver_input not in ("q", "k", "v"):
        raise ValueError(f"receiver_input must be 'q', 'k' or 'v', not {receiver_input!r}.")
    if senders is None:
        senders = [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    senders = [(int(a), int(b)) for a, b in senders]
    for a, b in senders + ([] if isinstance(receivers, str) else [tuple(r) for r in receivers]):
        if not (0 <= a < cfg.n_layers and 0 <= b < cfg.n_heads):
            raise ValueError(
                f"head ({a}, {b}) is out of range: the model has {cfg.n_layers} layers x {cfg.n_heads} heads."
            )
    mask = pairs.run_mask()
    zs = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
    m_clean, m_corrupt, cc, cx = baselines(model, pairs, cache_names=zs)
    to_logits = isinstance(receivers, str)
    if to_logits and receivers != "logits":
        raise ValueError(f"receivers must be 'logits' or a list of (layer, head), not {receivers!r}.")
    rec = [] if to_logits else [(int(a), int(b)) for a, b in receivers]
    rec_hooks = sorted({f"blocks.{a}.attn.hook_{receiver_input}" for a, _ in rec})
    labels = ["logits"] if to_logits else [f"{a}.{b}.{receiver_input}" for a, b in rec]
    n = len(pairs)
    per = torch.empty(len(senders), len(labels), n)
    for i, (sl, sh) in enumerate(senders):
        ivs = [Patch(zs[sl], heads=[sh], source=cx)]
        for layer in range(sl + 1, cfg.n_layers):
            ivs.append(Patch(zs[layer], source=cc))
        others = [h for h in range(cfg.n_heads) if h != sh]
        if others:
            ivs.append(Patch(zs[sl], heads=others, source=cc))
        logits, cache = model.run(pairs.clean, attention_mask=mask, interventions=ivs, cache=rec_hooks)
        if to_logits:
            per[i, 0] = pairs.metric_from_logits(logits)
            continue
        for j, (rl, rh) in enumerate(rec):
            if rl <= sl:
                per[i, j] = m_clean
                continue
            hk = f"blocks.{rl}.attn.hook_{receiver_input}"
            iv = Patch(hk, heads=[rh], positions=resolve_position(pairs, receiver_position), source=cache[hk])
            per[i, j] = pairs.metric_from_logits(model.run(pairs.clean, attention_mask=mask, interventions=[iv]).logits)
    vals = normalise(per, m_clean, m_corrupt)
    return PathPatchingResult(
        senders=senders,
        receivers=labels,
        values=vals,
        per_prompt=per,
        clean_metric=m_clean,
        corrupt_metric=m_corrupt,
        model_name=model.name,
        task=pairs.task,
        settings={"receiver_input": receiver_input, "receiver_position": receiver_position},
    )
