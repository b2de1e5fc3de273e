"""Activation difference lens (Minder et al. 2025, "Narrow Finetuning Leaves Clearly Readable Traces in
Activation Differences", arXiv:2510.13900): does the mean difference between the tuned and the base model's
residual streams on the first tokens of *unrelated* text name what the model was tuned on?

For ``n`` documents of unrelated text, the first ``k`` tokens of each (with the tokenizer's BOS when it adds
one), both models run and at layer ``L`` (default the middle one, ``blocks.{n_layers // 2}.hook_resid_post``)::

    δ_j = mean_docs (h_tuned[L, j] − h_base[L, j])          one vector per position j < k
    δ   = mean_j δ_j

Each vector is read through the logit lens (nostalgebraist 2020): the tuned model's final norm and unembedding
(:func:`interplab.models.scoring.unembed_resid`), and its top tokens are listed. A vector that is exactly 0
(identical models) reads as nothing.

**Relevance score** (interplab's, to make "does it name the fine-tuning domain" a number): the fine-tuning
text's *characteristic* tokens are those that occur in the fine-tuning text and never in the unrelated text
(both tokenized whole, up to 10^6 characters each); ``relevance`` is the fraction of the ``top_k`` lens tokens of
``δ`` that are characteristic, ``chance`` the fraction of the whole vocabulary that is (what ``top_k`` random
tokens would score on average). Minder et al. judge relevance with an LLM grader and also steer with ``δ``;
neither is done here.

**Topic identification benchmark** (:func:`identify_topics`; the issue's "does the lens alone name what the model
was tuned on", with ``K`` candidate topics): for each tuned model, ``δ`` (as above, on the same unrelated documents
for every model, default paragraphs of the standard library's pydoc text; optionally without position 0, see
``skip_first``) is read through the logit lens into
logits ``ℓ`` over the vocabulary, and every candidate topic ``t`` is scored against ``ℓ``. A topic's *distinctive*
tokens ``D_t`` are those that occur in its text and in no other candidate's text and not in the unrelated text
(:func:`distinctive_tokens`), each with its count ``c_t(v)`` in the topic's text. Two scores:

* ``"zscore"`` (primary): the count-weighted mean of the standardized lens logits over ``D_t``,
  ``Σ_v c_t(v) z_v / Σ_v c_t(v)`` with ``z = (ℓ − mean ℓ) / std ℓ`` over the vocabulary — how far above an
  average token the lens puts the topic's words (0 on average for tokens unrelated to ``δ``);
* ``"relevance"``: the fraction of the ``top_k`` lens tokens of ``δ`` that lie in ``D_t`` (the relevance score
  above with the candidates' distinctive tokens).

The prediction is the argmax topic; none when ``δ`` is exactly 0 (the models do not differ at that layer) or
when the best score is tied (e.g. no top token in any ``D_t``). Top-1 accuracy over the tuned models comes with a
Wilson interval (:func:`interplab.stats.wilson_interval`); chance is ``1 / K``. The built-in topic texts
(:func:`builtin_topics`, ``interplab/finetune/topics/``) were written for interplab.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interplab.io.results import Result
from interplab.models.scoring import unembed_resid

if TYPE_CHECKING:  # pragma: no cover
    from interplab.models.model import Model

__all__ = [
    "IDENTIFY_METHODS",
    "IdentifyResult",
    "activation_difference_lens",
    "builtin_topics",
    "characteristic_tokens",
    "distinctive_tokens",
    "document_prefixes",
    "identify_topics",
    "score_topics",
    "unrelated_documents",
]

MAX_CHARS = 1_000_000
TOPICS_DIR = Path(__file__).parent / "topics"
IDENTIFY_METHODS = ("zscore", "relevance")


def document_prefixes(model: Model, documents: Sequence[str], k: int = 5) -> torch.Tensor:
    """``[n, k]`` token ids: the first ``k`` tokens of each document (a BOS first when the tokenizer adds one),
    documents shorter than ``k`` tokens left out."""
    tok = model.need_tokenizer()
    bos = [tok.bos_token_id] if model.default_prepend_bos and tok.bos_token_id is not None else []
    rows = []
    for d in documents:
        ids = bos + tok(d, add_special_tokens=False)["input_ids"]
        if len(ids) >= k:
            rows.append(ids[:k])
    if not rows:
        raise ValueError(f"no document of the unrelated text has {k} tokens; give longer documents or a smaller k.")
    return torch.tensor(rows, dtype=torch.long)


def characteristic_tokens(model: Model, data_text: str, other_text: str) -> set[int]:
    """Token ids that occur in ``data_text`` and never in ``other_text`` (each tokenized up to 10^6 characters)."""
    tok = model.need_tokenizer()
    data = set(tok(data_text[:MAX_CHARS], add_special_tokens=False)["input_ids"])
    other = set(tok(other_text[:MAX_CHARS], add_special_tokens=False)["input_ids"])
    return data - other


def _top(model: Model, vec: torch.Tensor, k: int) -> list[dict[str, Any]]:
    if not bool(vec.abs().sum() > 0):
        return []
    logits = unembed_resid(model, vec.to(model.device)[None, None]).float()[0, 0]
    vals, ids = logits.topk(k)
    return [
        {"token": model.to_string([int(i)]), "token_id": int(i), "logit": round(float(v), 4)}
        for v, i in zip(vals.tolist(), ids.tolist())
    ]


@torch.no_grad()
def activation_difference_lens(
    base: Model,
    tuned: Model,
    documents: Sequence[str],
    *,
    data_text: str | None = None,
    other_text: str | None = None,
    k: int = 5,
    layer: int | None = None,
    top_k: int = 20,
) -> dict[str, Any]:
    """The activation difference lens (see the module docstring).

    Args:
        base: the base model.
        tuned: the fine-tuned model (same tokenizer).
        documents: unrelated documents; the first ``k`` tokens of each are read.
        data_text: the fine-tuning text (for the relevance score; None: no score).
        other_text: the unrelated text the characteristic tokens must be absent from (default: the documents).
        k: tokens read per document (Minder et al.: 5).
        layer: the layer whose ``hook_resid_post`` is compared (default ``n_layers // 2``).
        top_k: tokens listed per vector.

    Returns a dict: ``layer``, ``k``, ``n_documents``, ``norm`` (``||δ||``), ``norm_by_position``,
    ``base_norm`` (mean ``||h_base||`` over the same positions, for scale), ``top_tokens`` (of ``δ``),
    ``top_tokens_by_position``, and with ``data_text`` ``relevance``, ``chance``, ``n_characteristic``.
    """
    n_layers = base.cfg.n_layers
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must lie in [0, {n_layers}), got {layer}.")
    toks = document_prefixes(base, documents, k)
    name = f"blocks.{layer}.hook_resid_post"
    _, cb = base.run(toks, cache=[name])
    _, ct = tuned.run(toks, cache=[name])
    hb, ht = cb[name].double().cpu(), ct[name].double().cpu()
    delta_pos = (ht - hb).mean(0)  # [k, d]
    delta = delta_pos.mean(0)
    out: dict[str, Any] = {
        "layer": layer,
        "hook": name,
        "k": k,
        "n_documents": int(toks.shape[0]),
        "norm": float(delta.norm()),
        "norm_by_position": [float(v.norm()) for v in delta_pos],
        "base_norm": float(hb.norm(dim=-1).mean()),
        "read_with": "tuned model's final norm and unembedding",
        "top_tokens": _top(tuned, delta.float(), top_k),
        "top_tokens_by_position": [[t["token"] for t in _top(tuned, v.float(), min(top_k, 10))] for v in delta_pos],
    }
    if data_text is not None:
        char = characteristic_tokens(base, data_text, other_text if other_text is not None else "\n\n".join(documents))
        top = out["top_tokens"]
        out["n_characteristic"] = len(char)
        out["relevance"] = sum(t["token_id"] in char for t in top) / len(top) if top else 0.0
        out["chance"] = len(char) / base.cfg.d_vocab
    return out


# ============================================================================================ topic identification


def builtin_topics() -> dict[str, str]:
    """The built-in narrow-topic texts (``interplab/finetune/topics/<topic>.txt``, ~7k characters of original prose
    each, written for interplab; see the README there): ``{topic: text}``, sorted by name."""
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(TOPICS_DIR.glob("*.txt"))}


def unrelated_documents(text: str | None = None, n: int = 200) -> list[str]:
    """``n`` documents of unrelated text: the non-empty paragraphs (split at blank lines) of ``text`` (default the
    standard library's pydoc text, :func:`interplab.tasks.corpus.corpus_text`), every ``len / n``-th one so they
    spread over the whole text (all of them when there are fewer)."""
    from interplab.tasks.corpus import corpus_text

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    paras = [p.strip() for p in (corpus_text(None) if text is None else text).split("\n\n") if p.strip()]
    if not paras:
        raise ValueError("the unrelated text has no paragraph; give a text with paragraphs separated by blank lines.")
    step = max(1, len(paras) // n)
    return paras[::step][:n]


def distinctive_tokens(model: Model, topic_texts: Mapping[str, str], unrelated_text: str) -> dict[str, Counter[int]]:
    """Per topic, the token ids that occur in its text and in no other topic's text and not in ``unrelated_text``
    (each tokenized whole, up to 10^6 characters), with their counts in the topic's text."""
    tok = model.need_tokenizer()
    counts = {t: Counter(tok(x[:MAX_CHARS], add_special_tokens=False)["input_ids"]) for t, x in topic_texts.items()}
    other = set(tok(unrelated_text[:MAX_CHARS], add_special_tokens=False)["input_ids"])
    out = {}
    for t, c in counts.items():
        rest = set().union(*(set(c2) for t2, c2 in counts.items() if t2 != t)) | other
        out[t] = Counter({v: n for v, n in c.items() if v not in rest})
    return out


def score_topics(
    lens_logits: torch.Tensor, tokens: Mapping[str, Counter[int]], top_k: int = 20
) -> dict[str, dict[str, float]]:
    """``{method: {topic: score}}`` of lens logits ``[d_vocab]`` against each topic's distinctive tokens (the module
    docstring's ``"zscore"`` and ``"relevance"``); all 0 for constant logits (no difference to read)."""
    ell = lens_logits.double().flatten()
    sd = float(ell.std())
    z = (ell - ell.mean()) / sd if sd > 0 else torch.zeros_like(ell)
    top = set(ell.topk(min(top_k, ell.numel())).indices.tolist()) if sd > 0 else set()
    out: dict[str, dict[str, float]] = {"zscore": {}, "relevance": {}}
    for t, c in tokens.items():
        ids = torch.tensor(list(c), dtype=torch.long)
        w = torch.tensor([c[v] for v in c], dtype=torch.float64)
        out["zscore"][t] = float((z[ids] * w).sum() / w.sum()) if len(c) else 0.0
        out["relevance"][t] = len(top & set(c)) / top_k if top else 0.0
    return out


def _predict(scores: Mapping[str, float], norm: float) -> str | None:
    if norm == 0.0 or not scores:
        return None
    best = max(scores.values())
    winners = [t for t, s in scores.items() if s == best]
    return winners[0] if len(winners) == 1 else None


@dataclass
class IdentifyResult(Result):
    """The topic identification benchmark (:func:`identify_topics`). ``rows``: one per (tuned model, layer) with
    ``model`` (its label), ``truth``, ``layer``, ``norm`` (``||δ||``), ``base_norm``, ``top_tokens`` (of ``δ``'s
    lens), ``scores`` (``{method: {topic: score}}``), ``predicted`` (``{method: topic or None}``),
    ``norm_by_position`` and ``predicted_by_position`` (the z-score prediction from each position's ``δ_j`` alone,
    a diagnostic: Minder et al. read positions separately);
    ``topics``: the ``K`` candidates; ``n_distinctive``: ``|D_t|`` per topic; ``layers``: the layers read (the
    first is the primary one of the headline)."""

    KIND: ClassVar[str] = "adl_identify"
    FILE: ClassVar[str] = "identify.json"
    JSON_ONLY: ClassVar[bool] = True

    topics: list[str]
    layers: list[int]
    rows: list[dict[str, Any]]
    n_distinctive: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)

    def rows_at(self, layer: int | None = None) -> list[dict[str, Any]]:
        """The rows of one layer (default the primary one)."""
        layer = self.layers[0] if layer is None else layer
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not read; the layers are {self.layers}.")
        return [r for r in self.rows if r["layer"] == layer]

    def accuracy(self, method: str = "zscore", layer: int | None = None, level: float = 0.95) -> dict[str, Any]:
        """Top-1 accuracy of ``method`` at ``layer`` with its Wilson interval, and chance (``1 / K``)."""
        from interplab.stats import wilson_interval

        if method not in IDENTIFY_METHODS:
            raise ValueError(f"method must be one of {IDENTIFY_METHODS}, not {method!r}.")
        rows = self.rows_at(layer)
        k = sum(r["predicted"][method] == r["truth"] for r in rows)
        lo, hi = wilson_interval(k, len(rows), level)
        return {
            "correct": k,
            "n": len(rows),
            "accuracy": k / len(rows),
            "ci": [round(lo, 4), round(hi, 4)],
            "chance": 1 / len(self.topics),
        }

    def accuracy_by_position(self, layer: int | None = None) -> list[float]:
        """Top-1 accuracy of the z-score prediction from each position's ``δ_j`` alone (position 0 first)."""
        rows = self.rows_at(layer)
        n = min(len(r.get("predicted_by_position", [])) for r in rows)
        return [sum(r["predicted_by_position"][j] == r["truth"] for r in rows) / len(rows) for j in range(n)]

    def confusion(self, method: str = "zscore", layer: int | None = None) -> dict[str, dict[str, int]]:
        """``{truth: {predicted: count}}`` (a missing prediction is ``"none"``)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows_at(layer):
            pred = r["predicted"][method] or "none"
            row = out.setdefault(r["truth"], {})
            row[pred] = row.get(pred, 0) + 1
        return out

    def headline(self, k: int = 10) -> dict[str, Any]:
        """Accuracy with CI per method at the primary layer (and per layer), the per-model predictions, the
        confusion table of the primary method and each model's top lens tokens."""
        L = self.layers[0]
        return {
            "topics": self.topics,
            "k": len(self.topics),
            "layer": L,
            "layers": self.layers,
            "skip_first": bool(self.settings.get("skip_first", False)),
            "chance": round(1 / len(self.topics), 6),
            "accuracy": self.accuracy("zscore")["accuracy"],
            "accuracy_ci": self.accuracy("zscore")["ci"],
            "accuracy_by_method": {m: self.accuracy(m) for m in IDENTIFY_METHODS},
            "accuracy_by_layer": {
                str(lay): {m: self.accuracy(m, lay)["accuracy"] for m in IDENTIFY_METHODS} for lay in self.layers
            },
            "predictions": [
                {
                    "model": r["model"],
                    "truth": r["truth"],
                    "predicted": r["predicted"]["zscore"],
                    "predicted_relevance": r["predicted"]["relevance"],
                    "scores": {t: round(v, 4) for t, v in r["scores"]["zscore"].items()},
                    "norm": round(r["norm"], 4),
                    "top_tokens": [x["token"] for x in r["top_tokens"]][:k],
                }
                for r in self.rows_at(L)
            ],
            "accuracy_by_position": self.accuracy_by_position(),
            "confusion": self.confusion("zscore"),
            "n_distinctive": self.n_distinctive,
            "seconds": self.settings.get("seconds", {}),
        }

    def to_frame(self):
        """One row per (model, layer, topic) with both scores and whether the topic is the truth / the prediction."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "model": r["model"],
                    "layer": r["layer"],
                    "truth": r["truth"],
                    "topic": t,
                    "zscore": r["scores"]["zscore"][t],
                    "relevance": r["scores"]["relevance"][t],
                    "is_truth": t == r["truth"],
                    "predicted": t == r["predicted"]["zscore"],
                }
                for r in self.rows
                for t in self.topics
            ]
        )

    def plot(self):
        """Heatmap of the primary score (tuned model × candidate topic) at the primary layer."""
        import plotly.graph_objects as go

        rows = self.rows_at()
        z = [[r["scores"]["zscore"][t] for t in self.topics] for r in rows]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=self.topics,
                y=[f"{r['truth']} ({r['model']})" for r in rows],
                colorscale="RdBu",
                zmid=0,
                hovertemplate="tuned %{y}<br>topic %{x}: z %{z:.3f}<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"difference lens, layer {self.layers[0]}: mean z of each topic's tokens",
            xaxis_title="candidate topic",
            yaxis_title="tuned model",
            height=max(300, 40 * len(rows) + 140),
        )
        return fig


@torch.no_grad()
def identify_topics(
    base: Model | str | Path,
    tuned: Mapping[str, Model | str | Path],
    topic_texts: Mapping[str, str],
    unrelated: Sequence[str] | None = None,
    *,
    unrelated_text: str | None = None,
    k: int = 5,
    skip_first: bool = False,
    layers: Sequence[int] | None = None,
    top_k: int = 20,
    progress: Callable[[str], None] | None = None,
) -> IdentifyResult:
    """Which topic was each model tuned on, from the activation difference lens alone (the module docstring).

    Args:
        base: the base model.
        tuned: ``{true topic: tuned model}`` (a ``Model`` or anything ``interplab.load`` opens; loaded one at a
            time, so K SmolLM2 fine-tunes need the memory of two models). Every key must be a candidate topic.
        topic_texts: ``{topic: text}``, the ``K`` candidates (``K >= 2``; :func:`builtin_topics` for the built-in
            ones); each topic's text is only used for its distinctive tokens.
        unrelated: the unrelated documents whose first ``k`` tokens are read (default
            :func:`unrelated_documents`: 200 paragraphs of the pydoc text), the same for every tuned model.
        unrelated_text: the text the distinctive tokens must be absent from (default: the whole pydoc text when
            ``unrelated`` is None, else the documents joined).
        k: tokens read per document (Minder et al.: 5).
        skip_first: leave position 0 out of ``δ``'s mean (``δ = mean_{j >= 1} δ_j``). In a model without a BOS
            token the first token is an attention sink whose residual norm is many times the others'; on SmolLM2
            its difference (norm ~3000 against ~25-300 at positions 1-4) swamps the mean with a direction shared
            by every fine-tune. ``norm_by_position`` shows whether it does.
        layers: the layers whose ``hook_resid_post`` is compared (default the middle one); the first is the
            headline's.
        top_k: lens tokens of the ``"relevance"`` score and the listings.
        progress: a callable taking a status string, or None.
    """
    from interplab.analyses.diffing.alignment import as_model, model_label
    from interplab.finetune.compare import check_comparable
    from interplab.tasks.corpus import corpus_text

    say = progress or (lambda s: None)
    if len(topic_texts) < 2:
        raise ValueError(f"identification needs at least 2 candidate topics, got {len(topic_texts)}.")
    if not tuned:
        raise ValueError("no tuned model given; pass {topic: model} for at least one candidate topic.")
    missing = [t for t in tuned if t not in topic_texts]
    if missing:
        raise ValueError(
            f"tuned models for {missing} have no candidate topic text; the candidates are {sorted(topic_texts)}. "
            "Give each tuned model's topic a text."
        )
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    b, _ = as_model(base)
    n_layers = b.cfg.n_layers
    layers = [n_layers // 2] if layers is None else [int(x) for x in layers]
    if not layers or any(not 0 <= x < n_layers for x in layers):
        raise ValueError(f"layers must lie in [0, {n_layers}), got {layers}.")
    if unrelated is None:
        docs = unrelated_documents()
        other = corpus_text(None) if unrelated_text is None else unrelated_text
    else:
        docs = [d for d in unrelated if d.strip()]
        other = "\n\n".join(docs) if unrelated_text is None else unrelated_text
    topics = list(topic_texts)
    dist = distinctive_tokens(b, topic_texts, other)
    empty = [t for t in topics if not dist[t]]
    if empty:
        raise ValueError(
            f"topics {empty} have no distinctive token (every token of their text also occurs in another topic's "
            "text or in the unrelated text); give longer or more distinct topic texts."
        )
    if skip_first and k < 2:
        raise ValueError(f"skip_first needs k >= 2 tokens per document, got k={k}.")
    toks = document_prefixes(b, docs, k)
    hooks = [f"blocks.{x}.hook_resid_post" for x in layers]
    t0 = time.perf_counter()
    say("base model on the unrelated documents …")
    _, cb = b.run(toks, cache=hooks)
    base_h = {h: cb[h].double().cpu() for h in hooks}
    seconds["base"] = round(time.perf_counter() - t0, 2)
    rows: list[dict[str, Any]] = []
    for truth, spec in tuned.items():
        t0 = time.perf_counter()
        say(f"tuned model for {truth!r} …")
        t, loaded = as_model(spec)
        check_comparable(b, t)
        _, ct = t.run(toks, cache=hooks)
        for layer, h in zip(layers, hooks, strict=True):
            delta_pos = (ct[h].double().cpu() - base_h[h]).mean(0)  # [k, d]
            delta = delta_pos[1:].mean(0) if skip_first else delta_pos.mean(0)
            norm = float(delta.norm())
            vecs = torch.cat([delta[None], delta_pos]).float().to(t.device)
            all_logits = unembed_resid(t, vecs[None]).float()[0].cpu()  # [1 + k, d_vocab]
            logits = all_logits[0] if norm > 0 else torch.zeros_like(all_logits[0])
            scores = score_topics(logits, dist, top_k)
            by_pos = []
            for j in range(delta_pos.shape[0]):
                nj = float(delta_pos[j].norm())
                sj = score_topics(all_logits[1 + j] if nj > 0 else torch.zeros_like(logits), dist, top_k)["zscore"]
                by_pos.append(_predict(sj, nj))
            rows.append(
                {
                    "model": model_label(spec),
                    "truth": truth,
                    "layer": layer,
                    "norm": norm,
                    "base_norm": float(base_h[h].norm(dim=-1).mean()),
                    "top_tokens": _top(t, delta.float(), top_k),
                    "scores": scores,
                    "predicted": {m: _predict(scores[m], norm) for m in IDENTIFY_METHODS},
                    "norm_by_position": [float(v.norm()) for v in delta_pos],
                    "predicted_by_position": by_pos,
                }
            )
        if loaded:
            del t
        seconds[f"tuned:{truth}"] = round(time.perf_counter() - t0, 2)
    seconds["total"] = round(time.perf_counter() - t_all, 2)
    return IdentifyResult(
        topics=topics,
        layers=layers,
        rows=rows,
        n_distinctive={t: len(dist[t]) for t in topics},
        settings={
            "k": k,
            "skip_first": skip_first,
            "n_documents": int(toks.shape[0]),
            "unrelated": "pydoc paragraphs" if unrelated is None else f"{len(docs)} given documents",
            "top_k": top_k,
            "read_with": "each tuned model's final norm and unembedding",
            "seconds": seconds,
        },
    )
