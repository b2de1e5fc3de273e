"""Induction heads and their ablation: the induction score of every head, and whether ablating the induction
heads raises the loss on repeated random tokens far more than ablating as many random heads.

After Olsson et al. (2022), "In-context Learning and Induction Heads" (the induction score and the ablations of
induction heads). The score is exactly the ``induction`` class of
:mod:`interplab.analyses.observational.heads`; :func:`interplab.analyses.causal.ablation.head_ablation_importance`
uses it to flag important heads that are not induction heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.analyses.causal.ablation_runs import resolve_heads
from interplab.hooks import Ablate, Apply, HookContext
from interplab.io.results import Result
from interplab.models.scoring import sequence_losses

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = ["InductionAblationComparison", "compare_induction_ablation", "induction_scores"]


def _repeat_setup(model: Model, batch: int, seq_len: int, seed: int):
    from interplab.tasks import repeated_tokens

    bos = model.default_prepend_bos if model.tokenizer is not None else False
    seq_len = min(seq_len, (model.cfg.n_ctx - int(bos)) // 2)
    if seq_len < 2:
        raise ValueError(f"the model's context n_ctx={model.cfg.n_ctx} is too short for repeated sequences.")
    tokens, offset = repeated_tokens(model, batch=batch, seq_len=seq_len, seed=seed)
    return tokens, offset, seq_len


def induction_scores(
    model: Model, n_seqs: int = 8, batch: int = 8, seq_len: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Induction score per head, its null baseline and membership, all ``[n_layers, n_heads]``:
    ``(score, null, is_induction)``.

    Exactly the ``induction`` class of :mod:`interplab.analyses.observational.heads` (Olsson et al. 2022: attention
    from each token of the second copy of a repeated random sequence to the token after its earlier
    occurrence; null = the same on a deranged second copy; a head is an induction head when
    ``score >= THRESHOLDS["induction"]`` (0.3) and ``score - null >= MARGINS["induction"]`` (0.2)), computed
    on ``n_seqs`` sequences without that module's text and weight-based classes, which this analysis
    does not need."""
    from interplab.analyses.observational.heads import MARGINS, THRESHOLDS, head_inputs, repeated_pattern_scores

    inp = head_inputs(model, n_seqs=n_seqs, seq_len=seq_len, text="random", seed=seed)
    L, o = inp["seq_len"], inp["offset"]
    n_layers = model.cfg.n_layers
    out = []
    for key in ("repeated", "deranged"):
        tot = torch.zeros(n_layers, model.cfg.n_heads, dtype=torch.float64)
        toks = inp[key]
        for b0 in range(0, toks.shape[0], batch):

            def grab(layer: int, tot: torch.Tensor = tot):
                def fn(p: torch.Tensor, ctx: HookContext) -> None:  # p [b, h, q, k]
                    tot[layer] += repeated_pattern_scores(p, L, o)["induction"].double().sum(0).cpu()

                return fn

            with torch.no_grad():
                model.run(
                    toks[b0 : b0 + batch],
                    interventions=[
                        Apply(f"blocks.{layer}.attn.hook_pattern", fn=grab(layer)) for layer in range(n_layers)
                    ],
                )
        out.append((tot / toks.shape[0]).float())
    score, null = out
    member = (score >= THRESHOLDS["induction"]) & (score - null >= MARGINS["induction"])
    return score, null, member


@dataclass
class InductionAblationComparison(Result):
    """Loss on the second half of repeated random sequences: clean, with the induction heads ablated
    together, and with ``n_random`` random sets of as many other heads ablated together. Saved as
    ``induction_ablation.json`` + ``induction_ablation.safetensors``."""

    KIND: ClassVar[str] = "induction_ablation"
    FILE: ClassVar[str] = "induction_ablation.json"

    induction_heads: list[tuple[int, int]]
    random_heads: list[list[tuple[int, int]]]
    clean_loss: float
    induction_loss: float
    random_losses: torch.Tensor  # [n_random]
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def induction_increase(self) -> float:
        return self.induction_loss - self.clean_loss

    @property
    def random_increases(self) -> torch.Tensor:
        return self.random_losses - self.clean_loss

    @property
    def ratio(self) -> float:
        """Induction-head loss increase over the mean random-head loss increase (inf if that is <= 0)."""
        m = float(self.random_increases.mean())
        return self.induction_increase / m if m > 0 else float("inf")

    def headline(self) -> dict[str, Any]:
        r = self.random_increases
        return {
            "model": self.model_name,
            "how": self.settings.get("how"),
            "induction_heads": [list(x) for x in self.induction_heads],
            "clean_loss": round(self.clean_loss, 5),
            "induction_ablated_loss": round(self.induction_loss, 5),
            "induction_increase": round(self.induction_increase, 5),
            "random_increase_mean": round(float(r.mean()), 5),
            "random_increase_max": round(float(r.max()), 5),
            "n_random": int(r.numel()),
            "ratio_to_random_mean": round(self.ratio, 3) if math.isfinite(self.ratio) else None,
        }

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {"ablated": "none", "heads": "", "loss": self.clean_loss, "increase": 0.0},
            {
                "ablated": "induction",
                "heads": str(self.induction_heads),
                "loss": self.induction_loss,
                "increase": self.induction_increase,
            },
        ]
        for i, (hs, loss) in enumerate(zip(self.random_heads, self.random_losses.tolist())):
            rows.append({"ablated": f"random {i}", "heads": str(hs), "loss": loss, "increase": loss - self.clean_loss})
        return pd.DataFrame(rows)

    def plot(self) -> go.Figure:
        """Bars of the loss increase: the induction heads, then each random set of as many heads."""
        import plotly.graph_objects as go

        df = self.to_frame().iloc[1:]
        fig = go.Figure(go.Bar(x=df["ablated"], y=df["increase"], hovertext=df["heads"]))
        fig.update_layout(
            title={
                "text": f"Loss increase on repeated sequences ({self.settings.get('how')} ablation) — "
                f"{self.model_name or 'model'}"
            },
            yaxis_title="Δ loss (nats per token)",
            height=360,
        )
        return fig

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "induction_heads":
            return [(int(a), int(b)) for a, b in value]
        if name == "random_heads":
            return [[(int(a), int(b)) for a, b in hs] for hs in value]
        return value


def compare_induction_ablation(
    model: Model,
    induction_heads: Sequence[tuple[int, int]] | None = None,
    *,
    k: int = 5,
    n_random: int = 10,
    seed: int = 0,
    how: Literal["zero", "mean"] = "mean",
    batch: int = 8,
    seq_len: int = 32,
) -> InductionAblationComparison:
    """Does ablating the induction heads (Olsson et al. 2022) raise the loss on the second half of repeated
    random sequences far more than ablating as many random heads?

    The loss is the mean next-token cross-entropy on the predictions of tokens 2..seq_len of the second copy
    (the ones induction can predict). All listed heads are ablated together; each of the ``n_random`` random
    sets is drawn (seeded) from the other heads.

    Args:
        model: the model.
        induction_heads: ``(layer, head)`` pairs; None takes the ``k`` heads with the highest
            :func:`induction_scores`.
        k: how many heads to take when ``induction_heads`` is None.
        n_random: random head sets to compare with.
        seed: seed of the sequences and of the random sets.
        how: ``"zero"``, or ``"mean"`` = the heads' mean ``z`` over the same sequences and positions.
        batch: repeated sequences.
        seq_len: length of each half (clipped to the model's context).
    """
    if how not in ("zero", "mean"):
        raise ValueError(f"how={how!r}: choose 'zero' or 'mean'.")
    if n_random < 1:
        raise ValueError(f"n_random must be at least 1, got {n_random}.")
    tokens, offset, s = _repeat_setup(model, batch, seq_len, seed)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if induction_heads is None:
        sc = induction_scores(model, n_seqs=batch, batch=batch, seed=seed + 1)[0]
        top = torch.topk(sc.flatten(), k).indices.tolist()
        induction_heads = [(i // H, i % H) for i in top]
    ind = resolve_heads(model, induction_heads, None)
    others = [(layer, h) for layer in range(L) for h in range(H) if (layer, h) not in ind]
    if len(others) < len(ind):
        raise ValueError(
            f"the model has {len(others)} heads besides the {len(ind)} induction heads; "
            "cannot draw as many random heads."
        )
    start = offset + s  # logits at positions start.. predict tokens start+1.. (second copy, after its first token)

    with torch.no_grad():
        clean_logits, cache = model.run(
            tokens, cache=[f"blocks.{layer}.attn.hook_z" for layer in range(L)] if how == "mean" else None
        )
        clean = float(sequence_losses(clean_logits, tokens, start).mean())

        def loss_with(hs):
            by_layer: dict[int, list[int]] = {}
            for layer, h in hs:
                by_layer.setdefault(layer, []).append(h)
            ivs = [
                Ablate(
                    f"blocks.{layer}.attn.hook_z",
                    heads=h,
                    how=how,
                    reference=cache[f"blocks.{layer}.attn.hook_z"] if how == "mean" else None,
                    over=("batch", "pos"),
                )
                for layer, h in by_layer.items()
            ]
            logits = model.run(tokens, interventions=ivs).logits
            return float(sequence_losses(logits, tokens, start).mean())

        ind_loss = loss_with(ind)
        g = torch.Generator().manual_seed(seed)
        rand_sets, rand_losses = [], []
        for _ in range(n_random):
            pick = torch.randperm(len(others), generator=g)[: len(ind)].tolist()
            hs = sorted(others[i] for i in pick)
            rand_sets.append(hs)
            rand_losses.append(loss_with(hs))
    return InductionAblationComparison(
        induction_heads=ind,
        random_heads=rand_sets,
        clean_loss=clean,
        induction_loss=ind_loss,
        random_losses=torch.tensor(rand_losses),
        model_name=model.name,
        settings={
            "how": how,
            "mean_over": "all" if how == "mean" else None,
            "batch": batch,
            "seq_len": s,
            "offset": offset,
            "seed": seed,
            "n_random": n_random,
            "loss_positions": f"predictions of tokens {start + 1}..{tokens.shape[1] - 1}",
        },
    )
