"""Repeated random tokens: the standard probe for induction heads (Olsson et al. 2022)."""

from __future__ import annotations

import torch


def repeated_tokens(
    model,
    batch: int = 8,
    seq_len: int = 32,
    repeats: int = 2,
    seed: int = 0,
    prepend_bos: bool | None = None,
    vocab: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, int]:
    """``[batch, offset + repeats*seq_len]`` token ids: a random sequence of ``seq_len`` tokens repeated
    ``repeats`` times, with a BOS token in front when ``prepend_bos`` is True (None: when the
    model's tokenizer adds one by default, see ``Model.default_prepend_bos``). Returns ``(tokens, offset)``
    where ``offset`` is 1 with a BOS and 0 without. Tokens within one sequence are distinct when the
    vocabulary allows, so every token of the second copy has exactly one earlier occurrence.

    ``vocab``: ``(low, high)`` range to draw from (default: all ids except the tokenizer's special ids)."""
    d_vocab = model.cfg.d_vocab
    total = repeats * seq_len
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    use_bos = model.default_prepend_bos if prepend_bos is None else prepend_bos
    if use_bos and bos is None:
        raise ValueError(f"Model {model.name!r} has no BOS token; use prepend_bos=False.")
    offset = 1 if use_bos else 0
    if total + offset > model.cfg.n_ctx:
        raise ValueError(
            f"{repeats} x {seq_len} tokens (+{offset} BOS) exceed the model's context n_ctx={model.cfg.n_ctx}; "
            "use a shorter seq_len."
        )
    low, high = vocab if vocab is not None else (0, d_vocab)
    special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
    allowed = torch.tensor([i for i in range(low, high) if i not in special])
    if len(allowed) < 2:
        raise ValueError(f"vocabulary range {low}..{high} leaves fewer than 2 usable tokens.")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        if len(allowed) >= seq_len:
            idx = torch.randperm(len(allowed), generator=g)[:seq_len]
        else:
            idx = torch.randint(0, len(allowed), (seq_len,), generator=g)
        rows.append(allowed[idx])
    seq = torch.stack(rows)
    tokens = seq.repeat(1, repeats)
    if use_bos:
        assert bos is not None
        tokens = torch.cat([torch.full((batch, 1), bos, dtype=torch.long), tokens], dim=1)
    return tokens.long(), offset


def induction_pairs(model, n: int = 16, seq_len: int = 10, seed: int = 0):
    """Clean/corrupt pairs for patching an induction circuit (works without a tokenizer).

    Clean: a random sequence ``t_0 … t_{s-1}`` followed by its first ``i + 1`` tokens again, so the
    prompt ends on a repeat of ``t_i`` and induction predicts ``t_{i+1}``. Corrupt: the same, with
    ``t_{i+1}`` in the first copy replaced by a fresh token ``c`` (induction now predicts ``c``).
    Metric: logit(t_{i+1}) − logit(c) at END. Named positions: ``A1`` (first ``t_i``), ``B1``
    (the changed token), ``END`` (the repeated ``t_i``). Every prompt has length ``s + i + 1`` with
    ``i = s // 2``."""
    from interplab.tasks.pairs import pairs_from_tokens

    tokens, _ = repeated_tokens(model, batch=n, seq_len=seq_len + 1, repeats=1, seed=seed, prepend_bos=False)
    seq, fresh = tokens[:, :seq_len], tokens[:, seq_len]
    i = seq_len // 2
    clean = torch.cat([seq, seq[:, : i + 1]], dim=1)
    corrupt = clean.clone()
    corrupt[:, i + 1] = fresh
    return pairs_from_tokens(
        "induction",
        clean,
        corrupt,
        answer_ids=seq[:, i + 1],
        wrong_ids=fresh,
        positions={"A1": i, "B1": i + 1, "END": seq_len + i},
    )
