"""Loading models by name, path or hub id: ``interplab.load(name)`` and ``from_pretrained_dir(path)``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from interplab.models.adapters import ADAPTERS
from interplab.models.model import Model
from interplab.models.registry import (
    DEFAULT_MODEL,
    REGISTRY,
    ModelNotAvailable,
    converted_dir,
    gguf_path,
    unknown_name_error,
)
from interplab.models.toy import ToyTransformer

__all__ = ["FINETUNE_CARD", "from_pretrained_dir", "load", "load_adapter_dir"]


DeviceMap = str | dict[str, Any] | None

FINETUNE_CARD = "finetune.json"
"""The card of a fine-tuned directory (written by :mod:`interplab.finetune`): how it was made and, for a LoRA adapter
directory, the base model (``"base"``: a registry name, hub id or directory) the adapter applies to."""


def _placement(device: str, device_map: DeviceMap, offload_folder: str | Path | None) -> dict[str, Any]:
    """``from_pretrained`` keywords that place the weights: none (the model is moved to ``device`` after loading)
    or accelerate's ``device_map`` (``"auto"``, ``"balanced"``, or ``{module name: device | "disk"}``)."""
    if device_map is None:
        return {}
    if device != "cpu":
        raise ValueError("give either device or device_map, not both: device_map places every module itself.")
    if isinstance(device_map, dict) and "disk" in device_map.values() and offload_folder is None:
        raise ValueError('device_map sends modules to "disk": give offload_folder=DIR for their weights.')
    kw: dict[str, Any] = {"device_map": device_map}
    if offload_folder is not None:
        kw["offload_folder"] = str(offload_folder)
    return kw


def from_pretrained_dir(
    path: str | Path,
    name: str = "",
    device: str = "cpu",
    dtype=None,
    device_map: DeviceMap = None,
    offload_folder: str | Path | None = None,
) -> Model:
    """Load a local directory: an interplab toy model or any Hugging Face causal-LM directory. ``device_map``
    (Hugging Face models only): spread the layers over devices (and ``"disk"``, with ``offload_folder``)
    through accelerate, for models larger than one device; hooks work across the split."""
    import torch

    t = time.perf_counter()
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} has no config.json; it is not a model directory.")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    placement = _placement(device, device_map, offload_folder)
    if model_type == "interplab_toy":
        if placement:
            raise ValueError(f"{path} is an interplab toy model: device_map is for Hugging Face models; use device.")
        hf: Any = ToyTransformer.from_pretrained(path)  # or an HF model below: typed Any
        tok = None
        if (path / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path))
    else:
        if model_type not in ADAPTERS:
            raise ValueError(
                f"{path}: model_type {model_type!r} has no interplab adapter. Supported: {', '.join(sorted(ADAPTERS))}."
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype or torch.float32, attn_implementation="sdpa", **placement
        )
        tok = (
            AutoTokenizer.from_pretrained(str(path))
            if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
            else None
        )
    hf = (hf if placement else hf.to(device)).eval()
    m = Model(hf, tok, name=name or path.name, source=str(path))
    m.load_seconds = time.perf_counter() - t
    return m


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def load_adapter_dir(path: str | Path, device: str = "cpu", dtype=None) -> Model:
    """Open a LoRA adapter directory (PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` and the card
    ``finetune.json`` naming the base): load the base model, apply the adapter and merge it into the weights (Hu et
    al. 2021: ``W + alpha / r * B A``). A base that cannot be loaded here raises ``FileNotFoundError`` naming it."""
    path = Path(path)
    t = time.perf_counter()
    card_file = path / FINETUNE_CARD
    if not card_file.exists():
        raise FileNotFoundError(
            f"{path} holds a PEFT adapter but no {FINETUNE_CARD} naming its base model; write one with "
            '{"base": "<registry name, hub id or directory of the base model>"}.'
        )
    base = json.loads(card_file.read_text()).get("base")
    if not base:
        raise ValueError(f"{card_file} names no base model ('base'); set it to the model the adapter was trained on.")
    try:
        m = load(str(base), device=device, dtype=dtype)
    except (FileNotFoundError, ValueError, OSError, ModelNotAvailable) as e:
        raise FileNotFoundError(
            f"{path} is a LoRA adapter for the base model {base!r}, which cannot be loaded here ({e}). Make that "
            f"model available (install its package or restore its directory), or point 'base' in {card_file} at a "
            "copy of it."
        ) from None
    from peft import PeftModel

    merged = PeftModel.from_pretrained(m.hf, str(path)).merge_and_unload().eval()
    tok = m.tokenizer
    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
    out = Model(merged, tok, name=path.name, source=str(path))
    out.load_seconds = time.perf_counter() - t
    return out


def load(
    name: str = DEFAULT_MODEL,
    device: str = "cpu",
    dtype=None,
    device_map: DeviceMap = None,
    offload_folder: str | Path | None = None,
) -> Model:
    """Load a model by registry name, ``.gguf`` path, local directory or Hugging Face hub id.

    Registry names (``interplab models``): smollm2-135m (default), gemma3-270m. A fine-tuned directory written by
    :mod:`interplab.finetune` opens like any directory; a LoRA adapter directory loads its base (named in its card
    ``finetune.json``) and merges the adapter. GGUF files are
    dequantised to fp32 once and cached as safetensors (see ``interplab.models.registry``).

    ``device_map``: for a model larger than one device, accelerate's placement (``"auto"``, ``"balanced"``, or a
    dict from module names such as ``"model.layers.12"`` to a device or ``"disk"``, with ``offload_folder``).
    Caching, patching and ablation hooks work on a split model (their tensors follow the activation's device);
    analyses that read weights need every layer in memory, not on ``"disk"``."""
    t = time.perf_counter()
    name = str(name)
    where = {"device": device, "dtype": dtype, "device_map": device_map, "offload_folder": offload_folder}
    if name in REGISTRY:
        entry = REGISTRY[name]
        src = gguf_path(entry)
        m = from_pretrained_dir(converted_dir(src, entry.sha256, name), name=name, **where)
        m.source = str(src)
    elif name.endswith(".gguf"):
        p = Path(name)
        if not p.exists():
            raise FileNotFoundError(f"GGUF file {name} does not exist.")
        m = from_pretrained_dir(converted_dir(p, None, p.stem), name=p.stem, **where)
        m.source = str(p.resolve())
    elif (
        os.path.isdir(name)
        and not (Path(name) / "config.json").exists()
        and (Path(name) / "adapter_config.json").exists()
    ):
        if device_map is not None:
            raise ValueError(f"{name} is a LoRA adapter directory: load it with device, not device_map.")
        m = load_adapter_dir(name, device=device, dtype=dtype)
    elif os.path.isdir(name):
        m = from_pretrained_dir(name, **where)
    elif "/" in name and not name.startswith((".", "/")):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        placement = _placement(device, device_map, offload_folder)
        hub: Any = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype or torch.float32, attn_implementation="sdpa", **placement
        )
        hub = hub if placement else hub.to(device)
        m = Model(hub.eval(), AutoTokenizer.from_pretrained(name), name=name, source=f"hub:{name}")
    else:
        raise unknown_name_error(name)
    m.load_seconds = time.perf_counter() - t
    return m
