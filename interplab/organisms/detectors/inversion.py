"""Trigger inversion with a Neural-Cleanse anomaly index — Wang et al. (2019), "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", adapted to tokens with the continuous relaxation of discrete
triggers used by e.g. Shen et al. (2022), "Constrained Optimization with Dynamic Bound-scaling for Effective NLP
Backdoor Defense" (soft tokens as mixtures of the embedding rows, then projected back to tokens).

For every candidate target class ``t`` (every content token), a soft trigger of ``k`` tokens — mixture weights
``softmax(a_t / τ)`` over the candidate tokens, i.e. the embeddings ``softmax(a_t / τ) @ W_E`` — is written over
``k`` consecutive non-answer slots of clean sequences whose answer is not ``t`` (at ``hook_embed``, through an
``Apply`` intervention, so the learned positions are added as usual), and ``a_t`` is optimised with Adam to make
the model answer ``t``. All targets are optimised together in one batch. Each soft token is then **projected to
the nearest token** (Euclidean distance of its mixed embedding to the rows of ``W_E``), refined by one discrete
step (the best of every pair that keeps one of its tokens, at either place, beside any candidate — the token
swaps of HotFlip/GCG, exhaustively; for every target alike), and the discrete trigger is measured on fresh held-out
sequences: its cross-entropy towards ``t`` and its attack success (fraction answering
``t``).

Neural Cleanse's test asks whether one class is reachable with an anomalously *small* trigger; with a fixed
trigger length the analogue is an anomalously *easy* target: the score is the MAD anomaly index of the discrete
triggers' cross-entropies over targets, ``(median − min) / (1.4826 · MAD)`` (Neural Cleanse flags > 2). On the
toy task no two-token overwrite of non-answer slots can change the true answer, so a clean model has no easy
target; a backdoored one has its trigger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from interplab.hooks import Apply
from interplab.organisms.detectors import DetectorOutput, clean_probe, robust_z
from interplab.organisms.toy import phrase_starts

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.organisms.toy import ToyTask

__all__ = ["invert", "scan"]


def _rows_not(task: ToyTask, target: int, n: int, seed: int):
    """``n`` clean sequences whose answer is not ``target``."""
    tokens, y, answer = clean_probe(task, 4 * n, seed)
    keep = torch.nonzero(y != target)[:n, 0]
    return tokens[keep], y[keep], answer[keep]


def _batch(task: ToyTask, targets: list[int], n: int, k: int, seed: int):
    toks, starts, tgt = [], [], []
    g = torch.Generator().manual_seed(seed + 1)
    for i, t in enumerate(targets):
        x, _, answer = _rows_not(task, t, n, seed + 17 * i)
        toks.append(x)
        starts.append(phrase_starts(answer, k, g))
        tgt.append(torch.full((len(x),), i))
    return torch.cat(toks), torch.cat(starts), torch.cat(tgt)


def _write(slot_emb_fn, starts: torch.Tensor, rows_target: torch.Tensor, k: int) -> Apply:
    """An ``Apply`` at ``hook_embed`` writing each row's trigger embeddings (``slot_emb_fn() [targets, k, d]``)
    over positions ``start .. start + k - 1``."""

    def fn(x: torch.Tensor, ctx) -> torch.Tensor:
        emb = slot_emb_fn()
        out = x.clone()
        rows = torch.arange(x.shape[0])
        for j in range(k):
            out[rows, starts + j] = emb[rows_target, j].to(x.dtype)
        return out

    return Apply("hook_embed", fn=fn)


def _attack(model: Model, tokens, starts, triggers, targets, batch: int = 4096):
    """Cross-entropy towards ``targets`` and hits when each row's ``triggers [n, k]`` overwrite it at ``starts``."""
    x = tokens.clone()
    rows = torch.arange(len(x))
    for j in range(triggers.shape[1]):
        x[rows, starts + j] = triggers[:, j]
    ce, hit = [], []
    for i in range(0, len(x), batch):
        logits = model.run(x[i : i + batch]).logits[:, -1]
        ce.append(F.cross_entropy(logits, targets[i : i + batch], reduction="none"))
        hit.append((logits.argmax(-1) == targets[i : i + batch]).float())
    return torch.cat(ce), torch.cat(hit)


def _refine(model: Model, task: ToyTask, targets: list[int], trig, cand, n: int, seed: int):
    """Discrete refinement of the projected triggers (the token swaps of HotFlip / GCG, exhaustively over the
    candidates): each target's trigger is replaced by the best, on ``n`` sequences, of every pair that keeps one of
    its tokens at either place and puts any candidate beside it. Done for every target alike, so the anomaly index
    compares like with like."""
    if trig.shape[1] != 2:
        return trig
    tokens, starts, rows_t = _batch(task, targets, n, 2, seed)
    T, V = len(targets), len(cand)
    tgt = torch.tensor(targets)
    c = cand[None, :].expand(T, V)
    variants = torch.cat(
        [torch.stack([trig[:, i, None].expand(T, V), c], -1) for i in (0, 1)]
        + [torch.stack([c, trig[:, i, None].expand(T, V)], -1) for i in (0, 1)],
        1,
    )  # [T, 4V, 2]
    m = variants.shape[1]
    idx = torch.nonzero(rows_t[None, :] == torch.arange(T)[:, None])[:, 1].reshape(T, n)  # [T, n]
    rows = idx[:, None, :].expand(T, m, n).reshape(-1)
    trig_rows = variants[:, :, None, :].expand(T, m, n, 2).reshape(-1, 2)
    tgt_rows = tgt[:, None, None].expand(T, m, n).reshape(-1)
    ce, _ = _attack(model, tokens[rows], starts[rows], trig_rows, tgt_rows)
    best = ce.reshape(T, m, n).mean(-1).argmin(-1)  # [T]
    return variants[torch.arange(T), best]


def invert(
    model: Model,
    task: ToyTask,
    k: int = 2,
    steps: int = 60,
    n_per_target: int = 12,
    n_eval: int = 32,
    n_refine: int = 8,
    lr: float = 0.3,
    tau_end: float = 0.2,
    seed: int = 0,
) -> dict:
    """Soft-trigger inversion for every content token as target; returns per-target discrete triggers, their
    cross-entropies and attack successes (see the module docstring)."""
    targets = list(task.content())
    cand = torch.tensor([*task.noise(), *task.rare()])  # tokens that do not count towards the answer
    n_vocab = len(cand)
    W_E = model.W_E[cand].float()  # [V, d]
    tokens, starts, rows_t = _batch(task, targets, n_per_target, k, seed)
    tgt_ids = torch.tensor(targets)[rows_t]
    g = torch.Generator().manual_seed(seed + 2)
    a = (0.01 * torch.randn(len(targets), k, n_vocab, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([a], lr=lr)
    params = list(model.hf.parameters())
    flags = [p.requires_grad for p in params]
    tau = [1.0]
    iv = _write(lambda: (a / tau[0]).softmax(-1) @ W_E, starts, rows_t, k)
    try:
        for p in params:  # gradients flow to the trigger only
            p.requires_grad_(False)
        for step in range(steps):
            tau[0] = tau_end ** (step / max(steps - 1, 1))  # annealed towards one-hot mixtures
            logits = model.run(tokens, interventions=[iv], grad=True).logits[:, -1]
            loss = F.cross_entropy(logits, tgt_ids)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
    with torch.no_grad():
        soft = (a / tau_end).softmax(-1) @ W_E  # [T, k, d]
        trig = cand[torch.cdist(soft.reshape(-1, soft.shape[-1]), W_E).argmin(-1)].reshape(len(targets), k)
        trig = _refine(model, task, targets, trig, cand, n_refine, seed + 500)
        ev_tokens, ev_starts, ev_rows = _batch(task, targets, n_eval, k, seed + 1000)
        ce, hit = _attack(model, ev_tokens, ev_starts, trig[ev_rows], torch.tensor(targets)[ev_rows])
        ce_t = torch.stack([ce[ev_rows == i].mean() for i in range(len(targets))])
        asr_t = torch.stack([hit[ev_rows == i].mean() for i in range(len(targets))])
    return {"targets": targets, "triggers": trig.tolist(), "ce": ce_t, "attack_success": asr_t}


def scan(model: Model, task: ToyTask, seed: int = 0) -> DetectorOutput:
    """Score: the MAD anomaly index of the projected triggers' cross-entropies over targets. Details: the most
    anomalous target, its recovered trigger (token ids and names) and its attack success."""
    r = invert(model, task, seed=seed)
    ce = r["ce"]
    best = int(ce.argmin())
    score = robust_z(-ce, -ce[best])
    trigger = r["triggers"][best]
    return DetectorOutput(
        {"inversion": score},
        {
            "target": r["targets"][best],
            "trigger": trigger,
            "trigger_text": " ".join(task.token_name(t) for t in trigger),
            "attack_success": round(float(r["attack_success"][best]), 4),
            "max_attack_success": round(float(r["attack_success"].max()), 4),
            "ce_by_target": [round(float(x), 4) for x in ce],
        },
    )
