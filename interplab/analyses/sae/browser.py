"""The feature browser's data: the held-out contexts where each feature fires most (as in Bricken et al. 2023's
feature visualisations). The HTML is built by :mod:`interplab.report.sections.sae`."""

from __future__ import annotations

from typing import Any

import torch

from interplab.analyses.sae.model import SAE
from interplab.io.activations import ActivationDataset

__all__ = ["top_contexts"]


@torch.no_grad()
def top_contexts(
    sae: SAE,
    ds: ActivationDataset,
    features: list[int],
    n_top: int = 8,
    batch_size: int = 4096,
    tokenizer: Any = None,
    before: int = 12,
    after: int = 3,
) -> dict[int, list[dict]]:
    """The ``n_top`` highest activations of each feature in ``features`` over ``ds``, with their contexts:
    ``{feature: [{"activation", "seq", "pos", "before", "token", "after"}, ...]}`` (features that never fire on
    ``ds`` get an empty list).

    Args:
        sae: the SAE.
        ds: the rows to search (with their token index, for the contexts).
        features: feature indices.
        n_top: contexts per feature.
        batch_size: rows per batch.
        tokenizer: decodes the context tokens to strings (None: token ids).
        before, after: tokens of context either side.
    """
    feats = torch.tensor(features, dtype=torch.long)
    best_v = torch.full((len(feats), n_top), -1.0)
    best_s = torch.zeros((len(feats), n_top), dtype=torch.long)
    best_p = torch.zeros((len(feats), n_top), dtype=torch.long)
    for x, s, p in ds.batches(batch_size, shuffle=False, with_index=True):
        a = sae.encode(x)[:, feats].T  # [nf, b]
        v = torch.cat([best_v, a], 1)
        ss = torch.cat([best_s, s.long().expand(len(feats), -1)], 1)
        pp = torch.cat([best_p, p.long().expand(len(feats), -1)], 1)
        top = v.topk(min(n_top, v.shape[1]), dim=1)
        best_v, best_s, best_p = top.values, ss.gather(1, top.indices), pp.gather(1, top.indices)
    out = {}
    for j, fi in enumerate(features):
        rows = []
        for v, s, p in zip(best_v[j].tolist(), best_s[j].tolist(), best_p[j].tolist()):
            if v <= 0:
                continue
            rows.append({"activation": v, "seq": s, "pos": p, **ds.context(s, p, tokenizer, before, after)})
        out[int(fi)] = rows
    return out
