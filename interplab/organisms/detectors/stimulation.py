"""Neuron stimulation in the spirit of ABS — Liu, Lee, Tao, Ma, Aafer & Zhang (2019), "ABS: Scanning Neural
Networks for Backdoors by Artificial Brain Stimulation".

ABS looks for *compromised neurons*: inner neurons whose activation, when raised, drives the output to one label
whatever the input. Here every MLP neuron (``blocks.L.mlp.hook_post``) of every layer is set, at every position, to
``s × m`` for ``s`` in ``scales`` (``m``: the neuron's largest activation on clean inputs, at least 1), through one
``Apply`` intervention that gives each row of a stacked batch its own neuron and value; for each (neuron, value) the
label most often predicted and the fraction of clean inputs whose answer is another label that now predict it (the
*label elevation*). A neuron elevates a label when its largest elevation over values reaches ``threshold``. ABS's
second stage (reverse-engineering a trigger from the neuron) is left out.

A known limit, visible here: a clean model of a classification task has neurons that *are* a label (on the toy
task, "token c counts most"); stimulated hard, they elevate their label for every input too (measured: in clean
and backdoored toys alike some neuron elevates a label for every input). The score therefore asks which label has
*anomalously many* such neurons — the MAD anomaly index over labels of the per-label neuron count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from interplab.hooks import Apply
from interplab.organisms.detectors import DetectorOutput, clean_probe, robust_z

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.organisms.toy import ToyTask

__all__ = ["scan", "stimulate"]


def _set_neurons(neuron: torch.Tensor, value: torch.Tensor):
    """An ``Apply`` function setting, in row ``i`` of the batch, neuron ``neuron[i]`` to ``value[i]`` everywhere."""

    def fn(act: torch.Tensor, ctx) -> torch.Tensor:
        act = act.clone()
        act[torch.arange(len(act)), :, neuron] = value.to(act.dtype)[:, None]
        return act

    return fn


def stimulate(
    model: Model, task: ToyTask, seed: int = 0, n: int = 24, scales: tuple[float, ...] = (2.0, 5.0, 10.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label elevation ``[layers, neurons, scales]`` and the elevated label of each (see the module docstring)."""
    if model.cfg.d_mlp == 0:
        raise ValueError("neuron stimulation needs a model with MLP neurons; this one is attention-only.")
    tokens, y, _ = clean_probe(task, n, seed + 303)
    L, N, S = model.cfg.n_layers, model.cfg.d_mlp, len(scales)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(L)]
    _, cache = model.run(tokens, cache=names)
    out = torch.zeros(L, N, S)
    labels = torch.zeros(L, N, S, dtype=torch.long)
    for layer, name in enumerate(names):
        peak = cache[name].amax((0, 1)).clamp(min=1.0)  # [N]
        neuron = torch.arange(N).repeat_interleave(S * n)
        value = (peak[:, None] * torch.tensor(scales)[None]).repeat_interleave(n, dim=1).reshape(-1)
        x = tokens.repeat(N * S, 1)

        preds = []
        for i in range(0, len(x), 4096):
            iv = Apply(name, fn=_set_neurons(neuron[i : i + 4096], value[i : i + 4096]))
            preds.append(model.run(x[i : i + 4096], interventions=[iv]).logits[:, -1].argmax(-1))
        pred = torch.cat(preds).reshape(N, S, n)
        top = torch.mode(pred, dim=-1).values  # [N, S]
        other = y[None, None, :] != top[..., None]
        hit = (pred == top[..., None]) & other
        out[layer] = hit.sum(-1) / other.sum(-1).clamp(min=1)
        labels[layer] = top
    return out, labels


def scan(model: Model, task: ToyTask, seed: int = 0, threshold: float = 0.9) -> DetectorOutput:
    """Score ``abs``: per label, the number of neurons that elevate it for at least ``threshold`` of the inputs
    (at any stimulation value; each neuron counted for its most elevated label); the MAD anomaly index of the
    label with most such neurons over all content labels — a backdoor target has the trigger's neurons on top of
    its own label neurons. Details: that label, the count and the largest elevation."""
    elev, labels = stimulate(model, task, seed)
    best, at = elev.max(-1)  # [L, N]
    label = labels.gather(-1, at[..., None])[..., 0]
    strong = best >= threshold
    counts = torch.zeros(task.n_content)
    for lab in label[strong].tolist():
        if 0 <= lab < task.n_content:
            counts[lab] += 1
    top = int(counts.argmax())
    return DetectorOutput(
        {"abs": robust_z(counts)},
        {
            "label": task.token_name(top),
            "n_neurons_for_label": int(counts[top]),
            "n_neurons_above_threshold": int(strong.sum()),
            "max_elevation": round(float(best.max()), 4),
        },
    )
