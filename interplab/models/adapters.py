"""One adapter per architecture family: where each hook point lives and how to read per-head weights.

An adapter only *locates* things (modules and weight slices); the hooking itself is in
:mod:`interplab.hooks`. Weight conventions (TransformerLens):

* ``W_Q, W_K, W_V``: ``[n_heads, d_model, d_head]`` (k/v expanded per query head for GQA: query
  head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``, as HF's ``repeat_kv``),
* ``W_O``: ``[n_heads, d_head, d_model]``; ``b_O``: ``[d_model]`` (zeros when the model has none),
* ``W_in``: ``[d_model, d_mlp]`` (gated MLPs also have ``W_gate``), ``W_out``: ``[d_mlp, d_model]``,
* ``W_E``: ``[d_vocab, d_model]`` (Gemma's sqrt(d_model) embedding scale folded in), ``W_U``: ``[d_model, d_vocab]``.

Weights are read from the live modules each time, so they follow training.

Adding a decoder family (OPT and GPT-Neo were added this way):

1. Read the family's Hugging Face modeling file: the decoder layer's forward (pre- or post-norm, parallel
   residual, what exactly is added to the stream, what the layer returns), the attention forward (does it call
   ``ALL_ATTENTION_FUNCTIONS``, with which ``scaling``; is the query scaled before the call?), the MLP (a module,
   or linear layers directly on the layer; run on flattened tokens?), the positions and the config's names.
2. Subclass :class:`Adapter`: the module paths (``layers_path``, ``embed_path``, ``pos_embed_path``,
   ``ln_final_path``, ``unembed_path``; per layer ``attn_path`` = the module holding ``q_proj``/``k_proj``/
   ``v_proj``, ``o_proj_path`` = whose input is ``hook_z``, ``attn_out_path`` = whose output is added to the
   stream, ``mlp_out_path``, ``neurons_path`` = whose input is ``mlp.hook_post``) and ``make_cfg`` through
   ``_hf_cfg``. Override the weight readers whose layout differs (``qkv``, ``qkv_bias``, ``w_o``,
   ``mlp_weights``, ``w_e``) and ``attn_input_norm`` when the norm's name is not in ``ATTN_INPUT_NORM_NAMES``.
   Then the family's quirks, each a hook of its own: ``check_config`` (refuse variants by name, before the weights
   load), ``attn_implementation`` ("eager" without SDPA), ``install_attn_site`` + ``set_attn_implementation``
   (attention that bypasses ``AttentionInterface``), ``attn_score_scale`` / ``query_prescale`` (scaling),
   ``layer_returns_tuple``, ``mlp_flat_tokens``, ``attn_output_norm`` (sandwich norms). Register the model_type
   in ``ADAPTERS``.
3. Add a tiny random config of it to ``FAMILIES`` in tests/conftest.py (2-3 layers, d_model 32, windows shorter
   than the test prompts): every invariant of tests/test_hooks.py (logits equal HF's exactly, resid_post =
   hidden_states, patterns = HF eager attentions, heads + b_O = attn_out, no hook survives an error, split
   forwards, padding) and the every-family analysis tests then run on it. Copy tests/models/test_families.py
   for what is particular to it (q, pattern, z and result recomputed from the weights with its own mask and
   score scale; refused variants; an end-to-end CLI run with a tokenizer).

Pitfalls met: GPT-Neo has no SDPA and calls its own ``_attn`` (switching its ``_attn_implementation`` would also
change the mask transformers builds), scores without ``1/sqrt(d_head)``, keeps its local band in a bool buffer
apart from the padding mask, upcasts q and k to float32, and its layers return tuples (a skipped layer answering
a bare tensor makes ``outputs[0]`` silently take the first prompt). OPT scales q before the kernel (scale 1),
runs its MLP on ``[batch * pos, d]``, reads positions from the attention mask with an offset of 2, and opt-350m
is post-LN with an embedding projection (refused). Every family checked so far returns the final norm's output
as HF's last ``hidden_states`` entry.
"""

from __future__ import annotations

from collections.abc import Callable
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
    attn_implementation = "sdpa"
    """The attention implementation the model is loaded with; a hooked layer that needs no pattern reproduces it
    ("sdpa": transformers' SDPA function; "eager": the eager arithmetic, for families without SDPA)."""
    layer_returns_tuple = False
    """Whether a decoder layer returns ``(hidden_states, ...)`` (GPT-Neo) rather than the tensor alone: a skipped
    layer (``Model.run(start_at_layer=...)``) must answer in the same form."""
    mlp_flat_tokens = False
    """Whether the MLP runs on ``[batch * pos, d]`` (OPT flattens the tokens): its hook points are viewed as
    ``[batch, pos, ...]``."""

    def __init__(self, hf: nn.Module):
        self.hf: Any = hf  # an HF model or a ToyTransformer: submodules are reached by attribute
        self.c: Any = hf.config  # its config (attributes differ by family)
        self.check_config(self.c)
        self.cfg = self.make_cfg()
        self._layers: Any = _get(hf, self.layers_path)

    # ---- config
    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise a ValueError naming what is unsupported in ``config`` (a variant of the family this adapter cannot
        map); called before the weights are loaded where the loader can, and again by the adapter."""

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

    def install_attn_site(self, i: int, site: Callable) -> Callable[[], None]:
        """Route layer ``i``'s attention kernel through ``site`` (see ``interplab.hooks.interplab_attention``);
        returns the function that undoes it. Families whose attention calls transformers' ``AttentionInterface``
        only need the site stored on the attention module (the session switches the implementation to
        ``"interplab"``); others override this to wrap their own kernel."""
        attn = self.attn(i)
        attn.__dict__["_interplab_site"] = site
        return lambda: attn.__dict__.pop("_interplab_site", None)

    def attn_score_scale(self, i: int) -> float:
        """The factor on ``hook_q . hook_k`` in layer ``i``'s attention score: ``1/sqrt(d_head)`` for most families
        (Gemma 3: its ``query_pre_attn_scalar``), 1 for GPT-Neo, which does not scale."""
        return float(getattr(self.attn(i), "scaling", self.cfg.d_head**-0.5))

    def query_prescale(self, i: int) -> float:
        """A factor the family multiplies its queries by *before* the attention kernel, which then scales by 1
        (OPT: ``1/sqrt(d_head)``); ``hook_q`` is read and written without it, so that ``hook_q = ln(x) W_Q + b_Q``
        as in every family. 1.0: none."""
        return 1.0

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


class OPTAdapter(Adapter):
    """OPT (facebook/opt-*): pre-norm LayerNorm, learned positions (offset 2, from the attention mask), q/k/v/out
    projections with biases, ReLU MLP (``fc1``/``fc2`` directly on the decoder layer, run on flattened tokens).

    OPT multiplies the projected query by ``1/sqrt(d_head)`` *before* the kernel and calls it with scale 1; the
    session divides that factor out of ``hook_q`` (and puts it back into a rewritten query), so ``hook_q`` is
    ``ln(x) W_Q + b_Q`` with the raw ``q_proj`` weights and the score is ``hook_q . hook_k / sqrt(d_head)`` as in
    GPT-2 (``query_prescale``; a cached ``hook_q`` equals the projection up to one rounding). Post-LN OPT
    (``do_layer_norm_before=False``: facebook/opt-350m) and the ``project_in``/``project_out`` embedding projection
    (``word_embed_proj_dim != hidden_size``, also opt-350m) are refused: the residual stream would be renormalised
    inside every layer (no linear decomposition for DLA, lens or folding) and W_E / W_U would not live in
    d_model."""

    family = "opt"
    layers_path = "model.decoder.layers"
    embed_path = "model.decoder.embed_tokens"
    pos_embed_path = "model.decoder.embed_positions"
    ln_final_path = "model.decoder.final_layer_norm"
    o_proj_path = "self_attn.out_proj"
    mlp_out_path = "fc2"
    neurons_path = "fc2"
    mlp_flat_tokens = True

    @classmethod
    def check_config(cls, config: Any) -> None:
        name = getattr(config, "_name_or_path", "") or "this OPT model"
        if not getattr(config, "do_layer_norm_before", True):
            raise ValueError(
                f"{name} is a post-LN OPT (do_layer_norm_before=False, like facebook/opt-350m): interplab supports "
                "pre-LN OPT only (opt-125m, opt-1.3b and larger), since post-LN renormalises the residual stream "
                "inside every layer. Use facebook/opt-125m or another family."
            )
        proj = getattr(config, "word_embed_proj_dim", None)
        if proj is not None and proj != config.hidden_size:
            raise ValueError(
                f"{name} projects its embeddings (word_embed_proj_dim={proj} != hidden_size={config.hidden_size}, "
                "like facebook/opt-350m): interplab does not map project_in/project_out. Use facebook/opt-125m or "
                "another family."
            )
        if getattr(config, "_remove_final_layer_norm", False):
            raise ValueError(f"{name} has no final layer norm (_remove_final_layer_norm=True); interplab needs one.")

    def make_cfg(self) -> ModelConfig:
        c = self.c
        return self._hf_cfg(d_mlp=c.ffn_dim, act_fn=c.activation_function, normalization="LN", positional="learned")

    def attn_input_norm(self, i: int) -> HFModule | None:
        return self._layers[i].self_attn_layer_norm

    def query_prescale(self, i: int) -> float:
        return float(self.attn(i).scaling)

    def mlp_weights(self, i):
        block = self.layer(i)
        return {"W_in": block.fc1.weight.T, "W_out": block.fc2.weight.T}


class GPTNeoAdapter(Adapter):
    """GPT-Neo (EleutherAI/gpt-neo-*): pre-norm LayerNorm, learned positions, q/k/v without bias, out_proj with bias,
    GELU MLP (``c_fc``/``c_proj`` Linear layers), global and local (sliding ``window_size``) attention by layer
    (``config.attention_layers``), and *no* ``1/sqrt(d_head)`` scaling of the score (``attn_score_scale`` is 1).

    GPT-Neo has no SDPA path and does not call transformers' ``AttentionInterface``: it is loaded with eager
    attention, and the kernel hook points (q, k, v, pattern) wrap the attention module's own ``_attn`` for the
    run, with its local/global mask, in GPT-Neo's arithmetic (so patterns equal HF eager attentions, local layers
    included, and a run with kernel points cached returns the plain logits exactly). As in GPT-Neo, the score is
    computed from q and k in float32: ``hook_q``/``hook_k`` are float32 in a half-precision model."""

    family = "gpt_neo"
    layers_path = "transformer.h"
    embed_path = "transformer.wte"
    pos_embed_path = "transformer.wpe"
    ln_final_path = "transformer.ln_f"
    attn_path = "attn.attention"
    attn_out_path = "attn"
    o_proj_path = "attn.attention.out_proj"
    neurons_path = "mlp.c_proj"
    attn_implementation = "eager"
    layer_returns_tuple = True

    def make_cfg(self) -> ModelConfig:
        c = self.c
        return self._hf_cfg(
            d_mlp=c.intermediate_size or 4 * c.hidden_size,
            act_fn=c.activation_function,
            normalization="LN",
            positional="learned",
        )

    def set_attn_implementation(self, name: str) -> str:
        return name  # the layers call their own _attn, wrapped per run by install_attn_site

    def attn_score_scale(self, i: int) -> float:
        return 1.0

    def install_attn_site(self, i: int, site: Callable) -> Callable[[], None]:
        from interplab.hooks import interplab_attention

        attn = self.attn(i)

        def _attn(query, key, value, attention_mask=None):
            # as GPT-Neo's own _attn: q and k in float32, its causal (global) or banded (local) bool buffer, then
            # the additive padding mask, here folded into one additive mask (0 where kept): the same softmax
            query, key = query.to(torch.float32), key.to(torch.float32)
            q_len, k_len = query.shape[-2], key.shape[-2]
            keep = attn.bias[:, :, k_len - q_len : k_len, :k_len]
            zero = torch.zeros((), dtype=query.dtype, device=query.device)
            mask = torch.where(keep, zero, torch.finfo(query.dtype).min)
            if attention_mask is not None:
                mask = mask + attention_mask
            out, pattern = interplab_attention(attn, query, key, value, mask, scaling=1.0)
            return out.transpose(1, 2), pattern

        attn.__dict__["_interplab_site"] = site
        attn.__dict__["_attn"] = _attn

        def undo() -> None:
            attn.__dict__.pop("_interplab_site", None)
            attn.__dict__.pop("_attn", None)

        return undo

    def mlp_weights(self, i):
        m = self.layer(i).mlp
        return {"W_in": m.c_fc.weight.T, "W_out": m.c_proj.weight.T}


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
    "opt": OPTAdapter,
    "gpt_neo": GPTNeoAdapter,
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
