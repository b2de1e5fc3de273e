"""interplab's own small transformer, defined by a config, for the training lab and planted-weight tests.

Attention-only or with MLPs, LayerNorm / RMSNorm / none, learned or no positional embeddings.
Its attention calls :func:`interplab.hooks.interplab_attention`, the same kernel hook point the
Hugging Face models are routed through, so every hook point and analysis applies unchanged.
Saved as ``config.json`` + ``model.safetensors`` (no pickle); ``interplab.load(dir)`` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from interplab.hooks import interplab_attention


@dataclass
class ToyConfig:
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256  # 0 = attention-only
    d_vocab: int = 64
    n_ctx: int = 128
    act_fn: str = "relu"  # relu | gelu
    normalization: str | None = "LN"  # LN | RMS | None
    positional: str | None = "learned"  # learned | None
    attn_bias: bool = True
    unembed_bias: bool = False
    seed: int = 0
    model_type: str = "interplab_toy"

    @classmethod
    def from_dict(cls, d: dict) -> ToyConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _norm(kind: str | None, d: int) -> nn.Module:
    if kind in (None, "none", ""):
        return nn.Identity()
    if kind == "LN":
        return nn.LayerNorm(d)
    if kind == "RMS":
        return nn.RMSNorm(d, eps=1e-6)
    raise ValueError(f"normalization must be 'LN', 'RMS' or None, not {kind!r}")


class ToyAttention(nn.Module):
    def __init__(self, c: ToyConfig):
        super().__init__()
        self.n_heads, self.d_head = c.n_heads, c.d_head
        self.num_key_value_groups = 1
        self.is_causal = True
        self.q_proj = nn.Linear(c.d_model, c.n_heads * c.d_head, bias=c.attn_bias)
        self.k_proj = nn.Linear(c.d_model, c.n_heads * c.d_head, bias=c.attn_bias)
        self.v_proj = nn.Linear(c.d_model, c.n_heads * c.d_head, bias=c.attn_bias)
        self.o_proj = nn.Linear(c.n_heads * c.d_head, c.d_model, bias=c.attn_bias)

    def forward(self, x, attention_mask=None):
        b, p, _ = x.shape
        shape = (b, p, self.n_heads, self.d_head)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out, w = interplab_attention(self, q, k, v, attention_mask, scaling=self.d_head**-0.5)
        return self.o_proj(out.reshape(b, p, -1)), w


class ToyMLP(nn.Module):
    def __init__(self, c: ToyConfig):
        super().__init__()
        self.fc_in = nn.Linear(c.d_model, c.d_mlp)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU()}[c.act_fn]
        self.fc_out = nn.Linear(c.d_mlp, c.d_model)

    def forward(self, x):
        return self.fc_out(self.act(self.fc_in(x)))


class ToyBlock(nn.Module):
    def __init__(self, c: ToyConfig):
        super().__init__()
        self.ln1 = _norm(c.normalization, c.d_model)
        self.attn = ToyAttention(c)
        self.mlp = ToyMLP(c) if c.d_mlp else None
        self.ln2 = _norm(c.normalization, c.d_model) if c.d_mlp else None

    def forward(self, x, attention_mask=None):
        a, _ = self.attn(self.ln1(x), attention_mask)
        x = x + a
        if self.mlp is not None:
            assert self.ln2 is not None  # built together with the MLP
            x = x + self.mlp(self.ln2(x))
        return x


@dataclass
class ToyOutput:
    logits: torch.Tensor


class ToyTransformer(nn.Module):
    """A GPT-style decoder: embed (+ learned positions) -> blocks -> final norm -> unembed."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = c = config
        torch.manual_seed(c.seed)
        self.embed = nn.Embedding(c.d_vocab, c.d_model)
        self.pos_embed = nn.Embedding(c.n_ctx, c.d_model) if c.positional == "learned" else None
        self.blocks = nn.ModuleList(ToyBlock(c) for _ in range(c.n_layers))
        self.ln_final = _norm(c.normalization, c.d_model)
        self.unembed = nn.Linear(c.d_model, c.d_vocab, bias=c.unembed_bias)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02 if "embed" in name else c.d_model**-0.5)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **_):
        """``inputs_embeds`` (``[b, p, d_model]``) is taken as the residual stream entering block 0
        (positions are *not* added again)."""
        if inputs_embeds is None:
            assert input_ids is not None, "give input_ids or inputs_embeds"
            p = input_ids.shape[1]
            x = self.embed(input_ids)
            if self.pos_embed is not None:
                x = x + self.pos_embed(torch.arange(p, device=input_ids.device)[None])  # [1, p, d], as GPT-2
        else:
            x = inputs_embeds
            p = x.shape[1]
        mask4 = None
        if attention_mask is not None and not bool(attention_mask.all()):
            causal = torch.ones(p, p, dtype=torch.bool, device=x.device).tril()
            mask4 = causal[None, None] & attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask4)
        return ToyOutput(self.unembed(self.ln_final(x)))

    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory) -> ToyTransformer:
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = ToyConfig.from_dict(json.loads((d / "config.json").read_text()))
        model = cls(cfg)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model.eval()
