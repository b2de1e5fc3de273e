"""Multi-digit addition with per-digit loss curves — after Nanda et al. (2023), "Progress measures for grokking
via mechanistic interpretability", appendix on 5-digit addition (one phase change per answer digit).

Task: ``a`` and ``b`` with ``n_digits`` digits (most significant first, leading zeros kept), sequence
``a_1..a_n + b_1..b_n = c_0..c_n`` (``c`` has ``n + 1`` digits), tokens ``0-9``, ``+`` = 10, ``=`` = 11.
The model (a :class:`~interplab.models.toy.ToyTransformer`, LayerNorm, learned positions) is trained
online (a fresh random batch every step, so there is no train/test gap) with teacher forcing on the
answer digits; the loss of each answer digit is logged separately.

**Phase change per digit** (:func:`digit_phase_changes`): for each digit's loss curve ``L_k(t)``, the
change is the first logged step at which ``L_k`` falls below the midpoint of ``L_k(0)`` and
``min_t L_k`` (the centre of a sigmoid-shaped drop; robust to later spikes, unlike the steepest single drop),
reported with the loss at the previous log and at that step; a digit whose total drop is less than ``min_drop``
nats has none. This is this module's operationalisation of Nanda et al.'s observation that each digit's loss
drops abruptly, at different times for different digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from interplab.models.toy import ToyConfig, ToyTransformer
from interplab.runtime import torch_threads
from interplab.train.result import TrainingResult
from interplab.train.trainer import Trainer, latest_checkpoint

PLUS, EQ = 10, 11


@dataclass
class AdditionConfig:
    n_digits: int = 5
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    steps: int = 3000
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    threads: int = 1
    min_drop: float = 0.5

    def validate(self) -> None:
        if not 1 <= self.n_digits <= 9:
            raise ValueError(f"n_digits must be in 1..9, got {self.n_digits}.")


def make_batch(cfg: AdditionConfig, n: int, g: torch.Generator) -> torch.Tensor:
    """``[n, 3 n_digits + 3]`` token ids ``a + b = c``."""
    d = cfg.n_digits
    da = torch.randint(0, 10, (n, d), generator=g)
    db = torch.randint(0, 10, (n, d), generator=g)
    p = 10 ** torch.arange(d - 1, -1, -1)
    c = (da * p).sum(1) + (db * p).sum(1)
    pc = 10 ** torch.arange(d, -1, -1)
    dc = (c[:, None] // pc) % 10
    return torch.cat([da, torch.full((n, 1), PLUS), db, torch.full((n, 1), EQ), dc], 1)


def digit_losses(model: ToyTransformer, toks: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Loss per answer digit ``[n_digits + 1]`` (``c_0`` = the carry digit first)."""
    logits = model(toks[:, :-1]).logits
    start = 2 * n_digits + 1  # position of '=' predicts c_0
    out = logits[:, start : start + n_digits + 1]
    tgt = toks[:, start + 1 : start + 2 + n_digits]
    return F.cross_entropy(out.transpose(1, 2), tgt, reduction="none").mean(0)


def digit_phase_changes(steps: list[int], losses: list[list[float]], min_drop: float = 0.5) -> list[dict]:
    """Per digit: the step of the fastest fall of the (smoothed) log loss — see the module docstring."""
    L = torch.tensor(losses, dtype=torch.float64).clamp_min(1e-12)  # [T, digits]
    out = []
    for k in range(L.shape[1]):
        x = L[:, k]
        drop = float(L[0, k] - L[:, k].min())
        if drop < min_drop:
            out.append({"digit": k, "step": None, "total_drop": round(drop, 4)})
            continue
        mid = (x[0] + x.min()) / 2
        i = int(torch.nonzero(x <= mid)[0])
        out.append(
            {
                "digit": k,
                "step": steps[i],
                "loss_before": float(L[max(i - 1, 0), k]),
                "loss_after": float(L[i, k]),
                "total_drop": round(drop, 4),
            }
        )
    return out


@dataclass(kw_only=True)
class AdditionResult(TrainingResult):
    metrics: list[dict]  # one dict per logged step

    FILE: ClassVar[str] = "addition.json"
    KIND: ClassVar[str] = "addition"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(
            [{"step": m["step"], **{f"digit_{k}": v for k, v in enumerate(m["digit_loss"])}} for m in self.metrics]
        )

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        steps = [m["step"] for m in self.metrics]
        n = len(self.metrics[0]["digit_loss"])
        for k in range(n):
            fig.add_scatter(x=steps, y=[m["digit_loss"][k] for m in self.metrics], name=f"digit c_{k}", mode="lines")
        for ph in self.summary["phase_changes"]:
            if ph["step"] is not None:
                fig.add_vline(x=ph["step"], line={"dash": "dot", "color": "grey"})
        fig.update_yaxes(type="log", title="loss")
        return fig.update_layout(
            title="Per-digit loss (dotted: detected phase changes)", xaxis_title="step", height=400
        )


def train(
    cfg: AdditionConfig, run_dir, resume: bool = False, progress: bool = True, callbacks: list | None = None
) -> AdditionResult:
    cfg.validate()
    with torch_threads(cfg.threads):
        run_dir = Path(run_dir)
        n_ctx = 3 * cfg.n_digits + 3
        model = ToyTransformer(
            ToyConfig(
                n_layers=cfg.n_layers,
                d_model=cfg.d_model,
                n_heads=cfg.n_heads,
                d_head=cfg.d_head,
                d_mlp=cfg.d_mlp,
                d_vocab=12,
                n_ctx=n_ctx,
                normalization="LN",
                seed=cfg.seed,
            )
        )
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        eval_toks = make_batch(cfg, 2048, torch.Generator().manual_seed(777))

        def eval_fn(step):
            dl = digit_losses(model, eval_toks, cfg.n_digits)
            return {"loss": float(dl.mean()), "digit_loss": [float(x) for x in dl]}

        tr = Trainer.for_config(
            cfg,
            model,
            opt,
            lambda s: digit_losses(model, make_batch(cfg, cfg.batch, g), cfg.n_digits).mean(),
            eval_fn,
            run_dir,
            callbacks=callbacks,
            generators={"data": g},
            progress=progress,
            description=f"{cfg.n_digits}-digit addition",
        )
        metrics = tr.fit(resume=resume and latest_checkpoint(run_dir) is not None)
        model.save_pretrained(run_dir)
    phases = digit_phase_changes([m["step"] for m in metrics], [m["digit_loss"] for m in metrics], cfg.min_drop)
    head: dict[str, Any] = {
        "final_loss": metrics[-1]["loss"],
        "final_digit_loss": [round(x, 5) for x in metrics[-1]["digit_loss"]],
        "phase_changes": phases,
        "steps_per_second": round(tr.steps_per_second, 2),
    }
    return AdditionResult.saved(
        cfg,
        run_dir,
        metrics=metrics,
        summary=head,
        settings={"paper": "Nanda et al. 2023 (5-digit addition appendix)", "ln_loss_chance": math.log(10)},
    )
