"""``Model``: one object over a Hugging Face causal LM or an interplab toy transformer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast, overload

import torch
from torch import nn

from interplab import hooks as H
from interplab.models.adapters import Adapter, ModelConfig, adapter_for


class _Skip(nn.Module):
    """Stands in for a decoder layer outside the requested window: returns the residual unchanged (as
    ``(residual,)`` for families whose layers return a tuple)."""

    def __init__(self, as_tuple: bool = False):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states=None, *args, **kwargs):
        return (hidden_states, None) if self.as_tuple else hidden_states


class _Stop(Exception):
    def __init__(self, value):
        self.value = value


class RunOutput(NamedTuple):
    logits: torch.Tensor
    cache: H.Cache


CacheSpec = None | bool | str | Iterable[str] | Callable[[str], bool]


class _LayerStack:
    """A read-only weight of every layer: ``fn(model, layer)`` stacked on a new first axis, without gradient
    (``Model.W_Q`` and the like)."""

    def __init__(self, fn: Callable[[Model, int], torch.Tensor], doc: str) -> None:
        self.fn = fn
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, model: None, owner: type | None = None) -> _LayerStack: ...
    @overload
    def __get__(self, model: Model, owner: type | None = None) -> torch.Tensor: ...
    def __get__(self, model: Model | None, owner: type | None = None) -> torch.Tensor | _LayerStack:
        if model is None:
            return self
        with torch.no_grad():
            return torch.stack([self.fn(model, i) for i in range(model.cfg.n_layers)]).detach()

    def __set__(self, model: Model, value: Any) -> None:
        raise AttributeError(f"Model.{self.name} is read-only (a view of the model's weights).")


class Model:
    """A model with TransformerLens-named hook points.

    >>> model = interplab.load("smollm2-135m")
    >>> logits, cache = model.run("When Mary and John went to the store,", cache=["blocks.3.hook_resid_post"])
    """

    def __init__(
        self, hf: nn.Module, tokenizer: Any = None, name: str = "", source: str = "", load_seconds: float = 0.0
    ):
        H.register_attention()
        self.hf: Any = hf.eval()  # an HF causal LM or a ToyTransformer: methods differ, typed Any
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.load_seconds = load_seconds
        self.adapter: Adapter = adapter_for(hf)
        self.cfg: ModelConfig = self.adapter.cfg
        self._names = H.hook_names(
            self.cfg.n_layers,
            has_mlp=self.cfg.d_mlp > 0,
            parallel=self.cfg.parallel_attn_mlp,
            pos_embed=self.adapter.pos_embed_path is not None,
        )

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Model({self.name!r}, family={c.family}, layers={c.n_layers}, heads={c.n_heads}/{c.n_kv_heads}kv, "
            f"d_model={c.d_model})"
        )

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the first parameter, or, for a model spread over devices with
        ``device_map``, the device of its input embedding (the CPU when that is offloaded to disk)."""
        dev = next(self.hf.parameters()).device
        if getattr(self.hf, "hf_device_map", None) is not None:
            emb = self.hf.get_input_embeddings().weight.device
            dev = torch.device("cpu") if emb.type == "meta" else emb
        return dev

    @property
    def n_params(self) -> int:
        seen, total = set(), 0
        for p in self.hf.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    @property
    def default_prepend_bos(self) -> bool:
        """Whether the tokenizer puts a BOS token in front by default (SmolLM2: no; Gemma: yes)."""
        tok = self.tokenizer
        if tok is None or tok.bos_token_id is None:
            return False
        ids = tok("a", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[0] == tok.bos_token_id

    # ------------------------------------------------------------------ hook names
    def hook_names(self) -> list[str]:
        return list(self._names)

    def _resolve_cache(self, cache: CacheSpec) -> list[str]:
        if cache is None or cache is False:
            return []
        if cache is True or cache == "all":
            return self.hook_names()
        if isinstance(cache, str):
            return [cache]
        if callable(cache):
            return [n for n in self._names if cache(n)]
        return list(cache)

    # ------------------------------------------------------------------ tokens
    def need_tokenizer(self) -> Any:
        """The tokenizer, or a clear error for a model that has none (pass token ids instead)."""
        if self.tokenizer is None:
            raise ValueError(
                f"Model {self.name!r} has no tokenizer; pass token ids (a LongTensor [batch, pos]) instead of text."
            )
        return self.tokenizer

    @overload
    def to_tokens(
        self,
        text: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str = "right",
        return_mask: Literal[False] = False,
    ) -> torch.Tensor: ...

    @overload
    def to_tokens(
        self, text: str | Sequence[str], prepend_bos: bool | None, padding_side: str, return_mask: Literal[True]
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def to_tokens(
        self,
        text: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str = "right",
        *,
        return_mask: Literal[True],
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def to_tokens(
        self,
        text: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str = "right",
        return_mask: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[batch, pos]``. ``prepend_bos=None`` follows the tokenizer's own convention
        (SmolLM2 adds none); True/False force it. Lists are padded (right by default); with
        ``return_mask=True`` also returns the attention mask."""
        tok = self.need_tokenizer()
        texts = [text] if isinstance(text, str) else list(text)
        if prepend_bos is None:
            ids = [tok(t, add_special_tokens=True)["input_ids"] for t in texts]
        else:
            ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
            if prepend_bos:
                if tok.bos_token_id is None:
                    raise ValueError(f"Model {self.name!r}'s tokenizer has no BOS token; use prepend_bos=False.")
                ids = [[tok.bos_token_id] + x for x in ids]
        n = max(len(x) for x in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        out = torch.full((len(ids), n), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            if padding_side == "right":
                out[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
            else:
                out[i, n - len(x) :] = torch.tensor(x)
                mask[i, n - len(x) :] = 1
        return (out, mask) if return_mask else out

    def to_str_tokens(self, x: str | torch.Tensor | Sequence[int], prepend_bos: bool | None = None) -> list[str]:
        tok = self.need_tokenizer()
        if isinstance(x, str):
            x = self.to_tokens(x, prepend_bos=prepend_bos)[0]
        ids = x.tolist() if isinstance(x, torch.Tensor) else list(x)
        if ids and isinstance(ids[0], list):
            raise ValueError("to_str_tokens takes one sequence; index the batch first (tokens[0]).")
        return [tok.decode([i]) for i in ids]

    def to_string(self, tokens) -> str:
        return self.need_tokenizer().decode(tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)

    def to_single_token(self, s: str) -> int:
        ids = self.need_tokenizer()(s, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{s!r} is {len(ids)} tokens for this tokenizer ({ids}), not one.")
        return ids[0]

    def first_token_id(self, tok: str | int, what: str = "token") -> tuple[int, int]:
        """``(id, n_tokens)``: a token id as given, or the first token of a string (and how many tokens the
        string has, so callers can record when an answer was longer than one token)."""
        if not isinstance(tok, str) and hasattr(tok, "__index__"):  # int, numpy / 0-d torch integers
            i, n = tok.__index__(), 1
        elif isinstance(tok, str):
            if self.tokenizer is None:
                raise ValueError(f"Model {self.name!r} has no tokenizer; give the {what} as a token id.")
            ids = self.tokenizer(tok, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"The {what} {tok!r} is no tokens for this tokenizer.")
            i, n = int(ids[0]), len(ids)
        else:
            raise TypeError(f"{what} must be a str or a token id, not {type(tok).__name__}.")
        if not 0 <= i < self.cfg.d_vocab:
            raise ValueError(f"{what} token id {i} is outside the vocabulary [0, {self.cfg.d_vocab}).")
        return i, n

    def chat(self, messages: str | list[dict], add_generation_prompt: bool = True) -> str:
        """Prompt text for an instruct model through its chat template (a str is one user turn)."""
        tok = self.need_tokenizer()
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"Model {self.name!r} has no chat template; it is not an instruct model.")
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def prompt_tokens(
        self, prompt: str | torch.Tensor | Sequence[int], prepend_bos: bool | None = None, caller: str = "this analysis"
    ) -> tuple[torch.Tensor, str]:
        """One prompt as token ids ``[1, pos]`` and its text: ``prompt`` is text, or token ids (1-D or ``[1, pos]``)
        for models without a tokenizer (the text is then decoded, or the ids joined by spaces)."""
        if isinstance(prompt, str):
            return self.to_tokens(prompt, prepend_bos=prepend_bos), prompt
        tokens = torch.as_tensor(prompt, dtype=torch.long)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        if tokens.ndim != 2 or tokens.shape[0] != 1:
            raise ValueError(f"{caller} takes one prompt; got token ids of shape {tuple(tokens.shape)}.")
        text = self.to_string(tokens[0]) if self.tokenizer is not None else " ".join(map(str, tokens[0].tolist()))
        return tokens, text

    def as_tokens(self, tokens) -> torch.Tensor:
        """Text, a list of texts or token ids as integer ids ``[batch, pos]`` within the model's context."""
        if isinstance(tokens, (str, list)) and (isinstance(tokens, str) or (tokens and isinstance(tokens[0], str))):
            tokens = self.to_tokens(tokens)
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise ValueError(
                f"tokens must be integer ids of shape [batch, pos], got {tuple(tokens.shape)} {tokens.dtype}."
            )
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(
                f"{tokens.shape[1]} tokens exceed this model's context of n_ctx={self.cfg.n_ctx}; "
                f"truncate to the last {self.cfg.n_ctx} tokens (tokens[:, -{self.cfg.n_ctx}:]) or split the text."
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.d_vocab):
            raise ValueError(
                f"token ids must lie in [0, {self.cfg.d_vocab}); got {int(tokens.min())}..{int(tokens.max())}."
            )
        return tokens.to(self.device, torch.long)

    # ------------------------------------------------------------------ running
    def run(
        self,
        tokens,
        cache: CacheSpec = None,
        interventions: Sequence[H.Intervention] = (),
        attention_mask: torch.Tensor | None = None,
        grad: bool = False,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        return_resid: bool = False,
    ) -> RunOutput:
        """Forward pass: returns ``(logits [b, p, vocab], Cache)``.

        ``cache``: None, True/"all", a name, a list of names, or a predicate on names.
        ``interventions``: Patch / Ablate / AddVector / Apply objects, applied in order at their hook
        points. ``grad=True`` keeps autograd (for attribution methods); otherwise runs under no_grad.

        ``start_at_layer=L``: ``tokens`` is instead the residual stream entering block L
        (``blocks.L.hook_resid_pre``, float ``[b, p, d_model]``); earlier blocks are skipped.
        ``stop_at_layer=S``: blocks S.. and the unembedding are skipped and the first element returned
        is the residual stream entering block S (``[b, p, d_model]``) instead of logits. Together they
        let a sweep compute everything before a layer once and rerun only what follows.
        ``return_resid=True``: return the residual stream entering the final norm (after the last block)
        instead of logits, skipping the unembedding (callers unembed only the positions they need)."""
        n = self.cfg.n_layers
        start = start_at_layer or 0
        stop = n if stop_at_layer is None else stop_at_layer
        if not 0 <= start <= stop <= n:
            raise ValueError(
                f"need 0 <= start_at_layer <= stop_at_layer <= n_layers={n}; got {start_at_layer}, {stop_at_layer}."
            )
        if start_at_layer is not None:
            resid = torch.as_tensor(tokens)
            if resid.ndim != 3 or resid.shape[-1] != self.cfg.d_model or not resid.is_floating_point():
                raise ValueError(
                    f"with start_at_layer, pass the residual stream [batch, pos, {self.cfg.d_model}] "
                    f"(blocks.{start}.hook_resid_pre), not {tuple(resid.shape)} {resid.dtype}."
                )
            if resid.shape[1] > self.cfg.n_ctx:
                raise ValueError(f"{resid.shape[1]} positions exceed n_ctx={self.cfg.n_ctx}.")
            kwargs: dict[str, Any] = {"inputs_embeds": resid.to(self.device)}
        else:
            kwargs = {"input_ids": self.as_tokens(tokens)}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        if self.cfg.family != "toy":
            kwargs["use_cache"] = False
        names = self._resolve_cache(cache)
        with (
            H.HookSession(self, names, interventions, grad=grad) as store,
            self._layer_window(start, stop, start_at_layer is not None, return_resid),
            torch.set_grad_enabled(grad),
        ):
            try:
                out = self.hf(**kwargs).logits
            except _Stop as s:
                out = s.value
        return RunOutput(out, store)

    @contextlib.contextmanager
    def _layer_window(self, start: int, stop: int, from_resid: bool, halt_final: bool = False):
        """Run only layers ``start .. stop - 1`` for one call (the other layers become identities), optionally
        from a residual stream given as ``inputs_embeds`` and stopping before the final norm. Besides
        :class:`interplab.hooks.HookSession` this is the one place that registers torch hooks (structural ones,
        removed in ``finally``)."""
        n = self.cfg.n_layers
        if start == 0 and stop == n and not from_resid and not halt_final:
            yield
            return
        parent, attr = self.adapter.layers_slot()
        orig = getattr(parent, attr)
        handles = []
        try:
            skip = self.adapter.layer_returns_tuple
            setattr(parent, attr, nn.ModuleList([orig[i] if start <= i < stop else _Skip(skip) for i in range(n)]))
            pos = self.adapter.pos_embed()
            if from_resid and pos is not None and self.cfg.family != "toy":  # GPT-2 adds positions to inputs_embeds
                handles.append(pos.register_forward_hook(lambda m, a, o: torch.zeros_like(o)))
            if stop < n or halt_final:

                def halt(m, args, kwargs):
                    raise _Stop(args[0] if args else kwargs["hidden_states"])

                handles.append(self.adapter.ln_final().register_forward_pre_hook(halt, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()
            setattr(parent, attr, orig)

    def __call__(self, tokens, **kw) -> torch.Tensor:
        return self.run(tokens, **kw).logits

    @contextlib.contextmanager
    def hooks(self, interventions: Sequence[H.Intervention] = (), cache: CacheSpec = None, grad: bool = False):
        """Apply interventions (and record a cache) during any code in the block, e.g. ``generate``:

        >>> with model.hooks([AddVector("blocks.10.hook_resid_post", v)]):
        ...     text = model.generate("I think", max_new_tokens=20)

        During generation with a KV cache each forward sees only the new tokens, so position-
        restricted interventions index positions of that chunk."""
        with H.HookSession(self, self._resolve_cache(cache), interventions, grad=grad) as store:
            yield store

    def generate(
        self,
        prompt: str | torch.Tensor,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        interventions: Sequence[H.Intervention] = (),
        **kw,
    ) -> str | torch.Tensor:
        """Greedy (default) generation; returns the generated continuation as text (as token ids for a model
        without a tokenizer)."""
        tokens = self.as_tokens(prompt)
        with self.hooks(interventions), torch.no_grad():
            if self.cfg.family == "toy":
                out = tokens
                for _ in range(max_new_tokens):
                    logits = self.hf(input_ids=out[:, -self.cfg.n_ctx :]).logits[:, -1]
                    nxt = torch.multinomial(logits.softmax(-1), 1) if do_sample else logits.argmax(-1, keepdim=True)
                    out = torch.cat([out, nxt], dim=1)
            else:
                tok = self.tokenizer
                pad = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else None
                out = self.hf.generate(
                    input_ids=tokens,
                    attention_mask=torch.ones_like(tokens),
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    pad_token_id=pad,
                    **kw,
                )
        new = out[0, tokens.shape[1] :]
        return self.to_string(new) if self.tokenizer is not None else new

    # ------------------------------------------------------------------ weights
    def head_results(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head writes into the residual stream: z [b, p, h, e] @ W_O -> [b, p, h, d]."""
        w_o = self.adapter.w_o(layer)
        return torch.einsum("bphe,hed->bphd", z, w_o.to(z.dtype))

    def _b_o(self, i: int) -> torch.Tensor:
        b = self.adapter.b_o(i)
        return b if b is not None else torch.zeros(self.cfg.d_model, device=self.device)

    def _mlp(self, i: int, key: str) -> torch.Tensor:
        if self.cfg.d_mlp == 0:
            raise ValueError(f"Model {self.name!r} is attention-only; it has no MLP weights.")
        if key == "W_gate" and not self.cfg.gated_mlp:
            raise ValueError(f"Model {self.name!r} has no gated MLP (no W_gate).")
        return self.adapter.mlp_weights(i)[key]

    W_Q = _LayerStack(lambda m, i: m.adapter.qkv(i)[0], "[n_layers, n_heads, d_model, d_head]")
    W_K = _LayerStack(
        lambda m, i: m.adapter.qkv(i)[1], "[n_layers, n_heads, d_model, d_head], expanded per query head for GQA"
    )
    W_V = _LayerStack(
        lambda m, i: m.adapter.qkv(i)[2], "[n_layers, n_heads, d_model, d_head], expanded per query head for GQA"
    )
    W_O = _LayerStack(lambda m, i: m.adapter.w_o(i), "[n_layers, n_heads, d_head, d_model]")
    b_Q = _LayerStack(lambda m, i: m.adapter.qkv_bias(i)[0], "[n_layers, n_heads, d_head]")
    b_K = _LayerStack(lambda m, i: m.adapter.qkv_bias(i)[1], "[n_layers, n_heads, d_head], expanded for GQA")
    b_V = _LayerStack(lambda m, i: m.adapter.qkv_bias(i)[2], "[n_layers, n_heads, d_head], expanded for GQA")
    b_O = _LayerStack(lambda m, i: m._b_o(i), "[n_layers, d_model] (zeros where the model has no out-projection bias)")
    W_in = _LayerStack(lambda m, i: m._mlp(i, "W_in"), "[n_layers, d_model, d_mlp]")
    W_gate = _LayerStack(lambda m, i: m._mlp(i, "W_gate"), "[n_layers, d_model, d_mlp] (gated MLPs only)")
    W_out = _LayerStack(lambda m, i: m._mlp(i, "W_out"), "[n_layers, d_mlp, d_model]")

    @property
    def W_E(self) -> torch.Tensor:
        """[d_vocab, d_model]"""
        with torch.no_grad():
            return self.adapter.w_e().detach()

    @property
    def W_U(self) -> torch.Tensor:
        """[d_model, d_vocab]"""
        with torch.no_grad():
            return self.adapter.w_u().detach()

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> None:
        """Save weights (safetensors), config and tokenizer so that ``interplab.load(directory)`` reads them back."""
        self.hf.save_pretrained(str(directory))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(directory))


def from_hf(hf: nn.Module, tokenizer=None, name: str = "", source: str = "") -> Model:
    t = time.perf_counter()
    config: Any = cast(Any, hf).config
    m = Model(hf, tokenizer, name=name or getattr(config, "_name_or_path", "") or config.model_type, source=source)
    m.load_seconds = time.perf_counter() - t
    return m
