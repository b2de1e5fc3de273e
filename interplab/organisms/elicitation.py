"""Eliciting a locked capability with a few demonstrations (Greenblatt, Roger, Krasheninnikov & Krueger 2024,
"Stress-testing capability elicitation with password-locked models", §5: supervised fine-tuning on a handful of
high-quality demonstrations recovers most of a password-locked model's hidden performance).

A toy password-locked organism (:func:`interplab.organisms.password`; ``organism make password-lock --size toy``)
is fine-tuned *without the password* on ``n`` correct demonstrations for each ``n`` of a grid and each seed, and its
accuracy without the password is measured on fresh held-out sequences. The seed draws the demonstrations (the
first ``n`` of one seeded list of 64, so the sets are nested) and the optimiser's state; each (n, seed) cell is a
full fine-tune of every weight with AdamW on all ``n`` demonstrations at every step, run through
:class:`interplab.train.trainer.Trainer`.

**Sub-domains** (:func:`interplab.organisms.password.to_domain`): sequences whose distractors come from the first
half of the noise tokens (*a*) or the second (*b*) — the same answers, different inputs (splitting by answer instead
would let the demonstrations teach a prior over answers). Accuracy is measured on both, headline on domain a.
``domain="same"`` draws the demonstrations from domain a; ``domain="other"`` from domain b only — does unlocking
generalise to a sub-domain with no demonstrations (the paper finds it mostly does)?

Reported per n: mean locked accuracy over seeds with a Student-t 95% CI, and the fraction of the locked/unlocked gap
recovered, ``(acc - locked) / (unlocked - locked)``. Resumable: finished cells are kept in ``OUT/cells/*.json``; a
killed cell resumes from its checkpoint.

**SmolLM2** (a ``smollm2-password-lock`` organism of :mod:`interplab.organisms.password`): the demonstrations are
training facts (prompt without the password, true answer), the first ``n`` of a seeded permutation; each cell is a
fresh LoRA (r 8, all linear layers) through the shared fine-tuning loop :func:`interplab.finetune.finetune`, and the
accuracy is the first-token accuracy on the organism's held-out facts without the password. Sub-domains are
relations: *a* every relation but capitals, *b* the capitals.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from interplab.io.atomic import write_json
from interplab.io.results import Result
from interplab.organisms.toy import OrganismCard, ToyTask, contains_trigger, read_card
from interplab.runtime import torch_threads

__all__ = ["DEFAULT_NS", "SETTINGS", "ElicitationResult", "check_settings", "elicit", "mean_ci", "require_toy"]

SETTINGS = "settings.json"

DEFAULT_NS = (1, 2, 4, 8, 16, 64)


def mean_ci(
    values: Sequence[float], level: float = 0.95, lo_clip: float = 0.0, hi_clip: float = 1.0
) -> tuple[float, list[float] | None]:
    """Mean and Student-t CI over seeds (None with fewer than two), clipped to ``[lo_clip, hi_clip]`` (rates)."""
    from interplab.stats import confidence_interval

    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    if len(v) < 2:
        return float(v.mean()), None
    lo, hi = confidence_interval(v, level=level)
    return float(v.mean()), [round(max(lo_clip, float(lo)), 4), round(min(hi_clip, float(hi)), 4)]


def check_settings(root: Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` to ``root/settings.json`` on a fresh run; on a rerun (resume) refuse other settings, so
    finished cells of another experiment are never mixed in."""
    p = root / SETTINGS
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back
    if p.exists():
        saved = json.loads(p.read_text())
        diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if diff:
            raise ValueError(
                f"{root} holds a run with other settings ({', '.join(diff)} differ); rerun with the settings in {p} "
                "to resume it, or give another --out."
            )
    else:
        root.mkdir(parents=True, exist_ok=True)
        write_json(p, settings)


def require_toy(directory: str | Path, what: str) -> OrganismCard:
    """The card of a toy organism directory, or a ValueError saying which organisms ``what`` runs on."""
    d = Path(directory)
    data = json.loads((d / "organism.json").read_text()) if (d / "organism.json").exists() else None
    if data is not None and not str(data.get("organism", "")).startswith("toy-"):
        raise ValueError(
            f"{d} is a {data.get('organism')} organism; `organism {what}` runs on toy organisms only so far "
            "(make one with `interplab organism make password-lock --size toy` or `organism make toy`)."
        )
    return read_card(d)  # NotAnOrganism when the card is missing


def _demos(task: ToyTask, password: tuple[int, ...], domain: str, seed: int, n: int) -> tuple[torch.Tensor, ...]:
    """``n`` correct demonstrations without the password, answers in the demo domain (nested over n per seed)."""
    from interplab.organisms.password import to_domain

    g = torch.Generator().manual_seed(10_007 * seed + 3)
    tokens, y, _ = task.sample(max(n, 64) * 2, g)
    tokens = to_domain(tokens, task, "a" if domain == "same" else "b")
    keep = ~contains_trigger(tokens, password)
    return tokens[keep][:n], y[keep][:n]


def _finetune_cell(
    organism: Path,
    tokens: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    seed: int,
    run_dir: Path,
    callbacks: list[Callable],
) -> Any:
    from interplab.models.toy import ToyTransformer
    from interplab.train.trainer import Trainer, latest_checkpoint

    model = ToyTransformer.from_pretrained(organism)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def step_fn(step: int) -> torch.Tensor:
        return F.cross_entropy(model(tokens).logits[:, -1], y)

    tr = Trainer(
        model,
        opt,
        step_fn,
        lambda step: {},
        steps=steps,
        run_dir=run_dir,
        log_every=steps,
        ckpt_every=max(1, steps // 4),
        keep_checkpoints=1,
        seed=seed,
        callbacks=callbacks,
        progress=False,
        description="elicitation",
    )
    tr.fit(resume=latest_checkpoint(run_dir) is not None)
    return model


@dataclass
class ElicitationResult(Result):
    """Locked accuracy (no password) after fine-tuning on ``n`` demonstrations: ``acc[i][s]`` for ``ns[i]`` and seed
    ``s`` on the evaluation domain (a), ``acc_other[i][s]`` on the other domain (b); ``locked``/``unlocked``: the
    organism's accuracy on domain a without / with the password before any fine-tuning."""

    KIND = "elicitation"
    FILE = "elicitation.json"

    organism: str
    domain: str
    ns: list[int]
    seeds: list[int]
    steps: int
    lr: float
    n_eval: int
    locked: float
    unlocked: float
    acc: list[list[float]]
    acc_other: list[list[float]]
    unlocked_after: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0

    def curve(self) -> list[dict[str, Any]]:
        """One row per n: mean accuracy with its CI over seeds and the recovered fraction of the gap."""
        gap = self.unlocked - self.locked
        rows = []
        for i, n in enumerate(self.ns):
            m, ci = mean_ci(self.acc[i])
            mo, ci_o = mean_ci(self.acc_other[i])
            rows.append(
                {
                    "n": n,
                    "acc": round(m, 4),
                    "acc_ci95": ci,
                    "recovered": round((m - self.locked) / gap, 4) if gap > 0 else None,
                    "acc_other_domain": round(mo, 4),
                    "acc_other_domain_ci95": ci_o,
                }
            )
        return rows

    def headline(self) -> dict[str, Any]:
        return {
            "organism": self.organism,
            "domain": self.domain,
            "locked_acc": round(self.locked, 4),
            "unlocked_acc": round(self.unlocked, 4),
            "seeds": len(self.seeds),
            "steps": self.steps,
            "curve": self.curve(),
            "seconds": round(self.seconds, 2),
        }

    def to_frame(self, *args: Any, **kwargs: Any):
        import pandas as pd

        return pd.DataFrame(
            [
                {"n": n, "seed": s, "acc": self.acc[i][j], "acc_other_domain": self.acc_other[i][j]}
                for i, n in enumerate(self.ns)
                for j, s in enumerate(self.seeds)
            ]
        )

    def plot(self):
        """Accuracy without the password against the number of demonstrations (95% CI over seeds), with the locked
        and unlocked levels."""
        import plotly.graph_objects as go

        rows = self.curve()
        x = [max(r["n"], 0.5) for r in rows]  # n = 0 drawn at 0.5 on the log axis

        def bars(key: str) -> dict[str, Any]:
            ci = [r[f"{key}_ci95"] or [r[key], r[key]] for r in rows]
            return {
                "type": "data",
                "symmetric": False,
                "array": [c[1] - r[key] for c, r in zip(ci, rows, strict=True)],
                "arrayminus": [r[key] - c[0] for c, r in zip(ci, rows, strict=True)],
            }

        fig = go.Figure()
        fig.add_scatter(x=x, y=[r["acc"] for r in rows], error_y=bars("acc"), mode="lines+markers", name="domain a")
        fig.add_scatter(
            x=x,
            y=[r["acc_other_domain"] for r in rows],
            error_y=bars("acc_other_domain"),
            mode="lines+markers",
            name="domain b",
            line={"dash": "dot"},
        )
        for level, name, color in ((self.locked, "locked", "#d62728"), (self.unlocked, "with password", "#2ca02c")):
            fig.add_hline(y=level, line={"dash": "dash", "color": color}, annotation_text=name)
        fig.update_xaxes(type="log", title="correct demonstrations n (no password; n = 0 at 0.5)")
        fig.update_yaxes(title="accuracy without the password", range=[0, 1.02])
        src = "domain a (same)" if self.domain == "same" else "domain b (other)"
        return fig.update_layout(
            height=400, title=f"Elicitation with demonstrations from {src}, {len(self.seeds)} seeds"
        )


def elicit(
    organism: str | Path,
    out: str | Path,
    ns: Sequence[int] = DEFAULT_NS,
    seeds: int = 3,
    domain: str = "same",
    steps: int = 40,
    lr: float = 1e-3,
    n_eval: int = 1024,
    threads: int = 1,
    callbacks: Sequence[Callable] = (),
) -> ElicitationResult:
    """Fine-tune the toy password-locked ``organism`` on ``n`` correct demonstrations (no password) for every n of
    ``ns`` (0, no training, is always added) and seed ``0..seeds-1``; returns and saves (in ``out``) the
    :class:`ElicitationResult`. Rerunning a killed run resumes it."""
    import time

    from interplab.organisms.lora import lm_card
    from interplab.organisms.password import password_rates

    lm = lm_card(organism, "smollm2-password-lock")
    if lm is not None:
        return _elicit_lm(organism, lm, out, ns, seeds, domain, steps, lr, list(callbacks))
    card = require_toy(organism, "elicit")
    if not card.password:
        raise ValueError(
            f"{organism} is not password-locked (a {card.organism}); make one with "
            "`interplab organism make password-lock --size toy`."
        )
    if domain not in ("same", "other"):
        raise ValueError(f"--domain must be 'same' or 'other', not {domain!r}.")
    bad = [n for n in ns if not 0 <= n <= 4096]
    if bad or seeds < 1 or steps < 1:
        raise ValueError(f"need 0 <= n <= 4096 (got {bad}), seeds >= 1 and steps >= 1.")
    grid = sorted({0, *ns})
    task, password = card.task, tuple(card.password)
    root = Path(out)
    settings = {"organism": str(Path(organism).resolve()), "steps": steps, "lr": lr, "domain": domain, "n_eval": n_eval}
    check_settings(root, settings)
    (root / "cells").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from interplab.models.toy import ToyTransformer

    with torch_threads(threads):
        base = ToyTransformer.from_pretrained(organism)
        before = password_rates(base, task, password, n=n_eval, seed=4242, domain="a")
        acc = [[0.0] * seeds for _ in grid]
        other = [[0.0] * seeds for _ in grid]
        unl = [[0.0] * seeds for _ in grid]
        for i, n in enumerate(grid):
            for s in range(seeds):
                done = root / "cells" / f"n{n}_s{s}.json"
                if done.exists():
                    rec = json.loads(done.read_text())
                else:
                    if n == 0:
                        model = base
                    else:
                        x, y = _demos(task, password, domain, s, n)
                        cell = root / "cells" / f"n{n}_s{s}"
                        model = _finetune_cell(Path(organism), x, y, steps, lr, s, cell, list(callbacks))
                        shutil.rmtree(cell, ignore_errors=True)
                    a = password_rates(model, task, password, n=n_eval, seed=4242, domain="a")
                    b = password_rates(model, task, password, n=n_eval, seed=4242, domain="b")
                    rec = {"n": n, "seed": s, "acc": a["locked_acc"], "acc_other": b["locked_acc"]}
                    rec["unlocked"] = a["unlocked_acc"]
                    write_json(done, rec)
                acc[i][s], other[i][s], unl[i][s] = rec["acc"], rec["acc_other"], rec["unlocked"]
    res = ElicitationResult(
        organism=str(organism),
        domain=domain,
        ns=grid,
        seeds=list(range(seeds)),
        steps=steps,
        lr=lr,
        n_eval=n_eval,
        locked=before["locked_acc"],
        unlocked=before["unlocked_acc"],
        acc=acc,
        acc_other=other,
        unlocked_after=unl,
        seconds=time.perf_counter() - t0,
    )
    res.save(root)
    return res


# ------------------------------------------------------------------------------------------------ SmolLM2
CAPITAL_PREFIX = "The capital of "


def _pair_data(model: Any, pairs: list[tuple[str, str]], seq_len: int) -> Any:
    """``FinetuneData`` whose training rows are exactly ``pairs`` (prompt tokens ignored by the loss, as
    :func:`interplab.finetune.load_data` makes them) and whose held-out rows are the first four of them (the loop
    needs a held-out set; elicitation measures on the organism's held-out facts instead)."""
    from interplab.finetune import FinetuneData, Sequences
    from interplab.finetune.data import IGNORE

    tok = model.need_tokenizer()
    bos = [tok.bos_token_id] if model.default_prepend_bos else []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids, labels = [], []
    for prompt, completion in pairs:
        p = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"] + eos
        ids.append((p + c)[:seq_len])
        labels.append(([IGNORE] * len(p) + c)[:seq_len])
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    train = Sequences.from_lists(ids, labels, pad)
    held = Sequences.from_lists(ids[:4], labels[:4], pad)
    return FinetuneData(train=train, heldout=held, kind="pairs", source="in-memory")


def _elicit_lm(
    organism: str | Path,
    card: dict[str, Any],
    out: str | Path,
    ns: Sequence[int],
    seeds: int,
    domain: str,
    steps: int,
    lr: float,
    callbacks: list[Callable],
) -> ElicitationResult:
    import time

    import interplab
    from interplab.finetune import finetune
    from interplab.organisms.lora import first_token_hits, lora_config
    from interplab.organisms.password import password_facts
    from interplab.train.trainer import latest_checkpoint

    if domain not in ("same", "other"):
        raise ValueError(f"--domain must be 'same' or 'other', not {domain!r}.")
    password = str(card["password"])
    pairs, held = password_facts(password, int(card["seed"]))
    facts = [(p.removeprefix(password + " "), c) for p, c in pairs if p.startswith(password + " ")]
    pool = [f for f in facts if f[0].startswith(CAPITAL_PREFIX) == (domain == "other")]
    grid = sorted({0, *ns})
    if grid[-1] > len(pool):
        raise ValueError(f"at most {len(pool)} demonstrations exist in this domain; lower --n.")
    held_a = [h for h in held if not h[0].startswith(CAPITAL_PREFIX)]
    held_b = [h for h in held if h[0].startswith(CAPITAL_PREFIX)]
    model = interplab.load(str(organism))
    tok = model.need_tokenizer()

    def acc(m: Any, items: list[tuple[str, str]], with_password: bool = False) -> float:
        asked = [(f"{password} {p}", a) for p, a in items] if with_password else items
        return sum(first_token_hits(m, asked)) / len(items)

    root = Path(out)
    check_settings(root, {"organism": str(Path(organism).resolve()), "steps": steps, "lr": lr, "domain": domain})
    (root / "cells").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    before_p = root / "cells" / "before.json"
    if not before_p.exists():
        write_json(before_p, {"locked": acc(model, held_a), "unlocked": acc(model, held_a, True)})
    before = json.loads(before_p.read_text())
    seq_len = 2 + max(len(tok(p + c, add_special_tokens=True)["input_ids"]) for p, c in pool)
    res_acc = [[0.0] * seeds for _ in grid]
    other = [[0.0] * seeds for _ in grid]
    for i, n in enumerate(grid):
        for s in range(seeds):
            done = root / "cells" / f"n{n}_s{s}.json"
            if not done.exists():
                if n == 0:
                    tuned = model
                else:
                    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(10_007 * s + 3))
                    demos = [pool[j] for j in order[:n].tolist()]
                    cfg = lora_config(
                        steps,
                        seq_len,
                        lr,
                        s,
                        batch_size=min(n, 8),
                        heldout_fraction=0.1,
                        heldout_max=32,
                        log_every=steps,
                        ckpt_every=max(1, steps // 2),
                    )
                    cell = root / "cells" / f"n{n}_s{s}"
                    data = _pair_data(model, demos, seq_len)
                    resume = latest_checkpoint(cell) is not None
                    tuned = finetune(
                        model, data, cfg, out=cell, resume=resume, progress=False, callbacks=callbacks
                    ).model
                    shutil.rmtree(cell, ignore_errors=True)
                write_json(done, {"n": n, "seed": s, "acc": acc(tuned, held_a), "acc_other": acc(tuned, held_b)})
            rec = json.loads(done.read_text())
            res_acc[i][s], other[i][s] = rec["acc"], rec["acc_other"]
    res = ElicitationResult(
        organism=str(organism),
        domain=domain,
        ns=grid,
        seeds=list(range(seeds)),
        steps=steps,
        lr=lr,
        n_eval=len(held_a),
        locked=before["locked"],
        unlocked=before["unlocked"],
        acc=res_acc,
        acc_other=other,
        seconds=time.perf_counter() - t0,
    )
    res.save(root)
    return res
