"""Natural-text corpora. The default is the standard library's ``pydoc_data.topics`` (~465 kB of
English documentation), present on every Python install, so analyses on text work offline."""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_CORPUS = "pydoc"


def corpus_text(source: str | Path | None = None) -> str:
    """The text of a corpus: ``None``/``"pydoc"`` for ``pydoc_data.topics``, or a path to a UTF-8 text file."""
    if source is None or str(source) == DEFAULT_CORPUS:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics))
    p = Path(source)
    if not p.is_file():
        raise FileNotFoundError(f"corpus {source!r} is neither 'pydoc' nor an existing text file.")
    return p.read_text(encoding="utf-8", errors="replace")


def corpus_bytes(source: str | Path | None = None, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """A corpus as byte tokens (UTF-8, vocabulary 256): the first ``train_fraction`` of the bytes for training and
    the rest held out (the byte-level training lab's data)."""
    raw = corpus_text(source).encode("utf-8")
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    cut = int(train_fraction * t.numel())
    return t[:cut], t[cut:]


def token_chunks(
    model,
    source: str | Path | None = None,
    n_chunks: int = 16,
    chunk_len: int = 128,
    prepend_bos: bool | None = None,
    start: int = 0,
) -> torch.Tensor:
    """``[n_chunks, chunk_len]`` token ids: consecutive non-overlapping windows of the tokenised corpus
    (each with a BOS token in front when ``prepend_bos`` is True, or None and the tokenizer adds one by default)."""
    if model.tokenizer is None:
        raise ValueError(f"Model {model.name!r} has no tokenizer; text corpora need one.")
    tok = model.tokenizer
    ids = tok(corpus_text(source), add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id
    use_bos = model.default_prepend_bos if prepend_bos is None else prepend_bos
    body = chunk_len - (1 if use_bos else 0)
    if chunk_len > model.cfg.n_ctx:
        raise ValueError(f"chunk_len={chunk_len} exceeds the model's context n_ctx={model.cfg.n_ctx}.")
    need = start + n_chunks * body
    if len(ids) < need:
        raise ValueError(
            f"the corpus has {len(ids)} tokens; {n_chunks} chunks of {body} from token {start} need {need}. "
            "Ask for fewer or shorter chunks, or give a longer text file."
        )
    rows = [ids[start + i * body : start + (i + 1) * body] for i in range(n_chunks)]
    t = torch.tensor(rows, dtype=torch.long)
    if use_bos:
        t = torch.cat([torch.full((n_chunks, 1), bos, dtype=torch.long), t], dim=1)
    return t
