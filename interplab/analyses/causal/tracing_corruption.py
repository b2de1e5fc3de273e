"""The corruptions of causal tracing: Gaussian noise on the subject's embeddings (Meng et al. 2022, "Locating and
Editing Factual Associations in GPT", ROME, §2.1: ν = 3 × the subject embeddings' standard deviation) and
resampled subjects (symmetric token replacement, Zhang & Nanda 2023, "Towards Best Practices of Activation Patching
in Language Models: Metrics and Methods"): where the subject is in a prompt (:func:`subject_span`), the noise
(:func:`embedding_noise_std`, :func:`subject_noise`), and the candidate subjects and which of them are usable
(:func:`resample_candidates`, :func:`draw_resamples`). Used by :mod:`interplab.analyses.causal.tracing`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from interplab.hooks import Apply, HookContext
from interplab.tasks.facts import Fact

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "ResampleDraw",
    "draw_resamples",
    "embedding_noise_std",
    "resample_candidates",
    "subject_noise",
    "subject_span",
]


def subject_span(model: Model, prompt: str, subject: str) -> tuple[list[int], int, int]:
    """(token ids, first, last) subject token indices of ``prompt`` (the subject's first occurrence)."""
    tok = model.need_tokenizer()
    at = prompt.find(subject)
    if at < 0:
        raise ValueError(f"subject {subject!r} does not occur in the prompt {prompt!r}.")
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    first = len(tok(prompt[: at + 1], add_special_tokens=True)["input_ids"]) - 1
    last = len(tok(prompt[: at + len(subject)], add_special_tokens=True)["input_ids"]) - 1
    return ids, first, last


def embedding_noise_std(model: Model, facts: Sequence[Fact]) -> float:
    """Standard deviation of the subject tokens' embeddings over ``facts`` (ROME's ν / 3)."""
    vals = []
    for f in facts:
        ids, a, b = subject_span(model, f.prompt, f.subject)
        _, cache = model.run(torch.tensor([ids]), cache=["hook_embed"], stop_at_layer=0)
        vals.append(cache["hook_embed"][0, a : b + 1].reshape(-1))
    return float(torch.cat(vals).float().std())


def subject_noise(model: Model, a: int, b: int, n_samples: int, std: float, scale: float, seed: int) -> Apply:
    """The Gaussian corruption: N(0, (scale·std)²) added to the ``hook_embed`` rows ``a..b`` of each of
    ``n_samples`` copies of the prompt (one seeded draw per copy)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_samples, b - a + 1, model.cfg.d_model, generator=g) * (scale * std)

    def add_noise(x: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        x = x.clone()
        x[:, a : b + 1] += noise.to(x.dtype)
        return x

    return Apply("hook_embed", fn=add_noise)


def resample_candidates(fact: Fact, partners: Sequence[Fact], seed: int = 0) -> list[str]:
    """Subjects to resample ``fact``'s subject with, from ``partners``' subjects: those of the fact's own relation
    (template) first, then those of every other relation, each group shuffled by ``seed``; without the fact's
    own subject and without any subject that has a partner fact with the same answer (it would likely still
    give it). Token lengths are checked later, by :func:`draw_resamples`."""
    same_answer = {g.subject for g in partners if g.answer == fact.answer}
    groups: tuple[list[str], list[str]] = ([], [])
    seen = {fact.subject}
    for g in partners:
        if g.subject in seen or g.subject in same_answer:
            continue
        seen.add(g.subject)
        groups[g.template != fact.template].append(g.subject)
    rng = random.Random(seed)
    for grp in groups:
        rng.shuffle(grp)
    return groups[0] + groups[1]


@dataclass
class ResampleDraw:
    """The corrupted prompts of one fact's resample corruption (:func:`draw_resamples`)."""

    subjects: list[str]  # the subjects used, at most n_samples, in candidate order
    rows: list[list[int]]  # their prompts' token ids
    n_candidates: int  # distinct candidate subjects
    n_tried: int  # ... whose prompt has the clean prompt's tokens outside the subject (and so its length)
    n_usable: int  # ... of which the model's top-1 next token is not the answer's first token


@torch.no_grad()
def draw_resamples(
    model: Model, fact: Fact, candidates: Sequence[str], n_samples: int = 10, batch: int = 64
) -> ResampleDraw:
    """The resample corruption of ``fact`` (symmetric token replacement, Zhang & Nanda 2023): each candidate
    subject is put in place of the fact's; it is *tried* when the new prompt tokenises to the same length with
    every token outside the subject unchanged (so positions align), and *usable* when the model's greedy
    prediction (top-1 next token at the last position) on it is not the answer's first token — the corrupted
    prompt no longer gives the answer. The first ``n_samples`` usable ones are used.

    Args:
        model: the model (with a tokenizer).
        fact: the fact whose subject is replaced.
        candidates: subjects to try, in order of preference (e.g. :func:`resample_candidates`); duplicates and
            the fact's own subject are ignored.
        n_samples: at most this many usable subjects are used.
        batch: prompts per forward pass of the check.

    Raises:
        ValueError: when no candidate is usable, saying whether none had the subject's token length or the
            model still predicted the answer for all of them, and what to pass instead.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, not {n_samples}.")
    ids, a, b = subject_span(model, fact.prompt, fact.subject)
    ans, _ = model.first_token_id(fact.answer, "answer")
    tok = model.need_tokenizer()
    cands = [c for c in dict.fromkeys(candidates) if c and c != fact.subject]
    fits: list[tuple[str, list[int]]] = []
    for c in cands:
        alt = tok(fact.prompt.replace(fact.subject, c, 1), add_special_tokens=True)["input_ids"]
        if len(alt) == len(ids) and alt[:a] == ids[:a] and alt[b + 1 :] == ids[b + 1 :]:
            fits.append((c, alt))
    usable: list[tuple[str, list[int]]] = []
    for i in range(0, len(fits), batch):
        chunk = fits[i : i + batch]
        top1 = model.run(torch.tensor([r for _, r in chunk])).logits[:, -1].argmax(-1).tolist()
        usable += [f for f, t in zip(chunk, top1) if t != ans]
    k = b - a + 1
    give = (
        f"Give other subjects of {k} token(s) in this prompt (resample_subjects; on the command line "
        '--resample-subjects "A,B,C" or @FILE), or use noise corruption.'
    )
    if not fits:
        shown = ", ".join(repr(c) for c in cands[:5]) + (", …" if len(cands) > 5 else "")
        raise ValueError(
            f"no resample subject fits {fact.prompt!r}: the subject {fact.subject!r} is {k} token(s) there and none "
            f"of the {len(cands)} candidate(s) ({shown or 'none'}) tokenises to {k} with the rest of the prompt "
            f"unchanged. {give}"
        )
    if not usable:
        shown = ", ".join(repr(c) for c, _ in fits[:5]) + (", …" if len(fits) > 5 else "")
        raise ValueError(
            f"no usable resample for {fact.prompt!r}: the model still predicts {fact.answer!r} for all {len(fits)} "
            f"same-length subject(s) tried ({shown}). {give}"
        )
    used = usable[:n_samples]
    return ResampleDraw([c for c, _ in used], [r for _, r in used], len(cands), len(fits), len(usable))
