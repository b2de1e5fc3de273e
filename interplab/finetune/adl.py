"""Activation difference lens (Minder et al. 2025, "Narrow Finetuning Leaves Clearly Readable Traces in
Activation Differences", arXiv:2510.13900): does the mean difference between the tuned and the base model's
residual streams on the first tokens of *unrelated* text name what the model was tuned on?

For ``n`` documents of unrelated text, the first ``k`` tokens of each (with the tokenizer's BOS when it adds
one), both models run and at layer ``L`` (default the middle one, ``blocks.{n_layers // 2}.hook_resid_post``)::

    δ_j = mean_docs (h_tuned[L, j] − h_base[L, j])          one vector per position j < k
    δ   = mean_j δ_j

Each vector is read through the logit lens (nostalgebraist 2020): the tuned model's final norm and unembedding
(:func:`interplab.models.scoring.unembed_resid`), and its top tokens are listed. A vector that is exactly 0
(identical models) reads as nothing.

**Relevance score** (interplab's, to make "does it name the fine-tuning domain" a number): the fine-tuning
text's *characteristic* tokens are those that occur in the fine-tuning text and never in the unrelated text
(both tokenized whole, up to 10^6 characters each); ``relevance`` is the fraction of the ``top_k`` lens tokens of
``δ`` that are characteristic, ``chance`` the fraction of the whole vocabulary that is (what ``top_k`` random
tokens would score on average). Minder et al. judge relevance with an LLM grader and also steer with ``δ``;
neither is done here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from interplab.models.scoring import unembed_resid

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = ["activation_difference_lens", "characteristic_tokens", "document_prefixes"]

MAX_CHARS = 1_000_000


def document_prefixes(model: Model, documents: Sequence[str], k: int = 5) -> torch.Tensor:
    """``[n, k]`` token ids: the first ``k`` tokens of each document (a BOS first when the tokenizer adds one),
    documents shorter than ``k`` tokens left out."""
    tok = model.need_tokenizer()
    bos = [tok.bos_token_id] if model.default_prepend_bos and tok.bos_token_id is not None else []
    rows = []
    for d in documents:
        ids = bos + tok(d, add_special_tokens=False)["input_ids"]
        if len(ids) >= k:
            rows.append(ids[:k])
    if not rows:
        raise ValueError(f"no document of the unrelated text has {k} tokens; give longer documents or a smaller k.")
    return torch.tensor(rows, dtype=torch.long)


def characteristic_tokens(model: Model, data_text: str, other_text: str) -> set[int]:
    """Token ids that occur in ``data_text`` and never in ``other_text`` (each tokenized up to 10^6 characters)."""
    tok = model.need_tokenizer()
    data = set(tok(data_text[:MAX_CHARS], add_special_tokens=False)["input_ids"])
    other = set(tok(other_text[:MAX_CHARS], add_special_tokens=False)["input_ids"])
    return data - other


def _top(model: Model, vec: torch.Tensor, k: int) -> list[dict[str, Any]]:
    if not bool(vec.abs().sum() > 0):
        return []
    logits = unembed_resid(model, vec.to(model.device)[None, None]).float()[0, 0]
    vals, ids = logits.topk(k)
    return [
        {"token": model.to_string([int(i)]), "token_id": int(i), "logit": round(float(v), 4)}
        for v, i in zip(vals.tolist(), ids.tolist())
    ]


@torch.no_grad()
def activation_difference_lens(
    base: Model,
    tuned: Model,
    documents: Sequence[str],
    *,
    data_text: str | None = None,
    other_text: str | None = None,
    k: int = 5,
    layer: int | None = None,
    top_k: int = 20,
) -> dict[str, Any]:
    """The activation difference lens (see the module docstring).

    Args:
        base: the base model.
        tuned: the fine-tuned model (same tokenizer).
        documents: unrelated documents; the first ``k`` tokens of each are read.
        data_text: the fine-tuning text (for the relevance score; None: no score).
        other_text: the unrelated text the characteristic tokens must be absent from (default: the documents).
        k: tokens read per document (Minder et al.: 5).
        layer: the layer whose ``hook_resid_post`` is compared (default ``n_layers // 2``).
        top_k: tokens listed per vector.

    Returns a dict: ``layer``, ``k``, ``n_documents``, ``norm`` (``||δ||``), ``norm_by_position``,
    ``base_norm`` (mean ``||h_base||`` over the same positions, for scale), ``top_tokens`` (of ``δ``),
    ``top_tokens_by_position``, and with ``data_text`` ``relevance``, ``chance``, ``n_characteristic``.
    """
    n_layers = base.cfg.n_layers
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must lie in [0, {n_layers}), got {layer}.")
    toks = document_prefixes(base, documents, k)
    name = f"blocks.{layer}.hook_resid_post"
    _, cb = base.run(toks, cache=[name])
    _, ct = tuned.run(toks, cache=[name])
    hb, ht = cb[name].double().cpu(), ct[name].double().cpu()
    delta_pos = (ht - hb).mean(0)  # [k, d]
    delta = delta_pos.mean(0)
    out: dict[str, Any] = {
        "layer": layer,
        "hook": name,
        "k": k,
        "n_documents": int(toks.shape[0]),
        "norm": float(delta.norm()),
        "norm_by_position": [float(v.norm()) for v in delta_pos],
        "base_norm": float(hb.norm(dim=-1).mean()),
        "read_with": "tuned model's final norm and unembedding",
        "top_tokens": _top(tuned, delta.float(), top_k),
        "top_tokens_by_position": [[t["token"] for t in _top(tuned, v.float(), min(top_k, 10))] for v in delta_pos],
    }
    if data_text is not None:
        char = characteristic_tokens(base, data_text, other_text if other_text is not None else "\n\n".join(documents))
        top = out["top_tokens"]
        out["n_characteristic"] = len(char)
        out["relevance"] = sum(t["token_id"] in char for t in top) / len(top) if top else 0.0
        out["chance"] = len(char) / base.cfg.d_vocab
    return out
