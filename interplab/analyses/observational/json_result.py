"""A Result saved as one JSON file (tensors as nested lists), under a name the caller may choose.

For small results that several runs write side by side into one directory (``lens_<prompt>.json``) and
whose saved form is promised to be a single JSON file. Everything else about it is the
:class:`interplab.io.results.Result` protocol: ``kind``, ``format_version``, the headline, NaN as null.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Self

import torch

from interplab.io.results import FormatError, Result, nan_to_none, none_to_nan, read_json, write_json

__all__ = ["JSONResult"]


class JSONResult(Result):
    """A :class:`Result` whose tensors are written into its JSON file (``tensor_fields`` records each
    tensor field's dtype, so :meth:`load` gives the same tensors back)."""

    def save(self, directory: str | Path, name: str | None = None) -> Path:
        """Write ``directory/<name or FILE>`` (created if missing); returns its path."""
        data: dict[str, Any] = {"kind": self.KIND, "format_version": self.FORMAT_VERSION}
        dtypes: dict[str, str] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                dtypes[f.name] = str(v.dtype).removeprefix("torch.")
                data[f.name] = nan_to_none(v.tolist())
            else:
                data[f.name] = self._encode(f.name, v)
        data["tensor_fields"] = dtypes
        data["headline"] = self._encode("headline", self.headline())
        return write_json(directory, name or self.FILE, data)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a result written by :meth:`save` (its JSON file, or the directory holding ``FILE``)."""
        data, p = read_json(path, cls.FILE, cls.KIND)
        if data.get("format_version") != cls.FORMAT_VERSION:
            raise FormatError(
                f"{p} was written in {cls.KIND} format {data.get('format_version')!r}; this interplab reads "
                f"format {cls.FORMAT_VERSION}. Re-run the command that produced it."
            )
        dtypes: dict[str, str] = data.get("tensor_fields", {})
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            v = data[f.name]
            if f.name in dtypes:
                kw[f.name] = torch.tensor(none_to_nan(v), dtype=getattr(torch, dtypes[f.name]))
            else:
                if v is None and str(f.type) == "float":
                    v = float("nan")  # a non-finite float field was written as null
                kw[f.name] = cls._decode(f.name, v)
        return cls(**kw)
