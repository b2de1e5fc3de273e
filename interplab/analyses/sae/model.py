"""The sparse autoencoder: its configuration, the module, and the JumpReLU straight-through estimators.

* ``kind="relu"``: ReLU encoder with an L1 penalty, as in Bricken et al. (2023), "Towards Monosemanticity:
  Decomposing Language Models With Dictionary Learning" (Transformer Circuits Thread), with the loss of
  Anthropic's April 2024 update: ``||x - x̂||² + λ Σ_i f_i ||W_dec,i||``. Decoder rows are kept at unit
  norm (renormalised after every step, the gradient component parallel to each row removed before it),
  so the penalty is ``λ Σ f_i``.
* ``kind="topk"``: TopK activation (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
  ``f = ReLU(TopK(W_enc (x - b_dec) + b_enc))``, exactly ``k`` (or fewer) non-zeros per token, encoder
  initialised as the decoder's transpose.
* ``kind="jumprelu"``: JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity
  with JumpReLU Sparse Autoencoders"): ``f = z · H(z − θ)`` with a learned per-feature threshold
  ``θ = exp(log θ)``, trained with their straight-through estimators (:class:`JumpReLU`, :class:`Step`).

Inputs are scaled by one scalar ``scale`` so that ``E||x||² = d`` on the training data (set by the trainer);
the SAE maps raw activations to raw reconstructions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from interplab.io.atomic import save_tensors

__all__ = ["KINDS", "SAE", "JumpReLU", "SAEConfig", "SAEKind", "Step"]

SAEKind = Literal["topk", "relu", "jumprelu"]
"""The SAE architectures (``interplab sae train --kind``)."""
KINDS: tuple[SAEKind, ...] = get_args(SAEKind)


@dataclass
class SAEConfig:
    """Settings of an SAE and of its training (:func:`interplab.analyses.sae.train_sae`); the comment after
    each field says what it means. λ coefficients apply to inputs scaled to ``E||x||² = d``."""

    d_in: int  # input dimension
    n_features: int = 4096  # dictionary size
    kind: SAEKind = "topk"
    k: int = 32  # topk: active features per token
    l1_coeff: float = 5.0  # relu: λ on inputs scaled to E||x||^2 = d
    lr: float = 4e-4
    batch_size: int = 1024
    epochs: float = 1.0
    k_aux: int | None = None  # topk: AuxK (default min(d_in // 2, n_features // 2))
    aux_coeff: float = 1 / 32
    dead_window: int | None = None  # tokens without firing that make a feature dead (default: a quarter of training)
    resample_at: tuple[float, ...] | None = (
        None  # fractions of training at which to resample dead features (relu default .25 .5 .75)
    )
    freeze_decoder: bool = False  # control: random unit decoder, never trained
    l1_warmup: float = 0.05  # relu / jumprelu: fraction of training over which λ ramps up from 0
    l0_coeff: float = 0.5  # jumprelu: λ of the L0 penalty (inputs scaled to E||x||^2 = d)
    jump_eps: float = 0.05  # jumprelu: bandwidth ε of the straight-through estimator's rectangle kernel
    threshold_init: float = 0.5  # jumprelu: initial threshold θ (pre-activations are O(1) with the transposed init)
    seed: int = 0
    apply_b_dec_to_input: bool = True  # the encoder reads x - b_dec (False for some SAEs loaded from SAELens)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"SAE kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")
        if self.kind == "topk" and not 0 < self.k <= self.n_features:
            raise ValueError(f"k={self.k} must lie in 1..n_features={self.n_features}.")
        if self.n_features < 1 or self.d_in < 1:
            raise ValueError("d_in and n_features must be positive.")


class SAE(nn.Module):
    """A sparse autoencoder ``x̂ = (f(x·s) @ W_dec + b_dec) / s`` (see the module docstring)."""

    scale: torch.Tensor  # a buffer: the input scale s

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w = F.normalize(torch.randn(cfg.n_features, cfg.d_in, generator=g), dim=-1)
        self.W_dec = nn.Parameter(w.clone(), requires_grad=not cfg.freeze_decoder)
        # TopK: encoder = decoder transpose (Gao et al.); ReLU: the transpose scaled by 0.1 (Anthropic's April
        # 2024 update initialises decoder columns at norm 0.1 with W_enc = W_dec^T; here the decoder stays unit-norm)
        self.W_enc = nn.Parameter(w.T.clone() * (0.1 if cfg.kind == "relu" else 1.0))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_features))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("scale", torch.tensor(1.0))
        if cfg.kind == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((cfg.n_features,), math.log(cfg.threshold_init)))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        return ((x - self.b_dec) if self.cfg.apply_b_dec_to_input else x) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "topk":
            v, i = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, i, F.relu(v))
        if self.cfg.kind == "jumprelu":
            return pre * (pre > self.threshold)
        return F.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., n_features]`` of raw activations ``x``."""
        return self.activate(self.pre(x))

    def decode_scaled(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.decode_scaled(f) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data = F.normalize(self.W_dec.data, dim=-1)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        if self.W_dec.grad is not None:
            w = self.W_dec.data
            self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def save(self, directory: str | Path, name: str = "sae") -> Path:
        """``directory/<name>.safetensors``: the weights, with the configuration as JSON metadata."""
        return save_tensors(
            Path(directory) / f"{name}.safetensors", self.state(), metadata={"config": json.dumps(asdict(self.cfg))}
        )

    @classmethod
    def load(cls, path: str | Path) -> SAE:
        """Read what :meth:`save` wrote (the file, or the directory holding ``sae.safetensors``)."""
        from safetensors import safe_open

        p = Path(path)
        if p.is_dir():
            p = p / "sae.safetensors"
        with safe_open(str(p), "pt") as f:
            cfg = json.loads(f.metadata()["config"])
            names = f.keys()
            tensors = {k: f.get_tensor(k) for k in names}
        if cfg.get("resample_at") is not None:
            cfg["resample_at"] = tuple(cfg["resample_at"])
        sae = cls(SAEConfig(**cfg))
        sae.load_state_dict(tensors)
        return sae


# ------------------------------------------------------------------------------------------ JumpReLU


class JumpReLU(torch.autograd.Function):
    """``z * H(z - θ)`` with the straight-through pseudo-derivative of Rajamanoharan et al. (2024) for θ:
    ``∂/∂θ = -(θ/ε) K((z - θ)/ε)``, K the rectangle kernel (1 on |u| < 1/2)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        z, theta = ctx.saved_tensors
        k = ((z - theta).abs() < ctx.eps / 2).to(g.dtype) / ctx.eps
        return g * (z > theta), (-theta * k * g).reshape(-1, z.shape[-1]).sum(0), None


class Step(torch.autograd.Function):
    """``H(z - θ)`` (the L0 count) with ``∂/∂θ = -(1/ε) K((z - θ)/ε)`` and no gradient to ``z``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        z, theta = ctx.saved_tensors
        k = ((z - theta).abs() < ctx.eps / 2).to(g.dtype) / ctx.eps
        return torch.zeros_like(z), (-k * g).reshape(-1, z.shape[-1]).sum(0), None
