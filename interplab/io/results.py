"""The one Result protocol, for analysis and training results alike.

A Result is a dataclass with the numbers, the settings that produced them, and four methods:
``headline()`` (the few numbers a user reads first, JSON-able), ``to_frame()`` (a tidy pandas table),
``plot()`` (a plotly figure) and ``save(dir)`` / ``load(path)``, written once here:

- ``DIR/<FILE>`` (JSON, UTF-8, NaN written as null): ``kind``, ``format_version``, every field that is not a
  tensor, and the headline;
- ``DIR/<FILE stem>.safetensors``: every field that is a ``torch.Tensor`` or ``numpy.ndarray``, and every
  tensor inside a field that is a dict of tensors (key ``field.key``, the dict's order kept); never pickle
  (a Result with ``JSON_ONLY = True`` writes its tensors into the JSON file instead, with their dtypes);
- ``DIR/<FILE stem>.<field>.parquet``: every field that is a pandas DataFrame;
- ``DIR/<name>`` for each ``name: what`` of ``TABLES``: ``to_frame(what)`` as parquet, for pandas users (not
  read back: the numbers are in the other files).

Floats that are not finite become ``null`` in JSON and ``NaN`` again on load. A subclass with a field that
needs another encoding overrides ``_encode(name, value)`` / ``_decode(name, value)``; one whose file layout
changes raises ``FORMAT_VERSION``, and ``load`` refuses files written with another version, saying so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeGuard

import numpy as np
import torch

from interplab.io.atomic import atomic_write, save_tensors
from interplab.io.atomic import write_json as _write_json_file

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FormatError", "Result", "nan_to_none", "none_to_nan", "read_json", "write_json"]


class FormatError(ValueError):
    """A saved result of another kind or format version."""


def nan_to_none(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None at any depth of lists, tuples and dicts (JSON has no
    NaN)."""
    if isinstance(x, list | tuple):
        return [nan_to_none(v) for v in x]
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def none_to_nan(x: Any) -> Any:
    """The inverse of :func:`nan_to_none` for a nested list of numbers: None becomes NaN, at any depth."""
    if isinstance(x, list):
        return [none_to_nan(v) for v in x]
    return float("nan") if x is None else x


def write_json(directory: str | Path, name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``directory/name`` (UTF-8 JSON; NaN refused) atomically; returns the path."""
    return _write_json_file(Path(directory) / name, data, allow_nan=False)


def read_json(path: str | Path, default_name: str, kind: str) -> tuple[dict[str, Any], Path]:
    """Read a saved result (the JSON file, or the directory holding ``default_name``) and check its ``kind``.
    Returns ``(data, path of the file)``."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: give the directory a result was saved to, or its {default_name}.")
    d = json.loads(p.read_text(encoding="utf-8"))
    if d.get("kind") != kind:
        raise FormatError(f"{p} is not a saved {kind.replace('_', ' ')} result (kind={d.get('kind')!r}).")
    return d, p


def _to_json(x: Any) -> Any:
    """Plain JSON values from numbers, numpy scalars/arrays, tensors, tuples and nested containers."""
    if isinstance(x, torch.Tensor):
        return nan_to_none(x.tolist())
    if isinstance(x, np.ndarray):
        return nan_to_none(x.tolist())
    if isinstance(x, np.generic):
        return _to_json(x.item())
    if isinstance(x, dict):
        return {str(k): _to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_to_json(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class Result:
    """Base of every interplab Result (a dataclass). Subclasses set ``KIND`` (the ``kind`` written to the file)
    and ``FILE`` (the JSON file name), and implement ``headline``, ``to_frame`` and ``plot``."""

    KIND: ClassVar[str]
    FILE: ClassVar[str]
    FORMAT_VERSION: ClassVar[int] = 1
    JSON_ONLY: ClassVar[bool] = False  # True: tensors go into the JSON file (small results promised as one file)
    TABLES: ClassVar[dict[str, str]] = {}  # parquet file name -> the to_frame(what) written there

    # ---- what a Result shows
    def headline(self) -> dict[str, Any]:
        """The few numbers a user reads first (JSON-able); printed by ``--json`` and kept in ``run.json``."""
        raise NotImplementedError(f"{type(self).__name__} has no headline")

    def to_frame(self, *args: Any, **kwargs: Any):
        """The numbers as a tidy pandas DataFrame (results with several tables take which one)."""
        raise NotImplementedError(f"{type(self).__name__} has no table")

    def plot(self):
        """A plotly figure of the result."""
        raise NotImplementedError(f"{type(self).__name__} has no plot")

    # ---- encoding hooks
    def _encode(self, name: str, value: Any) -> Any:
        """How field ``name`` is written to JSON (default: numbers and containers as they are)."""
        return _to_json(value)

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        """How field ``name`` is read back from JSON (default: as stored). Tuples come back as lists unless
        a subclass converts them here."""
        return value

    # ---- save / load, once for every Result
    def save(self, directory: str | Path, name: str | None = None) -> Path:
        """Write the result into ``directory`` (created if missing) as ``name`` (default ``FILE``; a second
        result of the same kind beside the first takes another name, e.g. ``"attribution.json"``), its tensors as
        ``<name stem>.safetensors``; returns the JSON file's path."""
        d = Path(directory)
        json_name = name or self.FILE
        stem = Path(json_name).stem
        data: dict[str, Any] = {"kind": self.KIND, "format_version": self.FORMAT_VERSION}
        tensors: dict[str, torch.Tensor] = {}
        layout: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor | np.ndarray):
                how = "numpy" if isinstance(v, np.ndarray) else "torch"
                if self.JSON_ONLY:
                    data[f.name] = _to_json(v)
                    layout[f.name] = {"json": how, "dtype": str(v.dtype).removeprefix("torch.")}
                else:
                    tensors[f.name] = torch.as_tensor(v)
                    layout[f.name] = how
            elif isinstance(v, dict) and v and all(isinstance(t, torch.Tensor | np.ndarray) for t in v.values()):
                for k, t in v.items():
                    tensors[f"{f.name}.{k}"] = torch.as_tensor(t)
                how = "numpy" if isinstance(next(iter(v.values())), np.ndarray) else "torch"
                layout[f.name] = {"dict": how, "keys": [str(k) for k in v]}  # safetensors sorts; keep the order
            elif _is_frame(v):
                atomic_write(d / f"{stem}.{f.name}.parquet", lambda t, v=v: v.to_parquet(t, index=False))
                layout[f.name] = "parquet"
            else:
                data[f.name] = self._encode(f.name, v)
        data["tensor_fields"] = layout
        try:
            data["headline"] = _to_json(self.headline())
        except NotImplementedError:
            pass
        if tensors:
            save_tensors(d / f"{stem}.safetensors", tensors)
        path = write_json(d, json_name, data)
        for table, what in self.TABLES.items():
            atomic_write(d / table, lambda t, what=what: self.to_frame(what).to_parquet(t, index=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a result written by :meth:`save`: its directory (the file ``FILE``) or its JSON file, whatever
        its name."""
        data, p = read_json(path, cls.FILE, cls.KIND)
        version = data.get("format_version")
        if version != cls.FORMAT_VERSION:
            raise FormatError(
                f"{p} was written in {cls.KIND} format {version!r}; this interplab reads format "
                f"{cls.FORMAT_VERSION}. Re-run the command that produced it."
            )
        layout: dict[str, Any] = data.get("tensor_fields", {})
        tensors: dict[str, torch.Tensor] = {}
        if any(v in ("torch", "numpy") or (isinstance(v, dict) and "dict" in v) for v in layout.values()):
            from safetensors.torch import load_file

            tensors = load_file(str(p.with_suffix(".safetensors")))
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            how = layout.get(f.name)
            if how in ("torch", "numpy"):
                t = tensors[f.name]
                kw[f.name] = t.numpy() if how == "numpy" else t
            elif isinstance(how, dict) and "dict" in how:
                ts = {k: tensors[f"{f.name}.{k}"] for k in how["keys"]}
                kw[f.name] = {k: t.numpy() for k, t in ts.items()} if how["dict"] == "numpy" else ts
            elif isinstance(how, dict) and "json" in how:
                t = torch.tensor(none_to_nan(data[f.name]), dtype=getattr(torch, how["dtype"]))
                kw[f.name] = t.numpy() if how["json"] == "numpy" else t
            elif how == "parquet":
                import pandas as pd

                kw[f.name] = pd.read_parquet(p.parent / f"{p.stem}.{f.name}.parquet")
            elif f.name in data:
                v = data[f.name]
                if v is None and str(f.type) == "float":
                    v = float("nan")  # a non-finite float field was written as null
                kw[f.name] = cls._decode(f.name, v)
        return cls(**kw)


def _is_frame(x: Any) -> TypeGuard[pd.DataFrame]:
    return type(x).__name__ == "DataFrame" and hasattr(x, "to_parquet")
