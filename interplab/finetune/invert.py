"""ML Chinese whispers: how much of the input text can be read back from one layer's residual stream?

A small transformer decoder of our own (the *inverter*) is trained on a corpus to reconstruct the input tokens
from the residual stream of layer ``L`` of a frozen model, and k guesses are sampled per held-out input. This is
the learned-inversion setting of Morris et al. (2023), "Text Embeddings Reveal (Almost) As Much As Text" (vec2text,
~92 % exact match on 32-token inputs from a sentence embedding after 50 correction steps; the one-step inverter
reaches far less) and of Rep2Text (Huang et al. 2025, "Rep2Text: Decoding Full Text from a Single LLM Token
Representation": about half of the tokens of 16-token inputs from the last token's state). Its upper bound is
exact inversion by search: transformers are injective on prompts (Nikolaou et al. 2025, "Language Models are
Injective and Hence Invertible", SipIt), see :mod:`interplab.finetune.invert_search`.

**Layers.** ``layer`` L runs over ``0 .. n_layers``: the residual stream *entering* block L
(``blocks.L.hook_resid_pre``; L = 0 is the embedding, plus learned positions where the model has them) and
L = n_layers the stream after the last block (``blocks.{n-1}.hook_resid_post``, before the final norm).

**What the inverter reads.** ``positions="all"``: the state at every position (``[T, d]``), each standardised by
the training mean and standard deviation of its (position, dimension) and projected to one prefix vector;
``"last"``: only the last position's state, projected to :attr:`InverterConfig.n_prefix` prefix vectors (Rep2Text's
setting); ``"none"``: nothing (the prefix is a constant) — the *prior* baseline, what the corpus alone lets one
guess. ``dims`` keeps a subset of the dimensions (:func:`parse_dims`: all, the lower half, a leading fraction, a
range or a list).

**The inverter** is a causal decoder made of :class:`~interplab.models.toy.ToyTransformer` blocks over
``[prefix | BOS, x_0 .. x_{T-2}]``, trained with teacher forcing to predict ``x_0 .. x_{T-1}`` (with every position
read, the slot predicting ``x_t`` also gets the projected state of position ``t`` added to its input); its vocabulary
is the tokens of the training sequences (held-out tokens outside it can never be guessed: ``oov_rate`` bounds
recovery).
Training runs through the deterministic, checkpointing trainer (:class:`interplab.train.trainer.Trainer`), so a
killed run resumes to the identical inverter.

**Guesses and metrics** (held-out sequences of ``T`` tokens; guess 0 is greedy decoding, guesses ``1 .. k-1`` are
ancestral samples at temperature :attr:`InverterConfig.temperature`):

* ``exact_token_recovery`` — per-token accuracy of the first (greedy) guess: the fraction of held-out positions
  whose guessed token equals the original token *at that position*;
* ``sequence_exact_match`` — the fraction of held-out sequences whose first guess equals the whole original;
* ``token_f1`` — bag-of-tokens F1 of the first guess against the original, averaged over sequences: the F1 of the
  two token *sets* (precision = |G ∩ O| / |G|, recall = |G ∩ O| / |O|), vec2text's ``token_set_f1`` computed on the
  model's own tokens instead of NLTK words;
* ``best_of_k_token_recovery`` / ``best_of_k_sequence_exact_match`` — the same with the best of the k guesses per
  sequence (an oracle choice: an upper bound on what re-ranking could reach).

Positions holding a BOS token the model's tokenizer puts in front are left out of every metric (trivial to guess).

Where things are: this module holds the experiment (:func:`invert`) and :class:`InversionResult`; the inverter, its
inputs, training, guesses and metrics are in :mod:`interplab.finetune.invert_model` (their public names are
importable from here too), exact inversion by search in :mod:`interplab.finetune.invert_search`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from interplab.finetune.invert_model import (
    POSITIONS,
    Inverter,
    InverterConfig,
    Positions,
    check_layer,
    corpus_split,
    decode_guesses,
    guess_metrics,
    parse_dims,
    residual_hook,
    residual_states,
    select_inputs,
    token_set_f1,
    train_inverter,
)
from interplab.io.atomic import write_json
from interplab.io.results import Result

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "POSITIONS",
    "PUBLISHED",
    "InversionResult",
    "Inverter",
    "InverterConfig",
    "Positions",
    "check_layer",
    "corpus_split",
    "decode_guesses",
    "guess_metrics",
    "invert",
    "parse_dims",
    "residual_hook",
    "residual_states",
    "token_set_f1",
    "train_inverter",
]


PUBLISHED: dict[str, dict[str, Any]] = {
    "vec2text": {
        "paper": "Morris et al. 2023, Text Embeddings Reveal (Almost) As Much As Text",
        "setting": "32-token inputs from one sentence embedding (GTR-base), 50 correction steps + beam search",
        "sequence_exact_match": 0.92,
    },
    "rep2text": {
        "paper": "Huang et al. 2025, Rep2Text: Decoding Full Text from a Single LLM Token Representation",
        "setting": "16-token inputs from the last token's state of a 7-8B LLM",
        "token_recovery": 0.5,
    },
}
"""The published reference points the report compares with (different models and settings: orders of magnitude,
not like-for-like numbers)."""


# ------------------------------------------------------------------------------------------ the result
@dataclass
class InversionResult(Result):
    """Inverters at one or more layers / dimension subsets / position modes of one model, their guesses on held-out
    text and the search upper bound. ``runs``: one dict per inverter (settings and the metrics of
    :func:`guess_metrics`, its training curve); ``examples``: a few held-out inputs with their k guesses (token
    strings); ``search``: :func:`interplab.finetune.invert_search.search_inversion`'s summary or None;
    ``primary``: the name of the run the headline reports."""

    KIND: ClassVar[str] = "inversion"
    FILE: ClassVar[str] = "inversion.json"

    model: str
    n_layers: int
    d_model: int
    seq_len: int
    primary: str
    runs: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    search: dict | None = None
    config: dict = field(default_factory=dict)
    chance_token_recovery: float | None = None

    def run(self, name: str) -> dict:
        for r in self.runs:
            if r["name"] == name:
                return r
        raise KeyError(f"no inverter run named {name!r}; runs: {[r['name'] for r in self.runs]}.")

    def curve(self, kind: str) -> list[dict]:
        """Rows of the curve ``kind``: ``"layer"`` (all dims, all positions, by layer), ``"dims"`` (at the primary
        layer, by kept fraction), ``"last"`` or ``"prior"``."""
        p = self.run(self.primary)
        if kind == "layer":
            rows = [r for r in self.runs if r["positions"] == "all" and r["dims"] == "all"]
            return sorted(rows, key=lambda r: r["layer"])
        if kind == "dims":
            rows = [r for r in self.runs if r["positions"] == "all" and r["layer"] == p["layer"]]
            return sorted(rows, key=lambda r: -r["dims_fraction"])
        return [r for r in self.runs if r["positions"] == ("last" if kind == "last" else "none")]

    def headline(self) -> dict[str, Any]:
        p = self.run(self.primary)
        keys = (
            "exact_token_recovery",
            "sequence_exact_match",
            "token_f1",
            "best_of_k_token_recovery",
            "best_of_k_sequence_exact_match",
        )

        def short(r: dict) -> dict:
            return {
                "layer": r["layer"],
                "dims": r["dims"],
                "dims_fraction": r["dims_fraction"],
                "positions": r["positions"],
                **{k: r[k] for k in keys},
            }

        h: dict[str, Any] = {
            "layer": p["layer"],
            "exact_token_recovery": p["exact_token_recovery"],
            "token_f1": p["token_f1"],
            "search_exact_match": None if self.search is None else self.search["exact_match"],
            "sequence_exact_match": p["sequence_exact_match"],
            "best_of_k_token_recovery": p["best_of_k_token_recovery"],
            "exact_token_recovery_ci": p["exact_token_recovery_ci"],
            "dims": p["dims"],
            "positions": p["positions"],
            "oov_rate": p["oov_rate"],
            "chance_token_recovery": self.chance_token_recovery,
        }
        if self.search is not None:
            h["search_token_accuracy"] = self.search["token_accuracy"]
            h["search_seconds_per_sequence"] = self.search["seconds_per_sequence"]
            h["search_layer"] = self.search["layer"]
        for kind in ("layer", "dims", "last", "prior"):
            rows = self.curve(kind)
            if len(rows) > (1 if kind in ("layer", "dims") else 0):
                h[f"curve_vs_{kind}" if kind in ("layer", "dims") else kind] = [short(r) for r in rows]
        return h

    def to_frame(self, *args: Any, **kwargs: Any):
        import pandas as pd

        cols = [
            "name",
            "layer",
            "dims",
            "n_dims",
            "dims_fraction",
            "positions",
            "exact_token_recovery",
            "sequence_exact_match",
            "token_f1",
            "best_of_k_token_recovery",
            "best_of_k_sequence_exact_match",
            "oov_rate",
            "test_loss",
            "n_test_sequences",
            "seconds",
        ]
        return pd.DataFrame([{c: r.get(c) for c in cols} for r in self.runs], columns=cols)

    def _curve_figure(self, rows: list[dict], x: str, title: str, xlabel: str):
        import plotly.graph_objects as go

        fig = go.Figure()
        xs = [r[x] for r in rows]
        for key, name in (
            ("exact_token_recovery", "exact-token recovery (greedy)"),
            ("token_f1", "token F1 (sets)"),
            ("best_of_k_token_recovery", f"best of k={self.config.get('k', '')} token recovery"),
            ("sequence_exact_match", "sequence exact match"),
        ):
            err = None
            if key == "exact_token_recovery":
                err = {
                    "type": "data",
                    "symmetric": False,
                    "array": [r["exact_token_recovery_ci"][1] - r[key] for r in rows],
                    "arrayminus": [r[key] - r["exact_token_recovery_ci"][0] for r in rows],
                }
            fig.add_trace(go.Scatter(x=xs, y=[r[key] for r in rows], mode="lines+markers", name=name, error_y=err))
        for r in self.curve("prior"):
            fig.add_hline(y=r["exact_token_recovery"], line_dash="dot", annotation_text="prior (no states)")
        if self.chance_token_recovery is not None:
            fig.add_hline(y=self.chance_token_recovery, line_dash="dash", annotation_text="chance 1/V")
        fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title="held-out score", yaxis_range=[0, 1.02])
        return fig

    def plot(self):
        """Exact-token recovery, token F1 and sequence exact match against the layer."""
        return self._curve_figure(
            self.curve("layer"), "layer", f"{self.model}: inversion vs layer", "layer (residual stream entering it)"
        )

    def plot_dims(self):
        """The same against the fraction of dimensions kept at the primary layer."""
        return self._curve_figure(
            self.curve("dims"),
            "dims_fraction",
            f"{self.model}: inversion vs dimensions kept (layer {self.run(self.primary)['layer']})",
            "fraction of residual dimensions kept (leading coordinates)",
        )

    def plot_training(self):
        """Held-out teacher-forced loss over training, one line per inverter."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for r in self.runs:
            pts = [m for m in r.get("curve", []) if m.get("test_loss") is not None]
            fig.add_trace(
                go.Scatter(x=[m["step"] for m in pts], y=[m["test_loss"] for m in pts], mode="lines", name=r["name"])
            )
        fig.update_layout(title="Inverter training: held-out loss (teacher forcing)", xaxis_title="step")
        return fig


# ------------------------------------------------------------------------------------------ the experiment
def _run_name(layer: int, dims_label: str, positions: str) -> str:
    return f"L{layer}-{dims_label.replace(' ', '')}-{positions}"


def _same_run(rec: dict, cfg: InverterConfig, train: torch.Tensor, test: torch.Tensor, n_dims: int) -> bool:
    """Whether a finished inverter's summary was made with this config, training set size, held-out set (its size and
    first sequences) and number of dims (else it is trained again)."""
    run, ex = rec.get("run", {}), rec.get("examples", [])
    return (
        rec.get("config") == asdict(cfg)
        and rec.get("n_train") == int(train.shape[0])
        and run.get("n_test_sequences") == int(test.shape[0])
        and run.get("n_dims") == n_dims
        and all(e["original_ids"] == test[i].tolist() for i, e in enumerate(ex))
    )


def _token_strings(model: Model, ids: Sequence[int]) -> list[str]:
    if model.tokenizer is None:
        return [str(i) for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]


def invert(
    model: Model,
    layer: int,
    *,
    layers: Sequence[int] = (),
    dims: str | Sequence[int] | None = "all",
    dims_fractions: Sequence[float] = (),
    last_position: bool = False,
    prior: bool = False,
    search: int = 0,
    search_layer: int | None = None,
    seq_len: int = 16,
    n_train: int = 2000,
    n_test: int = 200,
    corpus: str | Path | None = None,
    cfg: InverterConfig | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    n_examples: int = 4,
    progress: bool = False,
    status: Callable[[str], None] | None = None,
) -> InversionResult:
    """Train inverters on ``model``'s residual stream and score their guesses on held-out text.

    ``layer``: the primary layer (the headline), read with ``dims``; ``layers``: more layers for the curve vs layer
    (all dims); ``dims_fractions``: leading fractions of the dimensions at ``layer`` (the curve vs dims);
    ``last_position``: an inverter from the last position's state only at ``layer``; ``prior``: one that sees no
    states (the corpus prior); ``search``: the number of held-out sequences inverted exactly by search at
    ``search_layer`` (default ``layer``), 0 for none. ``seq_len``, ``n_train``, ``n_test``, ``corpus``: the data
    (:func:`corpus_split`); ``cfg``: the inverter. ``out``: where each inverter keeps its checkpoints and its finished
    summary (``out/inverters/<name>/``); with ``resume`` a rerun into the same ``out`` reuses finished inverters and
    resumes unfinished ones from their newest checkpoint (identical result). ``status``: called with progress text."""
    import tempfile

    cfg = cfg or InverterConfig()
    say = status or (lambda s: None)
    check_layer(model, layer)
    for L in layers:
        check_layer(model, int(L))
    dims_idx, dims_label = parse_dims(dims, model.cfg.d_model)
    fracs = []
    for f in dims_fractions:
        if not 0 < float(f) <= 1:
            raise ValueError(f"dims fraction {f!r} must lie in (0, 1].")
        fracs.append(float(f))
    if search < 0:
        raise ValueError(f"search must be >= 0 sequences, got {search}.")
    s_layer = layer if search_layer is None else check_layer(model, search_layer)

    # (layer, dims indices, dims label, positions), primary first, no duplicates
    plan: list[tuple[int, list[int], str, str]] = [(layer, dims_idx, dims_label, "all")]
    for L in layers:
        plan.append((int(L), list(range(model.cfg.d_model)), "all", "all"))
    for f in fracs:
        idx, lab = parse_dims(str(f), model.cfg.d_model)
        plan.append((layer, idx, "all" if len(idx) == model.cfg.d_model else lab, "all"))
    if last_position:
        plan.append((layer, dims_idx, dims_label, "last"))
    if prior:
        plan.append((layer, dims_idx, dims_label, "none"))
    seen: set[str] = set()
    plan = [p for p in plan if not (_run_name(p[0], p[2], p[3]) in seen or seen.add(_run_name(p[0], p[2], p[3])))]

    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="interplab-invert-"))
    say("splitting the corpus …")
    train_tok, test_tok = corpus_split(model, n_train, n_test, seq_len, corpus, seed=cfg.seed)
    if test_tok.shape[0] == 0:
        raise ValueError("every held-out sequence also occurs in the training set; use a larger corpus.")
    skip_first = 1 if model.tokenizer is not None and model.default_prepend_bos else 0
    todo = sorted(
        {L for L, _, lab, pos in plan if not (root / "inverters" / _run_name(L, lab, pos) / "summary.json").exists()}
    )
    states_tr: dict[int, torch.Tensor] = {}
    states_te: dict[int, torch.Tensor] = {}
    if todo:
        say(f"caching the residual stream at layers {todo} …")
        states_tr = residual_states(model, train_tok, todo)
        states_te = residual_states(model, test_tok, todo)
    runs, examples = [], []
    for L, idx, lab, pos in plan:
        name = _run_name(L, lab, pos)
        d = root / "inverters" / name
        summary = d / "summary.json"
        if resume and summary.exists():
            rec = json.loads(summary.read_text())
            if _same_run(rec, cfg, train_tok, test_tok, len(idx)):
                runs.append(rec["run"])
                examples += rec["examples"]
                continue
        if L not in states_tr:
            states_tr.update(residual_states(model, train_tok, [L]))
            states_te.update(residual_states(model, test_tok, [L]))
        from interplab.train.trainer import latest_checkpoint

        can_resume = resume and latest_checkpoint(d) is not None
        if not can_resume and d.exists():
            shutil.rmtree(d)
        say(f"training the inverter {name} …")
        t0 = time.perf_counter()
        inv, metrics = train_inverter(
            states_tr[L],
            train_tok,
            states_te[L],
            test_tok,
            d,
            positions=pos,  # type: ignore[arg-type]  # from the plan: one of POSITIONS
            dims=idx,
            cfg=cfg,
            resume=can_resume,
            progress=progress,
            description=name,
        )
        say(f"sampling {cfg.k} guesses per held-out input ({name}) …")
        guesses = decode_guesses(inv, select_inputs(states_te[L], idx, pos), cfg.k, cfg.temperature, seed=cfg.seed)  # type: ignore[arg-type]
        m = guess_metrics(guesses, test_tok, skip_first)
        oov = float((inv.to_classes(test_tok[:, skip_first:]) == inv.unk).float().mean())
        last = metrics[-1] if metrics else {}
        rec_run = {
            "name": name,
            "layer": L,
            "hook": residual_hook(model, L),
            "dims": lab,
            "n_dims": len(idx),
            "dims_fraction": len(idx) / model.cfg.d_model,
            "positions": pos,
            **m,
            "oov_rate": oov,
            "inverter_vocab": inv.n_vocab,
            "test_loss": last.get("test_loss"),
            "train_loss": last.get("train_loss_step"),
            "steps": cfg.steps,
            "seconds": time.perf_counter() - t0,
            "curve": metrics,
        }
        ex = [
            {
                "run": name,
                "original": _token_strings(model, test_tok[i].tolist()),
                "original_ids": test_tok[i].tolist(),
                "guesses": [_token_strings(model, gs) for gs in guesses[i].tolist()],
                "guess_ids": guesses[i].tolist(),
            }
            for i in range(min(n_examples, test_tok.shape[0]))
        ]
        write_json(summary, {"config": asdict(cfg), "n_train": int(train_tok.shape[0]), "run": rec_run, "examples": ex})
        runs.append(rec_run)
        examples += ex
    search_summary = None
    if search:
        from interplab.finetune.invert_search import search_inversion

        say(f"inverting {search} held-out sequences by search at layer {s_layer} …")
        search_summary = search_inversion(model, test_tok[:search], s_layer)
    return InversionResult(
        model=model.name,
        n_layers=model.cfg.n_layers,
        d_model=model.cfg.d_model,
        seq_len=seq_len,
        primary=_run_name(layer, dims_label, "all"),
        runs=runs,
        examples=examples,
        search=search_summary,
        config={
            **asdict(cfg),
            "n_train": int(train_tok.shape[0]),
            "n_test": int(test_tok.shape[0]),
            "corpus": str(corpus or "pydoc") if model.tokenizer is not None else "uniform random tokens",
            "skip_first": skip_first,
        },
        chance_token_recovery=1 / model.cfg.d_vocab if model.tokenizer is None else None,
    )
