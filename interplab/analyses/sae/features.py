"""Any SAE — trained here or loaded from SAELens's format — read feature by feature: where each feature fires
most on corpus text (the max-activating examples of Bricken et al. 2023's feature visualisations) and which
tokens its decoder direction promotes and suppresses directly (the "logit weights" of Bricken et al. 2023 and
Neuronpedia: the decoder row through the unembedding with the final norm's weight folded in, its token-dependent
scale dropped, as in :mod:`interplab.models.folding`).

SAELens format (Bloom, Tigges, Duong & Chanin 2024, SAELens): a directory with ``cfg.json`` and
``sae_weights.safetensors`` holding ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec`` (and
``threshold`` for JumpReLU). :func:`load_saelens` reads the ``standard`` (ReLU), ``topk`` and ``jumprelu``
architectures, with or without ``apply_b_dec_to_input``, from SAELens 6 (hook and model names under
``metadata``) and older files (at the top level, TopK's ``k`` under ``activation_fn_kwargs``); it refuses what
the interplab SAE cannot compute the same way (gated SAEs, per-token input normalisation, decoder-norm rescaling).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interplab.analyses.sae.model import SAE, SAEConfig

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "feature_density",
    "feature_logit_effects",
    "hook_activations",
    "load_saelens",
    "max_activating_examples",
    "saelens_hook",
]

_ARCH = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def _saelens_cfg(path: Path) -> dict[str, Any]:
    p = path / "cfg.json"
    if not (p.exists() and (path / "sae_weights.safetensors").exists()):
        raise FileNotFoundError(
            f"{path} is not an SAE in SAELens's format (it needs cfg.json and sae_weights.safetensors); "
            "interplab's own SAEs load with SAE.load."
        )
    return json.loads(p.read_text(encoding="utf-8"))


def saelens_hook(path: str | Path) -> tuple[str | None, str | None]:
    """``(hook_name, model_name)`` recorded in a SAELens directory's ``cfg.json`` (None where absent)."""
    cfg = _saelens_cfg(Path(path))
    meta = cfg.get("metadata") or {}
    return meta.get("hook_name") or cfg.get("hook_name"), meta.get("model_name") or cfg.get("model_name")


def load_saelens(path: str | Path) -> SAE:
    """An interplab :class:`~interplab.analyses.sae.model.SAE` computing what the SAELens SAE in ``path``
    computes (see the module docstring)."""
    from safetensors.torch import load_file

    root = Path(path)
    cfg = _saelens_cfg(root)
    arch = cfg.get("architecture") or cfg.get("activation_fn_str") or "standard"
    if arch not in _ARCH:
        raise ValueError(
            f"{root}: SAELens architecture {arch!r} is not supported here (supported: standard, topk, jumprelu)."
        )
    norm = cfg.get("normalize_activations") or "none"
    if norm not in ("none", None):
        raise ValueError(f"{root}: normalize_activations={norm!r} is not supported (only 'none').")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{root}: rescale_acts_by_decoder_norm=True is not supported.")
    w = load_file(str(root / "sae_weights.safetensors"))
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in w]
    if missing or (arch == "jumprelu" and "threshold" not in w):
        raise ValueError(f"{root}: sae_weights.safetensors lacks {missing or ['threshold']}.")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    if tuple(w["W_enc"].shape) != (d_in, d_sae) or tuple(w["W_dec"].shape) != (d_sae, d_in):
        raise ValueError(
            f"{root}: W_enc {tuple(w['W_enc'].shape)} / W_dec {tuple(w['W_dec'].shape)} do not match d_in={d_in}, "
            f"d_sae={d_sae}."
        )
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k") or 1
    sae = SAE(
        SAEConfig(
            d_in=d_in,
            n_features=d_sae,
            kind=_ARCH[arch],  # type: ignore[arg-type]
            k=int(k),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        )
    )
    state = {n: w[n].float() for n in ("W_enc", "W_dec", "b_enc", "b_dec")} | {"scale": torch.tensor(1.0)}
    if arch == "jumprelu":
        state["log_threshold"] = w["threshold"].float().log()
    sae.load_state_dict(state)
    return sae


@torch.no_grad()
def feature_logit_effects(model: Model, sae: SAE, features: list[int], k: int = 10) -> dict[int, dict[str, list]]:
    """Per feature, the ``k`` tokens its decoder direction raises most and lowers most, directly:
    ``W_dec[i] · diag(w_final) · W_U`` (see the module docstring). ``{feature: {"top": [[token, value], …],
    "bottom": […]}}``."""
    from interplab.models.folding import fold_read, norm_info

    W_U = fold_read(model.W_U.float(), norm_info(model.adapter.ln_final()))
    if sae.cfg.d_in != W_U.shape[0]:
        raise ValueError(f"the SAE reads d_in={sae.cfg.d_in}; {model.name} has d_model={W_U.shape[0]}.")
    eff = (sae.W_dec[torch.tensor(features)].float() / sae.scale) @ W_U  # [n, vocab]
    out = {}
    hi, lo = eff.topk(k, dim=1), (-eff).topk(k, dim=1)
    for j, f in enumerate(features):
        out[int(f)] = {
            "top": [[t, round(float(v), 4)] for t, v in zip(model.to_str_tokens(hi.indices[j]), hi.values[j])],
            "bottom": [[t, round(-float(v), 4)] for t, v in zip(model.to_str_tokens(lo.indices[j]), lo.values[j])],
        }
    return out


@torch.no_grad()
def hook_activations(model: Model, hook: str, tokens: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """The activations at ``hook`` on ``tokens [n, pos]``, in fp32 as ``[n, pos, d]`` (heads flattened), run in
    batches of ``batch`` sequences."""
    parts = []
    for s in range(0, tokens.shape[0], batch):
        _, cache = model.run(tokens[s : s + batch], cache=[hook])
        x = cache[hook].float()
        parts.append(x.reshape(x.shape[0], x.shape[1], -1))
    return torch.cat(parts)


@torch.no_grad()
def feature_density(sae: SAE, acts: torch.Tensor) -> torch.Tensor:
    """The fraction of the positions of ``acts [n, pos, d]`` at which each feature of ``sae`` is active (> 0)."""
    counts = torch.zeros(sae.cfg.n_features)
    for chunk in acts.reshape(-1, acts.shape[-1]).split(4096):
        counts += (sae.encode(chunk) > 0).sum(0).float()
    return counts / (acts.shape[0] * acts.shape[1])


@torch.no_grad()
def max_activating_examples(
    model: Model,
    sae: SAE,
    hook: str,
    tokens: torch.Tensor,
    features: list[int],
    n_top: int = 8,
    before: int = 12,
    after: int = 3,
    batch: int = 8,
    skip_first: bool = False,
    acts: torch.Tensor | None = None,
) -> dict[int, list[dict[str, Any]]]:
    """The ``n_top`` highest activations of each feature at ``hook`` over ``tokens [n, pos]``, with their contexts
    (``{"activation", "seq", "pos", "before", "token", "after"}``; features that never fire get an empty list).
    ``skip_first``: ignore position 0 (a BOS token the SAE never saw). ``acts``: the hook's activations on
    ``tokens`` when already computed (:func:`hook_activations`), so the model does not run again."""
    feats = torch.tensor(features, dtype=torch.long)
    best_v = torch.full((len(feats), n_top), -1.0)
    best_i = torch.zeros((len(feats), n_top), dtype=torch.long)
    n, p = tokens.shape
    if acts is None:
        acts = hook_activations(model, hook, tokens, batch)
    for s in range(0, n, batch):
        a = sae.encode(acts[s : s + batch])[..., feats]  # [b, p, nf]
        if skip_first:
            a[:, 0] = 0
        flat = a.permute(2, 0, 1).reshape(len(feats), -1)  # [nf, b*p]
        idx = torch.arange(s * p, s * p + flat.shape[1]).expand(len(feats), -1)
        v, i = torch.cat([best_v, flat], 1), torch.cat([best_i, idx], 1)
        top = v.topk(min(n_top, v.shape[1]), dim=1)
        best_v, best_i = top.values, i.gather(1, top.indices)
    out: dict[int, list[dict[str, Any]]] = {}
    for j, f in enumerate(features):
        found = []
        for v, flat_i in zip(best_v[j].tolist(), best_i[j].tolist(), strict=True):
            if v <= 0:
                continue
            seq, pos = divmod(int(flat_i), p)
            strs = model.to_str_tokens(tokens[seq]) if model.tokenizer is not None else [str(t) for t in tokens[seq]]
            found.append(
                {
                    "activation": v,
                    "seq": seq,
                    "pos": pos,
                    "before": "".join(strs[max(0, pos - before) : pos]),
                    "token": strs[pos],
                    "after": "".join(strs[pos + 1 : pos + 1 + after]),
                }
            )
        out[int(f)] = found
    return out
