"""Scoring a model's outputs, written once: next-token losses per token and per sequence, the logits at each
prompt's last real token, and logits read off a residual-stream tensor through the model's own head."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["last_token_logits", "model_token_losses", "sequence_losses", "unembed_resid"]


def sequence_losses(logits: torch.Tensor, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy per sequence ``[batch]`` over the predictions of tokens ``start + 1 ..``."""
    out = torch.empty(logits.shape[0], dtype=torch.float32)
    tgt = tokens.to(logits.device)
    for i in range(logits.shape[0]):
        out[i] = F.cross_entropy(logits[i, start:-1].float(), tgt[i, start + 1 :])
    return out


def model_token_losses(
    model: Model, tokens: torch.Tensor | Sequence[Sequence[int]], batch_size: int = 8
) -> torch.Tensor:
    """Next-token cross-entropy per token of ``model`` on token ids ``[batch, pos]`` (``pos >= 2``):
    ``[batch, pos - 1]`` float32 nats on the CPU, ``out[i, p] = -log softmax(logits[i, p])[tokens[i, p + 1]]``;
    ``batch_size`` sequences at a time, without gradients."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"token_losses needs token ids [batch, pos] with pos >= 2, got {tuple(tokens.shape)}.")
    out = []
    with torch.no_grad():
        for s in range(0, tokens.shape[0], max(1, batch_size)):
            b = tokens[s : s + batch_size]
            logits = model.run(b).logits
            tgt = b[:, 1:].to(logits.device)
            ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), tgt.flatten(), reduction="none")
            out.append(ce.view(tgt.shape).cpu())
            del logits
    return torch.cat(out)


def last_token_logits(
    model: Model, prompts: Sequence[str], batch_size: int = 32, attention_mask: bool = False
) -> Iterator[torch.Tensor]:
    """Yield, per batch of ``batch_size`` prompts (right padding), the logits ``[batch, d_vocab]`` at each
    prompt's last real token. ``attention_mask=True`` also passes the padding mask to the model. Under causal
    attention real tokens never see right pads either way; with or without the mask the attention kernel may
    round differently."""
    for i in range(0, len(prompts), batch_size):
        toks, mask = model.to_tokens(list(prompts[i : i + batch_size]), padding_side="right", return_mask=True)
        logits = model.run(toks, attention_mask=mask if attention_mask else None).logits
        last = (mask.sum(1) - 1).to(logits.device)
        yield logits[torch.arange(len(toks)), last]


def unembed_resid(model: Model, resid: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Logits read off a residual-stream tensor ``[..., d_model]``: final norm, unembedding (weight and bias)
    and, for Gemma, the final logit soft-cap — the model's own head, module by module."""
    x = model.adapter.ln_final()(resid) if normalize else resid
    logits = model.adapter.unembed()(x)
    cap = getattr(getattr(model.hf, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
