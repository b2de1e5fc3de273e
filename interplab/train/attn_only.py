"""Attention-only transformers and the formation of induction heads — Olsson et al. (2022), "In-context
Learning and Induction Heads"; Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits".

Models: :class:`~interplab.models.toy.ToyTransformer` with ``d_mlp = 0`` (attention only), learned
positions, **no LayerNorm by default** (``normalization``: ``"none"``, ``"LN"`` or ``"RMS"``), one model per
layer count in ``layers`` (``interplab train attn-only --layers 1..4``), each in ``RUN_DIR/L<n>/`` and
loadable with ``interplab.load(RUN_DIR/"L<n>")``.

Why no LayerNorm: measured here, 2-layer models *with* LayerNorm learn to copy from context just as well,
but through shifted circuits — layer-0 heads copy earlier tokens forward by a fixed distance (one of them
1 back, another 2 back; or 8-10 back), and the layer-1 heads attend to a key *after* the token that follows
the earlier occurrence (``i - S + 2`` up to ``i - S + 10`` on the repeated probe), reading the answer from
the layer-0 heads' output (V-composition) instead of from the key's own token. Olsson et al.'s induction
score (attention to ``i - S + 1``) misses those circuits; :func:`induction_offset_profile` shows where the
heads look. Without LayerNorm the same data and steps give classic induction heads (score ~0.8); it is
the normalisation before attention that matters (LayerNorm only before the unembedding: classic heads;
only before attention: shifted; RMSNorm: shifted).

Data (``data``):

* ``"synthetic"`` (default): ``n_ctx`` uniform random tokens in which one subsequence of random length
  ``[n_ctx/8, n_ctx/4]`` (``[n_ctx/4, n_ctx/2)`` below 64 tokens) is copied from a random earlier place
  anywhere in the context to a random later one (varying offset and source, so no positional shortcut
  predicts the copy); only copying from context is learnable. The model's
  vocabulary is then ``synthetic_vocab`` (so the head detectors' random probes use trained tokens only).
* ``"text"``: **byte-level** tokens (vocabulary 256: the UTF-8 bytes) of the standard library's
  ``pydoc_data.topics`` (or ``text_file``); the last 10 % of the bytes is held out for evaluation.
* ``"mixed"``: each training sequence is text or synthetic with probability 1/2.

Tracked at every log step (``metrics.jsonl``): loss on held-out text and on the repeated-random-tokens
probe (``n_ctx/2`` distinct tokens repeated twice; first and second half separately), the **ICL score**
(Olsson et al.: loss late in the context minus loss early; here mean loss over positions ``[3/4 n_ctx, n_ctx)``
minus over ``[n_ctx/16, n_ctx/8)``,
on held-out text when text is used, else on the synthetic sequences; negative = in-context learning),
and per-head induction and previous-token scores from :func:`interplab.analyses.observational.heads.head_scores`
(repeated random tokens with a deranged null; random-token input for previous-token).
At the end: Q/K/V-composition scores (:func:`interplab.analyses.weights.composition_scores`, Elhage
et al. 2021) and head ablation importance on held-out data
(:func:`interplab.analyses.causal.ablation.head_ablation_importance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from interplab.models.toy import ToyConfig, ToyTransformer
from interplab.runtime import torch_threads
from interplab.train.result import TrainingResult
from interplab.train.trainer import Trainer, read_metrics


@dataclass
class AttnOnlyConfig:
    layers: tuple[int, ...] = (1, 2)
    # defaults: the synthetic recipe measured in the README (induction heads at ~700 steps, 2.5 min for 1..4)
    data: str = "synthetic"  # synthetic | text | mixed
    text_file: str = ""  # default: pydoc_data.topics
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    n_ctx: int = 32
    synthetic_vocab: int = 64  # synthetic tokens are drawn from [0, synthetic_vocab)
    steps: int = 1500
    batch: int = 128
    lr: float = 1e-2
    weight_decay: float = 0.01
    warmup: int = 50
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 500
    eval_seqs: int = 8
    normalization: str = "none"  # none | LN | RMS (see the module docstring for why none is the default)
    threads: int = 1

    def validate(self) -> None:
        if self.data not in ("synthetic", "text", "mixed"):
            raise ValueError(f"data must be synthetic, text or mixed, not {self.data!r}.")
        if not self.layers or min(self.layers) < 1:
            raise ValueError(f"layers must be positive layer counts, got {self.layers}.")
        if self.n_ctx < 16 or self.n_ctx % 2:
            raise ValueError("n_ctx must be an even number >= 16.")
        if not 2 <= self.synthetic_vocab <= 256:
            raise ValueError("synthetic_vocab must be in [2, 256] (the byte vocabulary).")
        if self.normalization not in ("none", "LN", "RMS"):
            raise ValueError(f"normalization must be none, LN or RMS, not {self.normalization!r}.")
        if self.synthetic_vocab < self.n_ctx // 2:
            raise ValueError(
                f"synthetic_vocab ({self.synthetic_vocab}) must be >= n_ctx/2 ({self.n_ctx // 2}) for distinct tokens."
            )


# ------------------------------------------------------------------------------------------ data
def text_bytes(cfg: AttnOnlyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from interplab.tasks.corpus import corpus_bytes

    return corpus_bytes(cfg.text_file or None)


def repeated_probe(n: int, cfg: AttnOnlyConfig, g: torch.Generator) -> torch.Tensor:
    """Evaluation probe: ``n_ctx/2`` distinct random tokens repeated twice (Olsson et al.)."""
    half = cfg.n_ctx // 2
    seg = torch.argsort(torch.rand(n, cfg.synthetic_vocab, generator=g), dim=1)[:, :half]
    return torch.cat([seg, seg], 1)


def synthetic(n: int, cfg: AttnOnlyConfig, g: torch.Generator) -> torch.Tensor:
    """Training sequences: uniform random tokens with one repeated subsequence of random length
    ``[n_ctx/8, n_ctx/4]`` copied from a random earlier place (anywhere the copy still fits after it) to a
    random later place, so the offset between the copies and the source position vary and a purely
    positional attention head cannot predict the repeat."""
    T = cfg.n_ctx
    x = torch.randint(0, cfg.synthetic_vocab, (n, T), generator=g)
    seg = (
        torch.randint(T // 8, T // 4 + 1, (n, 1), generator=g)
        if T >= 64
        else torch.randint(T // 4, T // 2 - 1, (n, 1), generator=g)
    )
    s1 = (torch.rand(n, 1, generator=g) * (T - 2 * seg + 1)).long()
    s2 = s1 + seg + (torch.rand(n, 1, generator=g) * (T - 2 * seg - s1 + 1)).long()
    j = torch.arange(T)[None]
    idx = torch.where((j >= s2) & (j < s2 + seg), j - (s2 - s1), j)
    return x.gather(1, idx)


def text_windows(data: torch.Tensor, n: int, n_ctx: int, g: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, data.numel() - n_ctx, (n,), generator=g)
    return data[start[:, None] + torch.arange(n_ctx)]


def batch(cfg: AttnOnlyConfig, n: int, g: torch.Generator, text: torch.Tensor | None) -> torch.Tensor:
    if cfg.data == "synthetic" or text is None:
        return synthetic(n, cfg, g)
    if cfg.data == "text":
        return text_windows(text, n, cfg.n_ctx, g)
    syn = synthetic(n, cfg, g)
    txt = text_windows(text, n, cfg.n_ctx, g)
    use_text = torch.rand(n, generator=g) < 0.5
    return torch.where(use_text[:, None], txt, syn)


def per_position_loss(model: ToyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens).logits[:, :-1]
    return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")  # [b, n-1], target at pos+1


def icl_score(pos_loss: torch.Tensor) -> float:
    """Mean loss on targets at positions [3/4 n, n) minus [n/16, n/8) (Olsson et al.'s late minus early)."""
    n = pos_loss.shape[1] + 1
    late = pos_loss[:, 3 * n // 4 - 1 :].mean()
    early = pos_loss[:, max(1, n // 16) - 1 : n // 8 - 1].mean()
    return float(late - early)


def make_model(cfg: AttnOnlyConfig, n_layers: int) -> ToyTransformer:
    return ToyTransformer(
        ToyConfig(
            n_layers=n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_head=cfg.d_head,
            d_mlp=0,
            d_vocab=cfg.synthetic_vocab if cfg.data == "synthetic" else 256,
            n_ctx=cfg.n_ctx,
            normalization=None if cfg.normalization == "none" else cfg.normalization,
            positional="learned",
            attn_bias=True,
            seed=cfg.seed + n_layers,
        )
    )


def _head_scores(model: ToyTransformer, cfg: AttnOnlyConfig):
    from interplab.analyses.observational.heads import head_scores
    from interplab.models.model import Model

    m = Model(model, name=f"attn-only-{model.config.n_layers}L")
    res = head_scores(
        m,
        n_seqs=cfg.eval_seqs,
        batch=cfg.eval_seqs,
        seq_len=cfg.n_ctx // 2,
        text="random",
        text_len=cfg.n_ctx,
        prepend_bos=False,
        copying=False,
        seed=123,
    )
    model.train()  # Model() put it in eval mode; the trainer decides
    return res


def train_one(
    cfg: AttnOnlyConfig, n_layers: int, run_dir: Path, resume: bool, progress: bool, callbacks: list | None = None
) -> tuple[ToyTransformer, list[dict]]:
    d = run_dir / f"L{n_layers}"
    model = make_model(cfg, n_layers)
    if resume and (d / "model.safetensors").exists() and (d / "done").exists():
        return ToyTransformer.from_pretrained(d), read_metrics(d)
    train_txt, eval_txt = text_bytes(cfg) if cfg.data != "synthetic" else (None, None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed + 100 * n_layers)
    ge = torch.Generator().manual_seed(999)
    eval_syn = repeated_probe(cfg.eval_seqs * 4, cfg, ge)
    eval_text = text_windows(eval_txt, cfg.eval_seqs * 4, cfg.n_ctx, ge) if eval_txt is not None else None
    half = cfg.n_ctx // 2

    def step_fn(step: int) -> torch.Tensor:
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
        for grp in opt.param_groups:
            grp["lr"] = lr
        return per_position_loss(model, batch(cfg, cfg.batch, g, train_txt)).mean()

    def eval_fn(step: int) -> dict:
        syn = per_position_loss(model, eval_syn)
        rec: dict[str, Any] = {
            "synthetic_loss_first_half": float(syn[:, : half - 1].mean()),
            "synthetic_loss_second_half": float(syn[:, half - 1 :].mean()),
        }
        if eval_text is not None:
            tl = per_position_loss(model, eval_text)
            rec["text_loss"] = float(tl.mean())
            rec["icl_score"] = icl_score(tl)
        else:
            rec["icl_score"] = icl_score(syn)
        rec["loss"] = rec.get("text_loss", float(syn.mean()))
        hs = _head_scores(model, cfg)
        ind, prev = hs.scores["induction"], hs.scores["previous_token"]
        rec["induction_scores"] = [[round(float(x), 4) for x in row] for row in ind]
        rec["prev_token_scores"] = [[round(float(x), 4) for x in row] for row in prev]
        rec["max_induction_score"] = float(ind.max())
        rec["max_prev_token_score"] = float(prev.max())
        return rec

    tr = Trainer.for_config(
        cfg,
        model,
        opt,
        step_fn,
        eval_fn,
        d,
        callbacks=callbacks,
        generators={"data": g},
        progress=progress,
        description=f"attn-only {n_layers}L",
    )
    from interplab.train.trainer import latest_checkpoint

    metrics = tr.fit(resume=resume and latest_checkpoint(d) is not None)
    model.save_pretrained(d)
    (d / "done").write_text(f"{tr.steps_per_second:.3f}\n")
    return model, metrics


OFFSETS = (-1, 0, 1, 2, 3)


def induction_offset_profile(model: ToyTransformer, cfg: AttnOnlyConfig, n: int = 32, seed: int = 5) -> torch.Tensor:
    """Mean attention ``[layer, head, k]`` from each second-half token ``i`` of the repeated probe to key
    ``i - S + 1 + k`` for ``k`` in :data:`OFFSETS` (``S = n_ctx/2``): ``k = 0`` is Olsson et al.'s induction
    score, ``k = -1`` the duplicate-token target, ``k = 1, 2`` shifted induction circuits (see the module docstring)."""
    from interplab.analyses.observational.heads import repeated_offset_scores
    from interplab.models.model import Model

    probe = repeated_probe(n, cfg, torch.Generator().manual_seed(seed))
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layers)]
    _, cache = Model(model).run(probe, cache=names)
    return torch.stack([repeated_offset_scores(cache[name], cfg.n_ctx // 2, OFFSETS).mean(0) for name in names])


def analyse(model: ToyTransformer, cfg: AttnOnlyConfig, metrics: list[dict]) -> dict:
    from interplab.models.model import Model

    m = Model(model, name=f"attn-only-{model.config.n_layers}L")
    last = metrics[-1]
    ind = torch.tensor(last["induction_scores"])
    L, H = ind.shape
    i = int(ind.flatten().argmax())
    out: dict[str, Any] = {
        "n_layers": L,
        "final_loss": last["loss"],
        "icl_score": last["icl_score"],
        "max_induction_score": float(ind.max()),
        "max_induction_head": [i // H, i % H],
        "max_prev_token_score": last["max_prev_token_score"],
        "synthetic_loss_first_half": last["synthetic_loss_first_half"],
        "synthetic_loss_second_half": last["synthetic_loss_second_half"],
    }
    prof = induction_offset_profile(model, cfg)
    out["induction_offset_profile"] = {
        "offsets": list(OFFSETS),
        "attention": [[[round(float(x), 4) for x in h] for h in layer] for layer in prof],
    }
    best = prof.flatten(0, 1).max(0).values
    out["max_attention_by_offset"] = {str(k): round(float(v), 4) for k, v in zip(OFFSETS, best)}
    # phase change: first logged step where the max induction score exceeds 0.3 (heads.py's membership threshold)
    out["induction_step"] = next((r["step"] for r in metrics if r["max_induction_score"] >= 0.3), None)
    # behavioural phase change: first logged step where the probe's repeated-half loss is below 1 nat
    out["copy_step"] = next((r["step"] for r in metrics if r["synthetic_loss_second_half"] < 1.0), None)
    if L >= 2:
        from interplab.analyses.weights import composition_scores

        comp = composition_scores(m, n_baseline=100)
        out["composition_top"] = {k: comp.top_pairs(k, 3) for k in comp.kinds}
        out["composition_baseline_mean"] = comp.baseline_mean
        out["max_k_composition"] = comp.top_pairs("K", 1)[0] if comp.top_pairs("K", 1) else None
    from interplab.analyses.causal.ablation import head_ablation_importance

    g = torch.Generator().manual_seed(4242)
    toks = synthetic(16, cfg, g) if cfg.data == "synthetic" else text_windows(text_bytes(cfg)[1], 16, cfg.n_ctx, g)
    abl = head_ablation_importance(m, toks, how="mean", induction_score=ind, top_k=min(5, L * H))
    out["ablation_top_heads"] = abl.headline()["top_heads"]
    out["ablation_on"] = "held-out synthetic sequences" if cfg.data == "synthetic" else "held-out pydoc text (bytes)"
    return out


@dataclass(kw_only=True)
class AttnOnlyResult(TrainingResult):
    metrics: dict[str, list[dict]]  # per model ("2L"): one dict per logged step
    models: dict[str, dict]  # per model: the analysis of the trained model

    FILE: ClassVar[str] = "attn_only.json"
    KIND: ClassVar[str] = "attn-only"

    def to_frame(self):
        import pandas as pd

        rows = []
        for name, ms in self.metrics.items():
            for r in ms:
                rows.append({"model": name, **{k: v for k, v in r.items() if not isinstance(v, list)}})
        return pd.DataFrame(rows)

    def plot(self):
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1, cols=3, subplot_titles=("loss", "loss on repeated half (synthetic)", "max induction score")
        )
        for name, ms in self.metrics.items():
            s = [r["step"] for r in ms]
            fig.add_scatter(x=s, y=[r["loss"] for r in ms], name=f"{name} loss", row=1, col=1)
            fig.add_scatter(
                x=s, y=[r["synthetic_loss_second_half"] for r in ms], name=f"{name} repeated half", row=1, col=2
            )
            fig.add_scatter(x=s, y=[r["max_induction_score"] for r in ms], name=f"{name} induction", row=1, col=3)
        return fig.update_layout(height=380, title="Attention-only models: loss and induction score over training")

    def plot_offsets(self):
        """Per model: the largest attention any head pays from token i of the repeated probe to key i-S+1+k."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for name, m in self.models.items():
            prof = m.get("max_attention_by_offset")
            if prof:
                fig.add_bar(x=[f"k={k}" for k in prof], y=list(prof.values()), name=name)
        return fig.update_layout(
            barmode="group",
            height=350,
            yaxis_title="max attention over heads",
            title="Where the heads look on the repeated probe: key i-S+1+k "
            "(k=0: induction; k=-1: duplicate token; k=1,2: shifted circuits)",
        )

    def plot_heads(self, name: str):
        from plotly.subplots import make_subplots

        ms = self.metrics[name]
        s = [r["step"] for r in ms]
        fig = make_subplots(
            rows=1, cols=2, subplot_titles=("induction score per head", "previous-token score per head")
        )
        L, H = len(ms[0]["induction_scores"]), len(ms[0]["induction_scores"][0])
        for layer in range(L):
            for h in range(H):
                for col, key in enumerate(("induction_scores", "prev_token_scores"), start=1):
                    fig.add_scatter(
                        x=s,
                        y=[r[key][layer][h] for r in ms],
                        name=f"L{layer}H{h}",
                        row=1,
                        col=col,
                        legendgroup=f"{layer}.{h}",
                        showlegend=col == 1,  # one legend entry per head
                    )
        return fig.update_layout(height=350, title=f"{name}: per-head scores across checkpoints")


def train(
    cfg: AttnOnlyConfig, run_dir, resume: bool = False, progress: bool = True, callbacks: list | None = None
) -> AttnOnlyResult:
    cfg.validate()
    models, metrics = {}, {}
    with torch_threads(cfg.threads):
        for n in cfg.layers:
            model, ms = train_one(cfg, n, Path(run_dir), resume, progress, callbacks)
            models[f"{n}L"] = analyse(model, cfg, ms)
            metrics[f"{n}L"] = ms
    head: dict[str, Any] = {
        k: {name: m[k] for name, m in models.items()}
        for k in ("final_loss", "icl_score", "synthetic_loss_second_half", "induction_step", "copy_step")
    }
    head["max_induction_score"] = {
        name: [round(m["max_induction_score"], 4), m["max_induction_head"]] for name, m in models.items()
    }
    head["max_prev_token_score"] = {name: round(m["max_prev_token_score"], 4) for name, m in models.items()}
    head["max_attention_by_offset"] = {name: m["max_attention_by_offset"] for name, m in models.items()}
    head["max_k_composition"] = {
        name: m.get("max_k_composition") for name, m in models.items() if "max_k_composition" in m
    }
    head["tokenizer"] = (
        f"synthetic token ids 0..{cfg.synthetic_vocab - 1}"
        if cfg.data == "synthetic"
        else "bytes (UTF-8), vocabulary 256"
    )
    return AttnOnlyResult.saved(
        cfg,
        run_dir,
        models=models,
        metrics=metrics,
        summary=head,
        settings={
            "paper": "Olsson et al. 2022; Elhage et al. 2021",
            "icl_score": "late [3n/4,n) minus early [n/16,n/8)",
        },
    )
