"""Base vs fine-tuned: what did a fine-tune change, and did it rewire heads the base model already used or build
new ones?

:func:`compare_models` runs, on the same tokens for both models:

1. **Loss** — the per-token loss comparison of :func:`interplab.analyses.diffing.diff_models` (Olsson et al.
   2022) on the fine-tuning distribution (``data``) and on unrelated text (``other``, default the built-in
   :mod:`interplab.finetune.texts`); ``mean_loss_delta = mean loss tuned − mean loss base`` (nats per token,
   < 0: the fine-tune predicts the text better) and the token types that changed most.
2. **Heads** — per head: the Jensen–Shannon divergence of the attention patterns on a fixed probe set (the
   data and the other chunks; :func:`interplab.finetune.head_diff.attention_js`); the change of every head-detector
   score (:func:`interplab.analyses.observational.heads.head_scores`, same seeded inputs for both); the change of
   mean-ablation importance on the fine-tuning text
   (:func:`interplab.analyses.causal.ablation.head_ablation_importance`); cross-model activation patching of
   each head's and MLP's output on the fine-tuning text (Prakash et al. 2024;
   :func:`interplab.finetune.head_diff.cross_model_patching`): the fraction of the loss change each one carries.
3. **Circuits** (optional) — the IOI procedure (Wang et al. 2022; :func:`interplab.analyses.causal.ioi.ioi_circuit`)
   on both models with the same prompts: Jaccard overlap of the top-``k`` heads of their head-patching grids at
   END (``|value|``, k = ``top_k``) and of their circuits' heads; the faithfulness of the *base* model's circuit
   inside the tuned model (everything outside it mean-ablated over the tuned model's own corrupt runs,
   :func:`~interplab.analyses.causal.circuits.circuit_metric`); cross-model patching of heads on the IOI logit
   difference. With ``ioi="auto"`` it is skipped, with the reason, when the prompts cannot be built (too few
   single-token names) or the base model does not do the task (mean clean logit difference ≤ 0).
4. **Weights** — per matrix, ``||ΔW|| / ||W||`` and the effective rank of ``ΔW``
   (:mod:`interplab.finetune.weight_diff`); per head the relative change of ``W_Q, W_K, W_V, W_O``.
5. **Activation difference lens** (Minder et al. 2025; :mod:`interplab.finetune.adl`) on the first 5 tokens
   of the unrelated documents.

Verdict rule
------------
Let ``r_h`` be head ``h``'s recovered fraction of the loss change on the fine-tuning text (cross-model
patching, 1 = patching that head alone turns the base model's loss into the tuned model's; 0 for heads the
attribution screen left out of the exact patching), ``R_heads`` the
fraction recovered by patching every head at once, and *important before* the heads in the top
``important_frac`` (default 20 %) of the base model's mean-ablation importance on the same text whose 95 %
confidence interval lies above 0. With ``S = Σ_h max(r_h, 0)`` and ``S_pre`` the same sum over the heads
important before, ``frac_change_in_preexisting_heads = S_pre / S``. The verdict is the first that applies:

* ``"no change"`` — every shared weight is bit-identical (``weight_update_rel_norm == 0``);
* ``"no loss change"`` — ``|mean_loss_delta_in| < 1e-4`` nats per token: nothing to attribute;
* ``"not carried by attention heads"`` — ``R_heads < 0.5`` (less than half of the loss change passes through
  the heads' outputs; it lives in the MLPs, embeddings or norms);
* ``"rewired existing heads"`` — ``frac_change_in_preexisting_heads ≥ 0.5``;
* ``"created new heads"`` — otherwise: most of what the heads carry goes through heads that were not important
  before.

>>> res = compare_models("smollm2-135m", "runs/ft-pydoc")
>>> res.headline()["verdict"]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from interplab.io.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from interplab.models.model import Model

__all__ = [
    "VERDICTS",
    "CompareResult",
    "IOIMode",
    "check_comparable",
    "compare_models",
    "read_data_text",
    "tuned_data_spec",
    "verdict",
]

IOIMode = Literal["auto", "always", "never"]
VERDICTS = (
    "no change",
    "no loss change",
    "not carried by attention heads",
    "rewired existing heads",
    "created new heads",
)
LOSS_EPS = 1e-4
CARRIED_MIN = 0.5
PREEXISTING_MIN = 0.5
CARD = "finetune.json"


# ============================================================================================ inputs


def check_comparable(base: Model, tuned: Model) -> None:
    """Refuse two models that cannot be compared head for head and token for token: different vocabularies
    (size or tokenizer) or different layer / head counts or widths — a ``ValueError`` saying which."""
    a, b = base.cfg, tuned.cfg
    if a.d_vocab != b.d_vocab:
        raise ValueError(
            f"the vocabularies differ: {base.name!r} has {a.d_vocab} tokens, {tuned.name!r} {b.d_vocab}. "
            "Compare a fine-tune with the model it was tuned from (one tokenizer); for models with different "
            "tokenizers use `interplab diff` (it aligns them on text)."
        )
    if (base.tokenizer is None) != (tuned.tokenizer is None):
        raise ValueError("one model has a tokenizer and the other has none; both need the same tokenizer.")
    if base.tokenizer is None:
        raise ValueError(f"{base.name!r} has no tokenizer; the comparison runs on text and needs one.")
    if base.tokenizer.get_vocab() != tuned.tokenizer.get_vocab():
        raise ValueError(
            f"the vocabularies differ: {base.name!r} and {tuned.name!r} have tokenizers of the same size that map "
            "tokens to different ids. Compare a fine-tune with the model it was tuned from."
        )
    diffs = [
        f"{k}: {getattr(a, k)} vs {getattr(b, k)}"
        for k in ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model", "d_mlp")
        if getattr(a, k) != getattr(b, k)
    ]
    if diffs:
        raise ValueError(
            f"the architectures differ ({'; '.join(diffs)}): a head-by-head comparison needs the same layers and "
            "heads. Compare a fine-tune with the model it was tuned from."
        )


def tuned_data_spec(tuned: str | Path) -> str | None:
    """The fine-tuning data named in a fine-tuned directory's card (``finetune.json``, written by
    :func:`interplab.finetune.finetune`: ``data.source``, e.g. ``"corpus:pydoc"`` or the path of the text / JSONL
    file; or a plain ``data`` string), or None when there is no card or it names no reusable source."""
    card = Path(tuned) / CARD
    if not card.is_file():
        return None
    try:
        d = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    data = d.get("data") if isinstance(d, dict) else None
    src = data.get("source") if isinstance(data, dict) else data
    if not isinstance(src, str) or src == "in-memory":
        return None
    if src.startswith("corpus:") or Path(src).is_file():
        return src
    beside = card.parent / src
    return str(beside) if beside.is_file() else src


def read_data_text(spec: str | Path | None) -> str:
    """The text of a data spec: None / ``"pydoc"`` / ``"corpus:pydoc"`` (the built-in corpus), ``"other"`` (the
    built-in unrelated text), a ``.jsonl`` file (each line's ``text``, or ``prompt`` + ``completion``, joined by
    blank lines) or a UTF-8 text file."""
    from interplab.finetune.texts import other_text
    from interplab.tasks.corpus import corpus_text

    s = "pydoc" if spec is None else str(spec)
    if s.startswith("corpus:"):
        s = s.removeprefix("corpus:")
    if s == "other":
        return other_text()
    if s == "pydoc":
        return corpus_text(None)
    p = Path(s)
    if not p.is_file():
        raise FileNotFoundError(
            f"data {s!r} is neither a built-in corpus ('pydoc', 'other') nor an existing file (.txt or .jsonl)."
        )
    if p.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: line {i} is not valid JSON ({e.msg}).") from None
            fields = row if isinstance(row, dict) else {}
            text, prompt, completion = fields.get("text"), fields.get("prompt"), fields.get("completion")
            doc = text if isinstance(text, str) else None
            if doc is None and isinstance(prompt, str) and isinstance(completion, str):
                doc = prompt + completion
            if doc is None:
                raise ValueError(f"{p}: line {i} has neither a 'text' string nor 'prompt' and 'completion' strings.")
            docs.append(doc)
        return "\n\n".join(docs)
    return p.read_text(encoding="utf-8", errors="replace")


def _chunks(model: Model, text: str, n_chunks: int, chunk_len: int, what: str) -> torch.Tensor:
    """``[n, chunk_len]`` token ids of ``text``: ``n_chunks`` chunks, or as many as the text holds (at least 2)."""
    from interplab.analyses.diffing.alignment import prepare_tokens

    ids = model.need_tokenizer()(text, add_special_tokens=False)["input_ids"]
    body = chunk_len - (1 if model.default_prepend_bos else 0)
    fit = len(ids) // max(1, body)
    if fit < 2:
        raise ValueError(
            f"the {what} text has {len(ids)} tokens, fewer than 2 chunks of {chunk_len}; give a longer text or a "
            "smaller chunk length."
        )
    t, _, _ = prepare_tokens(model, None, text, None, min(n_chunks, fit), chunk_len, None)
    return t


# ============================================================================================ verdict


def verdict(
    weight_rel: float,
    loss_delta_in: float,
    recovered: torch.Tensor,
    recovered_all_heads: float,
    important_before: torch.Tensor,
) -> tuple[str, dict[str, Any]]:
    """The verdict of the module docstring's rule and the numbers it read."""
    pos = recovered.double().clamp_min(0)
    s = float(pos.sum())
    s_pre = float(pos[important_before].sum())
    frac = s_pre / s if s > 0 else 0.0
    detail = {
        "weight_update_rel_norm": weight_rel,
        "mean_loss_delta_in": loss_delta_in,
        "recovered_all_heads": recovered_all_heads,
        "sum_positive_head_recovered": s,
        "sum_positive_head_recovered_preexisting": s_pre,
        "frac_change_in_preexisting_heads": frac,
        "n_important_before": int(important_before.sum()),
        "rule": (
            f"no change if weights identical; no loss change if |delta_in| < {LOSS_EPS}; not carried by attention "
            f"heads if recovered_all_heads < {CARRIED_MIN}; rewired existing heads if "
            f"frac_change_in_preexisting_heads >= {PREEXISTING_MIN}; else created new heads"
        ),
    }
    if weight_rel == 0.0:
        return "no change", detail
    if abs(loss_delta_in) < LOSS_EPS:
        return "no loss change", detail
    if recovered_all_heads < CARRIED_MIN:
        return "not carried by attention heads", detail
    if frac >= PREEXISTING_MIN:
        return "rewired existing heads", detail
    return "created new heads", detail


def important_heads(importance: torch.Tensor, ci_low: torch.Tensor, frac: float) -> torch.Tensor:
    """Boolean ``[L, H]``: the top ``frac`` of heads by ``importance`` (at least one) whose CI lower bound is > 0."""
    flat = importance.flatten().nan_to_num(float("-inf"))
    k = max(1, round(frac * flat.numel()))
    top = torch.zeros_like(flat, dtype=torch.bool)
    top[flat.argsort(descending=True, stable=True)[:k]] = True
    return (top.view_as(importance) & (ci_low > 0)).cpu()


def jaccard(a: set, b: set) -> float:
    """``|a ∩ b| / |a ∪ b|`` (1 for two empty sets)."""
    return len(a & b) / len(a | b) if (a or b) else 1.0


def top_head_set(values: torch.Tensor, k: int) -> set[tuple[int, int]]:
    """The ``k`` heads with the largest ``|value|`` (ties by position)."""
    flat = values.abs().flatten().nan_to_num(0.0)
    H = values.shape[1]
    idx = flat.argsort(descending=True, stable=True)[:k].tolist()  # ties by position
    return {(i // H, i % H) for i in idx}


# ============================================================================================ result


def _r(x: float | None, nd: int = 6) -> float | None:
    from interplab.analyses.diffing.models import rounded

    return None if x is None else rounded(x, nd)


@dataclass
class CompareResult(Result):
    """What a fine-tune changed (see the module docstring). ``[L, H]`` tensors per head: ``attention_js`` (bits),
    ``ablation_base`` / ``ablation_tuned`` (mean-ablation loss increase, nats), ``ablation_ci_low_base``,
    ``cmap_heads`` (recovered fraction of the loss change; NaN where the screen left a head out),
    ``cmap_estimate`` (its attribution estimate for every head, or None without a screen), ``head_weight_rel``;
    ``cmap_mlps`` ``[L]``;
    ``detector_base`` / ``detector_tuned``: head-detector scores per class. ``loss``: the two-model diff
    headlines on ``"in"`` (fine-tuning text) and ``"other"``; ``weights``: one row per shared parameter;
    ``adl``: the activation difference lens; ``circuits``: the IOI comparison or ``{"skipped": reason}``."""

    KIND: ClassVar[str] = "finetune_compare"
    FILE: ClassVar[str] = "compare.json"

    base_name: str
    tuned_name: str
    loss: dict[str, Any]
    attention_js: torch.Tensor
    detector_base: dict[str, torch.Tensor]
    detector_tuned: dict[str, torch.Tensor]
    ablation_base: torch.Tensor
    ablation_tuned: torch.Tensor
    ablation_ci_low_base: torch.Tensor
    important_before: torch.Tensor
    cmap_heads: torch.Tensor
    cmap_mlps: torch.Tensor
    cmap_estimate: torch.Tensor | None
    cmap: dict[str, Any]
    head_weight_rel: torch.Tensor
    weights: list[dict[str, Any]]
    weight_update_rel_norm: float
    adl: dict[str, Any]
    circuits: dict[str, Any]
    verdict: str
    verdict_detail: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def n_layers(self) -> int:
        return int(self.attention_js.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.attention_js.shape[1])

    def detector_delta(self) -> dict[str, torch.Tensor]:
        """Per class, tuned − base head-detector score ``[L, H]``."""
        return {c: self.detector_tuned[c] - self.detector_base[c] for c in self.detector_base}

    def top(self, values: torch.Tensor, k: int = 10, signed: bool = False) -> list[list[Any]]:
        """``[[layer, head, value], ...]`` of the ``k`` heads with the largest value (``|value|`` when ``signed``);
        NaN (not evaluated) last, shown as None."""
        flat = values.flatten()
        key = (flat.abs() if signed else flat).nan_to_num(float("-inf"), neginf=float("-inf"))
        H = values.shape[1]
        idx = key.argsort(descending=True, stable=True)[:k].tolist()  # ties by position
        return [[i // H, i % H, _r(float(flat[i]))] for i in idx]

    def changed_matrices(self, min_rel: float = 0.0) -> list[str]:
        """Names of the parameters whose relative update exceeds ``min_rel``."""
        return [w["name"] for w in self.weights if w["rel_norm"] > min_rel]

    def headline(self, k: int = 10) -> dict[str, Any]:
        """The JSON contract (``mean_loss_delta_in``, ``mean_loss_delta_other``, ``head_js_max``,
        ``circuit_jaccard`` — the Jaccard overlap of the top-k heads of the two IOI patching grids —,
        ``weight_update_rel_norm``, ``verdict``) and the numbers behind them, including ``circuit_heads_jaccard``
        (of the two discovered circuits' heads) and ``faithfulness_base_circuit_in_tuned`` (None without them)."""
        circ = self.circuits
        mats = sorted((w for w in self.weights if w["delta_norm"] > 0), key=lambda w: (-w["rel_norm"], w["name"]))[:k]
        return {
            "base": self.base_name,
            "tuned": self.tuned_name,
            "mean_loss_delta_in": _r(self.loss["in"]["mean_diff"]),
            "mean_loss_delta_other": _r(self.loss["other"]["mean_diff"]),
            "head_js_max": _r(float(self.attention_js.max())),
            "circuit_jaccard": _r(circ.get("top_k_jaccard")) if "skipped" not in circ else None,
            # circuit_jaccard (kept for compatibility) is the top-k heads of the IOI patching grids; these two are
            # the discovered circuits' heads and the base circuit's faithfulness inside the tuned model
            "circuit_heads_jaccard": _r(circ.get("circuit_jaccard")),
            "faithfulness_base_circuit_in_tuned": circ.get("faithfulness_base_circuit_in_tuned"),
            "weight_update_rel_norm": _r(self.weight_update_rel_norm, 8),
            "verdict": self.verdict,
            "verdict_detail": {k2: (_r(v) if isinstance(v, float) else v) for k2, v in self.verdict_detail.items()},
            "mean_loss_in": {"base": self.loss["in"]["mean_loss_a"], "tuned": self.loss["in"]["mean_loss_b"]},
            "mean_loss_other": {"base": self.loss["other"]["mean_loss_a"], "tuned": self.loss["other"]["mean_loss_b"]},
            "tokens_changed_most_in": [
                {"token": t["token"], "count": t["count"], "mean_diff": t["mean_diff"]}
                for t in self.loss["in"]["top_tokens"][:k]
            ],
            "top_js_heads": self.top(self.attention_js, k),
            "top_cmap_heads": self.top(self.cmap_heads, k),
            "cmap_recovered_all_heads": _r(self.cmap.get("recovered_all_heads")),
            "cmap_recovered_all_mlps": _r(self.cmap.get("recovered_all_mlps")),
            "top_ablation_change_heads": self.top(self.ablation_tuned - self.ablation_base, k, signed=True),
            "detector_delta_max": {c: _r(float(d.abs().max())) for c, d in self.detector_delta().items()},
            "top_weight_updates": [
                {
                    "name": w["name"],
                    "rel_norm": _r(w["rel_norm"], 8),
                    "effective_rank": _r(w.get("effective_rank"), 3),
                }
                for w in mats
            ],
            "adl_top_tokens": [t["token"] for t in self.adl.get("top_tokens", [])][:k],
            "adl_relevance": _r(self.adl.get("relevance")),
            "adl_chance": _r(self.adl.get("chance")),
            "circuits": circ,
            "seconds": self.settings.get("seconds", {}),
        }

    def to_frame(self, which: Literal["heads", "weights"] = "heads") -> pd.DataFrame:
        """``"heads"``: one row per head with every per-head number; ``"weights"``: one row per parameter."""
        import pandas as pd

        if which == "weights":
            return pd.DataFrame([{k: v for k, v in w.items() if k != "singular_values"} for w in self.weights])
        if which != "heads":
            raise ValueError(f"which must be 'heads' or 'weights', not {which!r}.")
        L, H = self.n_layers, self.n_heads
        d: dict[str, Any] = {
            "layer": [i for i in range(L) for _ in range(H)],
            "head": [h for _ in range(L) for h in range(H)],
            "attention_js": self.attention_js.flatten().tolist(),
            "cmap_recovered": self.cmap_heads.flatten().tolist(),
            "ablation_base": self.ablation_base.flatten().tolist(),
            "ablation_tuned": self.ablation_tuned.flatten().tolist(),
            "important_before": self.important_before.flatten().tolist(),
            "weight_rel": self.head_weight_rel.flatten().tolist(),
        }
        for c, v in self.detector_delta().items():
            d[f"{c}_delta"] = v.flatten().tolist()
        return pd.DataFrame(d)

    def plot(self) -> go.Figure:
        """Heatmaps (layers × heads): attention JS, cross-model patching, Δ ablation importance, weight change."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        panels = [
            ("attention JS (bits)", self.attention_js, "Blues"),
            ("cross-model patching: recovered fraction", self.cmap_heads, "RdBu"),
            ("Δ ablation importance (nats)", self.ablation_tuned - self.ablation_base, "RdBu"),
            ("relative weight change", self.head_weight_rel, "Greens"),
        ]
        fig = make_subplots(rows=1, cols=4, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.05)
        for i, (title, z, scale) in enumerate(panels, start=1):
            zz = z.nan_to_num(0.0)
            m = float(zz.abs().max()) or 1.0
            fig.add_trace(
                go.Heatmap(
                    z=zz.tolist(),
                    colorscale=scale,
                    zmin=-m if scale == "RdBu" else 0.0,
                    zmax=m,
                    showscale=False,
                    hovertemplate=f"{title}<br>layer %{{y}}, head %{{x}}: %{{z:.4g}}<extra></extra>",
                ),
                row=1,
                col=i,
            )
            fig.update_yaxes(autorange="reversed", title_text="layer" if i == 1 else None, row=1, col=i)
            fig.update_xaxes(title_text="head", row=1, col=i)
        fig.update_layout(height=max(320, 12 * self.n_layers + 140), margin={"l": 50, "r": 20, "t": 60, "b": 40})
        return fig


# ============================================================================================ driver


def _ioi_part(
    base: Model,
    tuned: Model,
    mode: IOIMode,
    n: int,
    top_k: int,
    circuit: bool,
    seed: int,
    hs_base: Any,
    hs_tuned: Any,
    cmap_exact: int | None,
) -> dict[str, Any]:
    from interplab.analyses.causal.circuits import all_nodes, circuit_metric, template_means
    from interplab.analyses.causal.engine import end_metric
    from interplab.analyses.causal.ioi import ioi_circuit
    from interplab.finetune.head_diff import cross_model_patching
    from interplab.tasks.ioi import ioi as ioi_task

    if mode == "never":
        return {"skipped": "not asked for (ioi='never')"}
    try:
        pairs = ioi_task(base, n=n, seed=seed)
    except ValueError as e:
        return {"skipped": f"the IOI prompts cannot be built for this model: {e}"}
    rb = ioi_circuit(base, pairs, circuit=False, head_scores_result=hs_base)
    if mode == "auto" and float(rb.logit_diff.mean()) <= 0:
        return {
            "skipped": f"the base model does not do IOI (mean logit difference {float(rb.logit_diff.mean()):.3f} "
            "<= 0); use ioi='always' to compare anyway"
        }
    rt = ioi_circuit(tuned, pairs, circuit=False, head_scores_result=hs_tuned)
    assert rb.patching is not None and rt.patching is not None
    k = min(top_k, base.cfg.n_layers * base.cfg.n_heads)
    top_b, top_t = top_head_set(rb.patching.values, k), top_head_set(rt.patching.values, k)
    out: dict[str, Any] = {
        "n": len(pairs),
        "logit_diff_base": _r(float(rb.logit_diff.mean())),
        "logit_diff_tuned": _r(float(rt.logit_diff.mean())),
        "top_k": k,
        "top_k_heads_base": sorted([list(h) for h in top_b]),
        "top_k_heads_tuned": sorted([list(h) for h in top_t]),
        "top_k_jaccard": jaccard(top_b, top_t),
        "classes_base": rb.classes,
        "classes_tuned": rt.classes,
    }

    def ioi_metric(model: Model):
        def metric(final: torch.Tensor, kk: int) -> torch.Tensor:
            return end_metric(model, pairs, final).view(kk, len(pairs)).double().mean(1)

        return metric

    cm = cross_model_patching(
        base,
        tuned,
        pairs.clean,
        ioi_metric(base),
        ioi_metric(tuned),
        attention_mask=pairs.run_mask(),
        exact=cmap_exact,
    )
    out["cmap_top_heads"] = [[a, b, _r(v)] for a, b, v in cm.top_heads(top_k)]
    out["cmap_recovered_all_heads"] = _r(cm.recovered_all_heads)
    if circuit:
        from interplab.analyses.causal.circuits import discover_circuit

        cb = discover_circuit(base, pairs)
        ct = discover_circuit(tuned, pairs)
        mlps = bool(base.cfg.d_mlp)
        hooks = sorted(
            {f"blocks.{i}.attn.hook_z" for i in range(base.cfg.n_layers)}
            | ({f"blocks.{i}.hook_mlp_out" for i in range(base.cfg.n_layers)} if mlps else set())
        )
        _, cx = tuned.run(pairs.corrupt, cache=hooks, attention_mask=pairs.run_mask())
        ref = template_means(pairs, cx, hooks)
        kept = set(cb.nodes)
        removed = [nd for nd in all_nodes(tuned, mlps) if nd not in kept]
        full = circuit_metric(tuned, pairs, [], ref)
        inside = circuit_metric(tuned, pairs, removed, ref)
        out.update(
            {
                "circuit_heads_base": cb.heads,
                "circuit_heads_tuned": ct.heads,
                "circuit_jaccard": jaccard({tuple(h) for h in cb.heads}, {tuple(h) for h in ct.heads}),
                "faithfulness_base": _r(cb.faithfulness),
                "faithfulness_tuned": _r(ct.faithfulness),
                "faithfulness_base_circuit_in_tuned": _r(inside / full if full else float("nan")),
            }
        )
    return out


@torch.no_grad()
def compare_models(
    base: Model | str,
    tuned: Model | str,
    *,
    data: str | Path | None = None,
    other: str | Path | None = None,
    n_chunks: int = 8,
    chunk_len: int = 64,
    detector_seqs: int = 8,
    detector_copying: bool = False,
    ablation_how: Literal["zero", "mean", "resample"] = "mean",
    important_frac: float = 0.2,
    ablation_chunks: int = 4,
    cmap_exact: int | None = 20,
    ioi: IOIMode = "auto",
    ioi_n: int = 16,
    circuit: bool = True,
    adl_k: int = 5,
    adl_layer: int | None = None,
    top_k: int = 10,
    seed: int = 0,
    progress: Any = None,
) -> CompareResult:
    """Compare a base model with its fine-tune (see the module docstring for every part and the verdict rule).

    Args:
        base: the base model (a ``Model`` or anything ``interplab.load`` opens).
        tuned: the fine-tuned model (same tokenizer, layers and heads).
        data: the fine-tuning distribution: ``"pydoc"``, ``"corpus:pydoc"``, a text file or a JSONL
            (:func:`read_data_text`); None: what the tuned directory's ``finetune.json`` names, else ``"pydoc"``.
        other: unrelated text (a file, or None for the built-in :mod:`interplab.finetune.texts`).
        n_chunks: chunks of each text (fewer when the text is shorter).
        chunk_len: tokens per chunk.
        detector_seqs: sequences per input set of the head detectors.
        detector_copying: also compare the weight-based copying scores (slower on large vocabularies).
        ablation_how: the ablation of the importance scores (``"mean"``: the head's mean output over the chunks).
        important_frac: the fraction of heads (by base ablation importance) that counts as important before.
        ablation_chunks: fine-tuning chunks used by the ablation importance (the first ones; at least 2, for its
            confidence interval).
        cmap_exact: heads patched exactly by cross-model patching after an attribution screen (None: every head;
            see :func:`interplab.finetune.head_diff.cross_model_patching`).
        ioi: ``"auto"`` (run the IOI comparison when the base model does the task), ``"always"``, ``"never"``.
        ioi_n: IOI prompt pairs.
        circuit: also discover both IOI circuits (ACDC-style) and cross the base circuit into the tuned model.
        adl_k: tokens per unrelated document read by the activation difference lens.
        adl_layer: its layer (default the middle one).
        top_k: heads kept in rankings and the IOI top-k Jaccard.
        seed: seed of the detector inputs and the IOI prompts.
        progress: a callable taking a status string (for the CLI), or None.
    """
    from interplab.analyses.causal.ablation import head_ablation_importance
    from interplab.analyses.diffing import diff_models
    from interplab.analyses.diffing.alignment import as_model, model_label
    from interplab.analyses.observational.heads import head_scores
    from interplab.finetune.adl import activation_difference_lens
    from interplab.finetune.head_diff import attention_js, cross_model_patching, loss_metric
    from interplab.finetune.texts import OTHER_DOCUMENTS, other_text
    from interplab.finetune.weight_diff import head_weight_change, weight_update

    if ioi not in ("auto", "always", "never"):
        raise ValueError(f"ioi must be 'auto', 'always' or 'never', not {ioi!r}.")
    if ablation_chunks < 2:
        raise ValueError(f"ablation_chunks must be at least 2 (for a confidence interval), not {ablation_chunks}.")
    if not 0 < important_frac <= 1:
        raise ValueError(f"important_frac must lie in (0, 1], got {important_frac}.")
    say = progress or (lambda s: None)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def lap(key: str, t0: float) -> None:
        seconds[key] = round(time.perf_counter() - t0, 2)

    if data is None and isinstance(tuned, str | Path):
        data = tuned_data_spec(tuned)
    names = model_label(base), model_label(tuned)
    b, _ = as_model(base)
    t, _ = as_model(tuned)
    check_comparable(b, t)
    data_txt = read_data_text(data)
    if other is None:
        other_txt, documents = other_text(), list(OTHER_DOCUMENTS)
    else:
        other_txt = read_data_text(other)
        documents = [d for d in other_txt.split("\n\n") if d.strip()]
    tok_in = _chunks(b, data_txt, n_chunks, chunk_len, "fine-tuning")
    tok_other = _chunks(b, other_txt, n_chunks, chunk_len, "other")

    t0 = time.perf_counter()
    say("per-token losses …")
    loss = {}
    for key, toks in (("in", tok_in), ("other", tok_other)):
        d = diff_models(b, t, tokens=toks, alignment="tokens", context=10)
        loss[key] = d.headline(top_k)
    lap("loss", t0)

    t0 = time.perf_counter()
    say("weights …")
    weights, rel_total = weight_update(b, t)
    head_rel = head_weight_change(b, t)
    lap("weights", t0)

    t0 = time.perf_counter()
    say("attention patterns …")
    js = attention_js(b, t, torch.cat([tok_in, tok_other]))
    lap("attention_js", t0)

    t0 = time.perf_counter()
    say("head detectors …")
    hs_b = head_scores(b, n_seqs=detector_seqs, seed=seed, copying=detector_copying)
    hs_t = head_scores(t, n_seqs=detector_seqs, seed=seed, copying=detector_copying)
    lap("detectors", t0)

    t0 = time.perf_counter()
    say("head-ablation importance …")
    kw: dict[str, Any] = {"how": ablation_how, "induction_score": None, "seed": seed, "max_batch_tokens": 2048}
    tok_ab = tok_in[:ablation_chunks]
    ab_b = head_ablation_importance(b, tok_ab, **kw)
    ab_t = head_ablation_importance(t, tok_ab, **kw)
    important = important_heads(ab_b.delta_loss, ab_b.ci_low, important_frac)
    lap("ablation", t0)

    t0 = time.perf_counter()
    say("cross-model activation patching …")
    cm = cross_model_patching(b, t, tok_in, loss_metric(b, tok_in), loss_metric(t, tok_in), exact=cmap_exact)
    lap("cmap", t0)

    t0 = time.perf_counter()
    say("activation difference lens …")
    adl = activation_difference_lens(
        b, t, documents, data_text=data_txt, other_text=other_txt, k=adl_k, layer=adl_layer, top_k=2 * top_k
    )
    lap("adl", t0)

    t0 = time.perf_counter()
    say("IOI on both models …")
    circuits = _ioi_part(b, t, ioi, ioi_n, top_k, circuit, seed, hs_b, hs_t, cmap_exact)
    lap("circuits", t0)

    delta_in = float(loss["in"]["mean_diff"] or 0.0)
    v, detail = verdict(rel_total, delta_in, cm.heads.nan_to_num(0.0), cm.recovered_all_heads, important)
    seconds["total"] = round(time.perf_counter() - t_all, 2)
    return CompareResult(
        base_name=names[0],
        tuned_name=names[1],
        loss=loss,
        attention_js=js,
        detector_base=dict(hs_b.scores),
        detector_tuned=dict(hs_t.scores),
        ablation_base=ab_b.delta_loss,
        ablation_tuned=ab_t.delta_loss,
        ablation_ci_low_base=ab_b.ci_low,
        important_before=important,
        cmap_heads=cm.heads,
        cmap_mlps=cm.mlps,
        cmap_estimate=cm.heads_estimate,
        cmap={
            "metric": "mean next-token loss on the fine-tuning chunks (nats)",
            "loss_base": cm.metric_base,
            "loss_tuned": cm.metric_tuned,
            "recovered_all_heads": cm.recovered_all_heads,
            "recovered_all_mlps": cm.recovered_all_mlps,
            "n_forward": cm.n_forward,
            "exact_heads": int((~cm.heads.isnan()).sum()),
            "screen": "attribution patching, then the top cmap_exact heads exactly"
            if cm.heads_estimate is not None
            else "none: every changed head patched exactly",
        },
        head_weight_rel=head_rel,
        weights=weights,
        weight_update_rel_norm=rel_total,
        adl=adl,
        circuits=circuits,
        verdict=v,
        verdict_detail=detail,
        settings={
            "data": str(data) if data is not None else "pydoc",
            "other": str(other) if other is not None else "built-in (interplab.finetune.texts)",
            "n_chunks_in": int(tok_in.shape[0]),
            "n_chunks_other": int(tok_other.shape[0]),
            "chunk_len": chunk_len,
            "detector_seqs": detector_seqs,
            "detector_copying": detector_copying,
            "ablation": ablation_how,
            "important_frac": important_frac,
            "ablation_chunks": int(tok_ab.shape[0]),
            "cmap_exact": cmap_exact,
            "ioi": ioi,
            "ioi_n": ioi_n,
            "circuit": circuit,
            "adl_k": adl_k,
            "top_k": top_k,
            "seed": seed,
            "js": "Jensen-Shannon divergence (bits) per query row, mean over rows 1.. and the probe chunks",
            "seconds": seconds,
        },
    )
