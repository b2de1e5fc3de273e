"""Experiment configs: a dataclass of defaults, overridden by a TOML file, then by ``--set key=value``.

Values given with ``--set`` are parsed with the type of the field (``int``, ``float``, ``bool``,
``str``, tuples/lists as comma-separated or TOML/JSON literals); unknown keys are a ValueError that
lists the valid ones."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls)}


def _parse(value: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value.lower() in ("none", "null", ""):
            return None
        return _parse(value, args[0], key) if args else value
    try:
        if tp is bool:
            v = value.strip().lower()
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(float(value)) if "e" in value.lower() else int(value)
        if tp is float:
            return float(value)
        if origin in (tuple, list) or tp in (tuple, list):
            s = value.strip()
            if s.startswith("["):
                items = json.loads(s)
            else:
                items = [x for x in s.strip("()").split(",") if x.strip()]
            inner = args[0] if args else str
            out = [_parse(str(x), inner, key) for x in items]
            return tuple(out) if (origin is tuple or tp is tuple) else out
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"--set {key}={value!r}: cannot read it as {getattr(tp, '__name__', tp)}.") from None
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if isinstance(value, str):
        return _parse(value, tp, key)
    if isinstance(value, list) and (typing.get_origin(tp) is tuple or tp is tuple):
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def build_config(cls, file: str | Path | None = None, sets: list[str] | None = None, base: dict | None = None):
    """``cls`` defaults <- ``base`` (a dict, e.g. a saved config) <- TOML ``file`` <- ``sets`` (``key=value``)."""
    types = _field_types(cls)
    values: dict[str, Any] = {}
    if base:
        values.update({k: v for k, v in base.items() if k in types})
    if file is not None:
        p = Path(file)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist.")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p} is not valid TOML: {e}") from None
        bad = sorted(set(data) - set(types))
        if bad:
            raise ValueError(f"{p}: unknown keys {bad}; valid keys: {', '.join(types)}.")
        values.update(data)
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}.")
        k, v = item.split("=", 1)
        k = k.strip()
        if k not in types:
            raise ValueError(f"--set {k}: unknown key; valid keys: {', '.join(types)}.")
        values[k] = v
    values = {k: _coerce(v, types[k], k) for k, v in values.items()}
    cfg = cls(**values)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def config_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
