"""The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens"):
per layer an affine *translator* trained so that the model's own head (final norm and unembedding) reads the
final distribution off that layer's residual stream, compared with the logit lens (nostalgebraist 2020, the
identity translator).

For layer ``L`` (``blocks.L.hook_resid_post``, every layer but the last, whose lens *is* the output) the
translator is ``h ↦ h + A_L h + b_L`` with ``A_L`` and ``b_L`` initialised at zero, so training starts from the
logit lens. The loss is Belrose et al.'s: ``KL(p_final ‖ p_L)`` averaged over the tokens of corpus chunks, where
``p_final`` is the model's output distribution and ``p_L = softmax(unembed(norm(translator_L(h_L))))``; all
layers are trained together with Adam on random batches of training tokens (Belrose et al. use SGD with Nesterov
momentum and many more tokens: this is a small-budget version, and its numbers say how far it got).

The comparison is measured on held-out chunks: per layer the mean KL of the logit lens and of the tuned lens, in
nats. Training writes ``checkpoint.safetensors`` (translators, Adam moments, step, loss history) every
``checkpoint_every`` steps when given a directory, and a rerun continues from it bit for bit: each step's token
batch is drawn from a generator seeded with ``(seed, step)``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from interplab.io.results import Result
from interplab.models.scoring import unembed_resid

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["TunedLens", "TunedLensConfig", "TunedLensResult", "lens_kl", "residual_states", "train_tuned_lens"]


@dataclass
class TunedLensConfig:
    """Training data and budget of :func:`train_tuned_lens`."""

    n_chunks: int = 32  # training chunks of the corpus
    heldout_chunks: int = 8  # evaluation chunks (after the training ones)
    chunk_len: int = 64
    steps: int = 200
    batch_tokens: int = 256
    lr: float = 1e-3
    seed: int = 0
    text: str | None = None  # a UTF-8 file; None: the standard library's pydoc topics


class TunedLens(nn.Module):
    """One affine translator per layer but the last: ``h + h @ A_L.T + b_L`` (zero-initialised: the logit lens)."""

    def __init__(self, n_layers: int, d_model: int):
        super().__init__()
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers - 1))
        for t in self.translators:
            assert isinstance(t, nn.Linear)
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)

    def forward(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return h + self.translators[layer](h)


@dataclass(kw_only=True)
class TunedLensResult(Result):
    """Held-out KL to the final distribution per layer, logit lens vs tuned lens, and the training history."""

    KIND: ClassVar[str] = "tuned_lens"
    FILE: ClassVar[str] = "tuned_lens.json"

    kl_logit_lens: torch.Tensor  # [n_layers - 1], nats
    kl_tuned_lens: torch.Tensor  # [n_layers - 1], nats
    history: list[dict[str, float]]
    config: dict[str, Any]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        lo, tu = self.kl_logit_lens, self.kl_tuned_lens
        return {
            "method": "tuned lens (Belrose et al. 2023) vs logit lens, held-out KL(final || lens) in nats",
            "mean_kl_logit_lens": round(float(lo.mean()), 4),
            "mean_kl_tuned_lens": round(float(tu.mean()), 4),
            "layers_tuned_better": int((tu < lo).sum()),
            "n_layers_compared": len(lo),
            "kl_logit_lens": [round(float(x), 4) for x in lo],
            "kl_tuned_lens": [round(float(x), 4) for x in tu],
            "steps": self.config["steps"],
        }

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            {
                "layer": range(len(self.kl_logit_lens)),
                "kl_logit_lens": self.kl_logit_lens.tolist(),
                "kl_tuned_lens": self.kl_tuned_lens.tolist(),
            }
        )

    def plot(self) -> go.Figure:
        import plotly.graph_objects as go

        layers = list(range(len(self.kl_logit_lens)))
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=layers, y=self.kl_logit_lens.tolist(), mode="lines+markers", name="logit lens"))
        fig.add_trace(go.Scatter(x=layers, y=self.kl_tuned_lens.tolist(), mode="lines+markers", name="tuned lens"))
        fig.update_layout(
            title={"text": f"Held-out KL to the final distribution — {self.model_name}"},
            xaxis={"title": "layer (resid_post)"},
            yaxis={"title": "KL(final ‖ lens), nats"},
        )
        return fig


def residual_states(model: Model, tokens: torch.Tensor, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual streams ``[n_layers - 1, tokens, d]`` of every layer but the last, and the last layer's
    ``[tokens, d]`` (the output's input), for ``tokens [n, p]`` flattened."""
    L = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_post" for i in range(L)]
    hs, last = [], []
    with torch.no_grad():
        for s in range(0, tokens.shape[0], batch):
            _, cache = model.run(tokens[s : s + batch], cache=names)
            hs.append(torch.stack([cache[n].reshape(-1, model.cfg.d_model) for n in names[:-1]]).float())
            last.append(cache[names[-1]].reshape(-1, model.cfg.d_model).float())
    return torch.cat(hs, 1), torch.cat(last)


def lens_kl(target_lp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(target ‖ softmax(logits))."""
    lp = logits.float().log_softmax(-1)
    return (target_lp.exp() * (target_lp - lp)).sum(-1).mean()


def _held_out_kl(model: Model, lens: TunedLens, hs: torch.Tensor, last: torch.Tensor, batch: int) -> torch.Tensor:
    out = torch.zeros(hs.shape[0], 2, dtype=torch.float64)
    n = last.shape[0]
    with torch.no_grad():
        for s in range(0, n, batch):
            target = unembed_resid(model, last[s : s + batch]).float().log_softmax(-1)
            w = min(batch, n - s) / n
            for layer in range(hs.shape[0]):
                h = hs[layer, s : s + batch]
                out[layer, 0] += w * float(lens_kl(target, unembed_resid(model, h)))
                out[layer, 1] += w * float(lens_kl(target, unembed_resid(model, lens(h, layer))))
    return out.float()


def _save(directory: Path, lens: TunedLens, opt: torch.optim.Optimizer, step: int, history: list, cfg: dict) -> None:
    from interplab.io.atomic import save_tensors
    from interplab.io.checkpoints import optimizer_tensors

    ot, om = optimizer_tensors(opt)
    t = {f"lens.{k}": v for k, v in lens.state_dict().items()} | {f"opt.{k}": v for k, v in ot.items()}
    meta = {"step": str(step), "config": json.dumps(cfg), "history": json.dumps(history), "optimizer": json.dumps(om)}
    save_tensors(directory / "checkpoint.safetensors", t, metadata=meta)


def _load(directory: Path, lens: TunedLens, opt: torch.optim.Optimizer, cfg: dict) -> tuple[int, list] | None:
    from safetensors import safe_open

    from interplab.io.checkpoints import load_optimizer_tensors

    p = directory / "checkpoint.safetensors"
    if not p.exists():
        return None
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    saved = json.loads(meta["config"])
    if saved != cfg:
        diff = {k: (saved.get(k), v) for k, v in cfg.items() if saved.get(k) != v}
        raise ValueError(f"{p} was written for another tuned-lens configuration {diff}; use another directory.")
    lens.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("lens.")})
    load_optimizer_tensors(opt, {k[4:]: v for k, v in t.items() if k.startswith("opt.")}, json.loads(meta["optimizer"]))
    return int(meta["step"]), json.loads(meta["history"])


def train_tuned_lens(
    model: Model,
    cfg: TunedLensConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    on_step: Any = None,
) -> tuple[TunedLens, TunedLensResult]:
    """Train the translators of every layer on corpus chunks and compare held-out KL with the logit lens (Belrose
    et al. 2023; see the module docstring). ``checkpoint_dir``: checkpoints there and resumes from one;
    ``on_step(step, loss)``: progress callback. Returns the lens and the comparison."""
    from interplab.tasks import token_chunks

    cfg = cfg or TunedLensConfig()
    if model.cfg.n_layers < 2:
        raise ValueError("the tuned lens needs a model with at least 2 layers (the last layer's lens is the output).")
    for k in ("n_chunks", "heldout_chunks", "steps", "batch_tokens"):
        if getattr(cfg, k) < 1:
            raise ValueError(f"{k} must be at least 1, got {getattr(cfg, k)}.")
    t0 = time.perf_counter()
    chunks = token_chunks(model, source=cfg.text, n_chunks=cfg.n_chunks + cfg.heldout_chunks, chunk_len=cfg.chunk_len)
    hs, last = residual_states(model, chunks[: cfg.n_chunks])
    hs_eval, last_eval = residual_states(model, chunks[cfg.n_chunks :])
    t_states = time.perf_counter() - t0

    torch.manual_seed(cfg.seed)
    lens = TunedLens(model.cfg.n_layers, model.cfg.d_model)
    params = list(lens.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    conf = {**asdict(cfg), "model": model.name, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model}
    ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
    step, history = 0, []
    if ck is not None:
        ck.mkdir(parents=True, exist_ok=True)
        loaded = _load(ck, lens, opt, conf)
        if loaded is not None:
            step, history = loaded
    n_tok = last.shape[0]
    t1 = time.perf_counter()
    while step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, n_tok, (min(cfg.batch_tokens, n_tok),), generator=g)
        with torch.no_grad():
            target = unembed_resid(model, last[idx]).float().log_softmax(-1)
        with torch.enable_grad():
            loss = sum(
                lens_kl(target, unembed_resid(model, lens(hs[layer, idx], layer))) for layer in range(hs.shape[0])
            )
            assert isinstance(loss, torch.Tensor)
            grads = torch.autograd.grad(loss, params)  # only the translators: the model's weights get no .grad
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        history.append({"step": step, "loss": float(loss.detach()) / hs.shape[0]})
        if on_step is not None:
            on_step(step, history[-1]["loss"])
        if ck is not None and (step % checkpoint_every == 0 or step == cfg.steps):
            _save(ck, lens, opt, step, history, conf)
    t_train = time.perf_counter() - t1
    kl = _held_out_kl(model, lens, hs_eval, last_eval, batch=max(1, cfg.batch_tokens))
    res = TunedLensResult(
        kl_logit_lens=kl[:, 0],
        kl_tuned_lens=kl[:, 1],
        history=history,
        config=conf,
        model_name=model.name,
        settings={
            "train_tokens": int(n_tok),
            "heldout_tokens": int(last_eval.shape[0]),
            "seconds": {"states": round(t_states, 2), "training": round(t_train, 2)},
        },
    )
    return lens, res
