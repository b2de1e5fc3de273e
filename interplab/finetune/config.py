"""``FinetuneConfig``: every setting of one fine-tuning run (LoRA or full), checked once in ``validate``.

LoRA follows Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models": a frozen weight ``W`` gets a
trainable update ``(alpha / rank) * B @ A`` with ``A`` random and ``B`` zero at the start, so the tuned model starts
equal to the base model. Implemented with PEFT's ``LoraConfig`` (dropout 0, no bias: deterministic)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = ["LORA_ALIASES", "FinetuneConfig", "Method", "SaveAs"]

Method = Literal["lora", "full"]
SaveAs = Literal["merged", "adapter"]

LORA_ALIASES = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
"""Short names for the Llama-family projections (``q`` -> ``q_proj``), accepted in ``targets``."""


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run.

    Args:
        method: ``"lora"`` (PEFT LoRA adapters on ``targets``) or ``"full"`` (every weight trained).
        targets: LoRA target modules: module names such as ``q_proj`` (or the aliases q/k/v/o/gate/up/down), or
            ``("all-linear",)`` for every linear layer but the unembedding. Checked against the model.
        rank, alpha: LoRA rank r and scale alpha (the update is ``alpha / r * B A``).
        steps: optimizer steps.
        batch_size: sequences per step.
        seq_len: tokens per sequence: text is cut into windows of this length; prompt/completion pairs longer than
            this are cut at the right end (the completion's tail is lost: a warning names how many).
        lr, weight_decay, grad_clip: AdamW learning rate and weight decay (constant learning rate), and the gradient
            norm clip (None: off).
        seed: seeds LoRA's initialisation, the batch order and the held-out split of pairs.
        heldout_fraction: share of the data held out for the held-out loss (text: the end of the token stream; pairs:
            a seeded random subset); at least one sequence.
        heldout_max: at most this many held-out sequences are scored (the first ones), to bound evaluation time.
        log_every: held-out loss evaluated and logged every this many steps (and at step 0 and the end).
        ckpt_every: checkpoint every this many steps (and at the end).
        save: ``"merged"`` (LoRA folded into the weights: a plain model directory) or ``"adapter"`` (PEFT adapter
            files; ``interplab.load`` loads the base named in the card and applies them). Full fine-tuning always
            saves the whole model.
        keep_checkpoints: keep ``checkpoints/`` in the output directory after a finished run (default: removed).
        threads: torch intra-op threads during training (0: leave torch's setting).
    """

    method: Method = "lora"
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    rank: int = 8
    alpha: int = 16
    steps: int = 40
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0
    heldout_fraction: float = 0.1
    heldout_max: int = 32
    log_every: int = 10
    ckpt_every: int = 10
    save: SaveAs = "merged"
    keep_checkpoints: bool = False
    threads: int = 0

    def __post_init__(self) -> None:
        self.targets = tuple(LORA_ALIASES.get(t, t) for t in (self.targets or ()))

    def validate(self) -> FinetuneConfig:
        """Raise ``ValueError`` naming the bad setting and the accepted values; returns ``self``."""
        if self.method not in ("lora", "full"):
            raise ValueError(f"method {self.method!r}: use 'lora' or 'full'.")
        if self.save not in ("merged", "adapter"):
            raise ValueError(f"save {self.save!r}: use 'merged' or 'adapter'.")
        if self.method == "full" and self.save == "adapter":
            raise ValueError("save='adapter' needs method='lora'; a full fine-tune saves the whole model.")
        if self.method == "lora":
            if not self.targets:
                raise ValueError("LoRA needs at least one target module (e.g. q_proj, v_proj, or all-linear).")
            if self.rank < 1:
                raise ValueError(f"rank must be at least 1, got {self.rank}.")
            if self.alpha <= 0:
                raise ValueError(f"alpha must be positive, got {self.alpha}.")
        for name in ("steps", "batch_size", "seq_len", "heldout_max", "log_every", "ckpt_every"):
            v = getattr(self, name)
            if v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be {'>= 0' if name == 'steps' else 'at least 1'}, got {v}.")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 (one token to predict from), got {self.seq_len}.")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown fine-tuning settings {unknown}; known: {sorted(known)}.")
        kw = dict(d)
        if "targets" in kw:
            kw["targets"] = tuple(kw["targets"])
        return cls(**kw)

    RESUME_FREE: ClassVar[tuple[str, ...]] = ("keep_checkpoints", "threads")
    """Settings a resumed run may change (bit-identity with the uninterrupted run also needs the same threads)."""
