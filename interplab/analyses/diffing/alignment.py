"""What two models' losses are compared on: chunks of a text as tokens, or, when the tokenizers differ, text
units both tokenizations cut at (the alignment of :func:`~interplab.analyses.diffing.diff_models`).

**Chunks.** Both models read the same text in the same chunks (consecutive, non-overlapping windows of
``chunk_len`` tokens, a BOS token in front when the tokenizer adds one by default, as
:func:`interplab.tasks.corpus.token_chunks`). The per-token loss is the next-token cross-entropy of
:func:`interplab.models.scoring.model_token_losses` (Olsson et al. 2022 compare models through it).

**Alignment on text** (different tokenizers):

* the text is cut into chunks by model A's tokens; each model tokenizes each chunk's *characters* on its own
  (with its own BOS convention) and gets its own per-token losses;
* a *cut* between two consecutive tokens of one model is a character interval ``[lo, hi]`` (``lo`` = the
  furthest end of the tokens before, ``hi`` = the nearest start of the tokens after; whitespace that a
  tokenizer trims from its offsets opens a gap, a character split over two byte-level tokens closes it);
  a cut is *common* when an interval of A overlaps one of B;
* the *units* compared are the text segments between consecutive common cuts (mostly words or word pieces
  both tokenizers agree on). A unit's loss is the sum of the losses of the model's tokens inside it — by
  the chain rule ``-log p(segment | text before)`` under that model's tokenization — so a unit's loss means
  the same for both models, whatever their tokenizers;
* the first unit of a chunk is dropped when either model scores no loss for its first token (no BOS).
"""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from interplab.models.scoring import model_token_losses

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "Decoder",
    "ModelLike",
    "Units",
    "aligned_units",
    "analysed_text",
    "as_model",
    "get_text",
    "model_label",
    "prepare_tokens",
    "same_tokenizer",
    "series_losses",
    "source_label",
    "token_units",
    "uses_bos",
]

Alignment = Literal["auto", "tokens", "text"]
ALIGNMENTS: tuple[Alignment, ...] = ("auto", "tokens", "text")

ModelLike = Any  # a Model, or a name / directory for interplab.load


def _ragged_losses(model: Model, seqs: list[list[int]], batch_size: int) -> list[torch.Tensor]:
    """Per-token losses of sequences of different lengths (right-padded: causal attention keeps the
    padding out of every real position). Returns one ``[len - 1]`` tensor per sequence."""
    out: list[torch.Tensor] = []
    for s in range(0, len(seqs), max(1, batch_size)):
        group = seqs[s : s + batch_size]
        n = max(len(x) for x in group)
        t = torch.zeros((len(group), n), dtype=torch.long)
        for i, x in enumerate(group):
            t[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        if n < 2:
            out += [torch.zeros(0) for _ in group]
            continue
        loss = model_token_losses(model, t, batch_size=len(group))
        out += [loss[i, : max(0, len(x) - 1)] for i, x in enumerate(group)]
    return out


def as_model(m: ModelLike) -> tuple[Model, bool]:
    """(model, loaded_here)."""
    if isinstance(m, (str, Path)):
        import interplab

        return interplab.load(str(m)), True
    return m, False


def model_label(m: ModelLike) -> str:
    return str(m) if isinstance(m, (str, Path)) else (m.name or "model")


def uses_bos(model: Model, prepend_bos: bool | None) -> bool:
    use = model.default_prepend_bos if prepend_bos is None else bool(prepend_bos)
    if use and (model.tokenizer is None or model.tokenizer.bos_token_id is None):
        raise ValueError(f"Model {model.name!r}'s tokenizer has no BOS token; use prepend_bos=False.")
    return use


def get_text(source, text: str | None) -> str:
    from interplab.tasks.corpus import corpus_text

    if text is not None and source is not None:
        raise ValueError("give either source= (a corpus name or a text file) or text= (the text itself), not both.")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}.")
        return text
    return corpus_text(source)


def _encode(model: Model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def _chunk_counts(n_tokens: int, n_chunks: int | None, body: int, chunk_len: int, what: str) -> int:
    if chunk_len < 2:
        raise ValueError(f"chunk_len must be at least 2 (a token and the one it predicts), got {chunk_len}.")
    if body < 1:
        raise ValueError(f"chunk_len={chunk_len} leaves no room for text after the BOS token.")
    fit = n_tokens // body
    if n_chunks is None:
        if fit < 1:
            raise ValueError(
                f"{what} has {n_tokens} tokens, fewer than one chunk of {body}. "
                "Use a shorter --chunk-len or a longer text."
            )
        return fit
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be at least 1, got {n_chunks}.")
    if fit < n_chunks:
        raise ValueError(
            f"{what} has {n_tokens} tokens; {n_chunks} chunks of {body} need {n_chunks * body}. "
            f"Ask for fewer or shorter chunks (at most {fit} of {chunk_len} fit), or give a longer text."
        )
    return n_chunks


def analysed_text(
    model: Model, text: str, n_chunks: int | None, chunk_len: int, use_bos: bool, margin: int = 256
) -> str:
    """The prefix of ``text`` that ``n_chunks`` chunks need (the whole text for ``n_chunks=None`` or a slow
    tokenizer), so that a long corpus is not tokenized whole: prefixes of doubling length are tokenized
    until the tokens ending ``margin`` characters before the cut are enough. Everything downstream
    (chunks, the tokenizer comparison, text alignment) works on this prefix."""
    tok = model.tokenizer
    body = chunk_len - (1 if use_bos else 0)
    if n_chunks is None or body < 1 or not getattr(tok, "is_fast", False):
        return text
    need = n_chunks * body
    n = max(4096, 8 * need)
    while n < len(text):
        offs = tok(text[:n], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        k = 0
        while k < len(offs) and offs[k][1] <= n - margin:
            k += 1
        if k >= need:
            return text[:n]
        n *= 2
    return text


def _check_ctx(model: Model, n: int, hint: str = "use a shorter chunk_len") -> None:
    if n > model.cfg.n_ctx:
        raise ValueError(f"chunks of {n} tokens exceed {model.name!r}'s context n_ctx={model.cfg.n_ctx}; {hint}.")


def same_tokenizer(
    model_a: Model, model_b: Model, text: str | None = None, prepend_bos: bool | None = None
) -> tuple[bool, str]:
    """Whether the two models tokenize ``text`` identically (same ids, same BOS convention), and why not.

    Without ``text`` the two vocabularies (token string -> id) are compared instead."""
    ta, tb = model_a.tokenizer, model_b.tokenizer
    if ta is None and tb is None:
        return True, "neither model has a tokenizer (token ids are shared)"
    if ta is None or tb is None:
        missing = model_a.name if ta is None else model_b.name
        return False, f"{missing!r} has no tokenizer"
    bos_a, bos_b = uses_bos(model_a, prepend_bos), uses_bos(model_b, prepend_bos)
    if bos_a != bos_b:
        return False, f"BOS conventions differ ({model_a.name!r}: {bos_a}, {model_b.name!r}: {bos_b})"
    if bos_a and ta.bos_token_id != tb.bos_token_id:
        return False, f"BOS token ids differ ({ta.bos_token_id} vs {tb.bos_token_id})"
    if text is None:
        same = ta.get_vocab() == tb.get_vocab()
        return same, "same vocabulary" if same else "vocabularies differ"
    ids_a, ids_b = _encode(model_a, text), _encode(model_b, text)
    if ids_a == ids_b:
        return True, "same token ids on the text"
    n = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
    return False, f"the text tokenizes differently ({len(ids_a)} vs {len(ids_b)} tokens, first difference at token {n})"


class Decoder:
    """Token strings for display, cached per id (``#id`` for models without a tokenizer)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.cache: dict[int, str] = {}

    def one(self, i: int) -> str:
        s = self.cache.get(i)
        if s is None:
            s = self.tok.decode([i]) if self.tok is not None else f"#{i}"
            self.cache[i] = s
        return s

    def many(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self.tok.decode(ids) if self.tok is not None else " ".join(f"#{i}" for i in ids)


@dataclass
class Units:
    """The things whose losses are compared: tokens (``mode == "tokens"``) or aligned text segments."""

    chunk: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    token_id: list[int] = field(default_factory=list)
    token: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.chunk)


def prepare_tokens(
    ref: Model, source, text, tokens, n_chunks, chunk_len, prepend_bos
) -> tuple[torch.Tensor, bool, str | None]:
    """``([n_chunks, chunk_len] ids, uses_bos, text or None)`` for the token path."""
    if tokens is not None:
        if source is not None or text is not None:
            raise ValueError("give tokens= or a text (source= / text=), not both.")
        t = torch.as_tensor(tokens, dtype=torch.long)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[1] < 2:
            raise ValueError(f"tokens must be ids [n_chunks, chunk_len] with chunk_len >= 2, got {tuple(t.shape)}.")
        _check_ctx(ref, t.shape[1])
        return t, False, None
    if ref.tokenizer is None:
        raise ValueError(
            f"Model {ref.name!r} has no tokenizer; give token ids (tokens=[n_chunks, chunk_len]) instead of text."
        )
    use_bos = uses_bos(ref, prepend_bos)
    _check_ctx(ref, chunk_len, "use a shorter chunk_len")
    s = analysed_text(ref, get_text(source, text), n_chunks, chunk_len, use_bos)
    ids = _encode(ref, s)
    body = chunk_len - (1 if use_bos else 0)
    n = _chunk_counts(len(ids), n_chunks, body, chunk_len, "the text")
    t = torch.tensor([ids[i * body : (i + 1) * body] for i in range(n)], dtype=torch.long)
    if use_bos:
        t = torch.cat([torch.full((n, 1), ref.tokenizer.bos_token_id, dtype=torch.long), t], dim=1)
    return t, use_bos, s


def token_units(tokenizer, tokens: torch.Tensor, use_bos: bool, context: int) -> Units:
    dec = Decoder(tokenizer)
    u = Units()
    first = 1 if use_bos else 0
    for i, row in enumerate(tokens.tolist()):
        for p in range(1, len(row)):
            u.chunk.append(i)
            u.position.append(p)
            u.token_id.append(row[p])
            u.token.append(dec.one(row[p]))
            u.context.append(dec.many(row[max(first, p - context) : p]))
    return u


def series_losses(
    models: Sequence[ModelLike],
    tokens: torch.Tensor,
    batch_size: int,
    first: Model | None = None,
    text: str | None = None,
    prepend_bos: bool | None = None,
) -> torch.Tensor:
    """``[n_models, n_units]`` losses. ``first``: models[0], already loaded; the others given by name are
    loaded one at a time and freed. With ``text``, every model must tokenize it as ``first`` does."""
    rows = []
    for k, m in enumerate(models):
        model, loaded = (first, False) if (k == 0 and first is not None) else as_model(m)
        try:
            if k > 0 and text is not None and first is not None:
                ok, why = same_tokenizer(first, model, text, prepend_bos)
                if not ok:
                    raise ValueError(
                        f"checkpoint {k} ({model_label(m)}) does not share the first checkpoint's tokenizer: {why}. "
                        "A checkpoint series needs one tokenizer; compare two models with different "
                        "tokenizers with diff_models (it aligns them on text)."
                    )
            _check_ctx(model, tokens.shape[1])
            if int(tokens.max()) >= model.cfg.d_vocab:
                raise ValueError(
                    f"token id {int(tokens.max())} is outside {model.name!r}'s vocabulary of {model.cfg.d_vocab}."
                )
            rows.append(model_token_losses(model, tokens, batch_size=batch_size).flatten())
        finally:
            if loaded:
                del model
                gc.collect()
    return torch.stack(rows)


def _cuts(offsets: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Clean cuts between consecutive tokens: ``(lo, hi, k)`` = a cut after token ``k`` anywhere in the
    character interval ``[lo, hi]`` (lo = furthest end so far, hi = nearest start after)."""
    n = len(offsets)
    if n < 2:
        return []
    suffix_min: list[float] = [0] * n
    m = math.inf
    for k in range(n - 1, -1, -1):
        m = min(m, offsets[k][0])
        suffix_min[k] = m
    out, hi_end = [], -1
    for k in range(n - 1):
        hi_end = max(hi_end, offsets[k][1])
        lo, hi = hi_end, suffix_min[k + 1]
        if lo <= hi:
            out.append((lo, hi, k))
    return out


def _common_cuts(ca, cb) -> list[tuple[int, int, int]]:
    """``(char position, k_a, k_b)`` for every overlapping pair of cut intervals (two-pointer merge)."""
    i = j = 0
    out = []
    while i < len(ca) and j < len(cb):
        lo_a, hi_a, ka = ca[i]
        lo_b, hi_b, kb = cb[j]
        if max(lo_a, lo_b) <= min(hi_a, hi_b):
            out.append((max(lo_a, lo_b), ka, kb))
            i += 1
            j += 1
        elif hi_a < lo_b:
            i += 1
        else:
            j += 1
    return out


def aligned_units(
    ma: Model, mb: Model, text: str, n_chunks, chunk_len: int, prepend_bos, context: int, batch_size: int
) -> tuple[Units, torch.Tensor, dict]:
    """Units and ``[2, n_units]`` losses of two models with different tokenizers, aligned on text."""
    for m in (ma, mb):
        if m.tokenizer is None:
            raise ValueError(
                f"Model {m.name!r} has no tokenizer, so it cannot be aligned on text with the other model; "
                "give both models token ids (tokens=) or a tokenizer."
            )
        if not getattr(m.tokenizer, "is_fast", False):
            raise ValueError(
                f"Model {m.name!r}'s tokenizer is not a fast tokenizer; aligning on text needs character offsets."
            )
    bos = [uses_bos(ma, prepend_bos), uses_bos(mb, prepend_bos)]
    enc = ma.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    body = chunk_len - (1 if bos[0] else 0)
    n = _chunk_counts(len(offs), n_chunks, body, chunk_len, f"the text (in {ma.name!r}'s tokens)")
    spans = [(offs[i * body][0], offs[(i + 1) * body - 1][1]) for i in range(n)]
    subs = [text[a:b] for a, b in spans]

    per_model = []  # per model: list over chunks of (token losses with nan for unscored, cuts)
    for m, use_bos in zip((ma, mb), bos):
        encs = [m.tokenizer(s, add_special_tokens=False, return_offsets_mapping=True) for s in subs]
        seqs = [([m.tokenizer.bos_token_id] if use_bos else []) + e["input_ids"] for e in encs]
        longest = max(len(x) for x in seqs)
        _check_ctx(m, longest, f"its tokenizer makes {longest} tokens of a chunk; use a shorter chunk_len")
        losses = _ragged_losses(m, seqs, batch_size)
        chunks = []
        for e, loss in zip(encs, losses):
            nt = len(e["input_ids"])
            tl = torch.full((nt,), float("nan"))
            if use_bos:
                tl[:] = loss[:nt]
            elif nt > 1:
                tl[1:] = loss[: nt - 1]
            chunks.append((tl, _cuts([tuple(o) for o in e["offset_mapping"]]), nt))
        per_model.append(chunks)

    u = Units()
    la, lb, n_tok = [], [], [0, 0]
    for ci, sub in enumerate(subs):
        (ta, cuts_a, na), (tb, cuts_b, nb) = per_model[0][ci], per_model[1][ci]
        common = [(0, -1, -1)] + _common_cuts(cuts_a, cuts_b) + [(len(sub), na - 1, nb - 1)]
        starts, texts, sums = [], [], []
        for (p0, a0, b0), (p1, a1, b1) in itertools.pairwise(common):
            starts.append(p0)
            texts.append(sub[p0:p1])
            sums.append((float(ta[a0 + 1 : a1 + 1].sum()), float(tb[b0 + 1 : b1 + 1].sum()), a1 - a0, b1 - b0))
        for m_i, (s_a, s_b, k_a, k_b) in enumerate(sums):
            if math.isnan(s_a) or math.isnan(s_b) or k_a < 1 or k_b < 1:
                continue
            u.chunk.append(ci)
            u.position.append(m_i)
            u.token_id.append(-1)
            u.token.append(texts[m_i])
            u.context.append(sub[starts[max(0, m_i - context)] : starts[m_i]])
            la.append(s_a)
            lb.append(s_b)
            n_tok[0] += k_a
            n_tok[1] += k_b
    if not len(u):
        raise ValueError("the two tokenizations share no cut point inside any chunk; use longer chunks.")
    n_chars = sum(len(t) for t in u.token)
    info = {
        "n_chars": n_chars,
        "n_tokens_a": n_tok[0],
        "n_tokens_b": n_tok[1],
        "tokens_per_unit_a": n_tok[0] / len(u),
        "tokens_per_unit_b": n_tok[1] / len(u),
        "prepend_bos_a": bos[0],
        "prepend_bos_b": bos[1],
        "char_spans": spans,
    }
    return u, torch.tensor([la, lb], dtype=torch.float32), info


def source_label(source, text, tokens) -> str:
    if tokens is not None:
        return "token ids"
    if text is not None:
        return f"text ({len(text)} characters)"
    return str(source) if source is not None else "pydoc"
