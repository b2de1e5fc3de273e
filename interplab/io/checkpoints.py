"""Training state shared by every trainer (the toy-model trainer, SAE training, and later fine-tuning): the
optimizer's state as safetensors + JSON (never pickle) and the random-number generators' states, so that a
resumed run continues bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from interplab.io.atomic import save_tensors, write_json

__all__ = [
    "load_optimizer",
    "load_optimizer_tensors",
    "optimizer_tensors",
    "rng_state",
    "save_optimizer",
    "set_rng_state",
]


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's ``state_dict`` as named tensors (``state.<param id>.<key>``) plus a JSON-able dict of the
    param groups and scalar state that refers to them; no pickle. :func:`load_optimizer_tensors` reverses it."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                name = f"state.{pid}.{k}"
                tensors[name] = v.detach().contiguous().cpu()
                entry[k] = {"tensor": name}
            else:
                entry[k] = {"value": v}
        meta["state"][str(pid)] = entry
    return tensors, meta


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore the state written by :func:`optimizer_tensors` (``meta`` may have been through JSON)."""
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if "tensor" in v else v["value"]) for k, v in entry.items()}
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:  # JSON turns tuples into lists
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    """``optimizer.safetensors`` + ``optimizer.json`` (param groups, scalar state); no pickle."""
    tensors, meta = optimizer_tensors(opt)
    save_tensors(directory / "optimizer.safetensors", tensors)
    write_json(directory / "optimizer.json", meta, indent=1)


def load_optimizer(opt: torch.optim.Optimizer, directory: Path) -> None:
    from safetensors.torch import load_file

    load_optimizer_tensors(
        opt, load_file(str(directory / "optimizer.safetensors")), json.loads((directory / "optimizer.json").read_text())
    )


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, torch.Tensor]:
    """The global torch RNG state and each named generator's (``gen.<name>``), for a safetensors file."""
    out = {"torch": torch.get_rng_state()}
    out.update({f"gen.{k}": g.get_state() for k, g in (generators or {}).items()})
    return out


def set_rng_state(state: dict[str, torch.Tensor], generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    for k, g in (generators or {}).items():
        g.set_state(state[f"gen.{k}"])
