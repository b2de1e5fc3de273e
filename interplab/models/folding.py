"""Norm folding, written once: what a normalisation module does to a linear analysis, and per-head weights
with the norms folded in (TransformerLens's ``fold_ln`` + ``center_writing_weights``; Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits").

A head reads ``norm(x)``, not ``x``. The scalar ``1/rms(x)`` (or ``1/std(x)``) depends on the token and is
dropped — every weights-only score (composition, copying) is invariant to it. The norm's elementwise weight
``w`` is folded into the reading matrices, ``W_Q, W_K, W_V <- diag(w) @ W`` (Gemma's RMSNorm multiplies by
``1 + w``: that is what is folded); for LayerNorm the centring is folded too, ``W <- C diag(w) W`` with
``C = I - 11^T/d`` — and writing matrices are centred, ``W_O <- W_O C``, since a direction along ``1`` is
invisible to every LayerNorm reader. RMSNorm has no centring. Norm biases and all attention biases are
ignored (they are not part of a circuit matrix). Gemma 3 also normalises q and k per head (``q_norm`` /
``k_norm``): their weights are folded into the columns of W_Q / W_K; and it normalises the attention output
before adding it to the residual stream (the adapter's ``attn_output_norm``): its weight is folded into the
columns of W_O. For W_U the final norm's weight (and centring, for LN) is folded the same way:
``W_U <- C diag(w_final) W_U``. Gemma's final logit soft-cap is monotone and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = ["FoldedWeights", "NormInfo", "NormKind", "attn_input_norm", "fold_read", "folded_weights", "norm_info"]

NormKind = Literal["RMS", "LN", "none"]


@dataclass
class NormInfo:
    """What a normalisation module does, as far as a linear analysis needs to know:
    ``y = weight * (C x if LN) / scale(x) + bias`` with ``scale = sqrt(mean(x^2) + eps)`` (RMS) or
    ``sqrt(var(x) + eps)`` (LN). ``weight`` is the *effective* elementwise weight (Gemma: ``1 + w``)."""

    kind: NormKind
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    eps: float = 0.0

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The norm's denominator for ``x [..., d]`` (shape ``[..., 1]``), computed as the module does."""
        if self.kind == "RMS":
            return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if self.kind == "LN":
            return (x.var(-1, keepdim=True, unbiased=False) + self.eps).sqrt()
        return torch.ones_like(x[..., :1])


def norm_info(module: nn.Module | None) -> NormInfo | None:
    """Describe a norm module (LayerNorm, RMSNorm of torch / Llama / Qwen2 / Mistral / Gemma 3, or
    Identity = no norm). Returns None for a module that is not a norm.

    Args:
        module: the norm module (None or ``nn.Identity``: no norm).
    """
    if module is None or isinstance(module, nn.Identity):
        return NormInfo("none")
    name = type(module).__name__
    w = getattr(module, "weight", None)
    if isinstance(module, nn.LayerNorm):
        return NormInfo(
            "LN",
            w.detach() if w is not None else None,
            module.bias.detach() if getattr(module, "bias", None) is not None else None,
            float(module.eps),
        )
    if isinstance(module, nn.RMSNorm):
        eps = module.eps if module.eps is not None else torch.finfo(w.dtype if w is not None else torch.float32).eps
        return NormInfo("RMS", w.detach() if w is not None else None, None, float(eps))
    if name.endswith("RMSNorm"):
        eps = getattr(module, "variance_epsilon", None)
        eps = getattr(module, "eps", 1e-6) if eps is None else eps
        if w is not None and "Gemma" in name:  # Gemma: x / rms * (1 + w)
            w = 1.0 + w.detach().float()
        return NormInfo("RMS", w.detach() if w is not None else None, None, float(eps))
    if name.endswith("LayerNorm"):
        b = getattr(module, "bias", None)
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        return NormInfo("LN", w.detach() if w is not None else None, b.detach() if b is not None else None, float(eps))
    return None


def attn_input_norm(model: Model, layer: int) -> nn.Module | None:
    """The norm module whose output layer ``layer``'s attention reads (None: it reads the raw stream)."""
    return model.adapter.attn_input_norm(layer)


@dataclass
class FoldedWeights:
    """Per-head weights with the norms folded in as described in the module docstring.
    ``W_Q, W_K, W_V`` ``[L, H, d_model, d_head]``, ``W_O`` ``[L, H, d_head, d_model]``,
    ``W_E`` ``[vocab, d_model]``, ``W_U`` ``[d_model, vocab]`` (final norm folded)."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    W_E: torch.Tensor
    W_U: torch.Tensor
    notes: list[str] = field(default_factory=list)


def fold_read(w: torch.Tensor, ni: NormInfo | None) -> torch.Tensor:
    """``C diag(weight) W`` for a reading matrix ``W [..., d, e]`` after the norm ``ni`` (``C`` only for LN)."""
    if ni is None or ni.kind == "none":
        return w
    if ni.weight is not None:
        w = ni.weight.to(w)[:, None] * w
    if ni.kind == "LN":
        w = w - w.mean(-2, keepdim=True)
    return w


def folded_weights(
    model: Model, fold_norms: bool = True, dtype: torch.dtype = torch.float32, with_embed: bool = True
) -> FoldedWeights:
    """The model's per-head weights, with norm weights (and LN centring) folded in.

    Args:
        model: the model.
        fold_norms: fold the norms in (False: the raw weights).
        dtype: dtype of the returned tensors.
        with_embed: also return ``W_E`` and ``W_U`` (False: empty tensors in their place).
    """
    cfg = model.cfg
    notes: list[str] = []
    ad = model.adapter
    per_layer: list[tuple[torch.Tensor, ...]] = []
    ln_kinds: set[str] = set()
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            q, k, v = (t.detach().to(dtype) for t in ad.qkv(layer))  # [H, d, e], GQA expanded
            o = ad.w_o(layer).detach().to(dtype)  # [H, e, d]
            if fold_norms:
                mod = ad.attn_input_norm(layer)
                ni = norm_info(mod)
                if ni is None:
                    notes.append(f"layer {layer}: attention input norm {type(mod).__name__} not understood; not folded")
                else:
                    ln_kinds.add(ni.kind)
                q, k, v = (fold_read(w, ni) for w in (q, k, v))
                attn = ad.attn(layer)
                qn = norm_info(getattr(attn, "q_norm", None)) if hasattr(attn, "q_norm") else None
                kn = norm_info(getattr(attn, "k_norm", None)) if hasattr(attn, "k_norm") else None
                if qn is not None and qn.weight is not None:  # Gemma 3: per-head RMSNorm on q / k
                    q = q * qn.weight.to(q)
                if kn is not None and kn.weight is not None:
                    k = k * kn.weight.to(k)
                if layer == 0 and (qn is not None or kn is not None):
                    notes.append("q_norm / k_norm weights folded into the columns of W_Q / W_K")
                out_norm = ad.attn_output_norm(layer)
                post = norm_info(out_norm) if out_norm is not None else None
                if post is not None and post.kind != "none" and post.weight is not None:  # Gemma 3 post-attention norm
                    o = o * post.weight.to(o)
                    if layer == 0:
                        notes.append("post-attention norm weight folded into the columns of W_O")
                if ni is not None and ni.kind == "LN":
                    o = o - o.mean(-1, keepdim=True)
            per_layer.append((q, k, v, o))
        W_Q, W_K, W_V, W_O = (torch.stack(ts) for ts in zip(*per_layer))
        del per_layer
        if fold_norms:
            notes.insert(
                0,
                f"attention input norms: {', '.join(sorted(ln_kinds)) or 'none'} (weight folded into W_Q/W_K/W_V"
                + ("; LN centring folded into reading weights and W_O" if "LN" in ln_kinds else "")
                + ")",
            )
        W_E = model.W_E.to(dtype) if with_embed else torch.empty(0)
        W_U = model.W_U.to(dtype) if with_embed else torch.empty(0)
        if fold_norms and with_embed:
            nf = norm_info(model.adapter.ln_final())
            if nf is None:
                notes.append(f"final norm {type(model.adapter.ln_final()).__name__} not understood; W_U not folded")
            else:
                W_U = fold_read(W_U, nf)
                notes.append(
                    f"final norm ({nf.kind}) weight folded into W_U" + (" with centring" if nf.kind == "LN" else "")
                )
    return FoldedWeights(W_Q, W_K, W_V, W_O, W_E, W_U, notes)
