"""Your own clean/corrupt prompt pairs, for patching, attribution patching, path patching and circuit discovery.

One pair is a clean prompt, a corrupt prompt of the same number of tokens, the answer the clean prompt should
lead to and the competing (wrong) answer; the metric is read at the last prompt token (``END``). Named positions
are optional: ``positions`` maps a name to the text of a span in the clean prompt (its first occurrence, or
``[text, k]`` for the k-th, counting from 1), and ``corrupt_positions`` to the span in the corrupt prompt (by
default the same text). A span's position is the token holding its last character, as for the built-in tasks
(:mod:`interplab.tasks.pairs`).

File format (``.jsonl``, one object per line; or ``.csv`` with the columns ``clean,corrupt,answer,wrong``)::

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupt": "When Alice and Bob went to the store, Bob gave a drink to",
     "answer": " Mary", "wrong": " John",
     "positions": {"IO": "Mary", "S2": ["John", 2]}, "corrupt_positions": {"IO": "Alice", "S2": ["Bob", 2]}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from interplab.tasks.pairs import PairSpec, PromptPairs, Segments, build_pairs

__all__ = ["one_pair", "read_pairs", "spans_to_segments", "user_pairs"]

FIELDS = ("clean", "corrupt", "answer", "wrong")


def spans_to_segments(prompt: str, spans: Mapping[str, Any] | None, where: str = "") -> Segments:
    """``prompt`` cut into ``(text, name)`` segments at the named spans (see the module docstring)."""
    if not spans:
        return [(prompt, None)]
    found: list[tuple[int, int, str]] = []
    for name, spec in spans.items():
        text, k = (spec, 1) if isinstance(spec, str) else (str(spec[0]), int(spec[1]))
        start = -1
        for _ in range(k):
            start = prompt.find(text, start + 1)
            if start < 0:
                raise ValueError(
                    f"{where}position {name!r}: {text!r} does not occur {k} time(s) in {prompt!r}; give text that "
                    "is in the prompt (or [text, k] for its k-th occurrence)."
                )
        found.append((start, start + len(text), str(name)))
    found.sort()
    for (_, end_a, a), (start_b, _, b) in pairwise(found):
        if start_b < end_a:
            raise ValueError(f"{where}positions {a!r} and {b!r} overlap in {prompt!r}.")
    segs: Segments = []
    at = 0
    for start, end, name in found:
        if start > at:
            segs.append((prompt[at:start], None))
        segs.append((prompt[start:end], name))
        at = end
    if at < len(prompt):
        segs.append((prompt[at:], None))
    return segs


def one_pair(
    clean: str,
    corrupt: str,
    answer: str,
    wrong: str,
    positions: Mapping[str, Any] | None = None,
    corrupt_positions: Mapping[str, Any] | None = None,
    where: str = "",
    meta: dict[str, Any] | None = None,
) -> PairSpec:
    """One pair as a :class:`~interplab.tasks.pairs.PairSpec` (see the module docstring)."""
    if corrupt_positions is not None and set(corrupt_positions) != set(positions or {}):
        raise ValueError(f"{where}positions and corrupt_positions must name the same positions.")
    return PairSpec(
        clean=spans_to_segments(clean, positions, where),
        corrupt=spans_to_segments(corrupt, corrupt_positions if corrupt_positions is not None else positions, where),
        answer=answer,
        wrong=wrong,
        meta=dict(meta or {}),
    )


def read_pairs(path: str | Path) -> list[PairSpec]:
    """The pairs of a ``.jsonl`` or ``.csv`` file (module docstring); a bad row is reported with its line."""
    from interplab.io.records import RecordError, read_records

    specs = []
    for r in read_records(path, FIELDS, what="pair"):
        where = f"{path}, line {r['line']}: "
        try:
            specs.append(
                one_pair(
                    *(str(r[f]) for f in FIELDS),
                    positions=r.get("positions") or None,
                    corrupt_positions=r.get("corrupt_positions"),
                    where=where,
                    meta={"line": r["line"], **({"id": r["id"]} if "id" in r else {})},
                )
            )
        except (ValueError, TypeError, IndexError) as e:
            raise RecordError(str(e) if str(e).startswith(where) else f"{where}{e}") from None
    return specs


def user_pairs(model, specs: Sequence[PairSpec], metric: str = "logit_diff", task: str = "your pairs") -> PromptPairs:
    """``specs`` tokenized for ``model``. A pair whose clean and corrupt prompts tokenize to different lengths (or
    put a named position at different tokens) is refused with an error naming it (and its file line)."""
    try:
        return build_pairs(model, specs, task=task, metric=metric)
    except ValueError as e:
        import re

        m = re.search(r"pair (\d+) ", str(e))
        line = specs[int(m.group(1))].meta.get("line") if m else None
        raise ValueError(f"line {line} of the pairs file: {e}" if line else str(e)) from None
