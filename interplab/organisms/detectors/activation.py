"""Activation anomalies on a probe set — spectral signatures (Tran, Li & Madry 2018, "Spectral Signatures in
Backdoor Attacks") and class-conditional Mahalanobis distances (Lee, Lee, Lee & Shin 2018, "A Simple Unified
Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks").

Both were made to find poisoned *inputs* in a class, given a model; a model-level score needs inputs that might
carry the trigger. The probe set therefore has ``n_clean`` clean sequences (with their answers) and, for every
token the task does not count (noise and rare tokens: the trigger candidates), ``n_per_token`` sequences with that
token written over one non-answer slot — so a one-token trigger is in the probe set, a two-token phrase only when
its first token alone moves the model. Representations: the last block's residual stream at SEP
(``blocks.{L-1}.hook_resid_post``, through the hook cache).

* **mahalanobis**: class means of the clean sequences (by their answer) and their pooled covariance
  (Ledoit–Wolf shrinkage); each inserted-token sequence gets its Mahalanobis distance to the mean of the class
  the model predicts for it; per token the mean distance; the score is the MAD anomaly index of the most distant
  token over all tokens. A trigger moves its sequences into the target class by a route clean data never takes.
* **spectral**: per predicted class, the covariance of every probe representation predicted there; its top
  eigenvalue divided by that of the clean sequences of the class alone (Tran et al.'s top singular direction,
  along which the poisoned subpopulation separates, as a ratio); the score is the log of the largest ratio over
  classes minus the median log ratio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from interplab.organisms.detectors import DetectorOutput, clean_probe, robust_z
from interplab.organisms.toy import overwrite

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.organisms.toy import ToyTask

__all__ = ["insertion_probe", "scan", "sep_representations"]


def insertion_probe(task: ToyTask, n_per_token: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every noise and rare token, ``n_per_token`` clean sequences with it written over one non-answer slot:
    tokens ``[n_tokens * n_per_token, seq_len + 1]`` and the inserted token of each row."""
    cand = torch.tensor([*task.noise(), *task.rare()])
    tokens, _, answer = clean_probe(task, len(cand) * n_per_token, seed)
    which = cand.repeat_interleave(n_per_token)
    tokens, _ = overwrite(tokens, answer, which[:, None], torch.Generator().manual_seed(seed + 1))
    return tokens, which


def sep_representations(model: Model, tokens: torch.Tensor, batch: int = 2048) -> tuple[np.ndarray, torch.Tensor]:
    """The last block's residual stream at SEP ``[n, d]`` and the predicted answers ``[n]``."""
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    reps, preds = [], []
    for i in range(0, len(tokens), batch):
        logits, cache = model.run(tokens[i : i + batch], cache=[name])
        reps.append(cache[name][:, -1].double())
        preds.append(logits[:, -1].argmax(-1))
    return torch.cat(reps).numpy(), torch.cat(preds)


def scan(model: Model, task: ToyTask, seed: int = 0, n_clean: int = 512, n_per_token: int = 16) -> DetectorOutput:
    """Scores ``mahalanobis`` and ``spectral`` (see the module docstring). Details: the most anomalous token and
    class."""
    from sklearn.covariance import LedoitWolf

    clean_tokens, y, _ = clean_probe(task, n_clean, seed + 101)
    ins_tokens, which = insertion_probe(task, n_per_token, seed + 202)
    h_clean, p_clean = sep_representations(model, clean_tokens)
    h_ins, p_ins = sep_representations(model, ins_tokens)
    classes = list(task.content())
    ok = (p_clean == y).numpy()
    means = np.stack(
        [h_clean[ok & (y.numpy() == c)].mean(0) if (ok & (y.numpy() == c)).any() else h_clean.mean(0) for c in classes]
    )
    centred = h_clean[ok] - means[y.numpy()[ok]]
    prec = np.asarray(LedoitWolf().fit(centred).precision_, dtype=np.float64)
    pred = p_ins.numpy()
    in_class = np.isin(pred, classes)
    diff = h_ins - means[np.where(in_class, pred, 0)]
    dist = np.sqrt(np.einsum("nd,de,ne->n", diff, prec, diff))
    dist[~in_class] = dist[in_class].max() if in_class.any() else 0.0  # an answer outside the classes: as far as any
    cand = [*task.noise(), *task.rare()]
    per_token = torch.tensor([dist[(which == t).numpy()].mean() for t in cand])
    maha = robust_z(per_token)

    h_all = np.concatenate([h_clean, h_ins])
    p_all = np.concatenate([p_clean.numpy(), pred])
    ratios = []
    for c in classes:
        mine = h_all[p_all == c]
        ref = h_clean[ok & (y.numpy() == c)]
        if len(mine) < 3 or len(ref) < 3:
            ratios.append(0.0)
            continue
        top = np.linalg.eigvalsh(np.cov(mine, rowvar=False))[-1]
        base = np.linalg.eigvalsh(np.cov(ref, rowvar=False))[-1]
        ratios.append(float(np.log(top / max(base, 1e-12))))
    r = torch.tensor(ratios)
    spectral = float(r.max() - r.median())
    return DetectorOutput(
        {"mahalanobis": maha, "spectral": spectral},
        {
            "most_distant_token": task.token_name(cand[int(per_token.argmax())]),
            "most_spread_class": task.token_name(classes[int(r.argmax())]),
            "log_eig_ratio_by_class": [round(x, 4) for x in ratios],
        },
    )
