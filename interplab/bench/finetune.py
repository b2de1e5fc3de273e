"""``interplab bench finetune``: LoRA fine-tuning throughput, interplab's loop beside TRL's ``SFTTrainer``.

Both paths train the same LoRA (Hu et al. 2021; same targets, rank, alpha, dropout 0, no bias) on a fresh copy of
the same model, on the same pre-tokenised sequences (windows of the built-in pydoc corpus, all ``seq_len`` tokens
long, so no padding), for the same number of steps of the same batch, with AdamW (lr, betas, eps, weight decay 0),
a constant learning rate, gradient clipping at 1.0, fp32, on the CPU, with the same torch threads. TRL is
configured to do nothing else: no evaluation, logging, saving or progress bar, no gradient checkpointing and no
bf16 (SFTConfig turns both on by default), no packing, no padding-free batches, ``report_to="none"``, offline. TRL
still computes its per-step entropy and token-accuracy metrics inside its fused LM head; that is part of its step.

Timed: the optimisation steps only. interplab: the trainer's training seconds (held-out evaluation at step 0 and at
the end, and the checkpoints, excluded); TRL: from ``on_train_begin`` to ``on_train_end`` of a ``TrainerCallback``
(model wrapping, optimizer and dataloader creation excluded). Setup (copying the model, adding the adapters) is
untimed in both. Rounds interleave the paths (A B, B A, ...; :mod:`interplab.bench.protocol`); ``speedup_vs_trl`` is
the median of the per-round ratios TRL seconds / interplab seconds, with the ratio of minimums beside it.

Peak memory: the process's peak resident set during each call (``VmHWM`` after resetting it through
``/proc/self/clear_refs``; Linux), in MB, and the part above the resident set before the call; the largest over the
rounds is reported. Both include the call's copy of the model.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from interplab.bench.protocol import Timings, interleave
from interplab.models.model import Model
from interplab.runtime import torch_threads
from interplab.tasks.corpus import token_chunks

__all__ = ["bench_finetune", "trl_finetune", "trl_version"]


def trl_version() -> str | None:
    """TRL's installed version, or None where it is not installed."""
    import importlib.metadata as md

    try:
        return md.version("trl")
    except md.PackageNotFoundError:
        return None


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _change(base: torch.nn.Module, tuned: torch.nn.Module) -> float:
    """Norm of the difference between two models' weights of the same names (LoRA merged into ``tuned``)."""
    before = dict(base.named_parameters())
    with torch.no_grad():
        return sum(float((p - before[n]).norm() ** 2) for n, p in tuned.named_parameters() if n in before) ** 0.5


def _ours(model: Model, data: Any, cfg: Any) -> dict[str, Any]:
    from interplab.finetune import finetune

    res = finetune(model, data, cfg, progress=False)
    return {"seconds": res.seconds_training, "weight_change": _change(model.hf, res.model.hf)}


def trl_finetune(model: Model, rows: torch.Tensor, cfg: Any) -> tuple[float, Any]:
    """Train ``cfg``'s LoRA (a :class:`~interplab.finetune.FinetuneConfig`) on a copy of ``model`` with TRL's
    ``SFTTrainer`` on the token rows ``rows [n, seq_len]`` (every token a target), configured as the module docstring
    says; returns the seconds from ``on_train_begin`` to ``on_train_end`` and the tuned model, LoRA merged."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    class Clock(TrainerCallback):
        t0 = t1 = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.t1 = time.perf_counter()

    hf = copy.deepcopy(model.hf)
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="interplab-bench-trl-") as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=cfg.steps,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=cfg.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.grad_clip or 0.0,
            optim="adamw_torch",
            seed=cfg.seed,
            max_length=rows.shape[1],
            packing=False,
            padding_free=False,
            gradient_checkpointing=False,
            bf16=False,
            fp16=False,
            use_cpu=True,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
        )
        # TRL's dataset progress bars and the trainer's final log line go to stderr and stdout: silenced (stdout
        # carries --json). The global RNG seeded as interplab seeds it, so both LoRAs start from the same A matrices.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull), contextlib.redirect_stdout(devnull):
            torch.manual_seed(cfg.seed)
            trainer = SFTTrainer(
                model=hf,
                args=args,
                train_dataset=Dataset.from_dict({"input_ids": rows.tolist()}),
                processing_class=model.tokenizer,
                peft_config=LoraConfig(
                    r=cfg.rank,
                    lora_alpha=cfg.alpha,
                    target_modules=list(cfg.targets),
                    lora_dropout=0.0,
                    bias="none",
                    task_type="CAUSAL_LM",
                ),
                callbacks=[clock],
            )
            trainer.train()
        tuned: Any = trainer.model
    return clock.t1 - clock.t0, tuned.merge_and_unload()


def _trl(model: Model, rows: torch.Tensor, cfg: Any) -> dict[str, Any]:
    seconds, tuned = trl_finetune(model, rows, cfg)
    return {"seconds": seconds, "weight_change": _change(model.hf, tuned)}


def bench_finetune(
    model: Model,
    steps: int = 4,
    batch_size: int = 8,
    seq_len: int = 64,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    rank: int = 8,
    alpha: int = 16,
    lr: float = 2e-4,
    rounds: int = 3,
    warmup: int = 0,
    threads: int = 2,
    seed: int = 0,
    trl: bool = True,
) -> dict[str, Any]:
    """LoRA fine-tuning tokens/s of interplab's loop and of TRL's ``SFTTrainer`` on identical settings (see the module
    docstring for what is timed and how TRL is configured).

    Args:
        model: the model both paths copy and tune.
        steps, batch_size, seq_len: optimizer steps per timed call, sequences per step, tokens per sequence.
        targets, rank, alpha, lr: the LoRA and the learning rate, shared.
        rounds, warmup: interleaved timed rounds and untimed ones before them.
        threads: torch intra-op threads while timing.
        trl: also time TRL (where installed); False times interplab alone.

    Returns ``tokens_per_s`` per path (from the median call), ``speedup_vs_trl`` (median of per-round ratios),
    ``peak_rss_mb`` and ``peak_extra_rss_mb`` per path, ``weight_change`` per path (norm of the merged weights' change:
    > 0 means the path trained) and the protocol."""
    from interplab.finetune import FinetuneConfig, load_data

    n_train = max(steps * batch_size, 2)
    chunks = token_chunks(model, n_chunks=n_train + 2, chunk_len=seq_len)
    data = load_data(chunks, model, seq_len=seq_len, heldout_fraction=2 / (n_train + 2), heldout_max=2)
    assert len(data.train) == n_train
    cfg = FinetuneConfig(
        method="lora",
        targets=targets,
        rank=rank,
        alpha=alpha,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        seed=seed,
        log_every=max(steps, 1),
        ckpt_every=max(steps, 1),
        heldout_max=2,
        threads=0,  # the bench sets the threads for both paths
    ).validate()
    ver = trl_version() if trl else None
    variants: dict[str, Callable[[], dict[str, Any]]] = {"interplab": lambda: _ours(model, data, cfg)}
    if ver:
        variants["trl"] = lambda: _trl(model, data.train.input_ids, cfg)
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    peak: dict[str, float] = {}
    extra: dict[str, float] = {}
    change: dict[str, float] = {}
    measured_peak = True

    def call(name: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            nonlocal measured_peak
            before = _status_mb("VmRSS") or 0.0
            measured_peak = _reset_peak() and measured_peak
            out = variants[name]()
            hwm = _status_mb("VmHWM")
            if hwm is not None:
                peak[name] = max(peak.get(name, 0.0), hwm)
                extra[name] = max(extra.get(name, 0.0), hwm - before)
            return out

        return run

    def each(name: str, out: dict[str, Any]) -> None:
        seconds[name].append(out["seconds"])
        change[name] = out["weight_change"]

    with torch_threads(threads):
        wall = interleave({k: call(k) for k in variants}, rounds=rounds, warmup=warmup, each=each)
    t = Timings(seconds=seconds, warmup=warmup, load_before=wall.load_before, load_after=wall.load_after)
    tokens = steps * batch_size * seq_len
    res: dict[str, Any] = {
        "model": model.name,
        "tokens_per_s": {k: round(tokens / statistics.median(v), 1) for k, v in seconds.items()},
        "seconds_per_step": {k: round(statistics.median(v) / steps, 3) for k, v in seconds.items()},
    }
    if ver:
        cmp = t.compare("speedup_vs_trl", "trl", "interplab")
        res["speedup_vs_trl"] = cmp["speedup_vs_trl_median"]
        res["speedup_vs_trl_ratio_of_min"] = cmp["speedup_vs_trl"]
        res["speedup_vs_trl_range"] = cmp["speedup_vs_trl_range"]
        res["speedup_vs_trl_rounds"] = cmp["speedup_vs_trl_rounds"]
        res["trl_version"] = ver
    else:
        res["speedup_vs_trl"] = None
        res["trl_version"] = None
    res |= {
        "peak_rss_mb": {k: round(v, 1) for k, v in peak.items()} if measured_peak else None,
        "peak_extra_rss_mb": {k: round(v, 1) for k, v in extra.items()} if measured_peak else None,
        "weight_change": {k: round(v, 6) for k, v in change.items()},
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "tokens_per_call": tokens,
        "lora": {"targets": list(cfg.targets), "rank": rank, "alpha": alpha, "dropout": 0.0},
        "lr": lr,
        "threads": threads,
        "timed": "optimisation steps only (interplab: trainer training seconds; TRL: on_train_begin..on_train_end)",
        **t.protocol(),
    }
    return res
