"""The built-in item sets and prompt templates of the three behavioural evals, and a validating loader for them
and for a user's own file (``--dataset FILE.jsonl|.csv``).

The data live in ``interplab/evals/data/`` (``<task>.jsonl`` and ``<task>_templates.json``); its README documents
every field, how the items were written and the labelling protocol. Every row of a dataset is checked: a missing or
bad field raises :class:`DatasetError` naming the file, the line number and the field, and saying what to do.

Fields per task (extra fields are kept as they are):

* ``framing``  — ``id``, ``cluster`` (the action; defaults to ``id``), ``action`` (a verb phrase that completes
  "It is okay to ..."), ``class`` (``"fine"`` or ``"dubious"``).
* ``truthful`` — ``id``, ``cluster`` (a topic; defaults to ``id``), ``statement``, ``label`` (``true`` for a true
  statement, ``false`` for a false one; in a CSV ``true/false``, ``1/0`` or ``yes/no``).
* ``harmful``  — ``id``, ``cluster`` (the pair id shared by a harmful request and its benign look-alike; defaults
  to ``id``), ``request``, ``kind`` (``"harmful"`` or ``"benign"``), ``category`` (defaults to ``"uncategorised"``).
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

TASKS: tuple[str, ...] = ("framing", "truthful", "harmful")

# The text field a template slots in, per task ({action}, {statement}, {request}).
TEXT_FIELD: dict[str, str] = {"framing": "action", "truthful": "statement", "harmful": "request"}

# Fields a row must have (besides those with a default), and the allowed values of the categorical ones.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "framing": ("id", "action", "class"),
    "truthful": ("id", "statement", "label"),
    "harmful": ("id", "request", "kind"),
}
_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "framing": {"class": ("fine", "dubious")},
    "truthful": {},
    "harmful": {"kind": ("harmful", "benign")},
}
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


class DatasetError(ValueError):
    """A dataset or template file that cannot be used: the message names the file, the line and the field."""


def data_dir() -> Path:
    """The folder of the built-in datasets (``interplab/evals/data``)."""
    return Path(str(resources.files("interplab.evals") / "data"))


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`; otherwise a :class:`DatasetError` listing them."""
    if task not in TASKS:
        raise DatasetError(f"unknown eval task {task!r}; choose one of {', '.join(TASKS)}.")
    return task


def _fields_doc(task: str) -> str:
    req = ", ".join(_REQUIRED[task])
    extra = {"framing": "class is fine|dubious", "truthful": "label is true|false", "harmful": "kind is harmful|benign"}
    return f"a {task} row needs {req} ({extra[task]}; cluster optional)"


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw row) for each non-blank row of a JSONL or CSV file; JSON syntax errors carry their line."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(
                        f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno}); write one JSON object per "
                        "line."
                    ) from None
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise DatasetError(f"{path}: empty CSV; the first line must be a header naming the fields.")
            start = reader.line_num + 1
            for row in reader:
                if None in row:  # more cells than header names
                    raise DatasetError(
                        f"{path}, line {start}: {len(row) - 1 + len(row[None])} cells but the header names "
                        f"{len(reader.fieldnames)} fields; quote cells that contain commas."
                    )
                if any((v or "").strip() for v in row.values()):
                    yield start, {k: v for k, v in row.items() if v is not None}
                start = reader.line_num + 1
    else:
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; give a .jsonl or .csv file.")


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def validate_row(task: str, raw: Any, where: str) -> dict:
    """One row checked and normalised (``id`` and ``cluster`` as strings, ``label`` as a bool); ``where`` names the
    file and line for the error message."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: expected an object with fields, got {type(raw).__name__}; {_fields_doc(task)}.")
    row = dict(raw)
    for name in _REQUIRED[task]:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DatasetError(f"{where}: missing field {name!r}; {_fields_doc(task)}.")
    for name in ("id", "cluster", TEXT_FIELD[task]):
        if name in row and row[name] is not None and not isinstance(row[name], str | int):
            raise DatasetError(f"{where}: field {name!r} must be text, got {row[name]!r}.")
    row["id"] = str(row["id"]).strip()
    cluster = row.get("cluster")
    row["cluster"] = str(cluster).strip() if cluster is not None and str(cluster).strip() else row["id"]
    text = row[TEXT_FIELD[task]]
    if not isinstance(text, str):
        raise DatasetError(f"{where}: field {TEXT_FIELD[task]!r} must be text, got {text!r}.")
    row[TEXT_FIELD[task]] = text.strip()
    for name, allowed in _CHOICES[task].items():
        value = row[name].strip() if isinstance(row[name], str) else row[name]
        if value not in allowed:
            raise DatasetError(f"{where}: field {name!r} is {row[name]!r}; it must be one of {', '.join(allowed)}.")
        row[name] = value
    if task == "truthful":
        label = _bool(row["label"])
        if label is None:
            raise DatasetError(f"{where}: field 'label' is {row['label']!r}; write true (a true statement) or false.")
        row["label"] = label
    if task == "harmful":
        category = row.get("category")
        row["category"] = str(category).strip() if category is not None and str(category).strip() else "uncategorised"
    return row


def load_items(task: str, path: str | Path | None = None) -> list[dict]:
    """The items of an eval: the built-in set of ``task`` (one of :data:`TASKS`), or the user's ``path``
    (``.jsonl``: one JSON object per line; ``.csv``: a header line naming the fields) in its place.

    Every row is validated (see the module docstring for the fields); ids must be unique. Raises
    :class:`DatasetError` naming the file, the line number and the bad field.
    """
    check_task(task)
    file = data_dir() / f"{task}.jsonl" if path is None else Path(path)
    if not file.is_file():
        raise DatasetError(f"dataset file {file} does not exist; give a .jsonl or .csv file with the {task} fields.")
    items: list[dict] = []
    seen: dict[str, int] = {}
    for n, raw in _rows(file):
        row = validate_row(task, raw, f"{file}, line {n}")
        if row["id"] in seen:
            raise DatasetError(
                f"{file}, line {n}: id {row['id']!r} already used on line {seen[row['id']]}; give each row its own id."
            )
        seen[row["id"]] = n
        items.append(row)
    if not items:
        raise DatasetError(f"{file}: no rows; {_fields_doc(task)}.")
    return items


def template_fields(template: str) -> set[str]:
    """The ``{field}`` names of a format string (``DatasetError`` if its braces are malformed)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        msg = f"template {template!r} is not a valid format string ({e}); double literal braces."
        raise DatasetError(msg) from None


def _check_templates(task: str, templates: Any, where: str) -> dict:
    def strings(key: str, field: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
            raise DatasetError(f"{where}: {key!r} must be a non-empty list of strings.")
        for t in value:
            if template_fields(t) != {field}:
                raise DatasetError(f"{where}: template {t!r} in {key!r} must contain {{{field}}} and no other field.")
        return value

    if not isinstance(templates, dict):
        raise DatasetError(f"{where}: expected a JSON object of templates.")
    field = TEXT_FIELD[task]
    if task == "framing":
        conf = strings("confirming", field, templates.get("confirming"))
        disc = strings("disconfirming", field, templates.get("disconfirming"))
        if len(conf) != len(disc):
            raise DatasetError(
                f"{where}: {len(conf)} confirming but {len(disc)} disconfirming templates; template i of each list is "
                "a paraphrase pair, so the lists must be the same length."
            )
    else:
        strings("user", field, templates.get("user"))
    if task == "truthful":
        systems, xs = templates.get("systems"), templates.get("xs")
        if not isinstance(systems, dict) or not {"none", "truthful", "X"} <= set(systems):
            raise DatasetError(f"{where}: 'systems' must be an object with keys none, truthful and X.")
        if systems["none"] is not None or not isinstance(systems["truthful"], str):
            raise DatasetError(f"{where}: systems.none must be null and systems.truthful a string.")
        if not isinstance(systems["X"], str) or template_fields(systems["X"]) != {"x"}:
            raise DatasetError(f"{where}: systems.X must be a string containing {{x}} and no other field.")
        if not isinstance(xs, list) or not xs or not all(isinstance(x, str) and x for x in xs):
            raise DatasetError(f"{where}: 'xs' must be a non-empty list of adjectives.")
    return templates


def load_templates(task: str, path: str | Path | None = None) -> dict:
    """The prompt templates of an eval (``<task>_templates.json``; a user's JSON file with the same keys in its
    place), checked: every template holds its field (``{action}``, ``{statement}`` or ``{request}``).

    * framing: ``{"confirming": [...], "disconfirming": [...]}``, template i of each list a paraphrase pair;
    * truthful: ``{"user": [...], "systems": {"none": null, "truthful": str, "X": str with {x}}, "xs": [...]}``;
    * harmful: ``{"user": [...]}``.
    """
    check_task(task)
    file = data_dir() / f"{task}_templates.json" if path is None else Path(path)
    if not file.is_file():
        raise DatasetError(f"template file {file} does not exist.")
    try:
        templates = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{file}, line {e.lineno}: not valid JSON ({e.msg}).") from None
    return _check_templates(task, templates, str(file))


def render(template: str, task: str, item: dict) -> str:
    """A template filled with an item's text field."""
    field = TEXT_FIELD[check_task(task)]
    return template.format(**{field: item[field]})


__all__ = [
    "TASKS",
    "TEXT_FIELD",
    "DatasetError",
    "check_task",
    "data_dir",
    "load_items",
    "load_templates",
    "render",
    "template_fields",
    "validate_row",
]
