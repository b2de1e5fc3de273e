"""A sweep's grid: ``--grid key=v1,v2`` / ``--grid seed=0..4`` specs, their product, and how a grid key becomes
command-line arguments of the swept command.

Grid keys
    ``name`` (or ``--name``)  the command's option ``--name`` (underscores may stand for dashes: ``n_chunks`` is
                              ``--n-chunks``); a flag option takes ``true`` / ``false``.
    ``set.KEY``               ``--set KEY=VALUE`` for commands that take ``--set`` (``interplab train``: a key of
                              the experiment's config, e.g. ``set.epochs=600`` or ``set.seed=0..4``).

Values are comma-separated; ``a..b`` is the integer range from ``a`` to ``b`` inclusive (``0..4`` is 0, 1, 2, 3, 4),
and may sit among other values (``1,4..6`` is 1, 4, 5, 6). Cells are the product of the keys in the order given
(the last key varies fastest). A value is passed to the command as written; the sweep's table stores it as an int
or a float when every value of its key reads as one, else as text.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Cell", "OptionSpec", "cell_args", "cell_name", "expand", "parse_grid", "typed_values", "validate_keys"]

SET_PREFIX = "set."
RESERVED_OPTIONS = ("--out", "--json")
"""Options the sweep sets on every cell itself (the cell's run directory, the JSON headline)."""

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class OptionSpec:
    """What the sweep needs to know about one option of the swept command: its names (``--seed``, ``-s``), whether
    it is a flag (no value), and the flag's negative form (``--no-progress`` of ``--progress/--no-progress``)."""

    opts: tuple[str, ...]
    is_flag: bool = False
    secondary_opts: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The long name the sweep passes (``--seed``)."""
        longs = [o for o in self.opts if o.startswith("--")]
        return (longs or list(self.opts))[0]


@dataclass(frozen=True)
class Cell:
    """One point of the grid: ``values`` maps each grid key to its value as written (text)."""

    values: Mapping[str, str]

    @property
    def name(self) -> str:
        return cell_name(self.values)


def _split_values(key: str, text: str) -> list[str]:
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"--grid {key}={text!r}: empty value; write values like {key}=1,2,3 or {key}=0..4.")
        m = _RANGE.match(part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"--grid {key}={text!r}: range {part} is empty; write the smaller bound first.")
            out += [str(i) for i in range(lo, hi + 1)]
        else:
            out.append(part)
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ValueError(f"--grid {key}={text!r}: repeated values {dup}.")
    return out


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["lr=1e-3,1e-2", "seed=0..2"]`` -> ``{"lr": ["1e-3", "1e-2"], "seed": ["0", "1", "2"]}`` (keys in the
    order given; a leading ``--`` of a key is dropped). A ValueError says what is wrong with a spec."""
    if not specs:
        raise ValueError("a sweep needs at least one --grid key=v1,v2 (or key=a..b).")
    grid: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--grid {spec!r}: expected key=v1,v2 or key=a..b.")
        key, text = spec.split("=", 1)
        key = key.strip().removeprefix("--")
        if not key or (key.startswith(SET_PREFIX) and not key[len(SET_PREFIX) :]):
            raise ValueError(f"--grid {spec!r}: the key is empty.")
        if key in grid:
            raise ValueError(f"--grid {key}: given twice; put all its values in one --grid {key}=v1,v2.")
        grid[key] = _split_values(key, text)
    return grid


def expand(grid: Mapping[str, Sequence[str]]) -> list[Cell]:
    """Every cell of the grid (the product of the keys' values; the last key varies fastest)."""
    keys = list(grid)
    return [Cell(dict(zip(keys, combo, strict=True))) for combo in itertools.product(*(grid[k] for k in keys))]


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def cell_name(values: Mapping[str, str]) -> str:
    """The cell's directory name: ``seed=0__set.lr=1e-3`` (characters other than letters, digits and ``._=+-`` become
    ``-``; a short hash of the exact values is added when that changed anything or the name is long, so names never
    collide)."""
    exact = "__".join(f"{k}={v}" for k, v in values.items())
    safe = _UNSAFE.sub("-", exact)
    if safe != exact or len(safe) > 120:
        digest = hashlib.sha1(exact.encode()).hexdigest()[:8]
        safe = f"{safe[:100]}__{digest}"
    return safe


def _option_index(options: Mapping[str, OptionSpec]) -> dict[str, OptionSpec]:
    """Every name an option answers to (``--n-chunks``, ``n-chunks``, ``n_chunks``) -> its spec."""
    idx: dict[str, OptionSpec] = {}
    for spec in options.values():
        for o in spec.opts:
            if o.startswith("--"):
                idx[o[2:]] = spec
                idx[o[2:].replace("-", "_")] = spec
    return idx


def validate_keys(
    grid: Mapping[str, Sequence[str]],
    options: Mapping[str, OptionSpec],
    command: str,
    set_keys: Sequence[str] | None = None,
) -> None:
    """Check every grid key against the options of ``command`` (``options``: option name -> spec) and, for
    ``set.KEY``, against ``set_keys`` (the keys ``--set`` accepts, when known). A ValueError lists what is valid."""
    idx = _option_index(options)
    listed = ", ".join(sorted(s.name for s in options.values() if s.name not in RESERVED_OPTIONS))
    for key, values in grid.items():
        if key.startswith(SET_PREFIX):
            sub = key[len(SET_PREFIX) :]
            if "set" not in idx:
                raise ValueError(f"--grid {key}: `{command}` has no --set option; its options: {listed}.")
            if set_keys is not None and sub not in set_keys:
                raise ValueError(f"--grid {key}: `{command}` has no config key {sub!r}; valid: {', '.join(set_keys)}.")
            continue
        spec = idx.get(key)
        if spec is None:
            hint = f" (for a config key use set.{key})" if "set" in idx else ""
            raise ValueError(f"--grid {key}: `{command}` has no option --{key}{hint}; its options: {listed}.")
        if spec.name in RESERVED_OPTIONS:
            raise ValueError(f"--grid {key}: the sweep sets {spec.name} of every cell itself.")
        if spec.is_flag:
            bad = [v for v in values if v.lower() not in ("true", "false")]
            if bad:
                raise ValueError(f"--grid {key}: {spec.name} is a flag; its values are true,false (got {bad}).")


def cell_args(values: Mapping[str, str], options: Mapping[str, OptionSpec]) -> list[str]:
    """The command-line arguments of one cell (keys already checked by :func:`validate_keys`)."""
    idx = _option_index(options)
    out: list[str] = []
    for key, value in values.items():
        if key.startswith(SET_PREFIX):
            out += ["--set", f"{key[len(SET_PREFIX) :]}={value}"]
            continue
        spec = idx[key]
        if spec.is_flag:
            if value.lower() == "true":
                out.append(spec.name)
            elif spec.secondary_opts:
                out.append(spec.secondary_opts[0])
        else:
            out += [spec.name, value]
    return out


def _number(v: str) -> int | float | None:
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return None


def typed_values(values: Sequence[str]) -> list[int | float | str]:
    """A key's values as ints (all integers), floats (all numbers) or the text as written."""
    nums = [_number(v) for v in values]
    if any(n is None for n in nums):
        return list(values)
    if all(isinstance(n, int) for n in nums):
        return [int(v) for v in values]
    return [float(v) for v in values]
