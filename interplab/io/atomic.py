"""The one atomic writer: every file interplab writes goes to ``NAME.tmp`` beside its target first and is then
renamed over it (``os.replace`` is atomic on POSIX), so a reader or a killed run never sees half a file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "save_tensors", "write_json", "write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then move it over ``path``. The parent
    directory is created; if ``write`` raises, the temporary file is removed and ``path`` is left as it was."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda t: t.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any, **dumps_kw: Any) -> Path:
    """``obj`` as UTF-8 JSON (``dumps_kw`` go to :func:`json.dumps`, e.g. ``indent`` or ``allow_nan=False``)."""
    return write_text(path, json.dumps(obj, ensure_ascii=False, **dumps_kw))


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file of ``tensors`` (detached, contiguous, on the CPU), never pickle."""
    from safetensors.torch import save_file

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda t: save_file(data, str(t), metadata=metadata))
