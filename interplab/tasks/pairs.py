"""Clean/corrupt prompt pairs with answers, named positions and a metric — the input of every patching method.

A task first writes its prompts as text with *named spans* (:class:`PairSpec`: the clean and the
corrupt prompt as lists of ``(text, name)`` segments, the answer and the competing answer). Then
:func:`build_pairs` tokenizes them for one model and returns :class:`PromptPairs`: token ids
``[n, pos]`` for both sides (right-padded, one attention mask), the answer and wrong-answer token ids,
and per prompt the token index of each named span (the token holding the span's last character) plus
``END`` (the last prompt token, where the answer is predicted).

Clean and corrupt prompts of one pair must have the same number of tokens, and each named span must
sit at the same token index in both, so that an activation at position ``i`` of one can be patched
into the other; a pair that breaks this is refused with an error that names it (use single-token
names / words, or drop the pair with ``on_mismatch="drop"``).

Metrics (per prompt, read at ``END``): ``"logit_diff"`` = logit(answer) − logit(wrong) (Wang et al.
2022); ``"prob"`` = p(answer) (Meng et al. 2022, causal tracing); ``"logprob"`` = log p(answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Segments = list[tuple[str, str | None]]
METRICS = ("logit_diff", "prob", "logprob")


@dataclass
class PairSpec:
    """One clean/corrupt pair as text. ``clean``/``corrupt``: segments ``(text, name or None)`` that
    concatenate to the prompt; ``answer``/``wrong``: the continuations compared by the metric (their
    first token is used); ``meta``: anything the task wants to keep (template, names, fact id...)."""

    clean: Segments
    corrupt: Segments
    answer: str
    wrong: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def clean_text(self) -> str:
        return "".join(t for t, _ in self.clean)

    @property
    def corrupt_text(self) -> str:
        return "".join(t for t, _ in self.corrupt)


@dataclass
class PromptPairs:
    """Tokenized pairs for one model. Token tensors are ``[n, pos]`` (right-padded with ``mask`` 0)."""

    task: str
    clean: torch.Tensor
    corrupt: torch.Tensor
    mask: torch.Tensor
    answer_ids: torch.Tensor  # [n]
    wrong_ids: torch.Tensor  # [n]
    positions: dict[str, torch.Tensor]  # name -> [n] token index
    clean_texts: list[str]
    corrupt_texts: list[str]
    answers: list[str]
    wrongs: list[str]
    meta: list[dict[str, Any]]
    metric: str = "logit_diff"
    dropped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def padded(self) -> bool:
        return not bool(self.mask.all())

    @property
    def position_names(self) -> list[str]:
        return list(self.positions)

    def subset(self, idx) -> PromptPairs:
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        keep = idx.tolist()
        width = int(self.mask[idx].sum(1).max()) if len(keep) else self.clean.shape[1]
        return PromptPairs(
            task=self.task,
            clean=self.clean[idx, :width],
            corrupt=self.corrupt[idx, :width],
            mask=self.mask[idx, :width],
            answer_ids=self.answer_ids[idx],
            wrong_ids=self.wrong_ids[idx],
            positions={k: v[idx] for k, v in self.positions.items()},
            clean_texts=[self.clean_texts[i] for i in keep],
            corrupt_texts=[self.corrupt_texts[i] for i in keep],
            answers=[self.answers[i] for i in keep],
            wrongs=[self.wrongs[i] for i in keep],
            meta=[self.meta[i] for i in keep],
            metric=self.metric,
            dropped=list(self.dropped),
        )

    def head(self, n: int) -> PromptPairs:
        return self.subset(torch.arange(min(n, len(self))))

    def run_mask(self) -> torch.Tensor | None:
        """The attention mask to pass to ``Model.run`` (None when no prompt is padded)."""
        return self.mask if self.padded else None

    # ---- metric
    def metric_from_final(self, final_logits: torch.Tensor, which: str = "clean") -> torch.Tensor:
        """Per-prompt metric from the logits at each prompt's END position ``[n, vocab]`` (or
        ``[k*n, vocab]`` for k stacked variants)."""
        n = len(self)
        k = final_logits.shape[0] // n
        a = self.answer_ids.to(final_logits.device).repeat(k)
        w = self.wrong_ids.to(final_logits.device).repeat(k)
        rows = torch.arange(final_logits.shape[0], device=final_logits.device)
        lg = final_logits.float()
        if self.metric == "logit_diff":
            return lg[rows, a] - lg[rows, w]
        lp = torch.log_softmax(lg, dim=-1)[rows, a]
        return lp.exp() if self.metric == "prob" else lp

    def end_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``[k*n, vocab]`` at each prompt's END from full logits ``[k*n, pos, vocab]`` (k stacked
        variants; any ``[k*n, pos, d]`` tensor, e.g. the residual stream, is indexed the same way)."""
        n = len(self)
        k = logits.shape[0] // n
        end = self.positions["END"].to(logits.device).repeat(k)
        return logits[torch.arange(logits.shape[0], device=logits.device), end]

    def metric_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.metric_from_final(self.end_logits(logits))

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": len(self),
            "metric": self.metric,
            "positions": self.position_names,
            "max_len": int(self.clean.shape[1]),
            "dropped": len(self.dropped),
        }


def _span_positions(tok, segments: Segments, add_special: bool) -> tuple[list[int], dict[str, int]]:
    """Token ids of the whole prompt and, per named segment, the index of the token that holds its
    last character (found by tokenizing the prefix that ends with the segment)."""
    text = "".join(t for t, _ in segments)
    ids = tok(text, add_special_tokens=add_special)["input_ids"]
    named: dict[str, int] = {}
    upto = ""
    for t, name in segments:
        upto += t
        if name is not None:
            pref = tok(upto, add_special_tokens=add_special)["input_ids"]
            named[name] = len(pref) - 1
    named["END"] = len(ids) - 1
    return ids, named


def build_pairs(
    model,
    specs: Sequence[PairSpec],
    task: str = "task",
    metric: str = "logit_diff",
    on_mismatch: str = "raise",
    prepend_bos: bool | None = None,
) -> PromptPairs:
    """Tokenize ``specs`` for ``model`` (see the module docstring). ``on_mismatch``: ``"raise"`` (default)
    or ``"drop"`` pairs whose clean and corrupt token lengths or named positions differ (dropped pairs
    are listed in ``PromptPairs.dropped``)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}.")
    if on_mismatch not in ("raise", "drop"):
        raise ValueError(f"on_mismatch must be 'raise' or 'drop', not {on_mismatch!r}.")
    specs = list(specs)
    if not specs:
        raise ValueError(f"task {task!r} produced no prompt pairs.")
    tok = model.need_tokenizer()
    add_special = prepend_bos is None
    bos = [tok.bos_token_id] if (prepend_bos and tok.bos_token_id is not None) else []
    rows, dropped = [], []
    for i, s in enumerate(specs):
        c_ids, c_pos = _span_positions(tok, s.clean, add_special)
        x_ids, x_pos = _span_positions(tok, s.corrupt, add_special)
        c_ids, x_ids = bos + c_ids, bos + x_ids
        c_pos = {k: v + len(bos) for k, v in c_pos.items()}
        x_pos = {k: v + len(bos) for k, v in x_pos.items()}
        problem = None
        if len(c_ids) != len(x_ids):
            problem = f"clean has {len(c_ids)} tokens, corrupt {len(x_ids)}"
        else:
            diff = [k for k in c_pos if k in x_pos and c_pos[k] != x_pos[k]]
            if diff or set(c_pos) != set(x_pos):
                problem = f"named positions differ ({', '.join(diff) or 'different names'})"
        if problem:
            msg = f"pair {i} ({s.clean_text!r} / {s.corrupt_text!r}): {problem}"
            if on_mismatch == "raise":
                raise ValueError(
                    f"task {task!r}: {msg}. Clean and corrupt prompts must tokenize to the same "
                    "length with named spans at the same positions; use single-token substitutions "
                    "or build_pairs(..., on_mismatch='drop')."
                )
            dropped.append(msg)
            continue
        a, _ = model.first_token_id(s.answer, "answer")
        w, _ = model.first_token_id(s.wrong, "wrong answer")
        rows.append((s, c_ids, x_ids, c_pos, a, w))
    if not rows:
        raise ValueError(f"task {task!r}: every pair was dropped for mismatched tokenization, e.g. {dropped[0]}.")
    names = list(rows[0][3])
    common = [k for k in names if all(k in r[3] for r in rows)]
    n, width = len(rows), max(len(r[1]) for r in rows)
    if width > model.cfg.n_ctx:
        raise ValueError(f"task {task!r}: prompts of {width} tokens exceed the model's context {model.cfg.n_ctx}.")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    clean = torch.full((n, width), pad, dtype=torch.long)
    corrupt = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for j, (_s, c_ids, x_ids, _p, _a, _w) in enumerate(rows):
        clean[j, : len(c_ids)] = torch.tensor(c_ids)
        corrupt[j, : len(x_ids)] = torch.tensor(x_ids)
        mask[j, : len(c_ids)] = 1
    return PromptPairs(
        task=task,
        clean=clean,
        corrupt=corrupt,
        mask=mask,
        answer_ids=torch.tensor([r[4] for r in rows]),
        wrong_ids=torch.tensor([r[5] for r in rows]),
        positions={k: torch.tensor([r[3][k] for r in rows]) for k in common},
        clean_texts=[r[0].clean_text for r in rows],
        corrupt_texts=[r[0].corrupt_text for r in rows],
        answers=[r[0].answer for r in rows],
        wrongs=[r[0].wrong for r in rows],
        meta=[dict(r[0].meta) for r in rows],
        metric=metric,
        dropped=dropped,
    )


def pairs_from_tokens(
    task: str,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    answer_ids,
    wrong_ids,
    positions: dict[str, Any] | None = None,
    metric: str = "logit_diff",
) -> PromptPairs:
    """PromptPairs from token ids directly (models without a tokenizer, planted models). ``END`` defaults
    to the last position."""
    clean, corrupt = torch.as_tensor(clean).long(), torch.as_tensor(corrupt).long()
    if clean.shape != corrupt.shape or clean.ndim != 2:
        raise ValueError(
            f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} must be equal [n, pos] shapes."
        )
    n, p = clean.shape
    pos = {k: torch.as_tensor(v).long().expand(n).clone() for k, v in (positions or {}).items()}
    pos.setdefault("END", torch.full((n,), p - 1, dtype=torch.long))
    return PromptPairs(
        task=task,
        clean=clean,
        corrupt=corrupt,
        mask=torch.ones(n, p, dtype=torch.long),
        answer_ids=torch.as_tensor(answer_ids).long().expand(n).clone(),
        wrong_ids=torch.as_tensor(wrong_ids).long().expand(n).clone(),
        positions=pos,
        clean_texts=[""] * n,
        corrupt_texts=[""] * n,
        answers=[""] * n,
        wrongs=[""] * n,
        meta=[{} for _ in range(n)],
        metric=metric,
    )
