"""The one hook mechanism of interplab.

Every read or write of a model's internals goes through this module: hook-point
names, the :class:`Cache`, the interventions (patch, ablate, add, any function)
and :class:`HookSession`, the only code that registers torch hooks for reading or
writing activations. The one other site is ``Model._layer_window`` (interplab/models/model.py),
which runs a window of layers for ``start_at_layer`` / ``stop_at_layer``: it swaps the layer list
for the call and registers two structural hooks (zeroed positions when starting from a residual,
a stop before the final norm), removed in ``finally`` like these.

Hook points follow TransformerLens names and shapes (``b`` batch, ``p`` position,
``h`` query head, ``d`` d_model, ``e`` d_head, ``n`` MLP neurons)::

    hook_embed                      [b, p, d]   token embedding (Gemma: after its sqrt(d) scale)
    hook_pos_embed                  [1, p, d]   learned positions (GPT-2, GPT-Neo, OPT ([b, p, d]: from the mask), toy)
    blocks.L.hook_resid_pre         [b, p, d]   input of block L
    blocks.L.attn.hook_q            [b, p, h, e] queries as they enter the score (after rotary and q-norm; OPT's
                                                 without its 1/sqrt(e) pre-scaling: Adapter.query_prescale)
    blocks.L.attn.hook_k            [b, p, h, e] keys, likewise; GQA expanded per query head
    blocks.L.attn.hook_v            [b, p, h, e] values; GQA expanded per query head
    blocks.L.attn.hook_pattern      [b, h, q, k] attention probabilities (computed only when asked)
    blocks.L.attn.hook_z            [b, p, h, e] per-head attention output, input of the out-projection
    blocks.L.attn.hook_result       [b, p, h, d] one head's write, z_h @ W_O[h] (derived from z on access)
    blocks.L.hook_attn_out          [b, p, d]   what attention adds to the residual stream
    blocks.L.hook_resid_mid         [b, p, d]   resid_pre + attn_out (not for parallel-residual or attention-only
                                                models)
    blocks.L.mlp.hook_post          [b, p, n]   MLP neuron activations (input of the down-projection)
    blocks.L.hook_mlp_out           [b, p, d]   what the MLP adds to the residual stream
    blocks.L.hook_resid_post        [b, p, d]   output of block L
    ln_final.hook_normalized        [b, p, d]   output of the final norm

Design notes (see README, "Architecture"):

* Hooks are installed for one call and removed in ``finally``; nothing survives a run.
* Residual-stream, attention-output, MLP and ``z`` points are torch forward (pre-)hooks on the
  Hugging Face modules, so runs keep the fast SDPA kernel.
* ``q``, ``k``, ``v`` and ``pattern`` live inside the attention kernel call: during a run that needs
  them the model's attention implementation is switched to ``"interplab"``, a function registered
  with transformers' ``AttentionInterface`` that calls the stock SDPA kernel unless a pattern or a
  k/v intervention is needed on that layer, in which case it computes eager attention itself
  (same arithmetic as transformers' eager path), so patterns equal HF eager attentions. A family whose
  attention bypasses ``AttentionInterface`` (GPT-Neo) has its own kernel wrapped for the run by its adapter
  (``Adapter.install_attn_site``), in its own arithmetic.
* ``hook_result`` is not materialised during the forward (it would be n_heads x the size of
  attn_out); the cache derives it from ``z`` and W_O when read. Interventions on it are applied by a
  forward hook on the out-projection that recomputes the output as sum_h result_h + b_O.
* ``resid_mid`` is computed inside the attention-output hook as ``resid_pre + attn_out`` — the same
  addition the model performs, so the cached value is bit-identical. Writing ``resid_mid`` rewrites
  attn_out as ``new - resid_pre`` (exact up to one rounding of the addition).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

# --------------------------------------------------------------------------------------
# names

_LAYER_KINDS = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
HEAD_KINDS = {"attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_result"}
ATTN_KERNEL_KINDS = {"attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern"}
_NAME_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def parse_name(name: str) -> tuple[int | None, str]:
    """Split ``blocks.3.attn.hook_z`` into ``(3, "attn.hook_z")``; global names give ``(None, name)``."""
    m = _NAME_RE.match(name)
    if m:
        return int(m.group(1)), m.group(2)
    return None, name


def layer_kinds(*, has_mlp: bool, parallel: bool) -> list[str]:
    kinds: list[str] = list(_LAYER_KINDS)
    if not has_mlp:
        kinds = [k for k in kinds if k not in ("hook_resid_mid", "mlp.hook_post", "hook_mlp_out")]
    elif parallel:
        kinds.remove("hook_resid_mid")
    return kinds


def hook_names(n_layers: int, *, has_mlp: bool = True, parallel: bool = False, pos_embed: bool = False) -> list[str]:
    """All hook-point names of a model, in execution order."""
    names: list[str] = ["hook_embed"] + (["hook_pos_embed"] if pos_embed else [])
    kinds = layer_kinds(has_mlp=has_mlp, parallel=parallel)
    for layer in range(n_layers):
        names += [f"blocks.{layer}.{k}" for k in kinds]
    names.append("ln_final.hook_normalized")
    return names


class HookNameError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def check_names(names: Iterable[str], valid: Sequence[str]) -> None:
    valid_set = set(valid)
    for name in names:
        if name not in valid_set:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
            hint = f" Closest: {', '.join(close)}." if close else ""
            kinds = sorted({parse_name(v)[1] for v in valid})
            point_kinds = ", ".join(k for k in kinds if not k.startswith(("hook_embed", "ln_final", "hook_pos")))
            raise HookNameError(
                f"Unknown hook point {name!r} for this model.{hint} Valid names are the global points "
                f"hook_embed, ln_final.hook_normalized and blocks.<L>.<kind> with L in 0..{_n_layers(valid) - 1} "
                f"and kind one of: {point_kinds}."
            )


def _n_layers(valid: Sequence[str]) -> int:
    layers = [parse_name(v)[0] for v in valid]
    return max([x for x in layers if x is not None], default=-1) + 1


# --------------------------------------------------------------------------------------
# cache


class Cache(Mapping):
    """Activations recorded during one run, keyed by hook-point name.

    Tensors are stored as produced (no copy). ``hook_k``/``hook_v`` of grouped-query models are
    stored per key/value head and expanded per query head when read; ``hook_result`` is derived
    from ``hook_z`` and W_O when read. Without ``grad=True`` the run is under ``torch.no_grad`` and
    no tensor carries an autograd graph.
    """

    def __init__(self, model: Model | None = None):
        self._model = model
        self._data: dict[str, torch.Tensor] = {}
        self._lazy: dict[str, Callable[[], torch.Tensor]] = {}
        self._order: list[str] = []

    # -- filling (used by HookSession)
    def _put(self, name: str, value: torch.Tensor) -> None:
        if name not in self._data and name not in self._lazy:
            self._order.append(name)
        self._lazy.pop(name, None)
        self._data[name] = value

    def _put_lazy(self, name: str, fn: Callable[[], torch.Tensor]) -> None:
        if name not in self._data and name not in self._lazy:
            self._order.append(name)
        self._lazy[name] = fn

    # -- Mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._data:
            return self._data[name]
        if name in self._lazy:
            value = self._lazy.pop(name)()
            self._data[name] = value
            return value
        raise HookNameError(
            f"{name!r} is not in this cache (it holds {len(self)} hook points"
            + (f", e.g. {', '.join(self._order[:3])}" if self._order else "")
            + "). Ask for it with model.run(..., cache=[...])."
        )

    def __iter__(self):
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._data or name in self._lazy

    def __repr__(self) -> str:
        return f"Cache({len(self)} hook points)"

    # -- helpers
    def stack(self, kind: str, layers: Iterable[int] | None = None) -> torch.Tensor:
        """Stack ``blocks.L.<kind>`` over layers: e.g. ``cache.stack("hook_resid_post")`` -> [L, b, p, d]."""
        if layers is None:
            found = (parse_name(n) for n in self._order)
            layers = sorted({layer for layer, k in found if k == kind and layer is not None})
        return torch.stack([self[f"blocks.{layer}.{kind}"] for layer in layers])

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {name: self[name] for name in self._order}

    def save(self, path: str) -> None:
        """Write every tensor to a safetensors file (never pickle)."""
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in self.to_dict().items()}, str(path))


# --------------------------------------------------------------------------------------
# interventions


@dataclass
class HookContext:
    """What an intervention is told about the point it acts on."""

    name: str
    layer: int | None
    kind: str
    model: Any


Positions = int | slice | Sequence[int] | torch.Tensor | None


def _dims(kind: str) -> tuple[int, int | None, int | None]:
    """(position dim, head dim, neuron dim) of a hook kind's canonical layout."""
    if kind in HEAD_KINDS:
        return 1, 2, None
    if kind == "attn.hook_pattern":
        return 2, 1, None  # positions select query positions
    if kind == "mlp.hook_post":
        return 1, None, 2
    return 1, None, None


def _sel(n: int, sel, what: str, name: str) -> torch.Tensor:
    """A boolean vector of length n selecting ``sel`` (int, slice, sequence or None)."""
    mask = torch.zeros(n, dtype=torch.bool)
    if sel is None:
        mask[:] = True
        return mask
    if isinstance(sel, slice):
        mask[sel] = True
        return mask
    idx = [sel] if isinstance(sel, int) else list(torch.as_tensor(sel).reshape(-1).tolist())
    for i in idx:
        if not -n <= int(i) < n:
            raise IndexError(f"{what} {i} is out of range for {name}, which has {n} {what}s.")
        mask[int(i)] = True
    return mask


@dataclass
class Intervention:
    """Base class: acts on one hook point, optionally only on some heads, positions, neurons.

    ``positions`` may be an int, a slice, a list, a 1-D tensor of length *batch* (one position per
    prompt, e.g. each prompt's END token) or a boolean tensor ``[batch, pos]``.
    """

    hook: str
    heads: int | Sequence[int] | None = field(default=None, kw_only=True)
    positions: Positions = field(default=None, kw_only=True)
    neurons: int | Sequence[int] | None = field(default=None, kw_only=True)

    def mask(self, x: torch.Tensor, ctx: HookContext) -> torch.Tensor | None:
        """A boolean tensor broadcastable to ``x`` that is True where this intervention acts (None: everywhere)."""
        pos_dim, head_dim, neuron_dim = _dims(ctx.kind)
        if self.heads is not None and head_dim is None:
            raise ValueError(f"{type(self).__name__} on {ctx.name}: heads= only applies to per-head hook points.")
        if self.neurons is not None and neuron_dim is None:
            raise ValueError(f"{type(self).__name__} on {ctx.name}: neurons= only applies to mlp.hook_post.")
        if self.heads is None and self.positions is None and self.neurons is None:
            return None
        shape = [1] * x.ndim
        m = torch.ones(shape, dtype=torch.bool, device=x.device)
        if self.positions is not None:
            p = self.positions
            if isinstance(p, torch.Tensor) and p.dtype == torch.bool and p.ndim == 2:
                if tuple(p.shape) != (x.shape[0], x.shape[pos_dim]):
                    raise ValueError(
                        f"positions mask has shape {tuple(p.shape)} but {ctx.name} has batch x positions "
                        f"{(x.shape[0], x.shape[pos_dim])}."
                    )
                pm = p.to(x.device)
            elif (
                isinstance(p, torch.Tensor)
                and p.ndim == 1
                and p.dtype != torch.bool
                and len(p) == x.shape[0]
                and len(p) > 1
            ):
                n = x.shape[pos_dim]
                pm = torch.zeros(x.shape[0], n, dtype=torch.bool, device=x.device)
                pm[torch.arange(x.shape[0]), p.to(x.device) % n] = True
            else:
                pm = _sel(x.shape[pos_dim], p, "position", ctx.name).to(x.device)[None, :]
            shp = [1] * x.ndim
            shp[0], shp[pos_dim] = pm.shape[0], pm.shape[1]
            m = m & pm.reshape(shp)
        for sel, dim, what in ((self.heads, head_dim, "head"), (self.neurons, neuron_dim, "neuron")):
            if sel is not None:
                assert dim is not None  # checked above
                shp = [1] * x.ndim
                shp[dim] = -1
                m = m & _sel(x.shape[dim], sel, what, ctx.name).to(x.device).reshape(shp)
        return m

    def replacement(self, x: torch.Tensor, ctx: HookContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        new = self.replacement(x, ctx)
        m = self.mask(x, ctx)
        if m is None:
            return new.expand_as(x).to(x.dtype) if new.shape != x.shape else new.to(x.dtype)
        return torch.where(m, new.to(x.dtype), x)


def _source_tensor(src, hook: str) -> torch.Tensor:
    if isinstance(src, Mapping):
        return src[hook]
    if isinstance(src, torch.Tensor):
        return src
    raise TypeError(f"source for {hook} must be a Cache or a tensor, not {type(src).__name__}.")


def _check_shape(src: torch.Tensor, x: torch.Tensor, ctx: HookContext, what: str) -> torch.Tensor:
    try:
        torch.broadcast_shapes(src.shape, x.shape)
        if torch.broadcast_shapes(src.shape, x.shape) != x.shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(
            f"{what} for {ctx.name} has shape {tuple(src.shape)} but this run's {ctx.name} has shape "
            f"{tuple(x.shape)}; they must match (or broadcast to it). Run the source prompts with the "
            f"same batch size and token length, or align positions first."
        ) from None
    return src.to(device=x.device)


@dataclass
class Patch(Intervention):
    """Replace the activation with the one from ``source`` (a Cache from another run, or a tensor)."""

    source: Any = None

    def replacement(self, x, ctx):
        return _check_shape(_source_tensor(self.source, ctx.name), x, ctx, "patch source")


@dataclass
class Ablate(Intervention):
    """Ablate: ``how="zero"``, ``"mean"`` (mean of ``reference`` over the batch, or over batch and
    positions with ``over=("batch", "pos")``), or ``"resample"`` (each prompt takes the activation of
    another prompt drawn from ``reference``, seeded)."""

    how: str = "zero"
    reference: Any = None
    over: tuple[str, ...] = ("batch",)
    seed: int = 0

    def __post_init__(self):
        if self.how not in ("zero", "mean", "resample"):
            raise ValueError(f"Ablate how={self.how!r}: choose 'zero', 'mean' or 'resample'.")
        if self.how != "zero" and self.reference is None:
            raise ValueError(
                f"Ablate how={self.how!r} needs reference= (a Cache or tensor of activations over a dataset)."
            )

    def replacement(self, x, ctx):
        if self.how == "zero":
            return torch.zeros((), dtype=x.dtype, device=x.device)
        ref = _source_tensor(self.reference, ctx.name).to(x.device)
        if self.how == "mean":
            dims = [0] + ([_dims(ctx.kind)[0]] if "pos" in self.over else [])
            return _check_shape(ref.mean(dim=dims, keepdim=True), x, ctx, "mean-ablation reference")
        g = torch.Generator().manual_seed(self.seed)
        n, b = ref.shape[0], x.shape[0]
        if n == b and n > 1:  # never resample a prompt from itself
            idx = (torch.arange(b) + torch.randint(1, n, (b,), generator=g)) % n
        else:
            idx = torch.randint(0, n, (b,), generator=g)
        return _check_shape(ref[idx.to(ref.device)], x, ctx, "resample reference")


@dataclass
class AddVector(Intervention):
    """Add ``scale * vector`` (steering), broadcast over batch and positions."""

    vector: torch.Tensor | None = None
    scale: float = 1.0

    def apply(self, x, ctx):
        if self.vector is None:
            raise TypeError("AddVector needs vector= (the steering direction).")
        v = _check_shape(torch.as_tensor(self.vector, dtype=x.dtype), x, ctx, "steering vector") * self.scale
        m = self.mask(x, ctx)
        return x + v if m is None else x + m * v


@dataclass
class Apply(Intervention):
    """Any function ``fn(x, ctx) -> tensor | None`` (None keeps ``x``). ``ctx`` is a :class:`HookContext`.
    With ``heads=`` / ``positions=`` / ``neurons=`` the function's output is used only there (``x`` elsewhere)."""

    fn: Callable[..., torch.Tensor | None] | None = None

    def apply(self, x, ctx):
        if self.fn is None:
            raise TypeError("Apply needs fn= (a function of the activation and its HookContext).")
        out = self.fn(x, ctx)
        if out is None:
            return x
        if out.shape != x.shape:
            raise ValueError(f"function on {ctx.name} returned shape {tuple(out.shape)}, expected {tuple(x.shape)}.")
        m = self.mask(x, ctx)
        return out if m is None else torch.where(m, out, x)


# --------------------------------------------------------------------------------------
# the attention kernel hook point


def interplab_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention function registered with transformers as ``"interplab"`` (and called by toy models).

    Without an active hook session on this layer it is exactly transformers' SDPA function."""
    site = module.__dict__.get("_interplab_site")
    if site is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    return site(module, query, key, value, attention_mask, scaling, dropout, kwargs)


_REGISTERED = False


def register_attention() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register("interplab", interplab_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("interplab", sdpa_mask)
    _REGISTERED = True


def _repeat_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[b, h_kv, p, e] -> [b, h_kv*groups, p, e], query head i using kv head i // groups (as HF's repeat_kv)."""
    if groups == 1:
        return x
    b, h, p, e = x.shape
    return x[:, :, None].expand(b, h, groups, p, e).reshape(b, h * groups, p, e)


def _eager_attention(query, key, value, mask, scaling, softcap, on_pattern):
    """Eager attention with the arithmetic of transformers' eager_attention_forward."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, k_len = query.shape[2], key.shape[2]
    if mask is None:
        if q_len > 1:
            causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask[..., :k_len], torch.finfo(scores.dtype).min)
    else:
        scores = scores + mask[..., :k_len]
    pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)  # = query.dtype but in GPT-Neo
    pattern = on_pattern(pattern)
    out = torch.matmul(pattern, value)
    return out.transpose(1, 2).contiguous(), pattern


# --------------------------------------------------------------------------------------
# the session: installs hooks for one call, removes them in __exit__


def _hidden_from_args(args, kwargs):
    if args:
        return args[0], True
    return kwargs["hidden_states"], False


class HookSession:
    """Installs the torch hooks needed for ``cache_names`` and ``interventions`` on ``model``.

    Use as a context manager; everything is removed on exit, including after an exception."""

    def __init__(
        self,
        model: Model,
        cache_names: Iterable[str] = (),
        interventions: Sequence[Intervention] = (),
        grad: bool = False,
    ):
        self.model = model
        self.cache = Cache(model)
        self.grad = grad
        valid = model.hook_names()
        self.cache_names = set(cache_names)
        interventions = list(interventions)
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise TypeError(f"interventions must be Patch/Ablate/AddVector/Apply objects, not {type(iv).__name__}.")
        check_names(self.cache_names, valid)
        check_names([iv.hook for iv in interventions], valid)
        self.ivs: dict[str, list[Intervention]] = {}
        for iv in interventions:
            self.ivs.setdefault(iv.hook, []).append(iv)
        self._handles: list = []
        self._undo: list[Callable[[], None]] = []  # the adapter's undo of each attention-kernel site
        self._shape: dict[int, torch.Size] = {}  # [batch, pos] of each layer's input, for flat-token MLPs
        self._attn_impl_saved = None
        self._scratch: dict[int, torch.Tensor] = {}

    # one logical hook point: interventions in order, then the cache
    def _point(self, name: str, kind: str, layer: int | None, x: torch.Tensor) -> torch.Tensor:
        ivs = self.ivs.get(name)
        if ivs:
            ctx = HookContext(name, layer, kind, self.model)
            for iv in ivs:
                x = iv.apply(x, ctx)
        if name in self.cache_names:
            self.cache._put(name, x if self.grad else x.detach())
        return x

    def _derive(self, fn, *args):
        with torch.set_grad_enabled(self.grad):
            out = fn(*args)
        return out if self.grad else out.detach()

    def _wants(self, name: str) -> bool:
        return name in self.cache_names or name in self.ivs

    # ---------------------------------------------------------------- install
    def __enter__(self) -> Cache:
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self.cache

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for undo in self._undo:
            undo()
        self._undo.clear()
        if self._attn_impl_saved is not None:
            self.model.adapter.set_attn_implementation(self._attn_impl_saved)
            self._attn_impl_saved = None
        self._scratch.clear()
        self._shape.clear()

    def _out_hook(self, module, names: list[tuple[str, str, int | None]]):
        def hook(mod, args, output):
            is_tuple = isinstance(output, tuple)
            x = output[0] if is_tuple else output
            y = x
            for name, kind, layer in names:
                y = self._point(name, kind, layer, y)
            if y is x:
                return None
            return (y, *output[1:]) if is_tuple else y

        self._handles.append(module.register_forward_hook(hook))

    def _in_hook(self, module, fn):
        def hook(mod, args, kwargs):
            x, positional = _hidden_from_args(args, kwargs)
            y = fn(x)
            if y is x:
                return None
            if positional:
                return (y, *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = y
            return args, kwargs

        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _install(self) -> None:
        model, ad = self.model, self.model.adapter
        cfg = model.cfg
        wanted = self.cache_names | set(self.ivs)
        if "hook_embed" in wanted:
            self._out_hook(ad.embed(), [("hook_embed", "hook_embed", None)])
        if "hook_pos_embed" in wanted:
            self._out_hook(ad.pos_embed(), [("hook_pos_embed", "hook_pos_embed", None)])
        if "ln_final.hook_normalized" in wanted:
            self._out_hook(ad.ln_final(), [("ln_final.hook_normalized", "ln_final.hook_normalized", None)])
        need_kernel = False
        for layer in range(cfg.n_layers):
            w = {k for k in layer_kinds(has_mlp=True, parallel=False) if f"blocks.{layer}.{k}" in wanted}
            if not w:
                continue
            n = lambda k, _l=layer: f"blocks.{_l}.{k}"
            block = ad.layer(layer)
            mid = "hook_resid_mid" in w
            flat = ad.mlp_flat_tokens and bool(w & {"mlp.hook_post", "hook_mlp_out"})
            # resid_pre (also kept as scratch when resid_mid is needed; its shape kept for a flat-token MLP)
            if "hook_resid_pre" in w or mid or flat:
                pre_name = n("hook_resid_pre")

                def pre(x, _l=layer, _n=pre_name, _keep=mid, _w="hook_resid_pre" in w, _flat=flat):
                    if _w:
                        x = self._point(_n, "hook_resid_pre", _l, x)
                    if _keep:
                        self._scratch[_l] = x
                    if _flat:
                        self._shape[_l] = x.shape[:-1]
                    return x

                self._in_hook(block, pre)
            # attention kernel: q, k, v, pattern
            if w & ATTN_KERNEL_KINDS:
                need_kernel = True
                self._undo.append(ad.install_attn_site(layer, self._kernel_site(layer)))
            # z (and result)
            result_iv = n("attn.hook_result") in self.ivs
            if not result_iv and ("attn.hook_z" in w or "attn.hook_result" in w):
                self._in_hook(
                    ad.o_proj(layer), self._z_fn(layer, cache_result="attn.hook_result" in w and not result_iv)
                )
            if result_iv:
                self._result_hook(layer)
            # attn_out and resid_mid
            if "hook_attn_out" in w or mid:
                self._attn_out_hook(layer, mid)
            if "mlp.hook_post" in w:
                self._in_hook(ad.neurons(layer), self._mlp_fn(layer, "mlp.hook_post"))
            if "hook_mlp_out" in w:
                if flat:
                    mlp_out = self._mlp_fn(layer, "hook_mlp_out")
                    self._handles.append(ad.mlp_out(layer).register_forward_hook(lambda m, a, o, _f=mlp_out: _f(o)))
                else:
                    self._out_hook(ad.mlp_out(layer), [(n("hook_mlp_out"), "hook_mlp_out", layer)])
            if "hook_resid_post" in w:
                self._out_hook(block, [(n("hook_resid_post"), "hook_resid_post", layer)])
        if need_kernel:
            self._attn_impl_saved = ad.set_attn_implementation("interplab")

    def _mlp_fn(self, layer: int, kind: str):
        """An MLP hook point; a flat-token MLP's ``[batch * pos, n]`` is seen as ``[batch, pos, n]``."""
        name = f"blocks.{layer}.{kind}"

        def fn(x):
            if x.ndim != 2 or layer not in self._shape:
                return self._point(name, kind, layer, x)
            x3 = x.view(*self._shape[layer], x.shape[-1])
            y3 = self._point(name, kind, layer, x3)
            return x if y3 is x3 else y3.reshape(x.shape)

        return fn

    def _z_fn(self, layer: int, cache_result: bool):
        cfg = self.model.cfg
        name = f"blocks.{layer}.attn.hook_z"

        def fn(x):
            z = x.view(*x.shape[:-1], cfg.n_heads, cfg.d_head)
            z2 = self._point(name, "attn.hook_z", layer, z)
            if cache_result:
                zz = z2 if self.grad else z2.detach()
                self.cache._put_lazy(
                    f"blocks.{layer}.attn.hook_result", lambda: self._derive(self.model.head_results, layer, zz)
                )
            return x if z2 is z else z2.reshape(x.shape)

        return fn

    def _result_hook(self, layer: int) -> None:
        name = f"blocks.{layer}.attn.hook_result"
        cfg = self.model.cfg
        zname = f"blocks.{layer}.attn.hook_z"

        def hook(mod, args, output):
            x = args[0]
            z = x.view(*x.shape[:-1], cfg.n_heads, cfg.d_head)
            if self._wants(zname):
                z = self._point(zname, "attn.hook_z", layer, z)
            res = self.model.head_results(layer, z)
            res = self._point(name, "attn.hook_result", layer, res)
            out = res.sum(dim=-2)
            b_o = self.model.adapter.b_o(layer)
            return out + b_o if b_o is not None else out

        self._handles.append(self.model.adapter.o_proj(layer).register_forward_hook(hook))

    def _attn_out_hook(self, layer: int, mid: bool) -> None:
        a_name, m_name = f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_resid_mid"

        def hook(mod, args, output):
            is_tuple = isinstance(output, tuple)
            x = output[0] if is_tuple else output
            y = x
            if self._wants(a_name):
                y = self._point(a_name, "hook_attn_out", layer, y)
            if mid:
                pre = self._scratch[layer]
                m = pre + y
                m2 = self._point(m_name, "hook_resid_mid", layer, m)
                if m2 is not m:
                    y = m2 - pre
            if y is x:
                return None
            return (y, *output[1:]) if is_tuple else y

        self._handles.append(self.model.adapter.attn_out(layer).register_forward_hook(hook))

    def _kernel_site(self, layer: int):
        cfg = self.model.cfg
        groups = cfg.n_heads // cfg.n_kv_heads
        names = {k: f"blocks.{layer}.attn.{k}" for k in ("hook_q", "hook_k", "hook_v", "hook_pattern")}
        eager_native = self.model.adapter.attn_implementation == "eager"
        q_pre = self.model.adapter.query_prescale(layer)

        def site(module, q, k, v, mask, scaling, dropout, kw):
            if scaling is None:
                scaling = q.shape[-1] ** -0.5
            if self._wants(names["hook_q"]):
                qc = q.transpose(1, 2) if q_pre == 1.0 else q.transpose(1, 2) / q_pre
                q2 = self._point(names["hook_q"], "attn.hook_q", layer, qc)
                if q2 is not qc:
                    q = (q2 if q_pre == 1.0 else q2 * q_pre).transpose(1, 2)
            kv_iv = names["hook_k"] in self.ivs or names["hook_v"] in self.ivs
            expanded = kv_iv or self._wants(names["hook_pattern"])
            if kv_iv:
                k, v = _repeat_heads(k, groups), _repeat_heads(v, groups)
            for nm, kind, t in ((names["hook_k"], "attn.hook_k", "k"), (names["hook_v"], "attn.hook_v", "v")):
                if not self._wants(nm):
                    continue
                val = k if t == "k" else v
                if kv_iv:  # per-query-head values, may be rewritten
                    out = self._point(nm, kind, layer, val.transpose(1, 2)).transpose(1, 2)
                else:  # cache only: store per kv head, expand when read
                    compact = val.transpose(1, 2)
                    compact = compact if self.grad else compact.detach()
                    self.cache._put_lazy(nm, lambda c=compact: c.repeat_interleave(groups, dim=2))
                    out = val
                if t == "k":
                    k = out
                else:
                    v = out
            if not expanded and not eager_native:
                from transformers.integrations.sdpa_attention import sdpa_attention_forward

                return sdpa_attention_forward(module, q, k, v, mask, scaling=scaling, dropout=dropout, **kw)
            if not kv_iv:
                k, v = _repeat_heads(k, groups), _repeat_heads(v, groups)
            softcap = kw.get("softcap")
            return _eager_attention(
                q,
                k,
                v,
                mask,
                scaling,
                softcap,
                lambda p: self._point(names["hook_pattern"], "attn.hook_pattern", layer, p),
            )

        return site
