"""Two-model diffing: where do two models (or the checkpoints of one training run) disagree on a text?

Answers the research idea "identify differences between models run on the same text". The method is
the per-token loss comparison of Olsson et al. (2022), "In-context Learning and Induction Heads"
(Transformer Circuits Thread, https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/),
which compares models and checkpoints through their per-token losses on a fixed set of tokens and
finds the induction-head phase change as the step where many tokens' losses drop at once.

**Per-token loss.** Both models read the same text in the same chunks (consecutive, non-overlapping
windows of ``chunk_len`` tokens, a BOS token in front when the tokenizer adds one by default, as
:func:`interplab.tasks.corpus.token_chunks`). The loss of token ``t_p`` is the next-token cross-entropy
``-log softmax(logits[p-1])[t_p]`` in nats; the first token of a chunk without BOS has no loss. The
**difference** of a token is ``diff = loss_b - loss_a``: positive where model A predicts the token better,
negative where model B does.

**What the result holds** (:class:`DiffResult`): the losses of every token; the distribution of the
differences (histogram, quantiles); the contexts where they differ most in both directions (the token with
its ``context`` preceding tokens); and the differences aggregated by token type (per vocabulary item: count,
mean losses, mean and total difference). ``top_tokens`` ranks vocabulary items with at least
``min_count`` occurrences by ``|mean diff|``.

**Tokenizers.** The main path needs both models to tokenize the text identically ("same tokenizer":
the two tokenizers give the same ids for the whole text and follow the same BOS convention). When they do
not, ``alignment="auto"`` (the default) **aligns on text** rather than refusing:

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

In that mode ``mode == "text"``, units take the place of tokens (``token_id`` is -1, ``top_tokens``
aggregates by the unit's text), ``mean_loss_*`` are nats per unit and the headline adds nats per character.
``alignment="tokens"`` refuses models whose tokenizers differ (``ValueError``); ``alignment="text"`` forces
the text path (on identical tokenizers it reproduces the token path: every cut is common).

**Checkpoint series** (:func:`diff_checkpoints`, :class:`CheckpointSeriesResult`): the per-token losses of
a list of checkpoints in training order (same tokenizer). A *step* ``k`` goes from checkpoint ``k-1`` to ``k``;
``delta_k = loss_k - loss_{k-1}``. A token has an **abrupt drop** at step ``k`` when ``delta_k < -threshold``
(default 1 nat: its probability grows by more than e ≈ 2.7x in one step), an abrupt rise when
``delta_k > threshold``. Per step the result counts them (``drops_per_step``, ``rises_per_step``); the
*phase-change step* is the step with the most drops. Each token also gets an *abruptness* — its largest
single-step change over the summed absolute changes along the series (1: everything happened in one step).

>>> res = diff_models("smollm2-135m", "path/to/finetuned", n_chunks=16)
>>> res.headline()["top_tokens"][:3]
>>> series = diff_checkpoints(["run/ckpt-0", "run/ckpt-1000", "run/ckpt-2000"], threshold=1.0)
>>> series.headline()["phase_change_step"]
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from interplab.analyses.observational.lens import display_token
from interplab.io.results import read_json, write_json

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "QUANTILES",
    "CheckpointSeriesResult",
    "DiffResult",
    "diff_checkpoints",
    "diff_models",
    "same_tokenizer",
    "token_losses",
]

DIFF_FILE = "diff.json"
DIFF_UNITS_FILE = "diff_units.parquet"
SERIES_FILE = "checkpoints.json"
SERIES_UNITS_FILE = "checkpoint_losses.parquet"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
ALIGNMENTS = ("auto", "tokens", "text")

ModelLike = Any  # a Model, or a name / directory for interplab.load


# ---------------------------------------------------------------------------------- losses


def token_losses(model: Model, tokens, batch_size: int = 8) -> torch.Tensor:
    """Next-token cross-entropy of every token but the first: ``[batch, pos - 1]`` float32 nats, where
    ``out[i, p] = -log softmax(logits[i, p])[tokens[i, p + 1]]`` (the loss of token ``p + 1``)."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"token_losses needs token ids [batch, pos] with pos >= 2, got {tuple(tokens.shape)}.")
    out = []
    with torch.no_grad():
        for s in range(0, tokens.shape[0], max(1, batch_size)):
            b = tokens[s : s + batch_size]
            logits = model.run(b).logits
            tgt = b[:, 1:].to(logits.device)
            ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), tgt.flatten(), reduction="none")
            out.append(ce.view(tgt.shape).cpu())
            del logits
    return torch.cat(out)


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
        loss = token_losses(model, t, batch_size=len(group))
        out += [loss[i, : max(0, len(x) - 1)] for i, x in enumerate(group)]
    return out


# ---------------------------------------------------------------------------------- inputs


def _as_model(m: ModelLike) -> tuple[Model, bool]:
    """(model, loaded_here)."""
    if isinstance(m, (str, Path)):
        import interplab

        return interplab.load(str(m)), True
    return m, False


def _name(m: ModelLike) -> str:
    return str(m) if isinstance(m, (str, Path)) else (m.name or "model")


def _uses_bos(model: Model, prepend_bos: bool | None) -> bool:
    use = model.default_prepend_bos if prepend_bos is None else bool(prepend_bos)
    if use and (model.tokenizer is None or model.tokenizer.bos_token_id is None):
        raise ValueError(f"Model {model.name!r}'s tokenizer has no BOS token; use prepend_bos=False.")
    return use


def _get_text(source, text: str | None) -> str:
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


def _analysed_text(
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
    bos_a, bos_b = _uses_bos(model_a, prepend_bos), _uses_bos(model_b, prepend_bos)
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


class _Decoder:
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
class _Units:
    """The things whose losses are compared: tokens (``mode == "tokens"``) or aligned text segments."""

    chunk: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    token_id: list[int] = field(default_factory=list)
    token: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.chunk)


def _prepare_tokens(
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
    use_bos = _uses_bos(ref, prepend_bos)
    _check_ctx(ref, chunk_len, "use a shorter chunk_len")
    s = _analysed_text(ref, _get_text(source, text), n_chunks, chunk_len, use_bos)
    ids = _encode(ref, s)
    body = chunk_len - (1 if use_bos else 0)
    n = _chunk_counts(len(ids), n_chunks, body, chunk_len, "the text")
    t = torch.tensor([ids[i * body : (i + 1) * body] for i in range(n)], dtype=torch.long)
    if use_bos:
        t = torch.cat([torch.full((n, 1), ref.tokenizer.bos_token_id, dtype=torch.long), t], dim=1)
    return t, use_bos, s


def _token_units(tokenizer, tokens: torch.Tensor, use_bos: bool, context: int) -> _Units:
    dec = _Decoder(tokenizer)
    u = _Units()
    first = 1 if use_bos else 0
    for i, row in enumerate(tokens.tolist()):
        for p in range(1, len(row)):
            u.chunk.append(i)
            u.position.append(p)
            u.token_id.append(row[p])
            u.token.append(dec.one(row[p]))
            u.context.append(dec.many(row[max(first, p - context) : p]))
    return u


def _series_losses(
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
        model, loaded = (first, False) if (k == 0 and first is not None) else _as_model(m)
        try:
            if k > 0 and text is not None and first is not None:
                ok, why = same_tokenizer(first, model, text, prepend_bos)
                if not ok:
                    raise ValueError(
                        f"checkpoint {k} ({_name(m)}) does not share the first checkpoint's tokenizer: {why}. "
                        "A checkpoint series needs one tokenizer; compare two models with different "
                        "tokenizers with diff_models (it aligns them on text)."
                    )
            _check_ctx(model, tokens.shape[1])
            if int(tokens.max()) >= model.cfg.d_vocab:
                raise ValueError(
                    f"token id {int(tokens.max())} is outside {model.name!r}'s vocabulary of {model.cfg.d_vocab}."
                )
            rows.append(token_losses(model, tokens, batch_size=batch_size).flatten())
        finally:
            if loaded:
                del model
                gc.collect()
    return torch.stack(rows)


# ---------------------------------------------------------------------------------- text alignment


def _cuts(offsets: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Clean cuts between consecutive tokens: ``(lo, hi, k)`` = a cut after token ``k`` anywhere in the
    character interval ``[lo, hi]`` (lo = furthest end so far, hi = nearest start after)."""
    n = len(offsets)
    if n < 2:
        return []
    suffix_min = [0] * n
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


def _aligned_units(
    ma: Model, mb: Model, text: str, n_chunks, chunk_len: int, prepend_bos, context: int, batch_size: int
) -> tuple[_Units, torch.Tensor, dict]:
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
    bos = [_uses_bos(ma, prepend_bos), _uses_bos(mb, prepend_bos)]
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

    u = _Units()
    la, lb, n_tok = [], [], [0, 0]
    for ci, sub in enumerate(subs):
        (ta, cuts_a, na), (tb, cuts_b, nb) = per_model[0][ci], per_model[1][ci]
        common = [(0, -1, -1)] + _common_cuts(cuts_a, cuts_b) + [(len(sub), na - 1, nb - 1)]
        starts, texts, sums = [], [], []
        for (p0, a0, b0), (p1, a1, b1) in zip(common[:-1], common[1:]):
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


# ---------------------------------------------------------------------------------- helpers


def _round(x: float, nd: int = 5) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, nd)


def _esc(s: str) -> str:
    """A token made safe for plotly's HTML-subset text (shown literally)."""
    import html

    return html.escape(display_token(s), quote=False)


def _show_context(s: str, width: int = 80) -> str:
    s = s.replace("\r", "\\r").replace("\n", "\u23ce").replace("\t", "\\t")
    return s if len(s) <= width else "\u2026" + s[-width:]


def _units_frame(u_chunk, u_pos, u_id, u_tok, u_ctx) -> dict[str, Any]:
    return {"chunk": u_chunk, "position": u_pos, "token_id": u_id, "token": u_tok, "context": u_ctx}


# ---------------------------------------------------------------------------------- pair result


@dataclass
class DiffResult:
    """Per-token (or per aligned unit) losses of two models on the same text.

    Tensors are ``[n_units]``: ``loss_a``, ``loss_b`` (nats), ``chunk`` and ``position`` (where the unit is:
    chunk index and token position in the chunk, or the unit's index in the chunk in text mode) and
    ``token_id`` (-1 in text mode). ``tokens`` / ``contexts``: the unit's string and the text before it
    (up to ``settings["context"]`` tokens or units). ``diff = loss_b - loss_a`` (positive: A better)."""

    model_a: str
    model_b: str
    mode: str  # "tokens" | "text"
    chunk: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor
    tokens: list[str]
    contexts: list[str]
    loss_a: torch.Tensor
    loss_b: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def diff(self) -> torch.Tensor:
        return self.loss_b - self.loss_a

    @property
    def n_units(self) -> int:
        return int(self.loss_a.numel())

    @property
    def min_count(self) -> int:
        return int(self.settings.get("min_count", 3))

    def quantiles(self, qs: Sequence[float] = QUANTILES) -> dict[str, float]:
        """Quantiles of ``diff`` as ``{"q01": ..., "q50": ..., "q99": ...}``."""
        d = self.diff.double()
        vals = torch.quantile(d, torch.tensor(list(qs), dtype=torch.float64)).tolist()
        return {f"q{round(q * 100):02d}": float(v) for q, v in zip(qs, vals)}

    # ------------------------------------------------------------------ tables
    def token_table(self, min_count: int | None = None) -> pd.DataFrame:
        """Differences aggregated by token type (vocabulary item, or a unit's text in text mode): count,
        mean losses, mean / total / std of ``diff``, sorted by ``|mean_diff|`` (descending);
        rows with fewer than ``min_count`` occurrences are left out."""
        import pandas as pd

        df = pd.DataFrame(
            {
                "token_id": self.token_id.tolist(),
                "token": self.tokens,
                "loss_a": self.loss_a.double().numpy(),
                "loss_b": self.loss_b.double().numpy(),
            }
        )
        df["diff"] = df["loss_b"] - df["loss_a"]
        g = df.groupby(["token_id", "token"], sort=False)
        t = g.agg(
            count=("diff", "size"),
            mean_loss_a=("loss_a", "mean"),
            mean_loss_b=("loss_b", "mean"),
            mean_diff=("diff", "mean"),
            total_diff=("diff", "sum"),
            std_diff=("diff", "std"),
        ).reset_index()
        t = t[t["count"] >= (self.min_count if min_count is None else min_count)]
        t = t.assign(_abs=t["mean_diff"].abs()).sort_values(["_abs", "count"], ascending=[False, False], kind="stable")
        return t.drop(columns="_abs").reset_index(drop=True)

    def top_tokens(
        self, k: int = 10, min_count: int | None = None, direction: str | None = None
    ) -> list[dict[str, Any]]:
        """The ``k`` token types with the largest ``|mean diff|`` (``better``: which model predicts them better);
        ``direction="a_better"`` / ``"b_better"`` keeps only those with ``mean diff > 0`` / ``< 0``."""
        t = self.token_table(min_count)
        if direction == "a_better":
            t = t[t["mean_diff"] > 0]
        elif direction == "b_better":
            t = t[t["mean_diff"] < 0]
        elif direction is not None:
            raise ValueError(f"direction must be None, 'a_better' or 'b_better', not {direction!r}.")
        rows = []
        for r in t.head(k).itertuples(index=False):
            rows.append(
                {
                    "token": r.token,
                    "token_id": int(r.token_id),
                    "count": int(r.count),
                    "mean_loss_a": _round(r.mean_loss_a),
                    "mean_loss_b": _round(r.mean_loss_b),
                    "mean_diff": _round(r.mean_diff),
                    "total_diff": _round(r.total_diff),
                    "better": "A" if r.mean_diff > 0 else ("B" if r.mean_diff < 0 else "same"),
                }
            )
        return rows

    def top_contexts(self, k: int = 10) -> dict[str, list[dict[str, Any]]]:
        """The ``k`` single occurrences where A is much better (largest ``diff``) and where B is (smallest)."""
        d = self.diff
        out = {}
        for key, order in (
            ("a_better", torch.argsort(d, descending=True, stable=True)),
            ("b_better", torch.argsort(d, stable=True)),
        ):
            rows = []
            for i in order[:k].tolist():
                di = float(d[i])
                if (key == "a_better" and di <= 0) or (key == "b_better" and di >= 0):
                    break
                rows.append(
                    {
                        "chunk": int(self.chunk[i]),
                        "position": int(self.position[i]),
                        "token": self.tokens[i],
                        "context": self.contexts[i],
                        "loss_a": _round(self.loss_a[i]),
                        "loss_b": _round(self.loss_b[i]),
                        "diff": _round(di),
                    }
                )
            out[key] = rows
        return out

    def headline(self, k: int = 10) -> dict[str, Any]:
        """Mean losses, the distribution of ``diff`` and the top token types and contexts."""
        d = self.diff.double()
        h: dict[str, Any] = {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "mode": self.mode,
            "n_units": self.n_units,
            "n_chunks": int(self.chunk.max()) + 1 if self.n_units else 0,
            "mean_loss_a": _round(self.loss_a.double().mean()),
            "mean_loss_b": _round(self.loss_b.double().mean()),
            "mean_diff": _round(d.mean()),
            "std_diff": _round(d.std()) if self.n_units > 1 else 0.0,
            "frac_a_better": _round((d > 0).double().mean()),
            "frac_b_better": _round((d < 0).double().mean()),
            "quantiles": {key: _round(v) for key, v in self.quantiles().items()},
            "top_tokens": self.top_tokens(k),
            "top_tokens_by_direction": {d: self.top_tokens(min(k, 5), direction=d) for d in ("a_better", "b_better")},
            "top_contexts": self.top_contexts(min(k, 5)),
            "min_count": self.min_count,
        }
        if self.mode == "text" and self.settings.get("n_chars"):
            n_chars = self.settings["n_chars"]
            h["nats_per_char_a"] = _round(self.loss_a.double().sum() / n_chars)
            h["nats_per_char_b"] = _round(self.loss_b.double().sum() / n_chars)
        return h

    def to_frame(self, which: str = "units") -> pd.DataFrame:
        """``"units"``: one row per token (unit) with its losses and ``diff``; ``"tokens"``: aggregated by
        token type (all of them, ``min_count=1``); ``"quantiles"``: the quantiles of ``diff``."""
        import pandas as pd

        if which == "units":
            df = pd.DataFrame(
                _units_frame(
                    self.chunk.tolist(), self.position.tolist(), self.token_id.tolist(), self.tokens, self.contexts
                )
            )
            df["loss_a"] = self.loss_a.numpy()
            df["loss_b"] = self.loss_b.numpy()
            df["diff"] = self.diff.numpy()
            return df
        if which == "tokens":
            return self.token_table(min_count=1)
        if which == "quantiles":
            q = self.quantiles()
            return pd.DataFrame({"quantile": list(q), "diff": list(q.values())})
        raise ValueError(f"which must be 'units', 'tokens' or 'quantiles', not {which!r}.")

    # ------------------------------------------------------------------ plots
    def plot(self, kind: str = "both", k: int = 15) -> go.Figure:
        """``"hist"``: histogram of ``diff``; ``"tokens"``: mean diff of the top ``k`` token types;
        ``"scatter"``: loss of A against loss of B per unit; ``"both"`` (default): histogram and token bars."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "hist", "tokens", "scatter"):
            raise ValueError(f"kind must be 'both', 'hist', 'tokens' or 'scatter', not {kind!r}.")
        d = self.diff.tolist()
        a, b = _esc(self.model_a), _esc(self.model_b)
        hist = go.Histogram(
            x=d,
            nbinsx=80,
            name="diff",
            marker={"color": "#4c78a8"},
            showlegend=False,
            hovertemplate="diff %{x}<br>%{y} units<extra></extra>",
        )
        top = self.token_table().head(k).iloc[::-1]
        bars = go.Bar(
            x=top["mean_diff"].tolist(),
            y=[f"{_esc(t)} ({n})" for t, n in zip(top["token"], top["count"])],
            orientation="h",
            showlegend=False,
            marker={"color": ["#e45756" if v > 0 else "#54a24b" for v in top["mean_diff"]]},
            hovertemplate="%{y}<br>mean diff %{x:.3f}<extra></extra>",
        )
        unit = "token" if self.mode == "tokens" else "unit"
        xlab = f"loss B − loss A (nats per {unit}; > 0: A better)"
        title = f"{a} vs {b}: mean loss {self.loss_a.mean():.3f} vs {self.loss_b.mean():.3f} nats per {unit}"
        if kind == "hist":
            fig = go.Figure(hist)
            fig.update_xaxes(title_text=xlab)
            fig.update_yaxes(title_text=f"{unit}s")
        elif kind == "tokens":
            fig = go.Figure(bars)
            fig.update_xaxes(title_text=f"mean diff per {unit} type (count ≥ {self.min_count})")
        elif kind == "scatter":
            fig = go.Figure(
                go.Scattergl(
                    x=self.loss_a.tolist(),
                    y=self.loss_b.tolist(),
                    mode="markers",
                    marker={"size": 3, "opacity": 0.5},
                    text=[_esc(t) for t in self.tokens],
                    hovertemplate="%{text}<br>A %{x:.3f}<br>B %{y:.3f}<extra></extra>",
                )
            )
            m = float(max(self.loss_a.max(), self.loss_b.max())) if self.n_units else 1.0
            fig.add_trace(
                go.Scatter(
                    x=[0, m],
                    y=[0, m],
                    mode="lines",
                    line={"dash": "dot", "color": "grey"},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
            fig.update_xaxes(title_text=f"loss {a}")
            fig.update_yaxes(title_text=f"loss {b}")
        else:
            fig = make_subplots(
                rows=1,
                cols=2,
                column_widths=[0.55, 0.45],
                horizontal_spacing=0.22,
                subplot_titles=("distribution of differences", f"top {unit} types by |mean diff|"),
            )
            fig.add_trace(hist, row=1, col=1)
            fig.add_trace(bars, row=1, col=2)
            fig.update_xaxes(title_text=xlab, row=1, col=1)
            fig.update_yaxes(title_text=f"{unit}s", row=1, col=1)
            fig.update_xaxes(title_text="mean diff (nats)", row=1, col=2)
        fig.update_layout(
            title={"text": title},
            height=max(380, 22 * min(k, len(top)) + 160) if kind != "hist" else 380,
            margin={"l": 60, "r": 20, "t": 70, "b": 60},
        )
        return fig

    def report_parts(self, k: int = 15) -> list:
        """Report parts (summary, figure, tables) built with :mod:`interplab.report.html`, which escapes
        every token and context."""
        from interplab.report.html import figure, heading, table, text

        h = self.headline(k)
        unit = "token" if self.mode == "tokens" else "aligned text unit"
        q = h["quantiles"]
        summary = (
            f"Model A: {self.model_a}\nModel B: {self.model_b}\n"
            f"{h['n_units']} {unit}s in {h['n_chunks']} chunks ({self.settings.get('source', 'text')}); "
            f"mean loss A {h['mean_loss_a']:.4f}, B {h['mean_loss_b']:.4f} nats; diff = loss B − loss A "
            f"(> 0: A better): mean {h['mean_diff']:+.4f}, median {q['q50']:+.4f}, 5–95% "
            f"[{q['q05']:+.4f}, {q['q95']:+.4f}]; A better on {100 * h['frac_a_better']:.1f}%, B on "
            f"{100 * h['frac_b_better']:.1f}%."
        )
        if self.mode == "text":
            summary += (
                "\nThe tokenizers differ: losses are compared on text units both tokenizations cut at "
                f"(A: {self.settings.get('tokens_per_unit_a', 0):.2f}, B: {self.settings.get('tokens_per_unit_b', 0):.2f} "
                f"tokens per unit); nats per character A {h.get('nats_per_char_a')}, B {h.get('nats_per_char_b')}."
            )

        def ctx_rows(rows):
            return [
                {
                    "context": _show_context(r["context"]),
                    "token": display_token(r["token"]),
                    "loss A": r["loss_a"],
                    "loss B": r["loss_b"],
                    "diff": r["diff"],
                }
                for r in rows
            ]

        def tok_rows(direction):
            return [
                {
                    "token": display_token(r["token"]),
                    "count": r["count"],
                    "mean loss A": r["mean_loss_a"],
                    "mean loss B": r["mean_loss_b"],
                    "mean diff": r["mean_diff"],
                    "total diff": r["total_diff"],
                }
                for r in self.top_tokens(k, direction=direction)
            ]

        ctx = self.top_contexts(k)
        return [
            text(summary),
            figure(self.plot(k=k)),
            heading(
                f"{unit.capitalize()} types A predicts better (count ≥ {self.min_count}), largest mean diff first", 4
            ),
            table(tok_rows("a_better")),
            heading(f"{unit.capitalize()} types B predicts better (count ≥ {self.min_count})", 4),
            table(tok_rows("b_better")),
            heading("Where A is much better (largest diff)", 4),
            table(ctx_rows(ctx["a_better"])),
            heading("Where B is much better (smallest diff)", 4),
            table(ctx_rows(ctx["b_better"])),
        ]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "model_diff",
            "format_version": 1,
            "model_a": self.model_a,
            "model_b": self.model_b,
            "mode": self.mode,
            "settings": self.settings,
            "headline": self.headline(),
            "quantiles": self.quantiles(),
            "units_file": DIFF_UNITS_FILE,
        }

    def save(self, directory: str | Path, name: str = DIFF_FILE, units_name: str = DIFF_UNITS_FILE) -> Path:
        """Write ``diff.json`` (settings, headline) and ``diff_units.parquet`` (one row per unit). Returns the JSON path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.to_frame("units").to_parquet(d / units_name, index=False)
        obj = self.to_dict() | {"units_file": units_name}
        write_json(d, name, obj)
        return d / name

    @classmethod
    def load(cls, path: str | Path) -> DiffResult:
        """Read a result written by :meth:`save` (the JSON file or its directory)."""
        import pandas as pd

        meta, p = read_json(path, DIFF_FILE, "model_diff")
        df = pd.read_parquet(p.parent / meta.get("units_file", DIFF_UNITS_FILE))
        return cls(
            model_a=meta["model_a"],
            model_b=meta["model_b"],
            mode=meta["mode"],
            chunk=torch.tensor(df["chunk"].to_numpy(), dtype=torch.long),
            position=torch.tensor(df["position"].to_numpy(), dtype=torch.long),
            token_id=torch.tensor(df["token_id"].to_numpy(), dtype=torch.long),
            tokens=df["token"].tolist(),
            contexts=df["context"].tolist(),
            loss_a=torch.tensor(df["loss_a"].to_numpy(), dtype=torch.float32),
            loss_b=torch.tensor(df["loss_b"].to_numpy(), dtype=torch.float32),
            settings=meta.get("settings", {}),
        )


# ---------------------------------------------------------------------------------- series result


@dataclass
class CheckpointSeriesResult:
    """Per-token losses of a series of checkpoints (in training order) on one text: ``losses``
    ``[n_checkpoints, n_units]``; unit columns as :class:`DiffResult`. Step ``k`` (1..n-1) goes from
    checkpoint ``k-1`` to ``k``; see the module docstring for the definitions of drops, rises and abruptness."""

    names: list[str]
    chunk: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor
    tokens: list[str]
    contexts: list[str]
    losses: torch.Tensor
    threshold: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_checkpoints(self) -> int:
        return int(self.losses.shape[0])

    @property
    def deltas(self) -> torch.Tensor:
        """``[n_steps, n_units]``: ``loss_k - loss_{k-1}`` for steps k = 1..n-1."""
        return self.losses[1:] - self.losses[:-1]

    @property
    def drops_per_step(self) -> list[int]:
        return (self.deltas < -self.threshold).sum(-1).tolist()

    @property
    def rises_per_step(self) -> list[int]:
        return (self.deltas > self.threshold).sum(-1).tolist()

    @property
    def mean_loss(self) -> list[float]:
        return self.losses.double().mean(-1).tolist()

    @property
    def abruptness(self) -> torch.Tensor:
        """``[n_units]``: largest single-step ``|delta|`` over the summed ``|delta|`` (nan where nothing changed)."""
        a = self.deltas.abs().double()
        tot = a.sum(0)
        return torch.where(tot > 0, a.max(0).values / tot.clamp_min(1e-300), torch.full_like(tot, float("nan")))

    def phase_change_step(self) -> dict[str, Any] | None:
        """The step with the most abrupt drops (None when no token drops by more than the threshold)."""
        drops = self.drops_per_step
        if not drops or max(drops) == 0:
            return None
        k = int(max(range(len(drops)), key=lambda i: (drops[i], -i))) + 1
        n = self.losses.shape[1]
        return {
            "step": k,
            "from": self.names[k - 1],
            "to": self.names[k],
            "n_drops": drops[k - 1],
            "frac_drops": _round(drops[k - 1] / n),
            "mean_loss_change": _round(self.deltas[k - 1].double().mean()),
        }

    def events(self, kind: str = "drop") -> pd.DataFrame:
        """One row per abrupt change (``kind``: ``"drop"``, ``"rise"`` or ``"both"``), largest first."""
        import pandas as pd

        if kind not in ("drop", "rise", "both"):
            raise ValueError(f"kind must be 'drop', 'rise' or 'both', not {kind!r}.")
        d = self.deltas
        mask = (
            (d < -self.threshold)
            if kind == "drop"
            else (d > self.threshold)
            if kind == "rise"
            else (d.abs() > self.threshold)
        )
        steps, units = mask.nonzero(as_tuple=True)
        ab = self.abruptness
        rows = {
            "step": (steps + 1).tolist(),
            "from": [self.names[s] for s in steps.tolist()],
            "to": [self.names[s + 1] for s in steps.tolist()],
            "unit": units.tolist(),
            "chunk": self.chunk[units].tolist(),
            "position": self.position[units].tolist(),
            "token_id": self.token_id[units].tolist(),
            "token": [self.tokens[u] for u in units.tolist()],
            "context": [self.contexts[u] for u in units.tolist()],
            "loss_before": self.losses[steps, units].tolist(),
            "loss_after": self.losses[steps + 1, units].tolist(),
            "delta": d[steps, units].tolist(),
            "abruptness": ab[units].tolist(),
        }
        df = pd.DataFrame(rows)
        if len(df):
            df = (
                df.assign(_abs=df["delta"].abs())
                .sort_values("_abs", ascending=False, kind="stable")
                .drop(columns="_abs")
            )
        return df.reset_index(drop=True)

    def token_table(self) -> pd.DataFrame:
        """Per token type: occurrences, number of abrupt drops, the step with most of them, first and last mean loss."""
        import pandas as pd

        ev = self.events("drop")
        base = pd.DataFrame(
            {
                "token_id": self.token_id.tolist(),
                "token": self.tokens,
                "loss_first": self.losses[0].double().numpy(),
                "loss_last": self.losses[-1].double().numpy(),
            }
        )
        agg = (
            base.groupby(["token_id", "token"], sort=False)
            .agg(
                count=("loss_first", "size"),
                mean_loss_first=("loss_first", "mean"),
                mean_loss_last=("loss_last", "mean"),
            )
            .reset_index()
        )
        if len(ev):
            by = ev.groupby(["token_id", "token", "step"]).size().rename("n").reset_index()
            best = by.sort_values(["n", "step"], ascending=[False, True]).drop_duplicates(["token_id", "token"])
            tot = ev.groupby(["token_id", "token"]).size().rename("n_drops").reset_index()
            agg = agg.merge(tot, how="left", on=["token_id", "token"]).merge(
                best.rename(columns={"step": "main_step", "n": "drops_at_main_step"}),
                how="left",
                on=["token_id", "token"],
            )
        else:
            agg = agg.assign(n_drops=0, main_step=pd.NA, drops_at_main_step=0)
        agg["n_drops"] = agg["n_drops"].fillna(0).astype(int)
        agg["drops_at_main_step"] = agg["drops_at_main_step"].fillna(0).astype(int)
        return agg.sort_values(["n_drops", "count"], ascending=[False, False], kind="stable").reset_index(drop=True)

    def pair(self, i: int = 0, j: int = -1) -> DiffResult:
        """The two-model diff between checkpoints ``i`` (A) and ``j`` (B) — no recomputation."""
        return DiffResult(
            model_a=self.names[i],
            model_b=self.names[j],
            mode="tokens",
            chunk=self.chunk,
            position=self.position,
            token_id=self.token_id,
            tokens=self.tokens,
            contexts=self.contexts,
            loss_a=self.losses[i],
            loss_b=self.losses[j],
            settings={k: v for k, v in self.settings.items() if k != "names"},
        )

    def headline(self, k: int = 10) -> dict[str, Any]:
        ev = self.events("drop").head(k)
        tt = self.token_table()
        tt = tt[tt["n_drops"] > 0].head(k)
        return {
            "checkpoints": self.names,
            "n_checkpoints": self.n_checkpoints,
            "n_units": int(self.losses.shape[1]),
            "threshold": self.threshold,
            "mean_loss": [_round(x) for x in self.mean_loss],
            "drops_per_step": self.drops_per_step,
            "rises_per_step": self.rises_per_step,
            "phase_change_step": self.phase_change_step(),
            "top_drops": [
                {
                    "step": int(r.step),
                    "token": r.token,
                    "context": r.context,
                    "loss_before": _round(r.loss_before),
                    "loss_after": _round(r.loss_after),
                    "delta": _round(r.delta),
                    "abruptness": _round(r.abruptness),
                }
                for r in ev.itertuples(index=False)
            ],
            "top_tokens": [
                {
                    "token": r.token,
                    "token_id": int(r.token_id),
                    "count": int(r.count),
                    "n_drops": int(r.n_drops),
                    "main_step": int(r.main_step),
                    "drops_at_main_step": int(r.drops_at_main_step),
                }
                for r in tt.itertuples(index=False)
            ],
        }

    def to_frame(self, which: str = "steps") -> pd.DataFrame:
        """``"steps"``: one row per step (drops, rises, mean loss before/after); ``"events"``: abrupt drops and
        rises; ``"losses"``: one row per unit with a ``loss_<k>`` column per checkpoint; ``"tokens"``: per token type."""
        import pandas as pd

        if which == "steps":
            ml = self.mean_loss
            return pd.DataFrame(
                {
                    "step": list(range(1, self.n_checkpoints)),
                    "from": self.names[:-1],
                    "to": self.names[1:],
                    "drops": self.drops_per_step,
                    "rises": self.rises_per_step,
                    "mean_loss_before": ml[:-1],
                    "mean_loss_after": ml[1:],
                }
            )
        if which == "events":
            return self.events("both")
        if which == "losses":
            df = pd.DataFrame(
                _units_frame(
                    self.chunk.tolist(), self.position.tolist(), self.token_id.tolist(), self.tokens, self.contexts
                )
            )
            for c in range(self.n_checkpoints):
                df[f"loss_{c}"] = self.losses[c].numpy()
            return df
        if which == "tokens":
            return self.token_table()
        raise ValueError(f"which must be 'steps', 'events', 'losses' or 'tokens', not {which!r}.")

    def plot(self, kind: str = "both", k: int = 12) -> go.Figure:
        """``"steps"``: abrupt drops (down) and rises (up) per step with the mean loss per checkpoint;
        ``"trajectories"``: loss across checkpoints of the ``k`` largest drops; ``"both"`` (default): side by side."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if kind not in ("both", "steps", "trajectories"):
            raise ValueError(f"kind must be 'both', 'steps' or 'trajectories', not {kind!r}.")
        steps = [f"{s}" for s in range(1, self.n_checkpoints)]
        drops = go.Bar(
            x=steps,
            y=[-x for x in self.drops_per_step],
            name=f"drops > {self.threshold:g} nats",
            marker={"color": "#54a24b"},
            hovertemplate="step %{x}<br>%{y} tokens<extra></extra>",
        )
        rises = go.Bar(
            x=steps,
            y=self.rises_per_step,
            name=f"rises > {self.threshold:g} nats",
            marker={"color": "#e45756"},
            hovertemplate="step %{x}<br>%{y} tokens<extra></extra>",
        )
        ev = self.events("drop").drop_duplicates("unit").head(k)
        xs = [_esc(n) for n in self.names]
        traj = [
            go.Scatter(
                x=list(range(self.n_checkpoints)),
                y=self.losses[:, u].tolist(),
                mode="lines+markers",
                name=f"{_esc(t)} @{c}:{p}",
                customdata=xs,
                hovertemplate="%{customdata}<br>loss %{y:.3f}<extra>" + _esc(t) + "</extra>",
            )
            for u, t, c, p in zip(ev["unit"], ev["token"], ev["chunk"], ev["position"])
        ]
        title = "Abrupt per-token loss changes between consecutive checkpoints"
        if kind == "steps":
            fig = go.Figure([drops, rises])
            fig.update_layout(barmode="relative")
            fig.update_xaxes(title_text="step (checkpoint k-1 → k)")
            fig.update_yaxes(title_text="tokens")
        elif kind == "trajectories":
            fig = go.Figure(traj)
            fig.update_xaxes(title_text="checkpoint")
            fig.update_yaxes(title_text="loss (nats)")
        else:
            fig = make_subplots(
                rows=1, cols=2, subplot_titles=("drops / rises per step", "largest drops: loss over checkpoints")
            )
            fig.add_trace(drops, row=1, col=1)
            fig.add_trace(rises, row=1, col=1)
            for tr in traj:
                fig.add_trace(tr, row=1, col=2)
            fig.update_layout(barmode="relative")
            fig.update_xaxes(title_text="step (checkpoint k-1 → k)", row=1, col=1)
            fig.update_yaxes(title_text="tokens", row=1, col=1)
            fig.update_xaxes(title_text="checkpoint", row=1, col=2)
            fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
        fig.update_layout(title={"text": title}, height=420, margin={"l": 60, "r": 20, "t": 70, "b": 60})
        return fig

    def report_parts(self, k: int = 15) -> list:
        from interplab.report.html import figure, heading, table, text

        h = self.headline(k)
        pc = h["phase_change_step"]
        summary = (
            f"{h['n_checkpoints']} checkpoints, {h['n_units']} tokens. An abrupt drop: a token's loss falls by "
            f"more than {self.threshold:g} nats between two consecutive checkpoints. Drops per step: "
            f"{h['drops_per_step']}; rises: {h['rises_per_step']}. "
            + (
                f"Most drops at step {pc['step']} ({pc['from']} → {pc['to']}): {pc['n_drops']} tokens."
                if pc
                else "No token drops by more than the threshold."
            )
        )
        ev = self.events("drop").head(k)
        rows = [
            {
                "step": int(r.step),
                "context": _show_context(r.context),
                "token": display_token(r.token),
                "before": r.loss_before,
                "after": r.loss_after,
                "delta": r.delta,
                "abruptness": r.abruptness,
            }
            for r in ev.itertuples(index=False)
        ]
        tt = self.token_table().head(k)
        tt = tt.assign(token=tt["token"].map(display_token))
        return [
            text(summary),
            figure(self.plot(k=min(k, 12))),
            table(self.to_frame("steps")),
            heading("Largest abrupt drops", 4),
            table(rows),
            heading("Token types with most abrupt drops", 4),
            table(tt),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "checkpoint_series",
            "format_version": 1,
            "names": self.names,
            "threshold": self.threshold,
            "settings": self.settings,
            "headline": self.headline(),
            "units_file": SERIES_UNITS_FILE,
        }

    def save(self, directory: str | Path, name: str = SERIES_FILE, units_name: str = SERIES_UNITS_FILE) -> Path:
        """Write ``checkpoints.json`` and ``checkpoint_losses.parquet`` (a ``loss_<k>`` column per checkpoint)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.to_frame("losses").to_parquet(d / units_name, index=False)
        write_json(d, name, self.to_dict() | {"units_file": units_name})
        return d / name

    @classmethod
    def load(cls, path: str | Path) -> CheckpointSeriesResult:
        import pandas as pd

        meta, p = read_json(path, SERIES_FILE, "checkpoint_series")
        df = pd.read_parquet(p.parent / meta.get("units_file", SERIES_UNITS_FILE))
        losses = torch.tensor(
            df[[f"loss_{c}" for c in range(len(meta["names"]))]].to_numpy().T.copy(), dtype=torch.float32
        )
        return cls(
            names=meta["names"],
            chunk=torch.tensor(df["chunk"].to_numpy(), dtype=torch.long),
            position=torch.tensor(df["position"].to_numpy(), dtype=torch.long),
            token_id=torch.tensor(df["token_id"].to_numpy(), dtype=torch.long),
            tokens=df["token"].tolist(),
            contexts=df["context"].tolist(),
            losses=losses,
            threshold=float(meta["threshold"]),
            settings=meta.get("settings", {}),
        )


# ---------------------------------------------------------------------------------- entry points


def _source_label(source, text, tokens) -> str:
    if tokens is not None:
        return "token ids"
    if text is not None:
        return f"text ({len(text)} characters)"
    return str(source) if source is not None else "pydoc"


def diff_models(
    model_a: ModelLike,
    model_b: ModelLike,
    *,
    source: str | Path | None = None,
    text: str | None = None,
    tokens=None,
    n_chunks: int | None = 16,
    chunk_len: int = 128,
    prepend_bos: bool | None = None,
    alignment: str = "auto",
    context: int = 10,
    min_count: int = 3,
    batch_size: int = 8,
) -> DiffResult:
    """Per-token losses of two models on the same text, and where they differ (see the module docstring).

    ``source``: ``None``/``"pydoc"`` (the stdlib's pydoc topics) or a UTF-8 text file; ``text``: the text
    itself; ``tokens``: token ids ``[n_chunks, chunk_len]`` instead of text (models without a tokenizer).
    ``n_chunks`` chunks of ``chunk_len`` tokens (``None``: as many as the text holds); ``alignment``:
    ``"auto"`` (tokens when the tokenizers agree on the text, else aligned on text), ``"tokens"`` (refuse
    different tokenizers) or ``"text"``. ``context``: tokens (units) of context kept per occurrence;
    ``min_count``: occurrences a token type needs to enter ``top_tokens``."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, not {alignment!r}.")
    a, loaded_a = _as_model(model_a)
    b, loaded_b = _as_model(model_b)
    name_a, name_b = _name(model_a), _name(model_b)
    settings = {
        "source": _source_label(source, text, tokens),
        "n_chunks": n_chunks,
        "chunk_len": chunk_len,
        "prepend_bos": prepend_bos,
        "alignment": alignment,
        "context": context,
        "min_count": min_count,
        "loss": "next-token cross-entropy (nats)",
        "diff": "loss_b - loss_a",
        "method": "per-token loss comparison (Olsson et al. 2022)",
    }
    try:
        if tokens is not None:
            if alignment == "text":
                raise ValueError("alignment='text' needs text, not token ids.")
            t, use_bos, s = _prepare_tokens(a, None, None, tokens, n_chunks, chunk_len, prepend_bos)
            mode, why = "tokens", "token ids given"
        else:
            for m in (a, b):
                if m.tokenizer is None:
                    raise ValueError(
                        f"Model {m.name!r} has no tokenizer; give token ids (tokens=[n_chunks, chunk_len]) instead of text."
                    )
            s = _analysed_text(a, _get_text(source, text), n_chunks, chunk_len, _uses_bos(a, prepend_bos))
            same, why = same_tokenizer(a, b, s, prepend_bos)
            if alignment == "tokens" and not same:
                raise ValueError(
                    f"the two models' tokenizers differ ({why}). Per-token comparison needs one tokenizer; "
                    "use alignment='auto' or 'text' to compare them on text units instead."
                )
            mode = "tokens" if same and alignment != "text" else "text"
        if mode == "tokens":
            if tokens is None:
                t, use_bos, _ = _prepare_tokens(a, None, s, None, n_chunks, chunk_len, prepend_bos)
            units = _token_units(a.tokenizer, t, use_bos, context)
            losses = _series_losses([a, b], t, batch_size)
            settings.update({"n_chunks": int(t.shape[0]), "chunk_len": int(t.shape[1]), "prepend_bos": use_bos})
        else:
            units, losses, info = _aligned_units(a, b, s, n_chunks, chunk_len, prepend_bos, context, batch_size)
            settings.update(info)
            settings["char_spans"] = [list(x) for x in info["char_spans"]]
            settings["n_chunks"] = len(info["char_spans"])
        settings["tokenizers"] = why
    finally:
        if loaded_a:
            del a
        if loaded_b:
            del b
        gc.collect()
    return DiffResult(
        model_a=name_a,
        model_b=name_b,
        mode=mode,
        chunk=torch.tensor(units.chunk, dtype=torch.long),
        position=torch.tensor(units.position, dtype=torch.long),
        token_id=torch.tensor(units.token_id, dtype=torch.long),
        tokens=units.token,
        contexts=units.context,
        loss_a=losses[0].float(),
        loss_b=losses[1].float(),
        settings=settings,
    )


def diff_checkpoints(
    models: Sequence[ModelLike],
    *,
    source: str | Path | None = None,
    text: str | None = None,
    tokens=None,
    n_chunks: int | None = 16,
    chunk_len: int = 128,
    prepend_bos: bool | None = None,
    threshold: float = 1.0,
    context: int = 10,
    batch_size: int = 8,
) -> CheckpointSeriesResult:
    """Per-token losses of a series of checkpoints (training order) on one text, and the steps at which
    tokens' losses change abruptly (phase changes; see the module docstring).

    ``models``: Models or names/directories (loaded one at a time, so a long series fits in memory).
    All checkpoints must share the first one's tokenizer (checked on the text). Other arguments as
    :func:`diff_models`; ``threshold`` in nats."""
    models = list(models)
    if len(models) < 2:
        raise ValueError(
            f"a checkpoint series needs at least 2 checkpoints (3 or more to see a phase change), got {len(models)}."
        )
    if not threshold > 0:
        raise ValueError(f"threshold must be positive (nats), got {threshold}.")
    first, loaded = _as_model(models[0])
    try:
        t, use_bos, s = _prepare_tokens(first, source, text, tokens, n_chunks, chunk_len, prepend_bos)
        units = _token_units(first.tokenizer, t, use_bos, context)
        losses = _series_losses(models, t, batch_size, first=first, text=s, prepend_bos=prepend_bos)
    finally:
        if loaded:
            del first
            gc.collect()
    names = [_name(m) for m in models]
    settings = {
        "source": _source_label(source, text, tokens),
        "n_chunks": int(t.shape[0]),
        "chunk_len": int(t.shape[1]),
        "prepend_bos": use_bos,
        "context": context,
        "threshold": threshold,
        "min_count": 3,
        "loss": "next-token cross-entropy (nats)",
        "event": "abrupt drop at step k: loss_k - loss_{k-1} < -threshold (rise: > threshold)",
        "method": "per-token loss across checkpoints (Olsson et al. 2022)",
    }
    return CheckpointSeriesResult(
        names=names,
        chunk=torch.tensor(units.chunk, dtype=torch.long),
        position=torch.tensor(units.position, dtype=torch.long),
        token_id=torch.tensor(units.token_id, dtype=torch.long),
        tokens=units.token,
        contexts=units.context,
        losses=losses.float(),
        threshold=float(threshold),
        settings=settings,
    )
