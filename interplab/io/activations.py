"""Activation datasets: activations at one hook point, streamed to disk in safetensors shards.

>>> ds = extract_activations(model, "blocks.6.hook_resid_post", "runs/acts", n_tokens=100_000)
>>> ds = ActivationDataset("runs/acts")
>>> for x in ds.batches(4096, shuffle=True, seed=0): ...
>>> train, test = ds.split(0.1, by="shard")

**Inputs.** Sequences of token ids: ``n_tokens // chunk_len`` consecutive, non-overlapping windows of a corpus
(:func:`interplab.tasks.corpus.token_chunks`; default the standard library's ``pydoc_data.topics``, or a UTF-8
text file), or a built-in task (``"induction"``: repeated random tokens, :func:`interplab.tasks.repeated_tokens`).

**Positions.** ``"all"`` (every position; with ``skip_first`` the first position of each sequence is left
out — by default (None) when it is a BOS token, whose activations are outliers that dominate any training;
``skip_first=True`` also drops a first position without BOS, which in models such as SmolLM2 is an
attention-sink outlier with a residual norm several times the others), ``"last"`` (the last position of each
sequence) or an int (that position of each sequence, negative counting from the end). Every sequence gives the
same number of rows, so row ``r`` maps to ``(seq, pos)`` without a lookup; each shard stores ``seq`` and ``pos`` anyway.

**On disk** (directory ``out``)::

    manifest.json          hook, model, d, dtype, n_rows, positions, settings, shard list (complete shards only),
                           status "running" | "complete"
    tokens.safetensors     {"tokens": int32 [n_seq, seq_len]}: the token index (contexts for feature browsers)
    shard_00000.safetensors {"x": [rows, d], "seq": int32 [rows], "pos": int32 [rows]}
    ...

Each shard holds exactly ``shard_rows`` rows (the last one fewer). Files are written to a temporary name and
renamed (atomic); the manifest lists a shard only once its file is complete. **Resuming**: calling
:func:`extract_activations` again on the same directory with the same settings skips the complete shards and
recomputes from the first missing one. Batches of sequences lie on a fixed grid (batch ``b`` is always sequences
``[b*batch, (b+1)*batch)``), so a resumed run does the same forward passes as an uninterrupted one and writes
bit-identical shards. Memory is bounded by one shard plus one batch of activations (the token ids of the corpus
are held, a few bytes per token).

**Loader** (:class:`ActivationDataset`): ``len``, shuffled batches with a seed (shards visited in a seeded order,
rows shuffled within a window of ``window`` shards), train/test split by shard or by row, streaming mean and
variance (Chan et al.'s pairwise merge in float64, equal to the batch statistics) and contexts of rows.

**Plain format** (:func:`load_acts` / :func:`save_acts`): a directory with ``acts.safetensors`` holding
``x`` ``[n, d]`` and optionally ``y`` ``[n]`` labels (and any other tensors, returned as metadata) — the exchange
format of small labelled activation sets (probes, concept erasure). :func:`load_acts` also reads a sharded
directory (concatenating the shards; no labels).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import torch

from interplab.io.atomic import save_tensors, write_json

if TYPE_CHECKING:
    from interplab.models.model import Model

MANIFEST = "manifest.json"
TOKENS = "tokens.safetensors"
PLAIN = "acts.safetensors"
ActsDType = Literal["float32", "float16", "bfloat16"]
"""The storage dtype of the shards."""
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ActsTask = Literal["induction"]
"""The built-in token sources (besides a corpus): ``induction`` = repeated random tokens."""
TASKS: tuple[ActsTask, ...] = get_args(ActsTask)
Positions = Literal["all", "last"] | int
"""Which positions of each sequence become rows (a string holding an integer is read as that integer)."""
SplitBy = Literal["shard", "row", "rows", "auto"]
"""How :meth:`ActivationDataset.split` splits the rows."""


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """``directory/manifest.json`` (UTF-8 JSON, NaN refused), written atomically."""
    write_json(directory / MANIFEST, manifest, allow_nan=False)


def _load_st(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ------------------------------------------------------------------------------------------ hook points


def stop_layer_for(model: Model, hook: str) -> int | None:
    """The smallest ``stop_at_layer`` that still computes ``hook`` (blocks after it are not run)."""
    from interplab.hooks import parse_name

    layer, _ = parse_name(hook)
    if layer is not None:
        return layer + 1
    if hook in ("hook_embed", "hook_pos_embed"):
        return 0
    return None


def check_hook(model: Model, hook: str) -> None:
    """Raise a clear error for a hook point that this model does not have or that has no per-token vector."""
    from interplab.hooks import check_names, parse_name

    check_names([hook], model.hook_names())
    if parse_name(hook)[1] == "attn.hook_pattern":
        raise ValueError(
            f"{hook} is an attention pattern [batch, head, query, key], not a per-token activation; "
            "choose a residual, attention-output, MLP or hook_z point."
        )


def flat(x: torch.Tensor) -> torch.Tensor:
    """``[b, p, ...]`` -> ``[b, p, d]`` (per-head points flatten heads x d_head)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


# ------------------------------------------------------------------------------------------ sequences


def sequences(
    model: Model,
    text: str | Path | None = None,
    task: ActsTask | None = None,
    n_tokens: int = 100_000,
    chunk_len: int = 128,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """Token ids ``[n_seq, chunk_len]`` for a corpus (``text``: None/"pydoc" or a file) or a task, and a description.

    Args:
        model: its tokenizer (corpus) or vocabulary (task) makes the tokens.
        text: a UTF-8 text file (None or "pydoc": the standard library's ``pydoc_data.topics``).
        task: a built-in task instead of a corpus.
        n_tokens: about this many tokens (``n_tokens // chunk_len`` sequences).
        chunk_len: tokens per sequence.
        seed: seeds the task's random tokens.
    """
    if text is not None and task is not None:
        raise ValueError("give either a text (--text) or a task (--task), not both.")
    n_seq = max(1, n_tokens // chunk_len)
    if task is not None:
        if task != "induction":
            raise ValueError(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)} (or use --text FILE).")
        from interplab.tasks.induction import repeated_tokens

        half = chunk_len // 2
        toks, _ = repeated_tokens(model, batch=n_seq, seq_len=half, repeats=2, seed=seed, prepend_bos=False)
        return toks, {"source": "task:induction", "seed": seed}
    from interplab.tasks.corpus import token_chunks

    try:
        toks = token_chunks(model, text, n_chunks=n_seq, chunk_len=chunk_len)
    except ValueError as e:
        raise ValueError(
            f"{e} (asked for {n_tokens} tokens = {n_seq} chunks of {chunk_len}; lower --tokens.)"
        ) from None
    return toks, {"source": "pydoc" if text is None else str(text)}


def _positions(seq_len: int, positions: Positions | str, bos: bool) -> list[int]:
    if positions == "all":
        return list(range(1 if bos else 0, seq_len))
    if positions == "last":
        return [seq_len - 1]
    try:
        p = int(positions)
    except (TypeError, ValueError):
        raise ValueError(f"positions must be 'all', 'last' or an integer position, not {positions!r}.") from None
    if not -seq_len <= p < seq_len:
        raise ValueError(f"position {p} is outside sequences of {seq_len} tokens.")
    return [p % seq_len]


# ------------------------------------------------------------------------------------------ extraction


def extract_activations(
    model: Model,
    hook: str,
    out: str | Path,
    *,
    text: str | Path | None = None,
    task: ActsTask | None = None,
    tokens: torch.Tensor | None = None,
    n_tokens: int = 100_000,
    chunk_len: int = 128,
    positions: Positions | str = "all",
    skip_first: bool | None = None,
    batch: int = 8,
    shard_rows: int = 16384,
    dtype: ActsDType = "float32",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationDataset:
    """Run ``model`` over sequences and write the activations at ``hook`` to ``out`` in shards (see the module doc).

    ``tokens``: explicit token ids ``[n_seq, seq_len]`` instead of a corpus or task. Resumable: an existing
    directory with the same settings continues from its first missing shard (different settings: ValueError).
    ``progress(done_rows, total_rows)`` is called after each shard.

    Args:
        model: the model to run.
        hook: the hook point (one per-token vector per position, e.g. ``blocks.6.hook_resid_post``).
        out: the directory to write (or to resume).
        text, task: the token source (see :func:`sequences`); ``tokens`` overrides both.
        tokens: explicit token ids ``[n_seq, seq_len]``.
        n_tokens, chunk_len: size of the corpus or task (see :func:`sequences`).
        positions: ``"all"``, ``"last"`` or one position of each sequence (see the module docstring).
        skip_first: leave out position 0 (None: when it is a BOS token).
        batch: sequences per forward pass.
        shard_rows: rows per shard file.
        dtype: storage dtype of the activations.
        seed: seeds the task's tokens.
        progress: called as ``progress(done_rows, total_rows)`` after each shard.
    """
    check_hook(model, hook)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}.")
    if shard_rows < 1 or batch < 1:
        raise ValueError("shard_rows and batch must be positive.")
    out = Path(out)
    if tokens is not None:
        toks = torch.as_tensor(tokens).long()
        if toks.ndim != 2:
            raise ValueError(f"tokens must be [n_seq, seq_len], not {tuple(toks.shape)}.")
        desc = {"source": "tokens"}
    else:
        toks, desc = sequences(model, text=text, task=task, n_tokens=n_tokens, chunk_len=chunk_len, seed=seed)
    n_seq, seq_len = toks.shape
    tok = getattr(model, "tokenizer", None)
    bos_id = getattr(tok, "bos_token_id", None) if tok is not None else None
    has_bos = bos_id is not None and bool((toks[:, 0] == bos_id).all())
    skip = has_bos if skip_first is None else bool(skip_first)
    pos_list = _positions(seq_len, positions, skip)
    per_seq = len(pos_list)
    n_rows = n_seq * per_seq
    settings = {
        "hook": hook,
        "model": model.name,
        "positions": positions,
        "skip_first": skip_first,
        "skipped_first": skip,
        "seq_len": int(seq_len),
        "n_seq": int(n_seq),
        "batch": batch,
        "shard_rows": shard_rows,
        "dtype": dtype,
        **desc,
    }
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / MANIFEST
    settings["tokens_sha256"] = hashlib.sha256(toks.to(torch.int64).numpy().tobytes()).hexdigest()
    if mpath.exists():
        man = json.loads(mpath.read_text(encoding="utf-8"))
        old = man.get("settings", {})
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise ValueError(
                f"{out} already holds activations made with other settings {diff}; "
                "use another --out directory or the same settings to resume."
            )
        shards = [s for s in man["shards"] if (out / s["file"]).exists()]
    else:
        shards = []
    if not (out / TOKENS).exists():
        save_tensors(out / TOKENS, {"tokens": toks.to(torch.int32)})
    stop = stop_layer_for(model, hook)
    d = None if not shards else shards[0]["d"]

    def manifest(status: str) -> dict:
        return {
            "kind": "interplab_activations",
            "status": status,
            "hook": hook,
            "model": model.name,
            "d": d,
            "dtype": dtype,
            "n_rows": n_rows,
            "rows_per_seq": per_seq,
            "positions_index": pos_list,
            "shard_rows": shard_rows,
            "n_shards": math.ceil(n_rows / shard_rows),
            "shards": shards,
            "tokens_file": TOKENS,
            "settings": settings,
        }

    n_shards = math.ceil(n_rows / shard_rows)
    done = len(shards)
    _write_manifest(out, manifest("running" if done < n_shards else "complete"))
    if done == n_shards:
        return ActivationDataset(out)
    pos_t = torch.tensor(pos_list)
    start_row = done * shard_rows
    first_seq = start_row // per_seq
    b0 = first_seq // batch
    skip = start_row - b0 * batch * per_seq  # rows of the first batch that belong to complete shards
    buf_x: list[torch.Tensor] = []
    buf_n = 0
    tdt = _DTYPES[dtype]
    for b in range(b0, math.ceil(n_seq / batch)):
        lo, hi = b * batch, min(n_seq, (b + 1) * batch)
        _, cache = model.run(toks[lo:hi], cache=[hook], stop_at_layer=stop)
        a = flat(cache[hook])[:, pos_t].reshape(-1, flat(cache[hook]).shape[-1]).to(torch.float32).cpu()
        del cache
        if d is None:
            d = int(a.shape[-1])
        if skip:
            a, skip = a[skip:], 0
        buf_x.append(a)
        buf_n += a.shape[0]
        while buf_n >= shard_rows or (hi == n_seq and buf_n > 0):
            x = torch.cat(buf_x)
            take = min(shard_rows, x.shape[0])
            k = len(shards)
            rows = torch.arange(k * shard_rows, k * shard_rows + take)
            fname = f"shard_{k:05d}.safetensors"
            save_tensors(
                out / fname,
                {
                    "x": x[:take].to(tdt),
                    "seq": (rows // per_seq).to(torch.int32),
                    "pos": pos_t[rows % per_seq].to(torch.int32),
                },
            )
            shards.append({"file": fname, "rows": int(take), "start": int(k * shard_rows), "d": d})
            rest = x[take:]
            buf_x, buf_n = ([rest] if rest.shape[0] else []), int(rest.shape[0])
            _write_manifest(out, manifest("running" if len(shards) < n_shards else "complete"))
            if progress is not None:
                progress(sum(s["rows"] for s in shards), n_rows)
    return ActivationDataset(out)


# ------------------------------------------------------------------------------------------ loader


@dataclass
class Stats:
    """Streaming per-dimension count, mean and (population) variance, merged pairwise (Chan et al. 1979)."""

    n: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> Stats:
        x = x.to(torch.float64).reshape(-1, x.shape[-1])
        nb = x.shape[0]
        if nb == 0:
            return self
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
        else:
            assert self.mean is not None and self.m2 is not None
            n = self.n + nb
            delta = mb - self.mean
            self.mean = self.mean + delta * (nb / n)
            self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
            self.n = n
        return self

    @property
    def var(self) -> torch.Tensor:
        """Per-dimension population variance (of no rows: an error)."""
        if self.m2 is None:
            raise ValueError("no rows seen: the variance of nothing is undefined.")
        return self.m2 / self.n

    @property
    def total_var(self) -> float:
        """Sum of per-dimension variances (E||x - mean||^2)."""
        return float(self.var.sum())


class ActivationDataset:
    """A sharded activation directory (or a subset of its rows). See the module docstring."""

    def __init__(self, directory: str | Path, _select: list[tuple[int, torch.Tensor | None]] | None = None):
        self.dir = Path(directory)
        mpath = self.dir / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(
                f"{self.dir} has no {MANIFEST}; it is not an activation directory (make one with `interplab acts`)."
            )
        self.manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if self.manifest.get("status") != "complete":
            raise ValueError(
                f"{self.dir} is incomplete ({len(self.manifest['shards'])}/{self.manifest['n_shards']} shards); "
                "rerun the same `interplab acts` command to resume it."
            )
        self.shards = self.manifest["shards"]
        self._select: list[tuple[int, torch.Tensor | None]] = (
            _select if _select is not None else [(i, None) for i in range(len(self.shards))]
        )
        self._tokens = None

    # ---- metadata
    @property
    def hook(self) -> str:
        return self.manifest["hook"]

    @property
    def model_name(self) -> str:
        return self.manifest["model"]

    @property
    def d(self) -> int:
        return int(self.manifest["d"])

    def __len__(self) -> int:
        return sum(self.shards[i]["rows"] if idx is None else len(idx) for i, idx in self._select)

    def __repr__(self) -> str:
        return f"ActivationDataset({str(self.dir)!r}, hook={self.hook!r}, rows={len(self)}, d={self.d})"

    @property
    def tokens(self) -> torch.Tensor:
        """Token ids ``[n_seq, seq_len]`` of the sequences the rows come from."""
        if self._tokens is None:
            self._tokens = _load_st(self.dir / TOKENS)["tokens"].long()
        return self._tokens

    # ---- reading
    def shard(self, i: int) -> dict[str, torch.Tensor]:
        """Shard ``i`` of the directory: {"x" float32 [rows, d], "seq", "pos"} (the whole shard, ignoring any
        subset)."""
        t = _load_st(self.dir / self.shards[i]["file"])
        t["x"] = t["x"].to(torch.float32)
        return t

    def _parts(self, order: Sequence[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        sel = self._select if order is None else [self._select[j] for j in order]
        for i, idx in sel:
            t = self.shard(i)
            if idx is not None:
                t = {k: v[idx] for k, v in t.items()}
            yield t

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 2,
        drop_last: bool = False,
        with_index: bool = False,
    ) -> Iterator[Any]:
        """Batches of rows ``[batch_size, d]`` (float32). ``shuffle``: shards in a seeded random order, rows
        shuffled within a window of ``window`` shards (memory: ``window`` shards). ``with_index``: yields
        ``(x, seq, pos)``."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self._select), generator=g).tolist() if shuffle else list(range(len(self._select)))
        carry: dict[str, torch.Tensor] | None = None
        parts = self._parts(order)
        while True:
            group = []
            for _ in range(window if shuffle else 1):
                nxt = next(parts, None)
                if nxt is None:
                    break
                group.append(nxt)
            if not group and carry is None:
                return
            cat = {
                k: torch.cat(([carry[k]] if carry is not None else []) + [t[k] for t in group])
                for k in ("x", "seq", "pos")
            }
            if shuffle and group:
                perm = torch.randperm(cat["x"].shape[0], generator=g)
                cat = {k: v[perm] for k, v in cat.items()}
            n = cat["x"].shape[0]
            full = n // batch_size
            for j in range(full):
                sl = slice(j * batch_size, (j + 1) * batch_size)
                yield (cat["x"][sl], cat["seq"][sl], cat["pos"][sl]) if with_index else cat["x"][sl]
            rest = {k: v[full * batch_size :] for k, v in cat.items()}
            carry = rest if rest["x"].shape[0] else None
            if not group:
                if carry is not None and not drop_last:
                    yield (carry["x"], carry["seq"], carry["pos"]) if with_index else carry["x"]
                return

    def __iter__(self):
        return self.batches(4096, shuffle=False)

    def load_all(self, max_bytes: int = 4 << 30) -> torch.Tensor:
        """All rows as one tensor ``[n, d]`` (refused above ``max_bytes`` of float32)."""
        need = len(self) * self.d * 4
        if need > max_bytes:
            raise ValueError(
                f"{len(self)} rows x {self.d} floats need {need / 2**30:.1f} GiB; iterate with .batches() instead."
            )
        return torch.cat([t["x"] for t in self._parts()]) if self._select else torch.zeros(0, self.d)

    def index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(seq, pos)`` of every row, in order."""
        parts = list(self._parts_index())
        return torch.cat([p[0] for p in parts]).long(), torch.cat([p[1] for p in parts]).long()

    def _parts_index(self):
        from safetensors import safe_open

        for i, idx in self._select:
            with safe_open(str(self.dir / self.shards[i]["file"]), "pt") as f:
                s, p = f.get_tensor("seq"), f.get_tensor("pos")
            yield (s, p) if idx is None else (s[idx], p[idx])

    def stats(self, batch_size: int = 16384) -> Stats:
        """Streaming mean and variance of the rows (float64; equal to the statistics of all rows at once)."""
        st = Stats()
        for x in self.batches(batch_size, shuffle=False):
            st.update(x)
        return st

    def sequences(self) -> torch.Tensor:
        """Sorted ids of the sequences that rows of this (subset) come from."""
        return torch.unique(self.index()[0])

    # ---- splitting
    def split(
        self, test_frac: float = 0.1, by: SplitBy = "shard", seed: int = 0
    ) -> tuple[ActivationDataset, ActivationDataset]:
        """``(train, test)`` views. ``by="shard"``: the last shards are the test set (so test rows come from later
        text) — as many as bring the test rows closest to ``test_frac`` of all rows (at least one, never all);
        ``by="row"``: a seeded random ``test_frac`` of the rows of every shard; ``by="auto"``: by shard when
        there are at least 2 shards, else by row."""
        if not 0 < test_frac < 1:
            raise ValueError(f"test_frac must lie in (0, 1), not {test_frac}.")
        sel = self._select
        if by == "auto":
            by = "shard" if len(sel) >= 2 else "row"
        if by == "shard":
            if len(sel) < 2:
                raise ValueError("a split by shard needs at least 2 shards; use by='row' or a smaller shard_rows.")
            rows = [self.shards[i]["rows"] if idx is None else len(idx) for i, idx in sel]
            target = test_frac * sum(rows)
            tail = [sum(rows[len(rows) - j :]) for j in range(1, len(rows))]  # rows in the last j shards
            n_test = 1 + min(range(len(tail)), key=lambda j: abs(tail[j] - target))
            return ActivationDataset(self.dir, sel[:-n_test]), ActivationDataset(self.dir, sel[-n_test:])
        if by in ("row", "rows"):
            g = torch.Generator().manual_seed(seed)
            tr, te = [], []
            for i, idx in sel:
                n = self.shards[i]["rows"] if idx is None else len(idx)
                base = torch.arange(n) if idx is None else idx
                perm = torch.randperm(n, generator=g)
                k = round(test_frac * n)
                te.append((i, base[perm[:k]].sort().values))
                tr.append((i, base[perm[k:]].sort().values))
            return ActivationDataset(self.dir, tr), ActivationDataset(self.dir, te)
        raise ValueError(f"split by must be 'shard', 'row' or 'auto', not {by!r}.")

    # ---- contexts
    def context(self, seq: int, pos: int, tokenizer: Any = None, before: int = 12, after: int = 3) -> dict[str, Any]:
        """Tokens around ``(seq, pos)``: ``{"before": [...], "token": str, "after": [...]}`` (strings when a
        tokenizer is given, else ids)."""
        row = self.tokens[int(seq)]
        lo, hi = max(0, pos - before), min(len(row), pos + after + 1)
        ids = row[lo:hi].tolist()
        strs = [tokenizer.decode([i]) for i in ids] if tokenizer is not None else ids
        k = pos - lo
        return {"before": strs[:k], "token": strs[k], "after": strs[k + 1 :]}


# ------------------------------------------------------------------------------------------ plain format


class Acts(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor | None
    meta: dict[str, Any]


def save_acts(directory: str | Path, x: torch.Tensor, y: torch.Tensor | None = None, **extra: torch.Tensor) -> Path:
    """Write ``directory/acts.safetensors`` with ``x`` [n, d], optional ``y`` [n] and any other tensors."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    t = {"x": torch.as_tensor(x)}
    if y is not None:
        t["y"] = torch.as_tensor(y)
    t.update({k: torch.as_tensor(v) for k, v in extra.items()})
    save_tensors(d / PLAIN, t)
    return d / PLAIN


def load_acts(directory: str | Path) -> Acts:
    """``(x, y, meta)`` from a directory: ``acts.safetensors`` (``x`` [n, d] float32, ``y`` [n] labels or None,
    other tensors in ``meta``) or a sharded activation directory (all shards concatenated, ``y`` None,
    ``meta`` = the manifest). A ``.safetensors`` file path works too."""
    p = Path(directory)
    if p.is_file() and p.suffix == ".safetensors":
        f = p
    elif (p / PLAIN).exists():
        f = p / PLAIN
    elif (p / MANIFEST).exists():
        ds = ActivationDataset(p)
        return Acts(ds.load_all(), None, dict(ds.manifest))
    else:
        raise FileNotFoundError(
            f"{p} has neither {PLAIN} (x [n, d], optional y [n]) nor {MANIFEST} (from `interplab acts`)."
        )
    t = _load_st(f)
    if "x" not in t:
        raise ValueError(f"{f} has no tensor 'x' (found {', '.join(t)}).")
    x = t.pop("x").to(torch.float32)
    if x.ndim != 2:
        raise ValueError(f"{f}: x must be [n, d], not {tuple(x.shape)}.")
    y = t.pop("y", None)
    if y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(f"{f}: y has {y.shape[0]} rows but x has {x.shape[0]}.")
    return Acts(x, y, t)
