"""Loading models by name, path or hub id: ``interplab.load(name)`` and ``from_pretrained_dir(path)``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from interplab.models.adapters import ADAPTERS
from interplab.models.model import Model
from interplab.models.registry import DEFAULT_MODEL, REGISTRY, converted_dir, gguf_path, unknown_name_error
from interplab.models.toy import ToyTransformer

__all__ = ["from_pretrained_dir", "load"]


def from_pretrained_dir(path: str | Path, name: str = "", device: str = "cpu", dtype=None) -> Model:
    """Load a local directory: an interplab toy model or any Hugging Face causal-LM directory."""
    import torch

    t = time.perf_counter()
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} has no config.json; it is not a model directory.")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type == "interplab_toy":
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

        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32, attn_implementation="sdpa")
        tok = (
            AutoTokenizer.from_pretrained(str(path))
            if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
            else None
        )
    hf = hf.to(device).eval()
    m = Model(hf, tok, name=name or path.name, source=str(path))
    m.load_seconds = time.perf_counter() - t
    return m


def load(name: str = DEFAULT_MODEL, device: str = "cpu", dtype=None) -> Model:
    """Load a model by registry name, ``.gguf`` path, local directory or Hugging Face hub id.

    Registry names (``interplab models``): smollm2-135m (default), gemma3-270m. GGUF files are
    dequantised to fp32 once and cached as safetensors (see ``interplab.models.registry``)."""
    t = time.perf_counter()
    name = str(name)
    if name in REGISTRY:
        entry = REGISTRY[name]
        src = gguf_path(entry)
        m = from_pretrained_dir(converted_dir(src, entry.sha256, name), name=name, device=device, dtype=dtype)
        m.source = str(src)
    elif name.endswith(".gguf"):
        p = Path(name)
        if not p.exists():
            raise FileNotFoundError(f"GGUF file {name} does not exist.")
        m = from_pretrained_dir(converted_dir(p, None, p.stem), name=p.stem, device=device, dtype=dtype)
        m.source = str(p.resolve())
    elif os.path.isdir(name):
        m = from_pretrained_dir(name, device=device, dtype=dtype)
    elif "/" in name and not name.startswith((".", "/")):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hub: Any = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32, attn_implementation="sdpa")
        m = Model(hub.to(device), AutoTokenizer.from_pretrained(name), name=name, source=f"hub:{name}")
    else:
        raise unknown_name_error(name)
    m.load_seconds = time.perf_counter() - t
    return m
