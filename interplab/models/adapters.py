"""One adapter per architecture family: where each hook point lives and how to read per-head weights.

An adapter only *locates* things (modules and weight slices); the hooking itself is in
:mod:`interplab.hooks`. Weight conventions (TransformerLens):

* ``W_Q, W_K, W_V``: ``[n_heads, d_model, d_head]`` (k/v expanded per query head for GQA: query
  head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``, as HF's ``repeat_kv``),
* ``W_O``: ``[n_heads, d_head, d_model]``; ``b_O``: ``[d_model]`` (zeros when the model has none),
* ``W_in``: ``[d_model, d_mlp]`` (gated MLPs also have ``W_gate``), ``W_out``: ``[d_mlp, d_model]``,
* ``W_E``: ``[d_vocab, d_model]`` (Gemma's sqrt(d_model) embedding scale folded in), ``W_U``: ``[d_model, d_vocab]``.

Weights are read from the live modules each time, so they follow training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Architecture facts every analysis needs (names follow TransformerLens)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int  # 0 for attention-only models
    d_vocab: int
    n_ctx: int
    family: str
    act_fn: str = ""
    normalization: str = ""  # "RMS", "LN" or "none"
    positional: str = ""  # "rotary", "learned" or "none"
    parallel_attn_mlp: bool = False
    gated_mlp: bool = False
    model_type: str = ""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


HFModule = Any
"""A submodule of an HF or toy model: its attributes (``q_proj``, ``weight``, ...) differ by family, so it is
reached by attribute access the type checker cannot follow."""

ATTN_INPUT_NORM_NAMES = ("input_layernorm", "ln_1", "ln1")  # Llama/Gemma/NeoX, GPT-2, toy


def _get(root: nn.Module, path: str) -> HFModule:
    """The submodule at dotted ``path`` (HF modules are reached by attribute: typed ``Any``)."""
    mod: HFModule = root
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


class Adapter:
    """Base adapter: module paths (relative to the HF model / to a decoder layer) plus weight readers."""

    family = "?"
    layers_path = "model.layers"
    embed_path = "model.embed_tokens"
    pos_embed_path: str | None = None
    ln_final_path = "model.norm"
    unembed_path = "lm_head"
    attn_path = "self_attn"
    o_proj_path = "self_attn.o_proj"
    attn_out_path: str | None = None  # what hook_attn_out reads (None: the attention module at attn_path)
    mlp_out_path: str | None = "mlp"
    neurons_path: str | None = "mlp.down_proj"

    def __init__(self, hf: nn.Module):
        self.hf: Any = hf  # an HF model or a ToyTransformer: submodules are reached by attribute
        self.c: Any = hf.config  # its config (attributes differ by family)
        self.cfg = self.make_cfg()
        self._layers: Any = _get(hf, self.layers_path)

    # ---- config
    def make_cfg(self) -> ModelConfig:  # pragma: no cover - abstract
        raise NotImplementedError

    def _hf_cfg(self, **family: Any) -> ModelConfig:
        """The ModelConfig of an HF model from its config's standard names (GPT-2's ``n_layer``, ``n_embd``, ...
        are mapped onto them by transformers), with ``family``: the fields each family reads its own way."""
        c = self.c
        return ModelConfig(
            n_layers=c.num_hidden_layers,
            n_heads=c.num_attention_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            d_model=c.hidden_size,
            d_head=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            d_vocab=c.vocab_size,
            n_ctx=c.max_position_embeddings,
            family=self.family,
            model_type=c.model_type,
            **family,
        )

    # ---- modules
    def embed(self) -> HFModule:
        return _get(self.hf, self.embed_path)

    def pos_embed(self) -> HFModule | None:
        return _get(self.hf, self.pos_embed_path) if self.pos_embed_path else None

    def ln_final(self) -> HFModule:
        return _get(self.hf, self.ln_final_path)

    def unembed(self) -> HFModule:
        return _get(self.hf, self.unembed_path)

    def layer(self, i: int) -> HFModule:
        return self._layers[i]

    def layers_slot(self) -> tuple[HFModule, str]:
        """(parent module, attribute name) holding the decoder-layer ModuleList."""
        parent, _, attr = self.layers_path.rpartition(".")
        return (_get(self.hf, parent) if parent else self.hf), attr

    def attn(self, i: int) -> HFModule:
        return _get(self._layers[i], self.attn_path)

    def o_proj(self, i: int) -> HFModule:
        return _get(self._layers[i], self.o_proj_path)

    def attn_out(self, i: int) -> HFModule:
        return _get(self._layers[i], self.attn_out_path or self.attn_path)

    def mlp_out(self, i: int) -> HFModule:
        assert self.mlp_out_path is not None
        return _get(self._layers[i], self.mlp_out_path)

    def neurons(self, i: int) -> HFModule:
        assert self.neurons_path is not None
        return _get(self._layers[i], self.neurons_path)

    def attn_input_norm(self, i: int) -> HFModule | None:
        """The norm module whose output layer ``i``'s attention reads (None: it reads the raw stream)."""
        block = self._layers[i]
        for name in ATTN_INPUT_NORM_NAMES:
            if hasattr(block, name):
                return getattr(block, name)
        return None

    def attn_output_norm(self, i: int) -> HFModule | None:
        """The norm applied to layer ``i``'s attention output before it is added to the residual stream
        (Gemma 3's sandwich norm); None for every pre-norm family."""
        return None

    def set_attn_implementation(self, name: str) -> str:
        """Switch the attention function used by every layer; returns the previous one."""
        prev = self.c._attn_implementation
        self.c._attn_implementation = name
        return prev

    # ---- weights (Linear layout: weight [out, in])
    def _split_heads_out(self, w: torch.Tensor, n: int) -> torch.Tensor:
        """Linear weight [n*e, d] -> [n, d, e]."""
        e = self.cfg.d_head
        return w.view(n, e, -1).transpose(1, 2)

    def _expand_kv(self, w: torch.Tensor) -> torch.Tensor:
        g = self.cfg.n_heads // self.cfg.n_kv_heads
        return w.repeat_interleave(g, dim=0) if g > 1 else w

    def qkv(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = self.attn(i)
        return (
            self._split_heads_out(a.q_proj.weight, self.cfg.n_heads),
            self._expand_kv(self._split_heads_out(a.k_proj.weight, self.cfg.n_kv_heads)),
            self._expand_kv(self._split_heads_out(a.v_proj.weight, self.cfg.n_kv_heads)),
        )

    def qkv_bias(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, c = self.attn(i), self.cfg

        def b(lin, n):
            if lin.bias is None:
                return torch.zeros(n, c.d_head, dtype=lin.weight.dtype, device=lin.weight.device)
            return lin.bias.view(n, c.d_head)

        return (
            b(a.q_proj, c.n_heads),
            self._expand_kv(b(a.k_proj, c.n_kv_heads)),
            self._expand_kv(b(a.v_proj, c.n_kv_heads)),
        )

    def w_o(self, i: int) -> torch.Tensor:
        w = self.o_proj(i).weight  # [d, h*e]
        return w.view(w.shape[0], self.cfg.n_heads, self.cfg.d_head).permute(1, 2, 0)

    def b_o(self, i: int) -> torch.Tensor | None:
        return self.o_proj(i).bias

    def mlp_weights(self, i: int) -> dict[str, torch.Tensor]:
        m = _get(self._layers[i], "mlp")
        return {"W_gate": m.gate_proj.weight.T, "W_in": m.up_proj.weight.T, "W_out": m.down_proj.weight.T}

    def w_e(self) -> torch.Tensor:
        return self.embed().weight

    def w_u(self) -> torch.Tensor:
        return self.unembed().weight.T


class LlamaAdapter(Adapter):
    """Llama, Qwen2, Mistral (and SmolLM2, which is Llama): pre-norm RMSNorm, rotary, gated SiLU MLP, GQA."""

    family = "llama"

    def make_cfg(self) -> ModelConfig:
        c = self.c
        return self._hf_cfg(
            d_mlp=c.intermediate_size,
            act_fn=str(getattr(c, "hidden_act", "")),
            normalization="RMS",
            positional="rotary",
            gated_mlp=True,
        )


class Gemma3Adapter(LlamaAdapter):
    """Gemma 3 (text): sandwich norms around attention and MLP, q/k RMSNorm, scaled embeddings.

    ``hook_attn_out``/``hook_mlp_out`` are what is added to the residual stream, i.e. *after* the
    post-attention/post-feedforward norms; so the per-head results sum (plus b_O) to the input of
    that norm, not to attn_out — the one family where that identity does not hold."""

    family = "gemma3"
    attn_out_path = "post_attention_layernorm"
    mlp_out_path = "post_feedforward_layernorm"

    def make_cfg(self) -> ModelConfig:
        cfg = super().make_cfg()
        cfg.act_fn = str(getattr(self.c, "hidden_activation", cfg.act_fn))
        cfg.family = "gemma3"
        return cfg

    def attn_output_norm(self, i: int) -> HFModule | None:
        return _get(self._layers[i], "post_attention_layernorm")

    def w_e(self) -> torch.Tensor:
        emb: Any = self.embed()
        return emb.weight * emb.embed_scale.to(emb.weight.dtype)


class GPT2Adapter(Adapter):
    """GPT-2: pre-norm LayerNorm, learned positions, fused Conv1D qkv ([in, out] weights), GELU MLP."""

    family = "gpt2"
    layers_path = "transformer.h"
    embed_path = "transformer.wte"
    pos_embed_path = "transformer.wpe"
    ln_final_path = "transformer.ln_f"
    attn_path = "attn"
    o_proj_path = "attn.c_proj"
    neurons_path = "mlp.c_proj"

    def make_cfg(self) -> ModelConfig:
        c = self.c
        return self._hf_cfg(
            d_mlp=c.n_inner or 4 * c.n_embd, act_fn=c.activation_function, normalization="LN", positional="learned"
        )

    def qkv(self, i):
        w = self.attn(i).c_attn.weight  # [d, 3d]
        d, h, e = self.cfg.d_model, self.cfg.n_heads, self.cfg.d_head
        return tuple(w[:, j * d : (j + 1) * d].reshape(d, h, e).permute(1, 0, 2) for j in range(3))

    def qkv_bias(self, i):
        b = self.attn(i).c_attn.bias
        d, h, e = self.cfg.d_model, self.cfg.n_heads, self.cfg.d_head
        return tuple(b[j * d : (j + 1) * d].reshape(h, e) for j in range(3))

    def w_o(self, i):
        return self.o_proj(i).weight.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    def mlp_weights(self, i):
        m = self.layer(i).mlp
        return {"W_in": m.c_fc.weight, "W_out": m.c_proj.weight}


class NeoXAdapter(Adapter):
    """GPT-NeoX / Pythia: LayerNorm, partial rotary, fused per-head-interleaved qkv, parallel residual."""

    family = "gpt_neox"
    layers_path = "gpt_neox.layers"
    embed_path = "gpt_neox.embed_in"
    ln_final_path = "gpt_neox.final_layer_norm"
    attn_path = "attention"
    o_proj_path = "attention.dense"
    neurons_path = "mlp.dense_4h_to_h"

    def make_cfg(self) -> ModelConfig:
        c = self.c
        return self._hf_cfg(
            d_mlp=c.intermediate_size,
            act_fn=c.hidden_act,
            normalization="LN",
            positional="rotary",
            parallel_attn_mlp=bool(c.use_parallel_residual),
        )

    def _qkv_split(self, t: torch.Tensor):
        h, e = self.cfg.n_heads, self.cfg.d_head
        t = t.view(h, 3 * e, *t.shape[1:])
        return t[:, :e], t[:, e : 2 * e], t[:, 2 * e :]

    def qkv(self, i):
        return tuple(x.transpose(1, 2) for x in self._qkv_split(self.attn(i).query_key_value.weight))

    def qkv_bias(self, i):
        return self._qkv_split(self.attn(i).query_key_value.bias)

    def mlp_weights(self, i):
        m = self.layer(i).mlp
        return {"W_in": m.dense_h_to_4h.weight.T, "W_out": m.dense_4h_to_h.weight.T}


class ToyAdapter(Adapter):
    """interplab's own small transformer (``interplab.models.toy``)."""

    family = "toy"
    layers_path = "blocks"
    embed_path = "embed"
    ln_final_path = "ln_final"
    unembed_path = "unembed"
    attn_path = "attn"
    o_proj_path = "attn.o_proj"
    neurons_path = "mlp.fc_out"

    def __init__(self, hf: nn.Module):
        if cast(Any, hf).config.positional == "learned":
            self.pos_embed_path = "pos_embed"
        super().__init__(hf)

    def make_cfg(self) -> ModelConfig:
        c = self.c  # a ToyConfig: its dimensions carry ModelConfig's names
        dims = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn")
        return ModelConfig(
            **{k: getattr(c, k) for k in dims},
            n_kv_heads=c.n_heads,
            family="toy",
            normalization=c.normalization or "none",
            positional=c.positional or "none",
            model_type="interplab_toy",
        )

    def set_attn_implementation(self, name: str) -> str:
        return name  # the toy model always calls interplab_attention

    def mlp_weights(self, i):
        m = self.layer(i).mlp
        return {"W_in": m.fc_in.weight.T, "W_out": m.fc_out.weight.T}


ADAPTERS: dict[str, type[Adapter]] = {
    "llama": LlamaAdapter,
    "qwen2": LlamaAdapter,
    "mistral": LlamaAdapter,
    "gemma3_text": Gemma3Adapter,
    "gpt2": GPT2Adapter,
    "gpt_neox": NeoXAdapter,
    "interplab_toy": ToyAdapter,
}


def adapter_for(hf: nn.Module) -> Adapter:
    mt = getattr(hf.config, "model_type", None)
    if mt not in ADAPTERS:
        raise ValueError(
            f"interplab has no adapter for model_type {mt!r}. Supported: {', '.join(sorted(ADAPTERS))}. "
            "Adding one means mapping its modules in interplab/models/adapters.py."
        )
    return ADAPTERS[mt](hf)
