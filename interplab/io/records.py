"""Users' own rows (facts, prompt pairs, eval items, fine-tuning examples) from a JSONL or CSV file, checked
row by row: a malformed row is reported with the file, its line number and what is wrong, before any work
starts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RecordError", "read_records"]


class RecordError(ValueError):
    """A row of a user's file that cannot be used: the message names the file, the line and the field."""


def read_records(path: str | Path, required: Sequence[str], what: str = "row") -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` (one JSON object per line; blank lines skipped) or ``.csv`` (a header row) file,
    each with every field of ``required`` present and non-empty; each row gets its ``line`` number. ``what`` names
    a row in the messages (``"fact"``, ``"pair"`` …)."""
    p = Path(path)
    if not p.is_file():
        raise RecordError(f"{p}: no such file (give a .jsonl or .csv file of {what}s with fields {list(required)}).")
    suffix = p.suffix.lower()
    rows: list[tuple[int, Any]] = []
    if suffix == ".jsonl":
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise RecordError(
                    f"{p}, line {i}: not valid JSON ({e.msg}); each line must be one JSON object."
                ) from None
    elif suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [f for f in required if f not in (reader.fieldnames or [])]
            if missing:
                raise RecordError(f"{p}, line 1: the header lacks {missing}; a {what} needs columns {list(required)}.")
            rows = [(reader.line_num, dict(r)) for r in reader]
    else:
        raise RecordError(f"{p}: unknown file type {suffix!r}; give a .jsonl or .csv file of {what}s.")
    out = []
    for i, row in rows:
        if not isinstance(row, dict):
            fields = f" with fields {list(required)}" if required else ""
            raise RecordError(f"{p}, line {i}: a {what} must be a JSON object{fields}.")
        bad = [f for f in required if row.get(f) in (None, "")]
        if bad:
            raise RecordError(f"{p}, line {i}: the {what} lacks {bad} (every {what} needs {list(required)}).")
        out.append({**row, "line": i})
    if not out:
        raise RecordError(f"{p}: holds no {what}s.")
    return out
