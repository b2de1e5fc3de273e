"""Sparse autoencoders (SAEs) on activations, with the controls that show what an SAE finds on data with no features.

**Architectures.**

* ``kind="relu"``: ReLU encoder with an L1 penalty, as in Bricken et al. (2023), "Towards Monosemanticity:
  Decomposing Language Models With Dictionary Learning" (Transformer Circuits Thread), with the loss of
  Anthropic's April 2024 update: ``||x - x̂||² + λ Σ_i f_i ||W_dec,i||``. Decoder rows are kept at unit
  norm (renormalised after every step, the gradient component parallel to each row removed before it),
  so the penalty is ``λ Σ f_i``. Dead features are **resampled** as in Bricken et al.: at fixed steps every
  feature that has not fired for ``dead_window`` tokens gets a decoder row pointing at an input drawn with
  probability proportional to its squared reconstruction error, an encoder row of that direction scaled to
  0.2 × the mean norm of the live encoder rows, bias 0, and fresh Adam moments.
* ``kind="topk"``: TopK activation (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
  ``f = ReLU(TopK(W_enc (x - b_dec) + b_enc))``, exactly ``k`` (or fewer) non-zeros per token, loss
  ``||x - x̂||²`` plus their AuxK loss (the ``k_aux`` largest pre-activations of the *dead* features
  reconstruct the residual error, coefficient 1/32), encoder initialised as the decoder's transpose.

* ``kind="jumprelu"``: JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity
  with JumpReLU Sparse Autoencoders"): ``f = z · H(z − θ)`` with a learned per-feature threshold ``θ = exp(log θ)``,
  loss ``||x − x̂||² + λ ||f||_0``, trained with their straight-through estimators (rectangle kernel of bandwidth
  ε for the θ-gradients of both the jump and the L0 count; no gradient to ``z`` through the L0 term). The
  defaults (θ₀ = 0.5, ε = 0.05, λ = 0.5, encoder = decoder transpose) are chosen for short CPU runs, not tuned
  at scale: after a few hundred steps JumpReLU SAEs here are sparser than the initial code but still
  reconstruct worse than TopK at equal L0.

Inputs are scaled by one scalar so that ``E||x||² = d`` on the training data (folded into ``scale``; the
SAE maps raw activations to raw reconstructions), so λ means the same at every hook point.

**Metrics** (:func:`evaluate`), each on the training rows and on held-out rows:

* ``l0``: mean number of non-zero features per token;
* ``explained_variance``: ``1 - Σ||x - x̂||² / Σ||x - x̄||²`` where ``x̄`` is the mean of the *evaluated* rows,
  so predicting that mean scores exactly 0 and a perfect reconstruction 1;
* ``mse``: mean squared error per element (raw activation units);
* ``dead_frac``: fraction of features that never fire on the evaluated rows;
* ``ce_score`` (with a model, :func:`ce_score`): the SAE spliced into the forward pass at its hook with an
  :class:`interplab.Apply` intervention, ``(CE_zero − CE_sae) / (CE_zero − CE_clean)`` where ``CE_zero`` is the
  next-token cross-entropy with the hook **zero-ablated** (Ablate how="zero") — 1 means the SAE loses nothing,
  0 means it is as bad as deleting the activation.

**Controls** (:func:`run_controls`, all in the same command): isotropic Gaussian; a mixture of 12 Gaussians;
uniform points in the unit square (d=2) and cube (d=3); layer-0 (``hook_embed``) activations of the same
tokens; the same SAE with a frozen random decoder; PCA at equal L0; and sparse data with a known dictionary,
scored by recovery. **PCA at equal L0** is given two ways, both fitted on the training rows and scored on
the held-out rows: ``pca_top`` keeps the top ``m = round(L0)`` principal components (a dense rank-m code);
``pca_topk`` keeps, per token, the ``m`` largest-magnitude coefficients over *all* principal components (a
code with exactly the SAE's L0 in the PCA basis — the fairer sparse baseline, used for the Gaussian check).
**Recovery** of a known dictionary: for each true atom the maximum cosine similarity with any decoder row;
``recovery`` is the fraction with maximum cosine ≥ 0.9 (``mmcs`` the mean maximum cosine).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from interplab.io.activations import ActivationDataset, Stats

KINDS = ("topk", "relu", "jumprelu")
_SPARSE_TOPK = [True]  # False: the dense TopK training path (tests check both give the same SAE)


# ------------------------------------------------------------------------------------------ data


class TensorData:
    """An in-memory activation set with the :class:`ActivationDataset` reading interface."""

    def __init__(self, x: torch.Tensor, name: str = "tensor"):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.name = name

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False, **_
    ) -> Iterator[torch.Tensor]:
        n = len(self)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        stop = n - (n % batch_size) if drop_last else n
        for i in range(0, stop, batch_size):
            yield self.x[idx[i : i + batch_size]]

    def stats(self, batch_size: int = 16384) -> Stats:
        return Stats().update(self.x)


def gaussian(n: int, d: int = 64, seed: int = 0) -> torch.Tensor:
    """Isotropic Gaussian N(0, I_d)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def mixture(n: int, d: int = 64, n_components: int = 12, spread: float = 0.1, seed: int = 0) -> torch.Tensor:
    """A mixture of ``n_components`` Gaussians: centres N(0, I_d), each cluster isotropic with std ``spread``.
    Draw train and test rows in one call (as :func:`make_synthetic` does) so they share the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_components, d, generator=g)
    lab = torch.randint(0, n_components, (n,), generator=g)
    return centres[lab] + spread * torch.randn(n, d, generator=g)


def uniform(n: int, d: int = 2, seed: int = 0) -> torch.Tensor:
    """Uniform points in the unit square (d=2) / cube (d=3) / hypercube."""
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def known_dictionary(
    n: int,
    d: int = 64,
    n_atoms: int = 256,
    active: float = 4.0,
    seed: int = 0,
    atoms: torch.Tensor | None = None,
    noise: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse data with a known dictionary: ``x = c @ D`` with ``D`` [n_atoms, d] random unit rows and each
    atom active independently with probability ``active / n_atoms`` (on average ``active`` per row) at a
    magnitude Uniform(0, 1) + 0.5 (so active atoms are clearly non-zero). Returns ``(x, D)``."""
    g = torch.Generator().manual_seed(seed)
    if atoms is None:
        atoms = F.normalize(torch.randn(n_atoms, d, generator=g), dim=-1)
    n_atoms = atoms.shape[0]
    on = torch.rand(n, n_atoms, generator=g) < active / n_atoms
    mag = torch.rand(n, n_atoms, generator=g) + 0.5
    x = (on * mag) @ atoms
    if noise:
        x = x + noise * torch.randn(n, atoms.shape[1], generator=g)
    return x, atoms


SYNTHETIC = ("gaussian", "mixture", "uniform", "uniform-cube", "known-dict")


def make_synthetic(name: str, n_train: int = 65536, n_test: int = 16384, d: int | None = None, seed: int = 0) -> dict:
    """``{"train": [n, d], "test": [m, d], "atoms": D or None, "d": d}`` for a synthetic control."""
    n = n_train + n_test
    atoms = None
    if name == "gaussian":
        x = gaussian(n, d or 64, seed)
    elif name == "mixture":
        x = mixture(n, d or 64, seed=seed)
    elif name == "uniform":
        x = uniform(n, d or 2, seed)
    elif name == "uniform-cube":
        x = uniform(n, d or 3, seed)
    elif name == "known-dict":
        x, atoms = known_dictionary(n, d or 64, seed=seed)
    else:
        raise ValueError(f"unknown synthetic data {name!r}; choose one of {', '.join(SYNTHETIC)}.")
    return {"train": x[:n_train], "test": x[n_train:], "atoms": atoms, "d": x.shape[1]}


# ------------------------------------------------------------------------------------------ model


@dataclass
class SAEConfig:
    d_in: int
    n_features: int = 4096
    kind: str = "topk"
    k: int = 32  # topk: active features per token
    l1_coeff: float = 5.0  # relu: λ on inputs scaled to E||x||^2 = d
    lr: float = 4e-4
    batch_size: int = 1024
    epochs: float = 1.0
    k_aux: int | None = None  # topk: AuxK (default min(d_in // 2, n_features // 2))
    aux_coeff: float = 1 / 32
    dead_window: int | None = None  # tokens without firing that make a feature dead (default: a quarter of training)
    resample_at: tuple[float, ...] | None = (
        None  # fractions of training at which to resample dead features (relu default .25 .5 .75)
    )
    freeze_decoder: bool = False  # control: random unit decoder, never trained
    l1_warmup: float = 0.05  # relu / jumprelu: fraction of training over which λ ramps up from 0
    l0_coeff: float = 0.5  # jumprelu: λ of the L0 penalty (inputs scaled to E||x||^2 = d)
    jump_eps: float = 0.05  # jumprelu: bandwidth ε of the straight-through estimator's rectangle kernel
    threshold_init: float = 0.5  # jumprelu: initial threshold θ (pre-activations are O(1) with the transposed init)
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"SAE kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")
        if self.kind == "topk" and not 0 < self.k <= self.n_features:
            raise ValueError(f"k={self.k} must lie in 1..n_features={self.n_features}.")
        if self.n_features < 1 or self.d_in < 1:
            raise ValueError("d_in and n_features must be positive.")


class SAE(nn.Module):
    """A sparse autoencoder ``x̂ = (f(x·s) @ W_dec + b_dec) / s`` (see the module docstring)."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w = F.normalize(torch.randn(cfg.n_features, cfg.d_in, generator=g), dim=-1)
        self.W_dec = nn.Parameter(w.clone(), requires_grad=not cfg.freeze_decoder)
        # TopK: encoder = decoder transpose (Gao et al.); ReLU: the transpose scaled by 0.1 (Anthropic's April
        # 2024 update initialises decoder columns at norm 0.1 with W_enc = W_dec^T; here the decoder stays unit-norm)
        self.W_enc = nn.Parameter(w.T.clone() * (0.1 if cfg.kind == "relu" else 1.0))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_features))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("scale", torch.tensor(1.0))
        if cfg.kind == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((cfg.n_features,), math.log(cfg.threshold_init)))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "topk":
            v, i = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, i, F.relu(v))
        if self.cfg.kind == "jumprelu":
            return pre * (pre > self.threshold)
        return F.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., n_features]`` of raw activations ``x``."""
        return self.activate(self.pre(x))

    def decode_scaled(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.decode_scaled(f) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data = F.normalize(self.W_dec.data, dim=-1)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        if self.W_dec.grad is not None:
            w = self.W_dec.data
            self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def save(self, directory: str | Path, name: str = "sae") -> Path:
        from interplab.io.activations import _atomic_save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _atomic_save(self.state(), d / f"{name}.safetensors", metadata={"config": json.dumps(asdict(self.cfg))})
        return d / f"{name}.safetensors"

    @classmethod
    def load(cls, path: str | Path) -> SAE:
        from safetensors import safe_open

        p = Path(path)
        if p.is_dir():
            p = p / "sae.safetensors"
        with safe_open(str(p), "pt") as f:
            cfg = json.loads(f.metadata()["config"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if cfg.get("resample_at") is not None:
            cfg["resample_at"] = tuple(cfg["resample_at"])
        sae = cls(SAEConfig(**cfg))
        sae.load_state_dict(tensors)
        return sae


# ------------------------------------------------------------------------------------------ JumpReLU


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - θ)`` with the straight-through pseudo-derivative of Rajamanoharan et al. (2024) for θ:
    ``∂/∂θ = -(θ/ε) K((z - θ)/ε)``, K the rectangle kernel (1 on |u| < 1/2)."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        k = ((z - theta).abs() < ctx.eps / 2).to(g.dtype) / ctx.eps
        return g * (z > theta), (-theta * k * g).reshape(-1, z.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    """``H(z - θ)`` (the L0 count) with ``∂/∂θ = -(1/ε) K((z - θ)/ε)`` and no gradient to ``z``."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        k = ((z - theta).abs() < ctx.eps / 2).to(g.dtype) / ctx.eps
        return torch.zeros_like(z), (-k * g).reshape(-1, z.shape[-1]).sum(0), None


# ------------------------------------------------------------------------------------------ training


@dataclass
class TrainState:
    step: int = 0
    tokens_since_fired: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)


def save_checkpoint(directory: Path, sae: SAE, opt, st: TrainState) -> None:
    from interplab.io.activations import _atomic_save
    from interplab.io.checkpoints import optimizer_tensors

    ot, om = optimizer_tensors(opt)
    t = {f"sae.{k}": v for k, v in sae.state().items()} | {f"opt.{k}": v for k, v in ot.items()}
    t["tokens_since_fired"] = st.tokens_since_fired
    meta = {
        "step": str(st.step),
        "config": json.dumps(asdict(sae.cfg)),
        "history": json.dumps(st.history),
        "optimizer": json.dumps(om),
    }
    _atomic_save(t, directory / "checkpoint.safetensors", metadata=meta)


def load_checkpoint(directory: Path, sae: SAE, opt) -> TrainState | None:
    from safetensors import safe_open

    from interplab.io.checkpoints import load_optimizer_tensors

    p = directory / "checkpoint.safetensors"
    if not p.exists():
        return None
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
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


def _batches_forever(data, batch_size: int, seed: int, start_step: int) -> Iterator[torch.Tensor]:
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
def _resample(sae: SAE, opt, dead: torch.Tensor, x: torch.Tensor, seed: int) -> int:
    """Bricken et al. (2023) resampling of the dead features from inputs weighted by squared loss."""
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
    data,
    cfg: SAEConfig,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 200,
    log_every: int = 50,
    progress: Callable[[int, int, dict], None] | None = None,
    max_steps: int | None = None,
) -> tuple[SAE, dict]:
    """Train an SAE on ``data`` (an :class:`ActivationDataset`, :class:`TensorData` or tensor ``[n, d]``).

    Returns ``(sae, info)`` with the loss history, steps, tokens, seconds and tokens/s. With
    ``checkpoint_dir`` the SAE weights, Adam moments, step and dead-feature counters are saved every
    ``checkpoint_every`` steps (safetensors) and a rerun continues from the last checkpoint (identical
    batches: epochs are shuffled with ``seed + epoch``). ``max_steps`` stops early (the schedule still
    follows the full length; used to test resuming)."""
    if isinstance(data, torch.Tensor):
        data = TensorData(data)
    if data.d != cfg.d_in:
        raise ValueError(f"data has d={data.d} but the SAE expects d_in={cfg.d_in}.")
    n = len(data)
    steps = max(1, int(math.ceil(cfg.epochs * n / cfg.batch_size)))
    torch.manual_seed(cfg.seed)
    sae = SAE(cfg)
    st = data.stats()
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
        if cfg.kind == "topk" and _SPARSE_TOPK[0]:
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
            f = _JumpReLU.apply(pre, sae.threshold, cfg.jump_eps) if cfg.kind == "jumprelu" else sae.activate(pre)
            rec = sae.decode_scaled(f)
            fired = (f > 0).any(0)
            nnz = (f > 0).sum(-1).float()
        err = rec - xs
        mse = (err**2).sum(-1).mean()
        loss = mse
        logs = {"step": step}
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
            l0 = _Step.apply(pre, sae.threshold, cfg.jump_eps).sum(-1).mean()
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
            logs["resampled"] = _resample(sae, opt, dead, x, cfg.seed * 1000003 + step)
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


# ------------------------------------------------------------------------------------------ metrics


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 - Σ||x - x̂||² / Σ||x - mean(x)||²`` (predicting the mean: 0; perfect reconstruction: 1)."""
    x, x_hat = x.double(), x_hat.double()
    return float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


@torch.no_grad()
def evaluate(
    sae: SAE | Callable[[torch.Tensor], torch.Tensor], data, batch_size: int = 4096, row_errors: bool = False
) -> dict:
    """Streaming ``l0``, ``explained_variance``, ``mse``, ``dead_frac`` (and per-feature ``density``) of an SAE
    — or of any reconstruction function ``x -> x̂`` (then L0 and dead_frac are absent) — on ``data``.
    ``row_errors``: also ``row_sq_err`` (``||x - x̂||²`` of every row, float64 of the float32 error) and
    ``total_var`` (``E||x - x̄||²`` of the rows), what :func:`_ev_gap` needs."""
    if isinstance(data, torch.Tensor):
        data = TensorData(data)
    st = Stats()
    sse, n, l0 = 0.0, 0, 0.0
    counts = None
    rows = [] if row_errors else None
    for x in data.batches(batch_size, shuffle=False):
        st.update(x)
        if isinstance(sae, SAE):
            f = sae.encode(x)
            xh = sae.decode(f)
            nz = f > 0
            l0 += float(nz.sum())
            counts = nz.sum(0) if counts is None else counts + nz.sum(0)
        else:
            xh = sae(x)
        sse += float(((x.double() - xh.double()) ** 2).sum())
        if rows is not None:
            rows.append(((x - xh) ** 2).double().sum(-1))
        n += x.shape[0]
    tv = st.total_var * n
    out = {"n": n, "explained_variance": 1 - sse / tv if tv > 0 else float("nan"), "mse": sse / (n * data.d)}
    if counts is not None:
        out["l0"] = l0 / n
        out["dead_frac"] = float((counts == 0).float().mean())
        out["density"] = counts.double() / n
    if rows is not None:
        out["row_sq_err"] = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.float64)
        out["total_var"] = st.total_var
    return out


@torch.no_grad()
def ce_score(
    model,
    sae: SAE,
    hook: str,
    tokens: torch.Tensor,
    batch: int = 8,
    skip_first: bool = False,
    baseline: dict | None = None,
) -> dict:
    """Next-token cross-entropy (nats/token) clean, with the SAE's reconstruction spliced in at ``hook``
    (``Apply``), and with ``hook`` zero-ablated (``Ablate``); ``ce_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)``.
    ``skip_first``: keep position 0 (a BOS token the SAE never saw) unchanged. ``baseline``: the result of an
    earlier call on the same tokens, whose clean and zero-ablated CEs are reused instead of recomputed."""
    from interplab.hooks import Ablate, Apply

    def splice(x, ctx):
        return sae(x.reshape(x.shape[0], x.shape[1], -1).float()).to(x.dtype).reshape(x.shape)

    positions = slice(1, None) if skip_first else None
    runs = {"sae": [Apply(hook, fn=splice, positions=positions)]}
    if baseline is None:
        runs = {"clean": [], **runs, "zero": [Ablate(hook, how="zero", positions=positions)]}
    tot = dict.fromkeys(runs, 0.0)
    n = 0
    for i in range(0, tokens.shape[0], batch):
        t = tokens[i : i + batch]
        tgt = t[:, 1:].reshape(-1)
        for name, iv in runs.items():
            logits = model.run(t, interventions=iv).logits
            tot[name] += float(
                F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tgt, reduction="sum")
            )
        n += tgt.numel()
    ce = {k: v / n for k, v in tot.items()}
    if baseline is not None:
        if baseline["ce_tokens"] != n:
            raise ValueError(f"the baseline was measured on {baseline['ce_tokens']} tokens, these are {n}.")
        ce["clean"], ce["zero"] = baseline["ce_clean"], baseline["ce_zero_ablation"]
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero_ablation": ce["zero"],
        "ce_tokens": n,
        "ce_score": (ce["zero"] - ce["sae"]) / denom if denom != 0 else float("nan"),
        "ce_baseline": "zero ablation",
    }


# ------------------------------------------------------------------------------------------ PCA baseline


class PCA:
    """PCA of the training rows (streamed covariance in float64). ``reconstruct(x, m, mode)``: ``"top"`` keeps
    the top ``m`` components, ``"topk"`` the ``m`` largest-magnitude coefficients of each row over all components."""

    def __init__(self, data, batch_size: int = 16384):
        if isinstance(data, torch.Tensor):
            data = TensorData(data)
        d = data.d
        s = torch.zeros(d, dtype=torch.float64)
        ss = torch.zeros(d, d, dtype=torch.float64)
        n = 0
        for x in data.batches(batch_size, shuffle=False):
            x = x.double()
            s += x.sum(0)
            ss += x.T @ x
            n += x.shape[0]
        self.mean = s / n
        cov = ss / n - torch.outer(self.mean, self.mean)
        evals, evecs = torch.linalg.eigh(cov)
        order = evals.argsort(descending=True)
        self.explained = evals[order].clamp_min(0)
        self.components = evecs[:, order]  # [d, d], columns

    def reconstruct(self, x: torch.Tensor, m: int, mode: str = "topk") -> torch.Tensor:
        c = (x.double() - self.mean) @ self.components
        if mode == "top":
            c[:, m:] = 0
        elif mode == "topk":
            if m < c.shape[1]:
                _, i = c.abs().topk(m, dim=-1)
                c = torch.zeros_like(c).scatter(-1, i, c.gather(-1, i))
        else:
            raise ValueError(f"PCA mode must be 'top' or 'topk', not {mode!r}.")
        return (c @ self.components.T + self.mean).float()


def recovery(sae: SAE, atoms: torch.Tensor, threshold: float = 0.9) -> dict:
    """Max cosine similarity of each true atom with the decoder rows: ``recovery`` (fraction ≥ threshold), ``mmcs``."""
    cos = F.normalize(atoms.float(), dim=-1) @ F.normalize(sae.W_dec.detach().float(), dim=-1).T
    best = cos.max(dim=1).values
    return {
        "recovery": float((best >= threshold).float().mean()),
        "mmcs": float(best.mean()),
        "n_atoms": int(atoms.shape[0]),
        "recovery_threshold": threshold,
    }


# ------------------------------------------------------------------------------------------ feature browser


@torch.no_grad()
def top_contexts(
    sae: SAE,
    ds: ActivationDataset,
    features: list[int],
    n_top: int = 8,
    batch_size: int = 4096,
    tokenizer=None,
    before: int = 12,
    after: int = 3,
) -> dict[int, list[dict]]:
    """The ``n_top`` highest activations of each feature in ``features`` over ``ds``, with their contexts."""
    feats = torch.tensor(features, dtype=torch.long)
    best_v = torch.full((len(feats), n_top), -1.0)
    best_s = torch.zeros((len(feats), n_top), dtype=torch.long)
    best_p = torch.zeros((len(feats), n_top), dtype=torch.long)
    for x, s, p in ds.batches(batch_size, shuffle=False, with_index=True):
        a = sae.encode(x)[:, feats].T  # [nf, b]
        v = torch.cat([best_v, a], 1)
        ss = torch.cat([best_s, s.long().expand(len(feats), -1)], 1)
        pp = torch.cat([best_p, p.long().expand(len(feats), -1)], 1)
        top = v.topk(min(n_top, v.shape[1]), dim=1)
        best_v, best_s, best_p = top.values, ss.gather(1, top.indices), pp.gather(1, top.indices)
    out = {}
    for j, fi in enumerate(features):
        rows = []
        for v, s, p in zip(best_v[j].tolist(), best_s[j].tolist(), best_p[j].tolist()):
            if v <= 0:
                continue
            rows.append({"activation": v, "seq": s, "pos": p, **ds.context(s, p, tokenizer, before, after)})
        out[int(fi)] = rows
    return out


def browser_html(contexts: dict[int, list[dict]], density: dict[int, float] | None = None):
    """HTML for the feature browser (every token string escaped)."""
    from interplab.report.html import Html, escape

    parts = ['<div class="ipl-feature-browser">']
    for f, rows in contexts.items():
        dens = f" — density {density[f]:.2e}" if density and f in density else ""
        parts.append(
            f'<h4 class="ipl-heading">feature {int(f)}{escape(dens)}</h4><table class="ipl-table"><tr><th>activation</th><th>context</th></tr>'
        )
        if not rows:
            parts.append("<tr><td></td><td>(never fires on these tokens)</td></tr>")
        for r in rows:
            ctx = (
                "".join(escape(t) for t in r["before"])
                + f"<mark><b>{escape(r['token'])}</b></mark>"
                + "".join(escape(t) for t in r["after"])
            )
            parts.append(
                f'<tr><td>{r["activation"]:.3g}</td><td style="white-space:pre-wrap;font-family:monospace">{ctx}</td></tr>'
            )
        parts.append("</table>")
    parts.append("</div>")
    return Html("".join(parts))


# ------------------------------------------------------------------------------------------ experiment + result


def _ev_gap(sae_scores: dict, pca_scores: dict) -> dict:
    """EV(SAE) - EV(PCA top-m coefficients) and its standard error over rows (the sampling noise), from the
    :func:`evaluate` results (``row_errors=True``) of both on the same rows."""
    dd = pca_scores["row_sq_err"] - sae_scores["row_sq_err"]
    tv = sae_scores["total_var"]
    return {"ev_gap_vs_pca_topk": float(dd.mean() / tv), "ev_gap_se": float(dd.std() / math.sqrt(len(dd)) / tv)}


def _brief(m: dict) -> dict:
    return {
        k: (round(v, 5) if isinstance(v, float) else v)
        for k, v in m.items()
        if k not in ("density", "n", "row_sq_err", "total_var")
    }


def fit_and_score(
    train, test, cfg: SAEConfig, atoms: torch.Tensor | None = None, checkpoint_dir=None, progress=None
) -> tuple[SAE, dict]:
    """Train on ``train``; score on train and test; PCA at equal L0 (and the SAE-PCA gap); recovery if ``atoms``."""
    sae, info = train_sae(train, cfg, checkpoint_dir=checkpoint_dir, progress=progress)
    tr, te = evaluate(sae, train), evaluate(sae, test, row_errors=True)
    p = PCA(train)
    m = max(1, int(round(te["l0"])))
    pk = evaluate(lambda x: p.reconstruct(x, m, "topk"), test, row_errors=True)
    out = {
        "train": _brief(tr),
        "test": _brief(te),
        "pca_m": m,
        "pca_top_ev": evaluate(lambda x: p.reconstruct(x, m, "top"), test)["explained_variance"],
        "pca_topk_ev": pk["explained_variance"],
        **_ev_gap(te, pk),
        "tokens_per_s": info["tokens_per_s"],
        "train_seconds": info["seconds"],
        "steps": info["steps"],
        "train_dead_frac_window": info["train_dead_frac"],
        "history": info["history"],
        "density_test": te["density"],
    }
    if atoms is not None:
        out.update(recovery(sae, atoms))
    return sae, out


def control_config(cfg: SAEConfig, d: int) -> SAEConfig:
    """The SAE used on a synthetic control of dimension ``d``: same kind, λ and seed, ``k = max(1, min(k, d // 8))``,
    ``n_features = max(64, 8 d)``, 4 epochs of 32k rows."""
    return SAEConfig(
        d_in=d,
        n_features=max(64, 8 * d),
        kind=cfg.kind,
        k=max(1, min(cfg.k, d // 8)),
        l1_coeff=cfg.l1_coeff,
        l0_coeff=cfg.l0_coeff,
        lr=1e-3,
        batch_size=512,
        epochs=4,
        seed=cfg.seed,
    )


@dataclass
class SAEResult:
    """An SAE run: metrics on training and held-out rows, CE score, controls and the feature browser."""

    settings: dict
    main: dict
    ce: dict | None = None
    controls: dict = field(default_factory=dict)
    browser: dict | None = None

    def headline(self) -> dict:
        m = self.main
        h = {
            "l0": m["train"]["l0"],
            "test_l0": m["test"]["l0"],
            "explained_variance": m["train"]["explained_variance"],
            "test_explained_variance": m["test"]["explained_variance"],
            "mse": m["train"]["mse"],
            "test_mse": m["test"]["mse"],
            "dead_frac": m["train"]["dead_frac"],
            "test_dead_frac": m["test"]["dead_frac"],
            "pca_top_ev": m["pca_top_ev"],
            "pca_topk_ev": m["pca_topk_ev"],
            "pca_m": m["pca_m"],
            "tokens_per_s": m["tokens_per_s"],
        }
        if self.ce:
            h.update(
                {
                    "ce_score": self.ce["train"]["ce_score"],
                    "test_ce_score": self.ce["test"]["ce_score"],
                    "ce_clean": self.ce["test"]["ce_clean"],
                    "ce_sae": self.ce["test"]["ce_sae"],
                    "ce_zero_ablation": self.ce["test"]["ce_zero_ablation"],
                    "ce_baseline": "zero ablation",
                }
            )
        if "recovery" in m:
            h.update({"recovery": m["recovery"], "mmcs": m["mmcs"]})
        if self.controls:
            h["controls"] = {
                k: {
                    kk: v[kk]
                    for kk in (
                        "test_explained_variance",
                        "l0",
                        "pca_topk_ev",
                        "pca_top_ev",
                        "ev_gap_vs_pca_topk",
                        "ev_gap_se",
                        "test_dead_frac",
                        "recovery",
                        "ce_score",
                    )
                    if kk in v
                }
                for k, v in self.controls.items()
            }
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()}

    def to_frame(self):
        import pandas as pd

        rows = [{"data": "main", "split": s, **{k: v for k, v in self.main[s].items()}} for s in ("train", "test")]
        for name, c in self.controls.items():
            rows.append(
                {
                    "data": name,
                    "split": "test",
                    "l0": c.get("l0"),
                    "explained_variance": c.get("test_explained_variance"),
                    "dead_frac": c.get("test_dead_frac"),
                    "pca_topk_ev": c.get("pca_topk_ev"),
                    "pca_top_ev": c.get("pca_top_ev"),
                    "recovery": c.get("recovery"),
                }
            )
        return pd.DataFrame(rows)

    def plot(self):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1, cols=2, subplot_titles=("training (batch EV, L0)", "held-out EV: SAE vs PCA at equal L0")
        )
        hist = self.main["history"]
        fig.add_trace(go.Scatter(x=[h["step"] for h in hist], y=[h["ev"] for h in hist], name="batch EV"), 1, 1)
        names = ["main"] + list(self.controls)
        sae_ev = [self.main["test"]["explained_variance"]] + [
            self.controls[n].get("test_explained_variance") for n in self.controls
        ]
        pca_ev = [self.main["pca_topk_ev"]] + [self.controls[n].get("pca_topk_ev") for n in self.controls]
        fig.add_trace(go.Bar(x=names, y=sae_ev, name="SAE"), 1, 2)
        fig.add_trace(go.Bar(x=names, y=pca_ev, name="PCA top-L0 coefficients"), 1, 2)
        fig.update_layout(barmode="group", height=420)
        return fig

    def save(self, directory: str | Path) -> Path:
        from interplab.io.results import write_json

        main = {k: v for k, v in self.main.items() if k != "density_test"}
        ctrl = {
            k: {kk: vv for kk, vv in v.items() if kk not in ("history", "density_test")}
            for k, v in self.controls.items()
        }
        return write_json(
            directory,
            "sae_result.json",
            {
                "kind": "sae_result",
                "settings": self.settings,
                "main": main,
                "ce": self.ce,
                "controls": ctrl,
                "browser": {str(k): v for k, v in (self.browser or {}).items()},
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> SAEResult:
        from interplab.io.results import read_json

        d, _ = read_json(path, "sae_result.json", "sae_result")
        return cls(
            d["settings"], d["main"], d["ce"], d["controls"], {int(k): v for k, v in d["browser"].items()} or None
        )

    def report_parts(self):
        from interplab.report.html import figure, table, text

        h = self.headline()
        rows = [
            {"metric": k, "train": self.main["train"].get(k), "held-out": self.main["test"].get(k)}
            for k in ("l0", "explained_variance", "mse", "dead_frac")
        ]
        if self.ce:
            for k in ("ce_clean", "ce_sae", "ce_zero_ablation", "ce_score"):
                rows.append({"metric": k, "train": self.ce["train"][k], "held-out": self.ce["test"][k]})
        parts = [
            text(
                f"{self.settings.get('kind')} SAE, {self.settings.get('n_features')} features on {self.settings.get('data')} "
                f"(hook {self.settings.get('hook')}); explained variance is measured against the mean of the evaluated rows; "
                "CE score = (CE_zero_ablation - CE_sae) / (CE_zero_ablation - CE_clean)."
            ),
            table(rows),
            figure(self.plot()),
            text(
                f"PCA at equal L0 (m = {h['pca_m']}, fitted on training rows, held-out EV): top-m components "
                f"{h['pca_top_ev']:.4f}; top-m coefficients per token {h['pca_topk_ev']:.4f}."
            ),
        ]
        if self.controls:
            parts.append(
                table(
                    [
                        {
                            "control": k,
                            **{
                                kk: v.get(kk)
                                for kk in (
                                    "l0",
                                    "test_explained_variance",
                                    "pca_topk_ev",
                                    "pca_top_ev",
                                    "ev_gap_vs_pca_topk",
                                    "ev_gap_se",
                                    "test_dead_frac",
                                    "recovery",
                                    "mmcs",
                                    "ce_score",
                                )
                            },
                        }
                        for k, v in self.controls.items()
                    ]
                )
            )
        return parts


def _control_entry(sc: dict) -> dict:
    return {
        "l0": sc["test"]["l0"],
        "explained_variance": sc["train"]["explained_variance"],
        "test_explained_variance": sc["test"]["explained_variance"],
        "test_dead_frac": sc["test"]["dead_frac"],
        **{
            k: sc[k]
            for k in (
                "pca_m",
                "pca_top_ev",
                "pca_topk_ev",
                "ev_gap_vs_pca_topk",
                "ev_gap_se",
                "recovery",
                "mmcs",
                "train_seconds",
            )
            if k in sc
        },
    }


def run_synthetic_controls(cfg: SAEConfig, names=SYNTHETIC, n_train: int = 32768, n_test: int = 8192, log=None) -> dict:
    """Train and score the control SAE (:func:`control_config`) on each synthetic data set."""
    out = {}
    for name in names:
        data = make_synthetic(name, n_train=n_train, n_test=n_test, seed=cfg.seed)
        c = control_config(cfg, data["d"])
        _, sc = fit_and_score(data["train"], data["test"], c, atoms=data["atoms"])
        out[name] = _control_entry(sc) | {"d": data["d"], "k": c.k, "n_features": c.n_features}
        if log:
            log(f"control {name}: held-out EV {sc['test']['explained_variance']:.3f} vs PCA {sc['pca_topk_ev']:.3f}")
    return out


def run_sae(
    data: str,
    *,
    model=None,
    acts_dir: str | Path | None = None,
    cfg: SAEConfig | None = None,
    run_dir: str | Path,
    test_frac: float = 0.1,
    n_train: int = 65536,
    n_test: int = 16384,
    controls: bool = True,
    ce_seqs: int = 16,
    control_rows: int = 32768,
    browser_features: int = 16,
    log: Callable[[str], None] | None = None,
    **cfg_kw,
) -> tuple[SAE, SAEResult]:
    """The ``interplab sae train`` experiment.

    ``data``: ``"acts"`` (the activation directory ``acts_dir``; a model enables the CE score and the layer-0
    control) or a synthetic set (:data:`SYNTHETIC`). Controls (``controls=True``): every synthetic set, and for
    model activations also layer-0 (``hook_embed``) activations of the same tokens and a frozen random decoder."""
    log = log or (lambda s: None)
    run_dir = Path(run_dir)
    atoms = None
    if data == "acts":
        ds = ActivationDataset(acts_dir)
        train, test = ds.split(test_frac, by="auto")
        d = ds.d
        desc = {
            "data": f"activations {acts_dir}",
            "hook": ds.hook,
            "model": ds.model_name,
            "rows": len(ds),
            "train_rows": len(train),
            "test_rows": len(test),
        }
    elif data in SYNTHETIC:
        sd = make_synthetic(data, n_train=n_train, n_test=n_test, seed=(cfg.seed if cfg else cfg_kw.get("seed", 0)))
        train, test, atoms, d = TensorData(sd["train"]), TensorData(sd["test"]), sd["atoms"], sd["d"]
        ds = None
        desc = {"data": data, "hook": None, "model": None, "train_rows": n_train, "test_rows": n_test}
    else:
        raise ValueError(f"--data must be 'acts DIR' or one of {', '.join(SYNTHETIC)}, not {data!r}.")
    if cfg is None:
        cfg = SAEConfig(d_in=d, **cfg_kw)
    elif cfg.d_in != d:
        raise ValueError(f"the SAE config has d_in={cfg.d_in} but the data has d={d}.")
    settings = {**asdict(cfg), **desc, "test_frac": test_frac}
    log(f"training {cfg.kind} SAE ({cfg.n_features} features) on {len(train)} rows …")
    sae, main = fit_and_score(
        train,
        test,
        cfg,
        atoms=atoms,
        checkpoint_dir=run_dir / "checkpoint",
        progress=lambda s, n, lg: log(
            f"step {s}/{n}: batch EV {lg.get('ev', float('nan')):.3f}, L0 {lg.get('l0', 0):.1f}"
        ),
    )
    sae.save(run_dir)
    res = SAEResult(settings, main)
    skip_first = bool(ds.manifest["settings"].get("skipped_first")) if ds is not None else False
    can_ce = model is not None and ds is not None and ds.manifest["settings"].get("positions") == "all"
    if can_ce:
        log("CE score (clean / SAE spliced / zero-ablated) …")
        res.ce = {}
        train_seqs = train.sequences()
        test_seqs = test.sequences()
        unseen = test_seqs[~torch.isin(test_seqs, train_seqs)]  # a sequence cut by the split counts as training text
        res.settings["ce_test_unseen_text"] = (
            len(unseen) > 0
        )  # False: split by row, test rows share sequences with training
        test_seqs = unseen if len(unseen) else test_seqs
        for split, seqs in (("train", train_seqs[:ce_seqs]), ("test", test_seqs[:ce_seqs])):
            res.ce[split] = ce_score(model, sae, ds.hook, ds.tokens[seqs], skip_first=skip_first) | {
                "n_seqs": len(seqs)
            }
    if controls:
        res.controls.update(
            run_synthetic_controls(cfg, n_train=control_rows, n_test=max(256, control_rows // 4), log=log)
        )
        if ds is not None:
            log("control: frozen random decoder …")
            rc = SAEConfig(**{**asdict(cfg), "freeze_decoder": True, "resample_at": cfg.resample_at})
            rsae, rsc = fit_and_score(train, test, rc)
            res.controls["random-decoder"] = _control_entry(rsc)
            if res.ce:
                res.controls["random-decoder"]["ce_score"] = ce_score(
                    model, rsae, ds.hook, ds.tokens[test_seqs[:ce_seqs]], skip_first=skip_first, baseline=res.ce["test"]
                )["ce_score"]
            if model is not None and ds.hook != "hook_embed":
                from interplab.io.activations import extract_activations

                log("control: layer-0 (hook_embed) activations of the same tokens …")
                s = ds.manifest["settings"]
                l0dir = run_dir / "acts_layer0"
                ds0 = extract_activations(
                    model,
                    "hook_embed",
                    l0dir,
                    tokens=ds.tokens,
                    positions=s["positions"],
                    skip_first=s["skip_first"],
                    shard_rows=ds.manifest["shard_rows"],
                    batch=s["batch"],
                )
                tr0, te0 = ds0.split(test_frac, by="auto")
                lc = SAEConfig(**{**asdict(cfg), "d_in": ds0.d})
                _, l0sc = fit_and_score(tr0, te0, lc)
                res.controls["layer0-embed"] = _control_entry(l0sc)
    if ds is not None and browser_features > 0:
        dens = main["density_test"]
        alive = (dens > 0).nonzero().flatten()
        g = torch.Generator().manual_seed(cfg.seed)
        pick = alive[torch.randperm(len(alive), generator=g)[:browser_features]].sort().values.tolist()
        tok = getattr(model, "tokenizer", None) if model is not None else None
        res.browser = top_contexts(sae, test, pick, tokenizer=tok)
        res.settings["browser_density"] = {int(f): float(dens[f]) for f in pick}
    res.save(run_dir)
    return sae, res
