"""Grokking modular arithmetic — Nanda, Chan, Lieberum, Smith & Steinhardt (2023), "Progress measures for
grokking via mechanistic interpretability" (ICLR 2023); the phenomenon is Power et al. (2022).

Task: inputs ``a b =`` (tokens ``a``, ``b`` in ``0..p-1`` and ``=`` = token ``p``), predict ``a op b mod p``
at the ``=`` position. Defaults are Nanda et al.'s: ``p = 113``, one layer, ``d_model 128``, 4 heads of
``d_head 32``, ``d_mlp 512``, ReLU, no LayerNorm, learned positional embeddings, no attention biases,
no unembedding bias, 30 % of the ``p^2`` pairs for training, full-batch AdamW (lr 1e-3, weight decay
1.0, betas 0.9/0.98, linear warm-up over 10 steps from 0 as their ``LambdaLR(min(step/10, 1))``),
their initialisation (normal, std ``1/sqrt(d_model)``; unembedding ``1/sqrt(p)``; biases 0), the loss in
float64, 40,000 epochs. The model is interplab's :class:`~interplab.models.toy.ToyTransformer`
(``d_vocab = p + 1``: its unembedding also has a row for ``=``, which the loss ignores — the loss and
accuracy use the ``p`` number logits only), saved in the run directory so ``interplab.load(run_dir)``
gives a :class:`~interplab.models.model.Model` with every hook point.

Speed: a one-layer model's prediction at ``=`` needs keys/values of the three positions but the query,
the MLP and the unembedding only at ``=``. :func:`forward_eq` computes exactly that (keys/values of
``a``/``b`` as ``p``-row tables, gathered per example) — the same function as the model's forward at the
last position (tested to ``1e-5``), at about a third of its cost.

Analysis (:mod:`interplab.train.fourier`): embedding / neuron / logit Fourier norms, key frequencies,
restricted and excluded loss on weight snapshots taken every ``snapshot_every`` epochs (deleted at the
end unless ``keep_snapshots``), Gini of Fourier norms, and the three phases:

* **memorisation** ``[0, t_mem]``: ``t_mem`` = first logged epoch with train accuracy 1.0;
* **circuit formation** ``[t_mem, t_clean]``: ``t_clean`` = first epoch after ``t_mem`` at which the test
  loss is 10x below its post-memorisation maximum (the sharp drop of Nanda et al.'s clean-up);
* **clean-up** ``[t_clean, t_end]``: ``t_end`` = first epoch after ``t_clean`` at which the sum of squared
  weights has made 90 % of its fall from ``t_clean`` to the end of training (weight decay removing the
  memorising components).

These thresholds are this module's operationalisation, not numbers from the paper.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from interplab.models.toy import ToyConfig, ToyTransformer
from interplab.runtime import torch_threads
from interplab.train import fourier as fr
from interplab.train.result import TrainingResult
from interplab.train.trainer import Trainer

OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "x2xy2": lambda a, b, p: (a * a + a * b + b * b) % p,
}


@dataclass
class GrokkingConfig:
    p: int = 113
    operation: str = "add"
    frac_train: float = 0.3
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    act_fn: str = "relu"
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup: int = 10
    epochs: int = 40000
    seed: int = 0
    data_seed: int = 598
    log_every: int = 100
    ckpt_every: int = 1000
    snapshot_every: int = 250
    keep_snapshots: bool = False
    fve_threshold: float = 0.5
    stop_when_clean: bool = True  # stop once grokked and the weight norm has levelled off (see clean_stop)
    clean_window: int = 1000
    clean_tol: float = 0.01
    threads: int = 0  # torch threads; 0: torch's default (2 threads: 1.6x faster than 1 on the quiet 2-core machine)

    def validate(self) -> None:
        if self.p < 3 or any(self.p % q == 0 for q in range(2, math.isqrt(self.p) + 1)):
            raise ValueError(f"p must be a prime >= 3, got {self.p}.")
        if self.operation not in OPS:
            raise ValueError(f"operation must be one of {', '.join(OPS)}, not {self.operation!r}.")
        if not 0 < self.frac_train < 1:
            raise ValueError(f"frac_train must be in (0, 1), got {self.frac_train}.")
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1.")


def make_data(cfg: GrokkingConfig) -> dict[str, torch.Tensor]:
    """All ``p^2`` pairs (row ``a*p + b``), labels, and a seeded train/test split."""
    p = cfg.p
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    labels = OPS[cfg.operation](a, b, p)
    g = torch.Generator().manual_seed(cfg.data_seed)
    perm = torch.randperm(p * p, generator=g)
    n_train = int(cfg.frac_train * p * p)
    return {
        "a": a,
        "b": b,
        "labels": labels,
        "train": perm[:n_train].sort().values,
        "test": perm[n_train:].sort().values,
    }


def make_model(cfg: GrokkingConfig) -> ToyTransformer:
    tc = ToyConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.p + 1,
        n_ctx=3,
        act_fn=cfg.act_fn,
        normalization=None,
        positional="learned",
        attn_bias=False,
        unembed_bias=False,
        seed=cfg.seed,
    )
    model = ToyTransformer(tc)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():  # Nanda et al.'s initialisation
        for name, prm in model.named_parameters():
            if prm.ndim == 1:
                prm.zero_()
            elif name.startswith("unembed"):
                prm.copy_(torch.randn(prm.shape, generator=g) / math.sqrt(cfg.p))
            else:
                prm.copy_(torch.randn(prm.shape, generator=g) / math.sqrt(cfg.d_model))
    return model


def make_optimizer(cfg: GrokkingConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    """Nanda et al.'s full-batch AdamW (fused: one kernel per step over all parameters)."""
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2), fused=True
    )


def tokens(cfg: GrokkingConfig, data: dict, idx: torch.Tensor | None = None) -> torch.Tensor:
    a, b = data["a"], data["b"]
    if idx is not None:
        a, b = a[idx], b[idx]
    return torch.stack([a, b, torch.full_like(a, cfg.p)], 1)


def _fast_ok(model: ToyTransformer) -> bool:
    c = model.config
    return c.n_layers == 1 and c.normalization in (None, "none", "") and c.positional == "learned"


def forward_eq(
    model: ToyTransformer, a: torch.Tensor, b: torch.Tensor, eq: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``[N, d_vocab]`` and MLP activations ``[N, d_mlp]`` at the ``=`` position for inputs ``a b =``.

    One-layer, norm-free models only (else the full forward; neurons then from the last layer's hook)."""
    if not _fast_ok(model):
        from interplab.models.model import Model

        m = Model(model)
        last = model.config.n_layers - 1
        name = f"blocks.{last}.mlp.hook_post"
        logits, cache = m.run(
            torch.stack([a, b, torch.full_like(a, eq)], 1),
            cache=[name] if model.config.d_mlp else None,
            grad=torch.is_grad_enabled(),
        )
        return logits[:, -1], (cache[name][:, -1] if model.config.d_mlp else None)
    assert model.pos_embed is not None  # _fast_ok: learned positions
    E, P = model.embed.weight, model.pos_embed.weight
    block: Any = model.blocks[0]  # a ToyBlock (a ModuleList's items are typed Module)
    attn = block.attn
    H, dh = attn.n_heads, attn.d_head
    x0, x1, x2 = E[:eq] + P[0], E[:eq] + P[1], E[eq] + P[2]
    q = attn.q_proj(x2).view(H, dh)
    kt = attn.k_proj(torch.cat([x0, x1, x2[None]]))
    vt = attn.v_proj(torch.cat([x0, x1, x2[None]]))
    scale = dh**-0.5
    s = (kt.view(-1, H, dh) * q).sum(-1) * scale  # [2p+1, H]
    # index_select, not v[a]: its backward is an index_add, ~10x faster than advanced indexing's index_put
    sa, sb, se = s[:eq].index_select(0, a), s[eq : 2 * eq].index_select(0, b), s[2 * eq].expand(a.shape[0], H)
    w = torch.softmax(torch.stack([sa, sb, se], -1), -1)  # [N, H, 3]
    v = vt.view(-1, H, dh)
    z = (
        w[..., 0, None] * v[:eq].index_select(0, a)
        + w[..., 1, None] * v[eq : 2 * eq].index_select(0, b)
        + w[..., 2, None] * v[2 * eq]
    )
    resid = x2 + attn.o_proj(z.reshape(a.shape[0], H * dh))
    acts = None
    mlp = block.mlp
    if mlp is not None:
        acts = mlp.act(mlp.fc_in(resid))
        resid = resid + mlp.fc_out(acts)
    return model.unembed(model.ln_final(resid)), acts


def _loss(logits: torch.Tensor, labels: torch.Tensor, p: int) -> torch.Tensor:
    return F.cross_entropy(logits[:, :p].double(), labels)


def clean_stop(metrics: list[dict], window: int, tol: float) -> bool:
    """The end of clean-up, as a stopping rule: test accuracy >= 0.99 and the sum of squared weights fell by
    less than ``tol`` (relative) over the last ``window`` epochs. Nanda et al. train 40,000 epochs, but the
    three phases are over by ~13,000 in their run; later epochs only shrink the weights further."""
    last = metrics[-1]
    if last.get("test_acc", 0.0) < 0.99 or last["step"] < window:
        return False
    before = next((m for m in reversed(metrics) if m["step"] <= last["step"] - window), None)
    if before is None or before.get("test_acc", 0.0) < 0.99:
        return False
    return (before["weight_norm_sq"] - last["weight_norm_sq"]) < tol * before["weight_norm_sq"]


def weight_norm_sq(model) -> float:
    return float(sum((w.detach().double() ** 2).sum() for w in model.parameters()))


def _gini_terms(model: ToyTransformer, p: int) -> dict[str, float]:
    out = {"gini_embed": fr.gini(fr.basis_norms(model.embed.weight.detach()[:p]))}
    block: Any = model.blocks[-1]  # a ToyBlock
    mlp = block.mlp
    if mlp is not None:
        W_L = mlp.fc_out.weight.detach().T @ model.unembed.weight.detach()[:p].T  # [d_mlp, p]
        out["gini_wl"] = fr.gini(fr.basis_norms(W_L.T))
    return out


# ------------------------------------------------------------------------------------------ analysis
@dataclass(kw_only=True)
class GrokkingResult(TrainingResult):
    """Curves (``metrics``: one dict per logged epoch), the Fourier analysis of the final model, the
    restricted/excluded loss curves on snapshots, the phases and the headline numbers."""

    metrics: list[dict]  # one dict per logged epoch
    analysis: dict
    progress: list[dict]

    FILE: ClassVar[str] = "grokking.json"
    KIND: ClassVar[str] = "grokking"

    def to_frame(self):
        import pandas as pd

        df = pd.DataFrame(self.metrics)
        if self.progress:
            df = df.merge(pd.DataFrame(self.progress), on="step", how="left")
        return df

    def plot(self):
        """Loss curves (log scale) with restricted/excluded loss and the phase boundaries."""
        import plotly.graph_objects as go

        fig = go.Figure()
        steps = [m["step"] for m in self.metrics]
        for key, name in (("train_loss", "train loss"), ("test_loss", "test loss")):
            fig.add_scatter(x=steps, y=[m[key] for m in self.metrics], name=name, mode="lines")
        if self.progress:
            ps = [r["step"] for r in self.progress]
            for key, name in (("restricted_loss", "restricted loss"), ("excluded_loss", "excluded loss")):
                if key in self.progress[0]:
                    fig.add_scatter(
                        x=ps, y=[r[key] for r in self.progress], name=name, mode="lines", line={"dash": "dot"}
                    )
        for ph in self.summary.get("phases", []):
            if ph.get("end") is not None:
                fig.add_vline(
                    x=ph["end"], line={"dash": "dash", "color": "grey"}, annotation_text=f"end of {ph['name']}"
                )
        fig.update_yaxes(type="log", title="loss")
        fig.update_xaxes(title="epoch")
        fig.update_layout(title="Grokking: loss curves", height=420)
        return fig

    def plot_accuracy(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        steps = [m["step"] for m in self.metrics]
        for key in ("train_acc", "test_acc"):
            fig.add_scatter(x=steps, y=[m[key] for m in self.metrics], name=key.replace("_", " "), mode="lines")
        fig.update_layout(title="Accuracy", xaxis_title="epoch", yaxis_title="accuracy", height=350)
        return fig

    def plot_norms(self):
        from plotly.subplots import make_subplots

        steps = [m["step"] for m in self.metrics]
        fig = make_subplots(rows=1, cols=2, subplot_titles=("sum of squared weights", "Gini of Fourier norms"))
        fig.add_scatter(x=steps, y=[m["weight_norm_sq"] for m in self.metrics], name="||θ||²", row=1, col=1)
        for key in ("gini_embed", "gini_wl"):
            if key in self.metrics[0]:
                fig.add_scatter(x=steps, y=[m[key] for m in self.metrics], name=key, row=1, col=2)
        fig.update_layout(height=350)
        return fig

    def plot_spectra(self):
        from plotly.subplots import make_subplots

        a = self.analysis
        ks = list(range(1, len(a["embedding_freq_norms"]) + 1))
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=(
                "embedding norm per frequency",
                "neurons per frequency",
                "logit norm per frequency (a±b direction)",
            ),
        )
        fig.add_bar(x=ks, y=a["embedding_freq_norms"], name="embedding", row=1, col=1)
        fig.add_bar(x=ks, y=a["neurons_per_freq"][1:], name="neurons", row=1, col=2)
        if a.get("logit_freq_norms"):
            fig.add_bar(x=ks, y=a["logit_freq_norms"], name="logits", row=1, col=3)
        fig.update_xaxes(title="frequency k")
        fig.update_layout(height=380, showlegend=False)
        return fig


def detect_phases(metrics: list[dict]) -> list[dict]:
    """Memorisation / circuit formation / clean-up epochs from the logged curves (rules in the module docstring)."""
    steps = [m["step"] for m in metrics]
    t_mem = next((m["step"] for m in metrics if m["train_acc"] >= 1.0), None)
    phases = [{"name": "memorisation", "start": 0, "end": t_mem}]
    if t_mem is None:
        return phases
    after = [m for m in metrics if m["step"] >= t_mem]
    peak = max(m["test_loss"] for m in after)
    t_clean = next((m["step"] for m in after if m["test_loss"] <= peak / 10), None)
    phases.append({"name": "circuit formation", "start": t_mem, "end": t_clean})
    if t_clean is None:
        return phases
    w0 = next(m["weight_norm_sq"] for m in metrics if m["step"] == t_clean)
    w_end = metrics[-1]["weight_norm_sq"]
    t_end = None
    if w0 > w_end:
        t_end = next(
            (m["step"] for m in metrics if m["step"] >= t_clean and w0 - m["weight_norm_sq"] >= 0.9 * (w0 - w_end)),
            None,
        )
        if t_end == steps[-1]:
            t_end = None  # still falling at the end: clean-up not finished within the run
    phases.append({"name": "clean-up", "start": t_clean, "end": t_end})
    return phases


def analyse_model(model: ToyTransformer, cfg: GrokkingConfig, data: dict) -> dict:
    """Fourier analysis of one model state (final or snapshot)."""
    p = cfg.p
    with torch.no_grad():
        logits, acts = forward_eq(model, data["a"], data["b"], p)
    logits = logits[:, :p]
    out: dict[str, Any] = {"embedding_freq_norms": fr.embedding_freq_norms(model.embed.weight.detach()[:p]).tolist()}
    if acts is not None:
        A = acts.reshape(p, p, -1)
        freq, fve = fr.neuron_frequencies(A, cfg.fve_threshold)
        out["neuron_freq"] = freq.tolist()
        out["neuron_fve"] = fve.tolist()
        out["neurons_per_freq"] = torch.bincount(freq, minlength=(p - 1) // 2 + 1).tolist()
        out["key_frequencies"] = fr.key_frequencies(A, cfg.fve_threshold)
        out["frac_neurons_clustered"] = float((freq > 0).double().mean())
    else:
        out["key_frequencies"], out["neurons_per_freq"] = [], [0] * ((p - 1) // 2 + 1)
    en = torch.tensor(out["embedding_freq_norms"])
    out["embedding_key_frequencies"] = [int(k) + 1 for k in torch.nonzero(en >= 0.25 * en.max()).flatten()]
    if cfg.operation in ("add", "sub"):
        L = logits.double()
        Lc = L - L.mean(0, keepdim=True)
        dirs = [fr.fourier_directions(p, [k], cfg.operation) for k in range(1, (p - 1) // 2 + 1)]
        out["logit_freq_norms"] = [float((D @ Lc).norm()) for D in dirs]
        keys = out["key_frequencies"]
        Dk = fr.fourier_directions(p, keys, cfg.operation)
        out["logit_var_explained_by_keys"] = float(((Dk @ Lc) ** 2).sum() / (Lc**2).sum()) if keys else 0.0
    return out


def progress_measures(model: ToyTransformer, cfg: GrokkingConfig, data: dict, keys: list[int]) -> dict:
    """Restricted loss (all data) and excluded loss (train set) for one model state (Nanda et al. 5.1)."""
    p = cfg.p
    with torch.no_grad():
        logits, _ = forward_eq(model, data["a"], data["b"], p)
    logits = logits[:, :p]
    out = {}
    if cfg.operation in ("add", "sub") and keys:
        r, e = fr.restricted_excluded_logits(logits, keys, cfg.operation)
        out["restricted_loss"] = float(F.cross_entropy(r, data["labels"]))
        tr = data["train"]
        out["excluded_loss"] = float(F.cross_entropy(e[tr], data["labels"][tr]))
    return out


def summarise(cfg: GrokkingConfig, metrics: list[dict], analysis: dict) -> dict:
    first = lambda key, thr: next((m["step"] for m in metrics if m[key] >= thr), None)
    t_train = first("train_acc", 1.0)
    t_grok = first("test_acc", 0.99)
    phases = detect_phases(metrics)
    return {
        "final_train_acc": metrics[-1]["train_acc"],
        "final_test_acc": metrics[-1]["test_acc"],
        "final_train_loss": metrics[-1]["train_loss"],
        "final_test_loss": metrics[-1]["test_loss"],
        "train_acc_1_epoch": t_train,
        "grok_epoch": t_grok,
        "grok_gap_epochs": (t_grok - t_train) if (t_grok is not None and t_train is not None) else None,
        "key_frequencies": analysis.get("key_frequencies", []),
        "embedding_key_frequencies": analysis.get("embedding_key_frequencies", []),
        "phases": phases,
        "gini_embed": metrics[-1].get("gini_embed"),
        "gini_wl": metrics[-1].get("gini_wl"),
        "logit_var_explained_by_keys": analysis.get("logit_var_explained_by_keys"),
    }


# ------------------------------------------------------------------------------------------ training
def train(
    cfg: GrokkingConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, callbacks: list | None = None
) -> GrokkingResult:
    """Train (or resume) a grokking run in ``run_dir``; analyse it; write the model and ``grokking.json``."""
    cfg.validate()
    with torch_threads(cfg.threads):
        return _train(cfg, Path(run_dir), resume, progress, callbacks)


def _train(cfg: GrokkingConfig, run_dir: Path, resume: bool, progress: bool, callbacks) -> GrokkingResult:
    data = make_data(cfg)
    model = make_model(cfg)
    opt = make_optimizer(cfg, model)
    p = cfg.p
    tr, te = data["train"], data["test"]
    a_tr, b_tr, y_tr = data["a"][tr], data["b"][tr], data["labels"][tr]
    snap_dir = run_dir / "snapshots"

    def step_fn(step: int) -> torch.Tensor:
        lr = cfg.lr * min(step / cfg.warmup, 1.0) if cfg.warmup else cfg.lr
        for g in opt.param_groups:
            g["lr"] = lr
        logits, _ = forward_eq(model, a_tr, b_tr, p)
        return _loss(logits, y_tr, p)

    def eval_fn(step: int) -> dict:
        logits, _ = forward_eq(model, data["a"], data["b"], p)
        lg = logits[:, :p]
        y = data["labels"]
        pred = lg.argmax(-1)
        rec = {
            "train_loss": float(_loss(lg[tr], y[tr], p)),
            "test_loss": float(_loss(lg[te], y[te], p)),
            "train_acc": float((pred[tr] == y[tr]).double().mean()),
            "test_acc": float((pred[te] == y[te]).double().mean()),
            "weight_norm_sq": weight_norm_sq(model),
        }
        rec.update(_gini_terms(model, p))
        return rec

    def save_snapshot(step: int) -> None:
        from safetensors.torch import save_file

        snap_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous() for k, v in model.state_dict().items()},
            str(snap_dir / f"step_{step:07d}.safetensors"),
        )

    def snapshot(step: int, trainer: Trainer) -> None:
        if step % cfg.snapshot_every == 0 or step == cfg.epochs:
            save_snapshot(step)

    trainer = Trainer.for_config(
        cfg,
        model,
        opt,
        step_fn,
        eval_fn,
        run_dir,
        steps=cfg.epochs,
        callbacks=[snapshot, *(callbacks or [])],
        progress=progress,
        description=f"grokking p={p} {cfg.operation}",
        should_stop=(lambda ms: clean_stop(ms, cfg.clean_window, cfg.clean_tol)) if cfg.stop_when_clean else None,
    )
    if not resume:
        shutil.rmtree(snap_dir, ignore_errors=True)
        save_snapshot(0)
    metrics = trainer.fit(resume=resume)
    model.save_pretrained(run_dir)
    analysis = analyse_model(model, cfg, data)
    keys = analysis["key_frequencies"]
    prog = []
    from safetensors.torch import load_file

    probe = make_model(cfg)
    for f in sorted(snap_dir.glob("step_*.safetensors")):
        step = int(f.stem.split("_")[1])
        if step > cfg.epochs:
            continue
        probe.load_state_dict(load_file(str(f)))
        prog.append({"step": step, **progress_measures(probe, cfg, data, keys)})
    if not cfg.keep_snapshots:
        shutil.rmtree(snap_dir, ignore_errors=True)
    head = summarise(cfg, metrics, analysis)
    head["epochs_trained"] = metrics[-1]["step"]
    head["stopped_at_clean_up_end"] = trainer.stopped_early
    head["steps_per_second"] = round(trainer.steps_per_second, 2)
    head["training_seconds"] = round(trainer.seconds_training, 1)
    return GrokkingResult.saved(
        cfg,
        run_dir,
        metrics=metrics,
        analysis=analysis,
        progress=prog,
        summary=head,
        settings={
            "paper": "Nanda et al. 2023, Progress measures for grokking via mechanistic interpretability",
            "restricted_loss": "all p^2 pairs",
            "excluded_loss": "training set",
            "epoch": "one full-batch step",
        },
    )


def train_step(cfg: GrokkingConfig | None = None) -> tuple[Callable[[], None], dict]:
    """One full-batch training step of the grokking setup (forward at ``=``, float64 loss, backward, fused AdamW;
    Nanda et al. 2023's defaults) as a closure over one model and optimizer, for ``interplab bench grokking``;
    and ``{"p", "train_pairs"}``."""
    cfg = cfg or GrokkingConfig()
    data = make_data(cfg)
    model = make_model(cfg)
    opt = make_optimizer(cfg, model)
    tr = data["train"]
    a, b, y = data["a"][tr], data["b"][tr], data["labels"][tr]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits, _ = forward_eq(model, a, b, cfg.p)
        _loss(logits, y, cfg.p).backward()
        opt.step()

    return step, {"p": cfg.p, "train_pairs": int(tr.numel())}
