"""Shared persistence for analysis Results: JSON written atomically (never pickle), read back with a kind check."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar


def nan_to_none(x):
    """A nested list (``tensor.tolist()``) with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(x, list):
        return [nan_to_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def none_to_nan(x):
    """The inverse of :func:`nan_to_none` for reading back: None becomes NaN, at any depth."""
    if isinstance(x, list):
        return [none_to_nan(v) for v in x]
    return float("nan") if x is None else x


def write_json(directory: str | Path, name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``directory/name`` (UTF-8 JSON; NaN refused) atomically; returns the path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path, default_name: str, kind: str) -> tuple[dict[str, Any], Path]:
    """Read a saved result (the JSON file, or the directory holding ``default_name``) and check its ``kind``.
    Returns ``(data, path of the file)``."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    d = json.loads(p.read_text(encoding="utf-8"))
    if d.get("kind") != kind:
        raise ValueError(f"{p} is not a saved {kind.replace('_', ' ')} result (kind={d.get('kind')!r}).")
    return d, p


class JsonResult:
    """Mixin for dataclass Results whose fields are all JSON-able: ``save(dir)`` writes every field plus
    ``kind`` to ``FILE``; ``load(path)`` reads it back (fields missing from older files take their defaults)."""

    FILE: ClassVar[str]
    KIND: ClassVar[str]

    def save(self, directory: str | Path) -> Path:
        return write_json(directory, self.FILE, {"kind": self.KIND, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}})

    @classmethod
    def load(cls, path: str | Path):
        d, _ = read_json(path, cls.FILE, cls.KIND)
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
