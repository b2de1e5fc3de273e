"""The ablated runs behind :func:`interplab.analyses.causal.ablation.head_ablation_importance`, and the helpers
the ablation analyses share: which heads, which chunks, what replaces a head's ``z``.

Head ablation as in Michel, Levy & Neubig (2019), "Are Sixteen Heads Really Better than One?" (head masking);
Wang et al. (2022), "Interpretability in the Wild" (mean ablation); Chan et al. (2022), "Causal Scrubbing"
(resample ablation). :func:`ablated_losses` computes the clean and ablated losses per chunk, the naive way (one
forward per head) or the fast way (prefix reuse, a layer's variants batched,
:func:`interplab.analyses.causal.engine.run_variants`); :func:`ablation_runs` runs it here or dealt out to
workers (:mod:`interplab.sweeps.split`). The definitions and the speed are in the docstring of
:mod:`interplab.analyses.causal.ablation`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from interplab.analyses.causal.engine import Method, run_variants, where_variants
from interplab.hooks import Ablate, Apply, HookContext, Patch
from interplab.models.scoring import sequence_losses

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "HOWS",
    "How",
    "MeanOver",
    "ablated_losses",
    "ablation_runs",
    "ablation_share",
    "auto_batch_tokens",
    "check_tokens",
    "resample_index",
    "resolve_heads",
]

How = Literal["zero", "mean", "resample"]
"""What replaces an ablated head's ``z``: 0, its mean over the corpus chunks, or another chunk's value."""
MeanOver = Literal["all", "position"]
"""Mean ablation's average: over chunks and positions (``all``) or over chunks only, per position."""
HOWS: tuple[How, ...] = ("zero", "mean", "resample")


def check_tokens(model: Model, tokens) -> torch.Tensor:
    t = torch.as_tensor(tokens)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.is_floating_point():
        raise ValueError(f"tokens must be integer ids [n_chunks, chunk_len], got shape {tuple(t.shape)} {t.dtype}.")
    if t.shape[1] < 2:
        raise ValueError(f"chunks need at least 2 tokens (one prediction), got chunk_len={t.shape[1]}.")
    return model.as_tokens(t).cpu()


def resolve_heads(model: Model, heads, layers) -> list[tuple[int, int]]:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if heads is not None and layers is not None:
        raise ValueError("give heads= or layers=, not both.")
    if layers is not None:
        layers = [layers] if isinstance(layers, int) else list(layers)
        for layer in layers:
            if not 0 <= int(layer) < n_layers:
                raise ValueError(f"layer {layer} is out of range: the model has layers 0..{n_layers - 1}.")
        return [(int(layer), h) for layer in sorted(set(layers)) for h in range(n_heads)]
    if heads is None:
        return [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    out = []
    for item in heads:
        try:
            layer, h = (int(x) for x in item)
        except (TypeError, ValueError):
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}.") from None
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"head ({layer}, {h}): layer {layer} is out of range; the model has layers 0..{n_layers - 1}."
            )
        if not 0 <= h < n_heads:
            raise ValueError(f"head ({layer}, {h}): head {h} is out of range; each layer has heads 0..{n_heads - 1}.")
        if (layer, h) not in out:
            out.append((layer, h))
    if not out:
        raise ValueError("heads= is empty; give at least one (layer, head) pair, or None for all heads.")
    return sorted(out)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def resample_index(n: int, seed: int = 0) -> torch.Tensor:
    """Which chunk each chunk takes its activation from in resample ablation: ``(i + r_i) mod n``,
    ``r_i`` uniform in ``1..n-1`` (never itself) — the draw of ``Ablate(how="resample", seed=seed)``."""
    if n < 2:
        raise ValueError("resample ablation needs at least 2 chunks (a chunk never takes its own activation).")
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n


def _replacement(
    z: torch.Tensor | None,
    how: How,
    mean_over: MeanOver,
    rows: slice,
    ridx: torch.Tensor | None,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replacement ``z`` for the chunks ``rows``, broadcastable to ``[rows, p, H, e]``."""
    if how == "zero":
        return torch.zeros((), dtype=like.dtype if like is not None else torch.float32)
    assert z is not None, "mean and resample ablation need the clean run's z"
    if how == "mean":
        dims = [0, 1] if mean_over == "all" else [0]
        return z.mean(dim=dims, keepdim=True)
    assert ridx is not None
    return z[ridx[rows]]


def auto_batch_tokens(model: Model, chunk_len: int) -> int:
    """Default tokens per forward pass: the logits of one forward are ``[tokens, vocab]`` float32, kept
    at or below 1 GiB (SmolLM2: 5461 tokens, so the 9 variants of a layer on 4 chunks of 128 go through
    one pass), at most 16384 tokens, and at least one chunk."""
    return max(chunk_len, min(16384, (2**28) // max(1, model.cfg.d_vocab)))


def ablated_losses(
    model: Model,
    tokens: torch.Tensor,
    head_list: Sequence[tuple[int, int]],
    how: How,
    mean_over: MeanOver,
    seed: int,
    method: Method,
    budget: int,
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """The clean run and the ablated runs of :func:`head_ablation_importance`: ``(clean loss per chunk [n],
    ablated loss [n_layers, n_heads, n] (NaN for heads not in ``head_list``), forward passes, clean seconds,
    ablation seconds)``. Heads of one layer are batched the same way whichever other layers are asked for, so a
    worker given some of the layers computes exactly what the whole run computes for them."""
    n, p = tokens.shape
    cfg = model.cfg
    per_batch = max(1, budget // p)  # chunks per forward
    chunk_slices = _batches(n, per_batch)
    ridx = resample_index(n, seed) if how == "resample" else None
    layers_needed = sorted({layer for layer, _ in head_list})
    need_z = how != "zero"
    H = cfg.n_heads

    # ---- clean run: baseline loss, and what the ablations need (z), and the fast path's resid_pre
    t1 = time.perf_counter()
    names = [f"blocks.{layer}.attn.hook_z" for layer in layers_needed] if need_z else []
    if method == "fast":
        names += [f"blocks.{layer}.hook_resid_pre" for layer in layers_needed]
    clean_losses, stores = [], {nm: [] for nm in names}
    n_forward = 0
    with torch.no_grad():
        for rows in chunk_slices:
            logits, cache = model.run(tokens[rows], cache=names)
            n_forward += 1
            clean_losses.append(sequence_losses(logits, tokens[rows]))
            for nm in names:
                stores[nm].append(cache[nm])
            del logits, cache
    clean = torch.cat(clean_losses)
    acts = {nm: torch.cat(v) for nm, v in stores.items()}
    del stores
    t_clean = time.perf_counter() - t1

    # ---- ablated runs
    t2 = time.perf_counter()
    ablated = torch.full((cfg.n_layers, H, n), float("nan"))
    with torch.no_grad():
        if method == "naive":
            for layer, h in head_list:
                hook = f"blocks.{layer}.attn.hook_z"
                z = acts.get(hook)
                for rows in chunk_slices:
                    if how == "zero":
                        iv = Ablate(hook, heads=[h], how="zero")
                    elif how == "mean":
                        iv = Ablate(
                            hook,
                            heads=[h],
                            how="mean",
                            reference=z,
                            over=("batch", "pos") if mean_over == "all" else ("batch",),
                        )
                    else:
                        assert z is not None and ridx is not None
                        iv = Patch(hook, heads=[h], source=z[ridx[rows]])
                    logits = model.run(tokens[rows], interventions=[iv]).logits
                    n_forward += 1
                    ablated[layer, h, rows] = sequence_losses(logits, tokens[rows])
                    del logits
        else:
            for layer in layers_needed:
                hook = f"blocks.{layer}.attn.hook_z"
                resid = acts[f"blocks.{layer}.hook_resid_pre"]
                z = acts.get(hook)
                lheads = [h for lay, h in head_list if lay == layer]
                for rows in chunk_slices:
                    nb = rows.stop - rows.start
                    per_fwd = max(1, budget // (nb * p))  # variants per forward
                    repl = _replacement(z, how, mean_over, rows, ridx, like=resid)
                    for g0 in range(0, len(lheads), per_fwd):
                        group = lheads[g0 : g0 + per_fwd]
                        k = len(group)
                        mask = torch.zeros(k, 1, 1, H, 1, dtype=torch.bool)
                        for v, h in enumerate(group):
                            mask[v, 0, 0, h, 0] = True

                        def fn(x: torch.Tensor, ctx: HookContext, _mask=mask, _k=k, _repl=repl) -> torch.Tensor:
                            return where_variants(x, _k, _mask, _repl)

                        # variant-major: rows v*nb:(v+1)*nb are the chunks with head group[v] ablated
                        logits = run_variants(model, resid[rows], layer, k, [Apply(hook, fn=fn)])
                        n_forward += 1
                        losses = sequence_losses(logits, tokens[rows].repeat(k, 1)).view(k, nb)
                        for v, h in enumerate(group):
                            ablated[layer, h, rows] = losses[v]
                        del logits
    t_abl = time.perf_counter() - t2
    return clean, ablated, n_forward, t_clean, t_abl


def ablation_share(
    model_ref: str, layers: list[int], tokens: torch.Tensor, head_list: list[tuple[int, int]], options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """A worker's share of :func:`head_ablation_importance`: the model loaded by ``model_ref`` (one thread) and
    :func:`ablated_losses` for the heads of ``head_list`` in ``layers``."""
    from interplab.sweeps.split import worker_model

    with worker_model(model_ref) as model:
        mine = [(a, h) for a, h in head_list if a in set(layers)]
        return ablated_losses(model, tokens, mine, **options)


def ablation_runs(
    model: Model,
    tokens: torch.Tensor,
    head_list: list[tuple[int, int]],
    how: How,
    mean_over: MeanOver,
    seed: int,
    method: Method,
    budget: int,
    backend: str,
    max_parallel: int | None,
    model_ref: str | None,
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """:func:`ablated_losses` in this process (``backend="serial"``) or with the layers dealt out to workers of
    a sweep backend (:mod:`interplab.sweeps.split`); the clean losses are every worker's (identical) clean run's,
    the seconds the workers' sums."""
    if backend == "serial":
        return ablated_losses(model, tokens, head_list, how, mean_over, seed, method, budget)
    from interplab.sweeps.split import deal, run_shares

    options = {"how": how, "mean_over": mean_over, "seed": seed, "method": method, "budget": budget}
    ablated = torch.full((model.cfg.n_layers, model.cfg.n_heads, tokens.shape[0]), float("nan"))
    got: dict[str, Any] = {"clean": None, "n_forward": 0, "t_clean": 0.0, "t_abl": 0.0}

    def keep(layers: list[int], value: tuple) -> None:
        clean, abl, n_fwd, t_c, t_a = value
        for a, h in head_list:
            if a in layers:
                ablated[a, h] = abl[a, h]
        got["clean"] = clean if got["clean"] is None else got["clean"]
        got["n_forward"] += n_fwd
        got["t_clean"] += t_c
        got["t_abl"] += t_a

    layers = sorted({a for a, _ in head_list})
    run_shares(
        ablation_share,
        model,
        deal(layers, max_parallel),
        (tokens, head_list, options),
        keep,
        backend,
        max_parallel,
        model_ref,
    )
    return got["clean"], ablated, got["n_forward"], got["t_clean"], got["t_abl"]
