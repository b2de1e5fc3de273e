"""Hand labels for validating the answer classifiers (:mod:`interplab.evals.classify`): which prompts were put to
the model, how its answers were generated, how the labels are read back, and agreement statistics.

Protocol (``data/README.md`` has the full text): :func:`label_prompts` picks a fixed, class- and framing-balanced
set of prompts per task; :func:`generate_answers` answers them greedily through the model's chat template
(batched, left-padded); the answers were written to ``data/labels/<task>.jsonl`` with the model name and git
commit, then labelled by reading each answer, before the classifiers were tuned. Round-1 rows alternate in blocks
between a tuning half (``split == "tune"``) and a held-out half (``"heldout"``); round 2 (``"fresh"``) was generated
and labelled after the classifiers were frozen. Agreement is reported on the held-out and fresh rows.
Agreement is accuracy and Cohen's kappa (Cohen 1960, "A Coefficient of Agreement for Nominal Scales").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interplab.evals.datasets import data_dir, load_items, load_templates, render

LABEL_TASKS = ("framing", "truthful", "harmful")


def label_prompts(task: str, round: int = 1) -> list[dict]:
    """The prompts put to the model for hand labelling, one dict per prompt with ``item_id``, ``template``,
    ``system`` (or None), ``prompt`` and the condition (``framing`` / ``system_kind`` / ``kind``).

    Round 1 (labelled, then the classifiers tuned on its ``tune`` half):

    * framing: all 120 actions, item i with template i mod 6 and the confirming framing when (i // 2) is even, so
      each action class meets both framings;
    * harmful: the odd-numbered pairs (pair-001, pair-003, …: 106 requests, harmful and benign look-alike), item
      i with template i mod 6;
    * truthful: the first 60 statements (false and true alternate), system prompt cycling through none, truthful
      and the five "X and truthful" ones.

    Round 2 (generated and labelled after the classifiers were frozen: a fresh test set) shifts the template by 3
    and flips the framing (framing: all actions again), takes the even-numbered pairs (harmful) and the next 60
    statements (truthful).
    """
    if round not in (1, 2):
        raise ValueError(f"round must be 1 or 2, got {round}.")
    items, templates = load_items(task), load_templates(task)
    shift = 0 if round == 1 else 3
    out: list[dict] = []
    if task == "framing":
        n_t = len(templates["confirming"])
        for i, it in enumerate(items):
            framing = "confirming" if (i // 2 + round - 1) % 2 == 0 else "disconfirming"
            t = (i + shift) % n_t
            prompt = render(templates[framing][t], task, it)
            out.append({"item_id": it["id"], "framing": framing, "template": t, "system": None, "prompt": prompt})
    elif task == "harmful":
        n_t = len(templates["user"])
        for i, it in enumerate(items):
            if (i // 2) % 2 != round - 1:
                continue
            t = (i + shift) % n_t
            prompt = render(templates["user"][t], task, it)
            out.append({"item_id": it["id"], "kind": it["kind"], "template": t, "system": None, "prompt": prompt})
    elif task == "truthful":
        n_t = len(templates["user"])
        systems = [("none", None), ("truthful", templates["systems"]["truthful"])]
        systems += [(x, templates["systems"]["X"].format(x=x)) for x in templates["xs"]]
        for i, it in enumerate(items[:60] if round == 1 else items[60:120]):
            kind, system = systems[i % len(systems)]
            t = (i + shift) % n_t
            prompt = render(templates["user"][t], task, it)
            out.append({"item_id": it["id"], "system_kind": kind, "template": t, "system": system, "prompt": prompt})
    else:
        raise ValueError(f"unknown label task {task!r}; choose one of {', '.join(LABEL_TASKS)}.")
    return out


def generate_answers(model: Any, rows: Sequence[dict], max_new_tokens: int = 40, batch_size: int = 16) -> list[str]:
    """Greedy answers of an instruct ``model`` (an interplab ``Model``) to ``rows`` (each with ``prompt`` and
    ``system``) through its chat template, batched with left padding. Returns the decoded continuations."""
    import torch

    tok = model.need_tokenizer()
    side, tok.padding_side = tok.padding_side, "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    answers: list[str] = []
    try:
        for s in range(0, len(rows), batch_size):
            texts = []
            for r in rows[s : s + batch_size]:
                msgs = ([{"role": "system", "content": r["system"]}] if r["system"] else []) + [
                    {"role": "user", "content": r["prompt"]}
                ]
                texts.append(model.chat(msgs))
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.hf.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    eos_token_id=tok.eos_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            answers += [a.strip() for a in tok.batch_decode(new, skip_special_tokens=True)]
    finally:
        tok.padding_side = side
    return answers


def labels_path(task: str) -> Path:
    """The hand-label file of a task (``data/labels/<task>.jsonl``)."""
    return data_dir() / "labels" / f"{task}.jsonl"


def load_labels(task: str, split: str | None = None) -> list[dict]:
    """The hand-labelled answers of a task (optionally one split: ``"tune"`` or ``"heldout"``)."""
    rows = [json.loads(line) for line in labels_path(task).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


@dataclass
class Agreement:
    """Agreement between a classifier and the hand labels: ``confusion[gold][predicted]`` counts."""

    n: int
    accuracy: float
    kappa: float
    labels: list[str]
    confusion: dict[str, dict[str, int]]

    def table(self) -> str:
        """The confusion table as text (rows: hand label, columns: classifier)."""
        w = max(8, *(len(x) for x in self.labels)) + 1
        head = "hand \\ clf".ljust(w) + "".join(x.rjust(w) for x in self.labels)
        cells = [g.ljust(w) + "".join(str(self.confusion[g][p]).rjust(w) for p in self.labels) for g in self.labels]
        lines = [head, *cells]
        return "\n".join(lines)


def agreement(gold: Sequence[Any], predicted: Sequence[Any]) -> Agreement:
    """Accuracy, Cohen's kappa and the confusion table of ``predicted`` against the hand labels ``gold``."""
    from sklearn.metrics import cohen_kappa_score

    if len(gold) != len(predicted) or not gold:
        raise ValueError(f"need equally many gold and predicted labels, got {len(gold)} and {len(predicted)}.")
    g, p = [str(x) for x in gold], [str(x) for x in predicted]
    labels = sorted(set(g) | set(p))
    confusion = {a: {b: 0 for b in labels} for a in labels}
    for a, b in zip(g, p, strict=True):
        confusion[a][b] += 1
    acc = sum(a == b for a, b in zip(g, p, strict=True)) / len(g)
    kappa = float(cohen_kappa_score(g, p)) if len(labels) > 1 else 1.0
    return Agreement(n=len(g), accuracy=acc, kappa=kappa, labels=labels, confusion=confusion)
