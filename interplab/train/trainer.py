"""The training loop shared by every experiment of the training lab.

* **Deterministic on CPU**: everything random (initialisation, batches, dropout-free models here) draws
  from seeded ``torch.Generator`` objects owned by the experiment/trainer, plus the global torch RNG,
  which is seeded at start and saved in every checkpoint. The same seed, config and thread count give
  bit-identical metrics (tested).
* **Checkpoints** every ``ckpt_every`` steps into ``RUN_DIR/checkpoints/step_NNNNNNN/``:
  ``model.safetensors`` (weights), ``optimizer.safetensors`` + ``optimizer.json`` (the optimizer's
  ``state_dict`` flattened into named tensors plus a JSON sidecar with the param groups and scalars —
  no pickle anywhere), ``rng.safetensors`` (global torch RNG state and every registered generator's
  state as ``uint8`` tensors) and ``state.json`` (step, metrics line count, extra experiment state).
  A checkpoint directory is written under a temporary name and renamed, so a kill mid-write never
  leaves a half checkpoint that looks complete. Only the newest ``keep_checkpoints`` are kept.
* **Resume**: :meth:`Trainer.fit` with ``resume=True`` loads the newest checkpoint, truncates
  ``metrics.jsonl`` to the lines logged up to that step and continues; the final metrics are identical
  to an uninterrupted run (tested by killing a run mid-way).
* **Metrics**: one JSON object per log step in ``RUN_DIR/metrics.jsonl`` (``step`` + the
  experiment's evaluation numbers). The loss is only read back (``.item()``) at log steps.
* **NaN/inf**: the training loss is checked for finiteness with a tensor flag (no per-step sync); at
  every log and checkpoint step the flag is read, and a non-finite loss raises :class:`TrainingDiverged`
  naming the step window and the last good checkpoint, which is never overwritten by a bad state
  (a checkpoint is written only after the check passes).
* **Progress bar**: ``rich`` on stderr, updated at log steps.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interplab.io.checkpoints import load_optimizer, rng_state, save_optimizer, set_rng_state

__all__ = [
    "Trainer",
    "TrainingDiverged",
    "latest_checkpoint",
    "read_metrics",
]

CKPT_DIR = "checkpoints"
METRICS = "metrics.jsonl"


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite. The last good checkpoint is kept."""


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return None
    done = sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").exists())
    return done[-1] if done else None


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / METRICS
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ trainer
@dataclass
class Trainer:
    """Generic loop: ``loss = step_fn(step)``; ``loss.backward()``; ``optimizer.step()``.

    ``step_fn(step) -> loss`` (a scalar tensor; it draws its batch from generators listed in
    ``generators`` so their state is checkpointed); ``eval_fn(step) -> dict`` of numbers, called at
    ``step 0`` and every ``log_every`` steps and at the end (its output goes to ``metrics.jsonl``);
    ``model`` is saved with ``save_pretrained`` if it has one (ToyTransformer), else its ``state_dict``.
    ``callbacks``: ``fn(step, trainer)`` after each optimizer step (tests use one to simulate a kill).
    ``extra_state`` / ``load_extra``: JSON-able experiment state saved in checkpoints.
    ``should_stop(metrics) -> bool``: asked after every logged evaluation; ``True`` ends training there
    (a checkpoint is written at that step; :attr:`stopped_early` is set). It is a function of the logged
    metrics only, so a resumed run stops at the same step as an uninterrupted one."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step_fn: Callable[[int], torch.Tensor]
    eval_fn: Callable[[int], dict]
    steps: int
    run_dir: Path
    log_every: int = 100
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    callbacks: list[Callable[[int, Trainer], None]] = field(default_factory=list)
    progress: bool = True
    description: str = "training"
    grad_clip: float | None = None
    extra_state: Callable[[], dict] | None = None
    load_extra: Callable[[dict], None] | None = None
    should_stop: Callable[[list[dict]], bool] | None = None

    @classmethod
    def for_config(
        cls,
        cfg: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        step_fn: Callable[[int], torch.Tensor],
        eval_fn: Callable[[int], dict],
        run_dir: str | Path,
        *,
        steps: int | None = None,
        callbacks: Iterable[Callable[[int, Trainer], None]] | None = None,
        **kw: Any,
    ) -> Trainer:
        """A Trainer on an experiment config's schedule: ``steps`` (default ``cfg.steps``), ``cfg.log_every``,
        ``cfg.ckpt_every`` and ``cfg.seed``; ``callbacks`` copied into a list; ``kw``: the other fields."""
        return cls(
            model,
            optimizer,
            step_fn,
            eval_fn,
            steps=cfg.steps if steps is None else steps,
            run_dir=Path(run_dir),
            log_every=cfg.log_every,
            ckpt_every=cfg.ckpt_every,
            seed=cfg.seed,
            callbacks=list(callbacks or []),
            **kw,
        )

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}.")
        if self.log_every < 1 or self.ckpt_every < 1:
            raise ValueError("log_every and ckpt_every must be at least 1.")
        self.step = 0
        self.metrics: list[dict] = []
        self.seconds_training = 0.0
        self.stopped_early = False

    # --------------------------------------------------------------------------- checkpoints
    def _save_model(self, directory: Path) -> None:
        save_pretrained = getattr(self.model, "save_pretrained", None)
        if save_pretrained is not None:
            save_pretrained(directory)
        else:
            from safetensors.torch import save_file

            save_file(
                {k: v.detach().contiguous() for k, v in self.model.state_dict().items()},
                str(directory / "model.safetensors"),
            )

    def _load_model(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(directory / "model.safetensors")))

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        root = self.run_dir / CKPT_DIR
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step_{self.step:07d}"
        tmp = root / f".tmp_step_{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self._save_model(tmp)
        save_optimizer(self.optimizer, tmp)
        save_file(rng_state(self.generators), str(tmp / "rng.safetensors"))
        state = {
            "step": self.step,
            "n_metrics": len(self.metrics),
            "seed": self.seed,
            "seconds_training": self.seconds_training,
            "extra": self.extra_state() if self.extra_state else {},
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
        for old in done[: -self.keep_checkpoints] if self.keep_checkpoints > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, directory: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((directory / "state.json").read_text())
        self._load_model(directory)
        load_optimizer(self.optimizer, directory)
        set_rng_state(load_file(str(directory / "rng.safetensors")), self.generators)
        self.step = int(state["step"])
        self.seconds_training = float(state.get("seconds_training", 0.0))
        self.metrics = read_metrics(self.run_dir)[: int(state["n_metrics"])]
        self._rewrite_metrics()
        if self.load_extra:
            self.load_extra(state.get("extra", {}))

    # --------------------------------------------------------------------------- metrics
    def _rewrite_metrics(self) -> None:
        p = self.run_dir / METRICS
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in self.metrics))
        os.replace(tmp, p)

    def _log(self, rec: dict) -> None:
        self.metrics.append(rec)
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _evaluate(self, train_loss: float | None) -> dict:
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            rec = {
                "step": self.step,
                **{
                    k: (float(v) if hasattr(v, "item") or isinstance(v, (int, float)) else v)
                    for k, v in self.eval_fn(self.step).items()
                },
            }
        if train_loss is not None and "train_loss_step" not in rec:
            rec["train_loss_step"] = train_loss
        self.model.train(was)
        return rec

    # --------------------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> list[dict]:
        """Train to ``steps``; returns the metrics records. ``resume``: continue from the newest checkpoint."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = latest_checkpoint(self.run_dir) if resume else None
        if resume and ckpt is None:
            raise ValueError(f"{self.run_dir} has no complete checkpoint to resume from; start a new run instead.")
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        else:
            torch.manual_seed(self.seed)
            self.metrics = []
            self._rewrite_metrics()
            self._log(self._evaluate(None))
            self.save_checkpoint()
        last_good = latest_checkpoint(self.run_dir)
        if self.should_stop is not None and self.step < self.steps and self.metrics and self.should_stop(self.metrics):
            self.stopped_early = True  # resumed from the checkpoint written when the stop rule fired
        bad = torch.zeros((), dtype=torch.bool)
        first_bad_window = self.step
        bar = None
        if self.progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=False,
            )
            task = bar.add_task(self.description, total=self.steps, completed=self.step, info="")
            bar.start()
        self.model.train()
        t0 = time.perf_counter()
        loss = None
        try:
            while self.step < self.steps and not self.stopped_early:
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.step_fn(self.step)
                bad |= ~torch.isfinite(loss.detach())
                loss.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                self.step += 1
                for cb in self.callbacks:
                    cb(self.step, self)
                at_log = self.step % self.log_every == 0 or self.step == self.steps
                at_ckpt = self.step % self.ckpt_every == 0 or self.step == self.steps
                if at_log or at_ckpt:
                    if bool(bad):
                        raise TrainingDiverged(
                            f"training loss became NaN/inf between steps {first_bad_window} and {self.step}; stopped. "
                            f"The last good checkpoint is kept at {last_good} (metrics up to then in "
                            f"{self.run_dir / METRICS}). Lower the learning rate or check the data, then start again "
                            "(or --resume to retry from that checkpoint)."
                        )
                    first_bad_window = self.step
                    self.seconds_training += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    if at_log:
                        rec = self._evaluate(float(loss.detach()))
                        self._log(rec)
                        if bar is not None:
                            info = " ".join(f"{k}={v:.4g}" for k, v in list(rec.items())[1:4] if isinstance(v, float))
                            bar.update(task, completed=self.step, info=info)
                        if self.should_stop is not None and self.should_stop(self.metrics):
                            self.stopped_early = True
                            at_ckpt = True
                    if at_ckpt:
                        last_good = self.save_checkpoint()
                    t0 = time.perf_counter()
        finally:
            if bar is not None:
                bar.stop()
        self.seconds_training += time.perf_counter() - t0
        self.model.eval()
        return self.metrics

    @property
    def steps_per_second(self) -> float:
        return self.step / self.seconds_training if self.seconds_training > 0 else float("nan")
