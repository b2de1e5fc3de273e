"""Fine-tuning data: texts, prompt/completion pairs, token ids, a text file, a JSONL file or a built-in corpus, turned
into fixed sequences with labels and split into training and held-out parts.

* **Text** (strings, a text file, ``corpus:NAME``, JSONL lines ``{"text": ...}``): the texts are tokenised, joined
  with the end-of-text token between them, and cut into consecutive windows of ``seq_len`` tokens (a BOS token in
  front of each when the tokenizer adds one). Every token is a target. The *last* windows of the stream are held out,
  so the held-out text was never trained on.
* **Prompt/completion pairs** (``(prompt, completion)`` tuples, dicts, JSONL lines ``{"prompt": ..., "completion":
  ...}``): one sequence per pair, prompt then completion then the end-of-text token; only completion tokens (and
  that final token) are targets, prompt tokens carry label ``-100`` (the loss ignores them, as in TRL's
  ``completion_only_loss``). A seeded random subset of the pairs is held out.
* **Token ids**: a ``LongTensor [n, seq]``: every token a target; the last rows held out.

Labels are aligned with the inputs (``labels[i, t]`` is the token at ``t``); the loss predicts ``labels[:, 1:]`` from
positions ``:-1``, the Hugging Face convention.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interplab.tasks.corpus import DEFAULT_CORPUS, corpus_text

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["IGNORE", "DataSpec", "FinetuneData", "Sequences", "load_data", "read_jsonl"]

IGNORE = -100
"""Label of a position the loss ignores (prompt tokens, padding)."""

CORPORA = (DEFAULT_CORPUS,)
"""Built-in corpus names, given as ``corpus:NAME`` (or the bare name)."""

DataSpec = Any
"""What :func:`load_data` accepts (see there)."""


@dataclass
class Sequences:
    """Right-padded sequences: ``input_ids`` and ``labels`` ``[n, max_len]`` (labels ``-100`` where not scored, padding
    included) and ``lengths [n]`` (tokens before the padding)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_targets(self) -> int:
        """Positions the loss scores (labels[:, 1:] that are not ignored)."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    def batch(self, rows: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, labels)`` of ``rows``, cut to the longest of them."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        n = int(self.lengths[idx].max())
        ids = self.input_ids[idx, :n]
        mask = (torch.arange(n)[None, :] < self.lengths[idx][:, None]).long()
        return ids, mask, self.labels[idx, :n]

    @classmethod
    def from_lists(cls, ids: list[list[int]], labels: list[list[int]], pad_id: int) -> Sequences:
        n = max(len(x) for x in ids)
        out = torch.full((len(ids), n), pad_id, dtype=torch.long)
        lab = torch.full((len(ids), n), IGNORE, dtype=torch.long)
        for i, (x, y) in enumerate(zip(ids, labels, strict=True)):
            out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            lab[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        return cls(out, lab, torch.tensor([len(x) for x in ids], dtype=torch.long))


@dataclass
class FinetuneData:
    """Training and held-out sequences, and what they were made from (``kind``: text, pairs or tokens;
    ``source``: the corpus name, file or ``"in-memory"``)."""

    train: Sequences
    heldout: Sequences
    kind: str
    source: str
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "train_sequences": len(self.train),
            "heldout_sequences": len(self.heldout),
            "train_target_tokens": self.train.n_targets,
            "heldout_target_tokens": self.heldout.n_targets,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------------ reading files
def read_jsonl(path: str | Path) -> list[dict[str, str]]:
    """The records of a JSONL file: one JSON object per line, ``{"prompt": ..., "completion": ...}`` or
    ``{"text": ...}`` (blank lines skipped), read by :func:`interplab.io.records.read_records`. A line that is not
    such an object raises ``ValueError`` naming its line number."""
    from interplab.io.records import read_records

    p = Path(path)
    out: list[dict[str, str]] = []
    kinds = '{"prompt": "...", "completion": "..."} or {"text": "..."}'
    if p.suffix.lower() != ".jsonl":
        raise ValueError(f"{p}: not a .jsonl file (one JSON object per line: {kinds}).")
    try:
        rows = read_records(p, [], what="record")
    except ValueError as e:
        raise ValueError(f"{e} A record is {kinds}.") from None
    for rec in rows:
        lineno = rec.pop("line")
        try:
            out.append(_record(rec))
        except ValueError as e:
            raise ValueError(f"{p}, line {lineno}: {e}") from None
    return out


def _record(rec: dict[str, Any]) -> dict[str, str]:
    if "prompt" in rec or "completion" in rec:
        missing = [k for k in ("prompt", "completion") if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(f"{missing[0]!r} must be a string (a prompt/completion record needs both).")
        return {"prompt": rec["prompt"], "completion": rec["completion"]}
    if isinstance(rec.get("text"), str):
        return {"text": rec["text"]}
    raise ValueError(f'a record needs "prompt" and "completion", or "text" (keys found: {sorted(rec)}).')


def _records(items: Sequence[Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """Texts or pairs from a list of strings, (prompt, completion) tuples or dicts; mixing kinds is refused."""
    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    for i, x in enumerate(items):
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, tuple | list) and len(x) == 2 and all(isinstance(s, str) for s in x):
            pairs.append((x[0], x[1]))
        elif isinstance(x, dict):
            try:
                r = _record(x)
            except ValueError as e:
                raise ValueError(f"data item {i}: {e}") from None
            if "text" in r:
                texts.append(r["text"])
            else:
                pairs.append((r["prompt"], r["completion"]))
        else:
            raise ValueError(
                f"data item {i} is a {type(x).__name__}: give strings, (prompt, completion) pairs or dicts with "
                "'prompt'/'completion' or 'text'."
            )
        if texts and pairs:
            raise ValueError(
                f"data item {i}: the data mix plain texts and prompt/completion pairs; give one kind (a text can be "
                "a pair with an empty prompt)."
            )
    return texts, pairs


# ------------------------------------------------------------------------------------------------ building
def _split_count(n: int, fraction: float, what: str) -> int:
    if n < 2:
        raise ValueError(f"the data make {n} {what}; at least 2 are needed (one to train on, one held out).")
    return min(n - 1, max(1, round(fraction * n)))


def _text_sequences(model: Model, texts: list[str], seq_len: int, fraction: float, heldout_max: int, source: str):
    tok = model.need_tokenizer()
    ids: list[int] = []
    for i, t in enumerate(texts):
        if i and tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        ids.extend(tok(t, add_special_tokens=False)["input_ids"])
    bos = model.default_prepend_bos
    body = seq_len - (1 if bos else 0)
    n = len(ids) // body
    if n < 2:
        raise ValueError(
            f"{source}: {len(ids)} tokens make {n} window(s) of {seq_len}; at least 2 are needed (one held out). Give "
            "more text or a smaller seq_len."
        )
    n_held = _split_count(n, fraction, "windows")
    t = torch.tensor(ids[: n * body], dtype=torch.long).view(n, body)
    if bos:
        t = torch.cat([torch.full((n, 1), tok.bos_token_id, dtype=torch.long), t], dim=1)
    train, held = t[: n - n_held], t[n - n_held :][:heldout_max]
    full = torch.full((len(train),), seq_len)
    return Sequences(train, train.clone(), full), Sequences(held, held.clone(), torch.full((len(held),), seq_len))


def _pair_sequences(
    model: Model, pairs: list[tuple[str, str]], seq_len: int, fraction: float, heldout_max: int, seed: int
) -> tuple[Sequences, Sequences, list[str]]:
    tok = model.need_tokenizer()
    bos = [tok.bos_token_id] if model.default_prepend_bos else []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids, labels = [], []
    cut = 0
    for i, (prompt, completion) in enumerate(pairs):
        p = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"] + eos
        if len(p) >= seq_len:
            raise ValueError(
                f"pair {i}: the prompt alone has {len(p)} tokens, not fewer than seq_len={seq_len}, so none of its "
                "completion would be trained on. Raise seq_len or shorten the prompt."
            )
        if not c:
            raise ValueError(f"pair {i}: the completion is empty and the tokenizer has no end-of-text token.")
        x, y = (p + c), ([IGNORE] * len(p) + c)
        if len(x) > seq_len:
            cut += 1
            x, y = x[:seq_len], y[:seq_len]
        ids.append(x)
        labels.append(y)
    notes = []
    if cut:
        notes.append(f"{cut} of {len(pairs)} pairs were longer than seq_len={seq_len} tokens and cut at the right")
        warnings.warn(notes[-1] + ".", stacklevel=3)
    n_held = _split_count(len(pairs), fraction, "pairs")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    train_rows, held_rows = sorted(order[: len(order) - n_held]), sorted(order[len(order) - n_held :])[:heldout_max]
    train = Sequences.from_lists([ids[i] for i in train_rows], [labels[i] for i in train_rows], pad)
    held = Sequences.from_lists([ids[i] for i in held_rows], [labels[i] for i in held_rows], pad)
    return train, held, notes


def _resolve_path(spec: str | Path) -> tuple[str, Path | None]:
    """``("corpus", None)`` with the corpus name in the first slot, or ``("file", path)``."""
    s = str(spec)
    if s.startswith("corpus:"):
        name = s.removeprefix("corpus:")
        if name not in CORPORA:
            raise ValueError(f"unknown corpus {name!r}; built-in corpora: {', '.join(CORPORA)} (give corpus:NAME).")
        return name, None
    if s in CORPORA and not Path(s).exists():
        return s, None
    p = Path(s)
    if not p.is_file():
        raise FileNotFoundError(
            f"data {s!r} is neither a file nor a built-in corpus. Give a text file, a JSONL file of "
            f'{{"prompt", "completion"}} or {{"text"}} lines, or corpus:NAME ({", ".join(CORPORA)}).'
        )
    return "file", p


def load_data(
    data: DataSpec,
    model: Model,
    seq_len: int = 64,
    heldout_fraction: float = 0.1,
    heldout_max: int = 32,
    seed: int = 0,
) -> FinetuneData:
    """Turn ``data`` into training and held-out sequences for ``model``.

    Args:
        data: a :class:`FinetuneData` (returned as is); a list of texts; a list of ``(prompt, completion)`` pairs or
            of dicts with ``prompt``/``completion`` (or ``text``); a ``LongTensor [n, seq]`` of token ids;
            ``"corpus:NAME"`` (built-in: ``pydoc``, the standard library's documentation); or a path: ``.jsonl``
            (one object per line, as the dicts above) or any other file read as UTF-8 text.
        model: whose tokenizer cuts the text (and whether it puts BOS in front).
        seq_len: tokens per sequence (text windows; longer pairs are cut).
        heldout_fraction, heldout_max: the share held out and the most held-out sequences kept.
        seed: the random held-out subset of pairs.
    """
    if isinstance(data, FinetuneData):
        return data
    source = "in-memory"
    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    if isinstance(data, torch.Tensor):
        if data.ndim != 2 or data.dtype != torch.long:
            raise ValueError(f"token data must be a LongTensor [n, seq]; got {data.dtype} {tuple(data.shape)}.")
        n_held = _split_count(len(data), heldout_fraction, "sequences")
        tr, he = data[: len(data) - n_held], data[len(data) - n_held :][:heldout_max]
        return FinetuneData(
            Sequences(tr, tr.clone(), torch.full((len(tr),), data.shape[1])),
            Sequences(he, he.clone(), torch.full((len(he),), data.shape[1])),
            "tokens",
            source,
        )
    if isinstance(data, str | Path):
        kind, path = _resolve_path(data)
        if path is None:
            source = f"corpus:{kind}"
            texts = [corpus_text(kind)]
        else:
            source = str(path)
            if path.suffix.lower() == ".jsonl":
                texts, pairs = _records(read_jsonl(path))
            else:
                texts = [path.read_text(encoding="utf-8", errors="replace")]
    elif isinstance(data, Sequence) and len(data) > 0:
        texts, pairs = _records(data)
    else:
        raise ValueError(
            f"data of type {type(data).__name__} (or empty): give texts, (prompt, completion) pairs, token ids, a "
            "file path or corpus:NAME."
        )
    if pairs:
        train, held, notes = _pair_sequences(model, pairs, seq_len, heldout_fraction, heldout_max, seed)
        return FinetuneData(train, held, "pairs", source, notes)
    train, held = _text_sequences(model, texts, seq_len, heldout_fraction, heldout_max, source)
    return FinetuneData(train, held, "text", source)
