"""The one fine-tuning loop of interplab: LoRA (Hu et al. 2021, through PEFT) or full fine-tuning of any loadable model,
in fp32 on the CPU (or the model's device), on the deterministic trainer of :mod:`interplab.train.trainer`.

* **Deterministic**: LoRA's initialisation draws from the global RNG seeded with ``cfg.seed``; the batch of step ``s``
  is a pure function of ``(seed, s)`` (each epoch a seeded permutation of the training sequences), so two runs with
  the same seed, data and thread count give bit-identical weights.
* **Checkpointed and resumable**: the trainer checkpoints the *trainable* parameters only (LoRA's A and B, or every
  weight for a full fine-tune), the optimizer and the RNG states every ``ckpt_every`` steps into
  ``OUT/checkpoints/``; ``resume=True`` continues from the newest one and ends bit for bit where the uninterrupted
  run ends. The settings are written to ``OUT/finetune_config.json`` first; a resumption with other settings is
  refused.
* **Loss**: mean cross-entropy of the next token over the target positions (prompt tokens and padding excluded).
  The backbone runs once and the unembedding is applied only at target positions, so prompt tokens cost no
  unembedding (SmolLM2's 49,152-row unembedding dominates a step).
* **Held-out loss** at step 0, every ``log_every`` steps and at the end, logged in ``OUT/metrics.jsonl`` with the
  training tokens per second so far (shown on the progress bar).
* **Output**: ``OUT`` becomes a model directory that ``interplab.load(OUT)`` opens: LoRA merged into the weights (a
  plain Hugging Face directory) or kept as PEFT adapter files with the base model named in the card
  ``finetune.json``; a full fine-tune saves the whole model. ``finetune_result.json`` holds the
  :class:`FinetuneResult`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from interplab.finetune.config import FinetuneConfig
from interplab.finetune.data import IGNORE, DataSpec, FinetuneData, Sequences, load_data
from interplab.io.atomic import write_json
from interplab.io.results import Result, nan_to_none
from interplab.models.loading import FINETUNE_CARD, load
from interplab.models.model import Model
from interplab.models.registry import REGISTRY
from interplab.runtime import torch_threads
from interplab.train.trainer import CKPT_DIR, Trainer, latest_checkpoint

__all__ = [
    "SETTINGS_FILE",
    "FinetuneResult",
    "TrainableParams",
    "base_name",
    "batch_rows",
    "check_out",
    "finetune",
    "heldout_loss",
    "lm_loss",
    "lora_targets",
]

SETTINGS_FILE = "finetune_config.json"


# ------------------------------------------------------------------------------------------------ result
@dataclass
class FinetuneResult(Result):
    """What a fine-tune did: settings, data, held-out loss before/after, speed and the logged curve (``metrics``:
    one record per log step: ``step``, ``heldout_loss``, ``train_loss_step``, ``tokens_per_s``). ``model``: the
    fine-tuned model in memory (LoRA merged); not saved with the result (the directory ``out`` holds it)."""

    KIND = "finetune"
    FILE = "finetune_result.json"

    config: dict[str, Any]
    data: dict[str, Any]
    base: str | None
    out: str | None
    method: str
    save_as: str
    steps: int
    trainable_params: int
    total_params: int
    heldout_loss_before: float
    heldout_loss_after: float
    tokens_trained: int
    seconds_training: float
    tokens_per_s: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(default=None, repr=False, compare=False)

    def _encode(self, name: str, value: Any) -> Any:
        return None if name == "model" else super()._encode(name, value)

    def headline(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "method": self.method,
            "save": self.save_as if self.method == "lora" else "full",
            "base": self.base,
            "steps": self.steps,
            "trainable_params": self.trainable_params,
            "heldout_loss_before": round(self.heldout_loss_before, 5),
            "heldout_loss_after": round(self.heldout_loss_after, 5),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "tokens_trained": self.tokens_trained,
            "seconds_training": round(self.seconds_training, 2),
        }

    def to_frame(self, *args: Any, **kwargs: Any):
        import pandas as pd

        return pd.DataFrame(self.metrics)

    def plot(self):
        """Held-out loss and the training loss of the logged steps against the step."""
        import plotly.graph_objects as go

        fig = go.Figure()
        steps = [m["step"] for m in self.metrics]
        fig.add_scatter(
            x=steps, y=[m.get("heldout_loss") for m in self.metrics], name="held-out loss", mode="lines+markers"
        )
        tr = [(m["step"], m["train_loss_step"]) for m in self.metrics if "train_loss_step" in m]
        if tr:
            fig.add_scatter(
                x=[s for s, _ in tr], y=[v for _, v in tr], name="training loss (that step)", mode="lines+markers"
            )
        fig.update_layout(xaxis_title="step", yaxis_title="loss (nats / token)", height=360)
        return fig


# ------------------------------------------------------------------------------------------------ pieces
class TrainableParams(nn.Module):
    """The trainable parameters of ``hf`` as one module (the same ``Parameter`` objects, names with ``.`` -> ``__``),
    so that the trainer's checkpoints hold exactly what training changes. ``train()``/``eval()`` switch ``hf``."""

    hf: Any

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "hf", hf)  # not a submodule: its frozen weights stay out of the state dict
        for name, p in hf.named_parameters():
            if p.requires_grad:
                self.register_parameter(name.replace(".", "__"), p)

    def train(self, mode: bool = True) -> TrainableParams:
        self.training = mode
        self.hf.train(mode)
        return self


def lora_targets(hf: nn.Module) -> list[str]:
    """Names (last component) of the modules LoRA can adapt in ``hf``: its linear layers (and GPT-2's ``Conv1D``), the
    unembedding excluded."""
    try:
        from transformers.pytorch_utils import Conv1D

        kinds: tuple[type, ...] = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (nn.Linear,)
    model: Any = hf
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else getattr(model, "unembed", None)
    return sorted({n.rsplit(".", 1)[-1] for n, m in hf.named_modules() if isinstance(m, kinds) and m is not head and n})


def _check_targets(hf: nn.Module, targets: tuple[str, ...], model_name: str) -> list[str] | str:
    if targets == ("all-linear",):
        return "all-linear"
    valid = lora_targets(hf)
    bad = [t for t in targets if t not in valid]
    if bad:
        raise ValueError(
            f"unknown LoRA target module(s) {bad} for {model_name!r}; valid names for this model: {', '.join(valid)} "
            "(or all-linear; aliases q/k/v/o/gate/up/down)."
        )
    return list(targets)


def base_name(model: Model) -> str | None:
    """A string ``interplab.load`` opens to get ``model`` again: its registry name, hub id or directory (None for a
    model built in memory)."""
    if model.name in REGISTRY:
        return model.name
    if model.source.startswith("hub:"):
        return model.source.removeprefix("hub:")
    if model.source and Path(model.source).exists():
        return str(Path(model.source).resolve())
    return None


def batch_rows(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The training rows of step ``step``: positions ``step * batch_size ...`` of the endless sequence of epochs, each
    epoch a permutation of ``range(n)`` seeded by ``(seed, epoch)``; a pure function, so a resumed run draws the same
    batches without saved state."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)
    rows = torch.empty(batch_size, dtype=torch.long)
    for e in pos.div(n, rounding_mode="floor").unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        sel = pos.div(n, rounding_mode="floor") == e
        rows[sel] = perm[pos[sel] % n]
    return rows


def lm_loss(hf: Any, ids: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over target positions (``labels[:, 1:] != -100``) and their count. For Hugging
    Face models the backbone runs once and the unembedding (with Gemma's final soft-cap) is applied only at target
    positions; other models (the toy transformer) are run whole."""
    targets = labels[:, 1:]
    sel = targets != IGNORE
    if mask is not None and bool(mask.all()):
        mask = None  # the plain causal path of the attention kernel
    backbone = getattr(hf, "base_model", None)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if backbone is not None and backbone is not hf and head is not None:
        hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
        logits = head(hidden[sel])
        cap = getattr(getattr(hf, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    else:
        logits = hf(input_ids=ids, attention_mask=mask).logits[:, :-1][sel]
    n = int(sel.sum())
    return F.cross_entropy(logits.float(), targets[sel], reduction="mean"), n


@torch.no_grad()
def heldout_loss(hf: Any, seqs: Sequences, batch_size: int = 8) -> float:
    """Mean next-token loss over every target token of ``seqs`` (token-weighted), in batches."""
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        ids, mask, labels = seqs.batch(range(i, min(i + batch_size, len(seqs))))
        loss, n = lm_loss(hf, ids, mask, labels)
        total += float(loss) * n
        count += n
    return total / max(count, 1)


def _count(params: Iterable[nn.Parameter]) -> int:
    seen: set[int] = set()
    total = 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _settings(cfg: FinetuneConfig, data: FinetuneData, base: str | None) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "data": data.describe(), "base": base}


def _check_resume(run_dir: Path, settings: dict[str, Any]) -> None:
    p = run_dir / SETTINGS_FILE
    saved = json.loads(p.read_text())
    free = set(FinetuneConfig.RESUME_FREE)
    diff = [k for k in settings["config"] if k not in free and saved["config"].get(k) != settings["config"][k]]
    diff += [
        f"data.{k}"
        for k in ("kind", "source", "train_sequences", "train_target_tokens")
        if saved["data"].get(k) != settings["data"][k]
    ]
    if diff:
        raise ValueError(
            f"{run_dir} was started with other settings ({', '.join(diff)} differ); resume with the settings in "
            f"{p}, or start a new run in another directory."
        )


def check_out(out: str | Path, resume: bool) -> None:
    """Refuse an output directory that already holds a fine-tune unless resuming, and a resumption where there is
    nothing to resume (the CLI asks before it writes its ``run.json`` there)."""
    d = Path(out)
    started = any((d / f).exists() for f in (SETTINGS_FILE, FINETUNE_CARD, CKPT_DIR))
    if resume and not (started and latest_checkpoint(d) is not None):
        raise ValueError(f"{d} holds no fine-tune to resume (no {SETTINGS_FILE} or checkpoint); start a new run.")
    if not resume and started:
        raise ValueError(f"{d} already holds a fine-tune; resume it (resume=True, --resume) or choose another output.")


# ------------------------------------------------------------------------------------------------ the loop
def finetune(
    model: Model | str,
    data: DataSpec,
    cfg: FinetuneConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    *,
    progress: bool = True,
    callbacks: Iterable[Callable[[int, Trainer], None]] = (),
) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` (LoRA or full, per ``cfg``) and return a :class:`FinetuneResult` whose
    ``model`` is the tuned model in memory.

    Args:
        model: a loaded :class:`Model` (not modified: its weights are copied) or anything ``interplab.load`` takes.
        data: texts, ``(prompt, completion)`` pairs, token ids, a text or JSONL file, or ``"corpus:pydoc"`` (see
            :func:`interplab.finetune.data.load_data`); or a prepared :class:`FinetuneData`.
        cfg: the settings (:class:`FinetuneConfig`; default LoRA r=8, alpha=16 on q_proj and v_proj, 40 steps).
        out: the output directory, which becomes a model directory for ``interplab.load`` (with the checkpoints,
            ``metrics.jsonl``, the card ``finetune.json`` and ``finetune_result.json``). None: train in a temporary
            directory and save nothing.
        resume: continue the killed run in ``out`` from its newest checkpoint (same settings required).
        progress: show the progress bar (held-out loss, tokens/s) on stderr.
        callbacks: ``fn(step, trainer)`` after every optimizer step (tests stop a run with one).
    """
    cfg = (cfg or FinetuneConfig()).validate()
    if resume and out is None:
        raise ValueError("resume=True needs out: the directory of the run to continue.")
    base_model = load(model) if isinstance(model, str) else model
    hf: Any = base_model.hf if isinstance(model, str) else copy.deepcopy(base_model.hf)
    base = base_name(base_model)
    if cfg.method == "lora" and cfg.save == "adapter" and out is not None and base is None:
        raise ValueError(
            f"save='adapter' needs a base model that interplab.load can open again; {base_model.name!r} was built in "
            "memory. Save it with model.save(DIR) and fine-tune interplab.load(DIR), or use save='merged'."
        )
    fdata = load_data(data, base_model, cfg.seq_len, cfg.heldout_fraction, cfg.heldout_max, cfg.seed)
    settings = _settings(cfg, fdata, base)

    tmp = out is None
    run_dir = Path(tempfile.mkdtemp(prefix="interplab-finetune-")) if out is None else Path(out)
    check_out(run_dir, resume)
    if resume:
        _check_resume(run_dir, settings)

    try:
        with torch_threads(cfg.threads):
            return _train(base_model, hf, fdata, cfg, run_dir, resume, settings, tmp, progress, list(callbacks))
    finally:
        if tmp:
            shutil.rmtree(run_dir, ignore_errors=True)


def _train(
    base_model: Model,
    hf: Any,
    fdata: FinetuneData,
    cfg: FinetuneConfig,
    run_dir: Path,
    resume: bool,
    settings: dict[str, Any],
    tmp: bool,
    progress: bool,
    callbacks: list[Callable[[int, Trainer], None]],
) -> FinetuneResult:
    torch.manual_seed(cfg.seed)  # LoRA's A matrices
    peft_model = None
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model
        from transformers import PreTrainedModel

        targets = _check_targets(hf, cfg.targets, base_model.name)
        lcfg = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            target_modules=targets,
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM" if isinstance(hf, PreTrainedModel) else None,
        )
        peft_model = get_peft_model(hf, lcfg)  # injects the adapters into hf in place
    else:
        for p in hf.parameters():
            p.requires_grad_(True)
    trainable = TrainableParams(hf)
    n_trainable = _count(trainable.parameters())
    n_total = _count(hf.parameters())
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_json(run_dir / SETTINGS_FILE, settings, indent=1)

    opt = torch.optim.AdamW(trainable.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"tokens": 0}
    n_train = len(fdata.train)
    trainer: Trainer | None = None

    def step_fn(step: int) -> torch.Tensor:
        ids, mask, labels = fdata.train.batch(batch_rows(step, n_train, cfg.batch_size, cfg.seed))
        state["tokens"] += int(mask.sum())
        return lm_loss(hf, ids, mask, labels)[0]

    def eval_fn(step: int) -> dict[str, float]:
        rec = {"heldout_loss": heldout_loss(hf, fdata.heldout, cfg.batch_size)}
        if trainer is not None and step > 0 and trainer.seconds_training > 0:
            rec["tokens_per_s"] = state["tokens"] / trainer.seconds_training
        return rec

    trainer = Trainer(
        trainable,
        opt,
        step_fn,
        eval_fn,
        steps=cfg.steps,
        run_dir=run_dir,
        log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every,
        keep_checkpoints=1,
        seed=cfg.seed,
        callbacks=callbacks,
        progress=progress,
        description=f"fine-tuning ({cfg.method})",
        grad_clip=cfg.grad_clip,
        extra_state=lambda: dict(state),
        load_extra=lambda d: state.update(tokens=int(d.get("tokens", 0))),
    )
    metrics = trainer.fit(resume=resume)
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)

    card_kind = "full" if cfg.method == "full" else cfg.save
    if not tmp and cfg.method == "lora" and cfg.save == "adapter":
        assert peft_model is not None
        peft_model.save_pretrained(str(run_dir))
    tuned: Any = peft_model.merge_and_unload() if peft_model is not None else hf
    if not tmp and card_kind != "adapter":
        tuned.save_pretrained(str(run_dir))
    if not tmp and base_model.tokenizer is not None:
        base_model.tokenizer.save_pretrained(str(run_dir))
    res = FinetuneResult(
        config=cfg.to_dict(),
        data=fdata.describe(),
        base=settings["base"],
        out=None if tmp else str(run_dir.resolve()),
        method=cfg.method,
        save_as=card_kind,
        steps=trainer.step,
        trainable_params=n_trainable,
        total_params=n_total,
        heldout_loss_before=float(metrics[0]["heldout_loss"]),
        heldout_loss_after=float(metrics[-1]["heldout_loss"]),
        tokens_trained=state["tokens"],
        seconds_training=trainer.seconds_training,
        tokens_per_s=state["tokens"] / trainer.seconds_training if trainer.seconds_training > 0 else float("nan"),
        metrics=metrics,
    )
    if not tmp:
        card = {
            "format": "interplab-finetune",
            "format_version": 1,
            "kind": card_kind,
            "base": res.base,
            "base_model_name": base_model.name,
            **{k: v for k, v in dataclasses.asdict(res).items() if k not in ("metrics", "model", "config", "data")},
            "config": res.config,
            "data": res.data,
        }
        res.save(run_dir)
        write_json(run_dir / FINETUNE_CARD, nan_to_none(card), indent=1, allow_nan=False)
        if not cfg.keep_checkpoints:
            shutil.rmtree(run_dir / CKPT_DIR, ignore_errors=True)
    res.model = Model(
        tuned,
        base_model.tokenizer,
        name=run_dir.name if not tmp else f"{base_model.name}-tuned",
        source="" if tmp else str(run_dir.resolve()),
    )
    return res
