"""Training an SAE: the loop for every architecture, checkpoints that resume bit for bit, and dead-feature
resampling.

* ReLU (Bricken et al. 2023): L1 penalty ramped up over ``l1_warmup`` of training; dead features are
  **resampled** at fixed steps: every feature that has not fired for ``dead_window`` tokens gets a decoder row
  pointing at an input drawn with probability proportional to its squared reconstruction error, an encoder row
  of that direction scaled to 0.2 × the mean norm of the live encoder rows, bias 0, and fresh Adam moments.
* TopK (Gao et al. 2024): loss ``||x - x̂||²`` plus their AuxK loss (the ``k_aux`` largest pre-activations of
  the *dead* features reconstruct the residual error, coefficient 1/32). By default the sparse path: only the
  chosen ``k`` encoder and decoder rows per token take part in the backward pass.
* JumpReLU (Rajamanoharan et al. 2024): loss ``||x − x̂||² + λ ||f||_0`` with the straight-through estimators of
  :mod:`interplab.analyses.sae.model` (no gradient to ``z`` through the L0 term).

Checkpoints (``checkpoint.safetensors``: weights, Adam moments through :mod:`interplab.io.checkpoints`, step and
dead-feature counters; written atomically through :mod:`interplab.io.atomic`) let a rerun continue where a run
stopped, on identical batches.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from interplab.analyses.sae.data import TensorData
from interplab.analyses.sae.model import SAE, JumpReLU, SAEConfig, Step
from interplab.io.activations import ActivationDataset
from interplab.io.atomic import save_tensors
from interplab.io.checkpoints import load_optimizer_tensors, optimizer_tensors

__all__ = ["TrainState", "load_checkpoint", "resample_dead_features", "save_checkpoint", "train_sae"]


@dataclass
class TrainState:
    """Where a training run is: the step, each feature's tokens since it last fired, the logged history."""

    step: int
    tokens_since_fired: torch.Tensor
    history: list[dict] = field(default_factory=list)


def save_checkpoint(directory: Path, sae: SAE, opt: torch.optim.Optimizer, st: TrainState) -> None:
    """``directory/checkpoint.safetensors``: SAE weights, optimizer state, counters; config and history as metadata."""
    ot, om = optimizer_tensors(opt)
    t = {f"sae.{k}": v for k, v in sae.state().items()} | {f"opt.{k}": v for k, v in ot.items()}
    t["tokens_since_fired"] = st.tokens_since_fired
    meta = {
        "step": str(st.step),
        "config": json.dumps(asdict(sae.cfg)),
        "history": json.dumps(st.history),
        "optimizer": json.dumps(om),
    }
    save_tensors(directory / "checkpoint.safetensors", t, metadata=meta)


def load_checkpoint(directory: Path, sae: SAE, opt: torch.optim.Optimizer) -> TrainState | None:
    """Restore what :func:`save_checkpoint` wrote into ``sae`` and ``opt`` (None when there is no checkpoint);
    refuses a checkpoint of another configuration."""
    from safetensors import safe_open

    p = directory / "checkpoint.safetensors"
    if not p.exists():
        return None
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
        names = f.keys()
        t = {k: f.get_tensor(k) for k in names}
    cfg = json.loads(meta["config"])
    now = json.loads(json.dumps(asdict(sae.cfg)))
    if cfg != now:
        raise ValueError(
            f"{p} was written by an SAE with another configuration; use another run directory "
            f"(differences: { {k: (cfg.get(k), v) for k, v in now.items() if cfg.get(k) != v} })."
        )
    if "optimizer" not in meta:
        raise ValueError(
            f"{p} was written by an older interplab (another optimizer-state format); use another run directory."
        )
    sae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("sae.")})
    load_optimizer_tensors(opt, {k[4:]: v for k, v in t.items() if k.startswith("opt.")}, json.loads(meta["optimizer"]))
    return TrainState(int(meta["step"]), t["tokens_since_fired"], json.loads(meta["history"]))


def _batches_forever(
    data: TensorData | ActivationDataset, batch_size: int, seed: int, start_step: int
) -> Iterator[torch.Tensor]:
    """Epoch after epoch (epoch e shuffled with seed + e), from batch ``start_step`` on (resume). Both loaders
    (:class:`TensorData`, :class:`ActivationDataset`) give exactly ``len(data) // batch_size`` batches per epoch
    with ``drop_last``, each epoch from its own seeded generator, so a resume starts at epoch
    ``start_step // per_epoch`` and skips only the batches before it within that epoch."""
    per_epoch = len(data) // batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(data)} rows are fewer than one batch of {batch_size}; lower the batch size.")
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        yield from islice(data.batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=True), skip, None)
        skip = 0
        epoch += 1


@torch.no_grad()
def resample_dead_features(sae: SAE, opt: torch.optim.Optimizer, dead: torch.Tensor, x: torch.Tensor, seed: int) -> int:
    """Bricken et al. (2023) resampling of the dead features from inputs weighted by squared loss.

    Args:
        sae: the SAE, changed in place.
        opt: its Adam optimizer (the moments of the resampled rows are zeroed).
        dead: boolean mask ``[n_features]`` of the features to resample.
        x: a batch of raw inputs ``[n, d]`` to draw the new directions from.
        seed: seeds the draw.

    Returns the number of features resampled."""
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return 0
    xs = x * sae.scale
    err = ((sae.decode_scaled(sae.activate(sae.pre(x))) - xs) ** 2).sum(-1)
    if float(err.sum()) <= 0:
        return 0
    g = torch.Generator().manual_seed(seed)
    pick = torch.multinomial(err / err.sum(), len(idx), replacement=True, generator=g)
    v = F.normalize(xs[pick] - sae.b_dec, dim=-1)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec.data[idx] = v
    sae.W_enc.data[:, idx] = (v * enc_norm * 0.2).T
    sae.b_enc.data[idx] = 0
    for p, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        st = opt.state.get(p)
        if st:
            st["exp_avg"][sl] = 0
            st["exp_avg_sq"][sl] = 0
    return len(idx)


def train_sae(
    data: TensorData | ActivationDataset | torch.Tensor,
    cfg: SAEConfig,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 200,
    log_every: int = 50,
    progress: Callable[[int, int, dict], None] | None = None,
    max_steps: int | None = None,
    sparse_topk: bool = True,
) -> tuple[SAE, dict[str, Any]]:
    """Train an SAE on ``data`` (an :class:`ActivationDataset`, :class:`TensorData` or tensor ``[n, d]``).

    Returns ``(sae, info)`` with the loss history, steps, tokens, seconds and tokens/s. With
    ``checkpoint_dir`` the SAE weights, Adam moments, step and dead-feature counters are saved every
    ``checkpoint_every`` steps (safetensors) and a rerun continues from the last checkpoint (identical
    batches: epochs are shuffled with ``seed + epoch``). ``max_steps`` stops early (the schedule still
    follows the full length; used to test resuming).

    Args:
        data: the training rows.
        cfg: the SAE and its training settings (``cfg.kind``: Bricken et al. 2023 / Gao et al. 2024 /
            Rajamanoharan et al. 2024, see the module docstring).
        checkpoint_dir: where to write and resume checkpoints (None: no checkpoints).
        checkpoint_every: steps between checkpoints.
        log_every: steps between history entries (and ``progress`` calls).
        progress: called as ``progress(step, total_steps, log)`` at every logged step.
        max_steps: stop after this step (the schedule still follows the full length).
        sparse_topk: TopK only: compute the backward pass through the ``k`` chosen rows per token (the default);
            False takes the dense path, which gives the same SAE up to float rounding.
    """
    if isinstance(data, torch.Tensor):
        data = TensorData(data)
    if data.d != cfg.d_in:
        raise ValueError(f"data has d={data.d} but the SAE expects d_in={cfg.d_in}.")
    n = len(data)
    steps = max(1, math.ceil(cfg.epochs * n / cfg.batch_size))
    torch.manual_seed(cfg.seed)
    sae = SAE(cfg)
    st = data.stats()
    assert st.mean is not None, "no training rows"
    sq = float(st.total_var + (st.mean**2).sum())  # E||x||^2
    sae.scale.fill_(math.sqrt(cfg.d_in / sq) if sq > 0 else 1.0)
    with torch.no_grad():
        sae.b_dec.data = (st.mean * sae.scale).to(torch.float32)
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    state = TrainState(0, torch.zeros(cfg.n_features, dtype=torch.long), [])
    ck = Path(checkpoint_dir) if checkpoint_dir else None
    if ck is not None:
        ck.mkdir(parents=True, exist_ok=True)
        loaded = load_checkpoint(ck, sae, opt)
        if loaded is not None:
            state = loaded
    dead_window = cfg.dead_window or max(cfg.batch_size, steps * cfg.batch_size // 4)
    resample_at = cfg.resample_at if cfg.resample_at is not None else ((0.25, 0.5, 0.75) if cfg.kind == "relu" else ())
    resample_steps = {int(f * steps) for f in resample_at if 0 < f < 1}
    k_aux = cfg.k_aux or max(1, min(cfg.d_in // 2, cfg.n_features // 2))
    t0 = time.perf_counter()
    start = state.step
    it = _batches_forever(data, cfg.batch_size, cfg.seed, start)
    end = steps if max_steps is None else min(steps, max_steps)
    for step in range(start, end):
        x = next(it)
        xs = x * sae.scale
        if cfg.kind == "topk" and sparse_topk:
            # sparse path (Gao et al. 2024 use sparse kernels too): the dense pre-activations are computed without
            # autograd only to choose the top k; the chosen ones are recomputed from gathered encoder rows and
            # decoded from gathered decoder rows, so the backward pass touches k rows per token instead of all features
            with torch.no_grad():
                pre = sae.pre(x)
                idx = pre.topk(cfg.k, dim=-1).indices
            pre_sel = torch.einsum("bkd,bd->bk", F.embedding(idx, sae.W_enc.t()), xs - sae.b_dec) + sae.b_enc[idx]
            acts = F.relu(pre_sel)
            rec = torch.einsum("bk,bkd->bd", acts, F.embedding(idx, sae.W_dec)) + sae.b_dec
            fired = torch.zeros(cfg.n_features, dtype=torch.bool).index_fill_(0, idx[acts > 0], True)
            nnz = (acts > 0).sum(-1).float()
        else:
            pre = sae.pre(x)
            f = JumpReLU.apply(pre, sae.threshold, cfg.jump_eps) if cfg.kind == "jumprelu" else sae.activate(pre)
            rec = sae.decode_scaled(f)
            fired = (f > 0).any(0)
            nnz = (f > 0).sum(-1).float()
        err = rec - xs
        mse = (err**2).sum(-1).mean()
        loss = mse
        logs: dict[str, Any] = {"step": step}
        state.tokens_since_fired += x.shape[0]
        state.tokens_since_fired[fired] = 0
        dead = state.tokens_since_fired >= dead_window
        if cfg.kind == "relu":
            lam = cfg.l1_coeff * min(1.0, (step + 1) / max(1, cfg.l1_warmup * steps))
            l1 = (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
            loss = loss + lam * l1
            logs["l1"] = l1.detach()  # made a float at log steps only
        elif cfg.kind == "jumprelu":
            lam = cfg.l0_coeff * min(1.0, (step + 1) / max(1, cfg.l1_warmup * steps))
            l0 = Step.apply(pre, sae.threshold, cfg.jump_eps).sum(-1).mean()
            loss = loss + lam * l0
            logs["l0_loss"] = l0.detach()
        elif dead.any() and cfg.aux_coeff > 0:
            kk = min(k_aux, int(dead.sum()))
            with torch.no_grad():
                i = pre.masked_fill(~dead, float("-inf")).topk(kk, dim=-1).indices
            # its own (x·s - b_dec), not the sparse path's: one shared node would sum b_dec's two gradient
            # contributions in another order and change training in the last bits
            a_sel = F.relu(torch.einsum("bkd,bd->bk", F.embedding(i, sae.W_enc.t()), xs - sae.b_dec) + sae.b_enc[i])
            e_hat = torch.einsum("bk,bkd->bd", a_sel, F.embedding(i, sae.W_dec))
            target = -err.detach()
            aux = ((e_hat - target) ** 2).sum(-1).mean() / (target**2).sum(-1).mean().clamp_min(1e-12)
            loss = loss + cfg.aux_coeff * aux
            logs["aux"] = aux.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not cfg.freeze_decoder:
            sae.remove_parallel_grad()
        opt.step()
        if not cfg.freeze_decoder:
            sae.normalize_decoder()
        if step in resample_steps:
            logs["resampled"] = resample_dead_features(sae, opt, dead, x, cfg.seed * 1000003 + step)
            state.tokens_since_fired[dead] = 0
        state.step = step + 1
        if step % log_every == 0 or step == steps - 1:
            for key in ("l1", "l0_loss", "aux"):
                if key in logs:
                    logs[key] = float(logs[key])
            with torch.no_grad():
                tv = ((xs - xs.mean(0)) ** 2).sum(-1).mean()
                logs.update(
                    {
                        "loss": float(loss),
                        "mse": float(mse),
                        "ev": float(1 - mse / tv) if tv > 0 else float("nan"),
                        "l0": float(nnz.mean()),
                        "dead_frac": float(dead.float().mean()),
                    }
                )
            state.history.append(logs)
            if progress is not None:
                progress(step + 1, steps, logs)
        if ck is not None and (state.step % checkpoint_every == 0 or state.step == end):
            save_checkpoint(ck, sae, opt, state)
    sec = time.perf_counter() - t0
    done = state.step - start
    info = {
        "steps": steps,
        "steps_run": done,
        "tokens": steps * cfg.batch_size,
        "seconds": round(sec, 3),
        "tokens_per_s": round(done * cfg.batch_size / sec, 1) if sec > 0 else None,
        "history": state.history,
        "train_dead_frac": float((state.tokens_since_fired >= dead_window).float().mean()),
        "dead_window": dead_window,
        "complete": state.step >= steps,
    }
    return sae, info
