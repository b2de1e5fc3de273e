"""The inverter of :mod:`interplab.finetune.invert` ("ML Chinese whispers"): what it reads (a layer's residual
stream, :func:`residual_states`; a subset of its dimensions, :func:`parse_dims`; corpus sequences,
:func:`corpus_split`), the decoder itself (:class:`Inverter`, :class:`InverterConfig`), its training
(:func:`train_inverter`), its k guesses per input (:func:`decode_guesses`) and their metrics
(:func:`guess_metrics`, :func:`token_set_f1`).

The learned-inversion setting of Morris et al. (2023), "Text Embeddings Reveal (Almost) As Much As Text" (vec2text;
``token_set_f1`` is theirs) and of Huang et al. (2025), "Rep2Text: Decoding Full Text from a Single LLM Token
Representation" (``positions="last"``). The definitions of the inputs, the decoder and the metrics are in the
docstring of :mod:`interplab.finetune.invert`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from interplab.models.toy import ToyConfig, ToyTransformer
from interplab.stats import confidence_interval

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "POSITIONS",
    "Inverter",
    "InverterConfig",
    "Positions",
    "check_layer",
    "corpus_split",
    "decode_guesses",
    "guess_metrics",
    "parse_dims",
    "residual_hook",
    "residual_states",
    "select_inputs",
    "token_set_f1",
    "train_inverter",
]


Positions = Literal["all", "last", "none"]
POSITIONS: tuple[str, ...] = ("all", "last", "none")


# ------------------------------------------------------------------------------------------ layers and dims
def check_layer(model: Model, layer: int) -> int:
    """``layer`` as an int in ``0 .. n_layers``, or a ValueError saying what the layers are."""
    n = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n:
        raise ValueError(
            f"layer {layer!r} is out of range for {model.name or 'this model'}: use 0..{n} (0 = the embedding, i.e. "
            f"the residual stream entering block 0; L = the stream entering block L; {n} = after the last block)."
        )
    return layer


def residual_hook(model: Model, layer: int) -> str:
    """The hook point of layer ``layer``'s residual stream: ``blocks.L.hook_resid_pre``, or
    ``blocks.{n-1}.hook_resid_post`` for ``L = n_layers``."""
    n = model.cfg.n_layers
    check_layer(model, layer)
    return f"blocks.{layer}.hook_resid_pre" if layer < n else f"blocks.{n - 1}.hook_resid_post"


def residual_states(
    model: Model, tokens: torch.Tensor, layers: Sequence[int], batch: int = 64, progress: Callable | None = None
) -> dict[int, torch.Tensor]:
    """The residual stream of each of ``layers`` on ``tokens`` ``[N, T]``: ``{layer: float32 [N, T, d_model]}``, from
    one forward pass per batch that caches every requested layer and stops after the deepest one."""
    layers = sorted({check_layer(model, int(L)) for L in layers})
    if not layers:
        raise ValueError("give at least one layer.")
    names = {L: residual_hook(model, L) for L in layers}
    stop = min(max(layers) + 1, model.cfg.n_layers)
    out: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    for i in range(0, tokens.shape[0], batch):
        cache = model.run(
            tokens[i : i + batch], cache=list(names.values()), stop_at_layer=stop, return_resid=True
        ).cache
        for L, name in names.items():
            out[L].append(cache[name].detach().float().cpu())
        if progress is not None:
            progress(min(i + batch, tokens.shape[0]), tokens.shape[0])
    return {L: torch.cat(v) for L, v in out.items()}


def parse_dims(spec: str | Sequence[int] | None, d_model: int) -> tuple[list[int], str]:
    """The residual dimensions an inverter reads, as sorted indices and a label.

    ``spec``: ``None``/``"all"``; ``"lower-half"`` (``0 .. d/2-1``) or ``"upper-half"``; a fraction ``F`` in
    ``(0, 1]`` (the first ``round(F d)`` dimensions, at least 1); a range ``"A:B"`` (``A .. B-1``); a comma list
    ``"3,7,9"``; or a sequence of ints. Anything empty, out of ``0 .. d-1``, repeated or unreadable is a ValueError."""
    d = d_model
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "all")):
        return list(range(d)), "all"
    if not isinstance(spec, str):
        idx = [int(i) for i in spec]
        label = f"{len(idx)} dims"
    else:
        s = spec.strip()
        try:
            if s == "lower-half":
                idx, label = list(range(d // 2)), "lower-half"
            elif s == "upper-half":
                idx, label = list(range(d // 2, d)), "upper-half"
            elif ":" in s:
                a, b = (int(x) for x in s.split(":", 1))
                if not a < b:
                    raise ValueError(f"dims {spec!r}: the range A:B needs A < B.")
                idx, label = list(range(a, b)), s
            elif "," in s or s.lstrip("-").isdigit():
                idx, label = [int(x) for x in s.split(",") if x.strip()], s
            else:
                f = float(s)
                if not 0 < f <= 1 or math.isnan(f):
                    raise ValueError(f"dims {spec!r}: a fraction must lie in (0, 1].")
                idx, label = list(range(max(1, round(f * d)))), f"first {f:g}"
        except ValueError as e:
            if str(e).startswith("dims "):
                raise
            raise ValueError(
                f"dims {spec!r} is not readable: use all, lower-half, upper-half, a fraction in (0, 1], a range A:B "
                "or a comma list of indices."
            ) from None
    if not idx:
        raise ValueError(f"dims {spec!r} selects no dimension.")
    bad = [i for i in idx if not 0 <= i < d]
    if bad:
        raise ValueError(f"dims {spec!r}: indices {bad[:5]} are outside 0..{d - 1} (d_model = {d}).")
    if len(set(idx)) != len(idx):
        raise ValueError(f"dims {spec!r} repeats an index.")
    return sorted(idx), label


# ------------------------------------------------------------------------------------------ data
def corpus_split(
    model: Model, n_train: int, n_test: int, seq_len: int, source: str | Path | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out token sequences ``[n, seq_len]``.

    Models with a tokenizer: consecutive chunks of the corpus (:func:`interplab.tasks.corpus.token_chunks`), the
    training ones from its start and the held-out ones from its end (later text), held-out chunks that also occur
    among the training chunks dropped. Models without one: uniform random tokens from a seeded generator
    (chance = 1 / d_vocab)."""
    if min(n_train, n_test, seq_len) < 1:
        raise ValueError(f"need n_train, n_test and seq_len >= 1; got {n_train}, {n_test}, {seq_len}.")
    if seq_len > model.cfg.n_ctx:
        raise ValueError(f"seq_len={seq_len} exceeds the model's context n_ctx={model.cfg.n_ctx}.")
    if model.tokenizer is None:
        g = torch.Generator().manual_seed(seed)
        toks = torch.randint(0, model.cfg.d_vocab, (n_train + n_test, seq_len), generator=g)
        return toks[:n_train], toks[n_train:]
    from interplab.tasks.corpus import corpus_text, token_chunks

    n_ids = len(model.tokenizer(corpus_text(source), add_special_tokens=False)["input_ids"])
    bos = 1 if model.default_prepend_bos else 0
    body = seq_len - bos
    if (n_train + n_test) * body > n_ids:
        raise ValueError(
            f"the corpus has {n_ids} tokens: too few for {n_train} + {n_test} sequences of {body}. Ask for fewer or "
            "shorter sequences, or give a longer text file."
        )
    train = token_chunks(model, source, n_chunks=n_train, chunk_len=seq_len)
    test = token_chunks(model, source, n_chunks=n_test, chunk_len=seq_len, start=n_ids - n_test * body)
    seen = {tuple(r) for r in train.tolist()}
    keep = [i for i, r in enumerate(test.tolist()) if tuple(r) not in seen]
    return train, test[keep]


# ------------------------------------------------------------------------------------------ the inverter
@dataclass
class InverterConfig:
    """The inverter and its training. ``d_model``/``n_layers``/``n_heads``/``d_mlp``: the decoder's size;
    ``n_prefix``: prefix vectors made from one state (``positions="last"``/``"none"``); ``steps``, ``batch_size``,
    ``lr`` (AdamW, linear warm-up over ``warmup`` steps then cosine to 10 %), ``weight_decay``; ``log_every``,
    ``ckpt_every``: the trainer's schedule; ``eval_seqs``: held-out sequences scored at log steps; ``k``: guesses
    per input; ``temperature`` of guesses 1..k-1; ``seed``."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 512
    n_prefix: int = 4
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    log_every: int = 100
    ckpt_every: int = 200
    eval_seqs: int = 64
    k: int = 10
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "d_mlp", "n_prefix", "batch_size", "k", "eval_seqs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"InverterConfig.{name} must be at least 1, got {getattr(self, name)}.")
        if self.d_model % self.n_heads:
            raise ValueError(f"InverterConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads}.")
        if self.steps < 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("InverterConfig needs steps >= 0, lr > 0 and temperature > 0.")

    @classmethod
    def from_dict(cls, d: dict) -> InverterConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Inverter(nn.Module):
    """A causal decoder over ``[prefix | BOS, x_0 .. x_{T-2}]`` that predicts ``x_0 .. x_{T-1}`` from a model's
    residual states. ``vocab``: the model token id of each of its classes (its own ids ``0 .. V-1``; ``V`` is BOS and
    ``V+1`` stands for any token outside the vocabulary, as input only); ``mean``/``std``: the standardisation of the
    states (``[T, d]`` for ``positions="all"``, ``[d]`` otherwise)."""

    vocab: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        d_in: int,
        seq_len: int,
        vocab: torch.Tensor,
        positions: Positions,
        cfg: InverterConfig,
        mean: torch.Tensor,
        std: torch.Tensor,
    ):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}.")
        self.positions = positions
        self.seq_len = seq_len
        self.n_vocab = int(vocab.numel())
        self.bos, self.unk = self.n_vocab, self.n_vocab + 1
        self.n_prefix = seq_len if positions == "all" else cfg.n_prefix
        self.register_buffer("vocab", vocab.long().clone())
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())
        dm = cfg.d_model
        self.proj = nn.Linear(d_in, dm if positions == "all" else cfg.n_prefix * dm)
        self.body: Any = ToyTransformer(  # blocks, embed, ln_final, unembed reached by attribute
            ToyConfig(
                n_layers=cfg.n_layers,
                d_model=dm,
                n_heads=cfg.n_heads,
                d_head=dm // cfg.n_heads,
                d_mlp=cfg.d_mlp,
                d_vocab=self.n_vocab + 2,
                n_ctx=self.n_prefix + seq_len,
                act_fn="gelu",
                normalization="LN",
                positional=None,
                seed=cfg.seed,
            )
        )
        self.pos = nn.Parameter(torch.randn(self.n_prefix + seq_len, dm) * 0.02)
        self.prefix_norm = nn.LayerNorm(dm)

    def prefix(self, states: torch.Tensor) -> torch.Tensor:
        """``states`` ``[b, T, d]`` (``"all"``) or ``[b, d]`` (``"last"``/``"none"``) -> ``[b, n_prefix, d_model]``."""
        z = (states.float() - self.mean) / self.std
        if self.positions == "none":
            z = torch.zeros_like(z)
        p = self.proj(z)
        if self.positions != "all":
            p = p.view(p.shape[0], self.n_prefix, -1)
        return self.prefix_norm(p)

    def hidden(self, prefix: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states ``[b, n_prefix + t, d_model]`` for a prefix and ``t`` input classes. With
        ``positions="all"`` the slot that predicts ``x_t`` also gets the state of position ``t`` added to its input (a
        direct path; the whole prefix stays visible through attention)."""
        emb = self.body.embed(tokens_in)
        if self.positions == "all":
            emb = emb + prefix[:, : emb.shape[1]]
        x = torch.cat([prefix, emb], dim=1)
        x = x + self.pos[: x.shape[1]]
        for block in self.body.blocks:
            x = block(x)
        return self.body.ln_final(x)

    def forward(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[b, T, n_vocab + 2]`` for the target classes ``[b, T]``."""
        bos = torch.full_like(targets[:, :1], self.bos)
        h = self.hidden(self.prefix(states), torch.cat([bos, targets[:, :-1]], dim=1))
        return self.body.unembed(h[:, self.n_prefix :])

    def to_classes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Model token ids -> the inverter's classes (``unk`` for tokens outside its vocabulary)."""
        pos = torch.searchsorted(self.vocab, tokens.clamp(min=0))
        pos = pos.clamp(max=self.n_vocab - 1)
        return torch.where(self.vocab[pos] == tokens, pos, torch.full_like(pos, self.unk))


def select_inputs(states: torch.Tensor, dims: Sequence[int], positions: Positions) -> torch.Tensor:
    """``[N, T, d]`` -> the inverter's input: the kept dims, all positions or the last one."""
    x = states[..., list(dims)] if len(dims) != states.shape[-1] else states
    return x if positions == "all" else x[:, -1]


def _standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over the first axis, the std floored at 1e-6 of the overall scale (so
    a constant feature stays constant instead of amplifying rounding noise)."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    scale = float(x.float().pow(2).mean().sqrt()) if x.numel() else 1.0
    return mean, std.clamp(min=1e-6 * scale + 1e-12)


# ------------------------------------------------------------------------------------------ guesses and metrics
@torch.no_grad()
def decode_guesses(
    inv: Inverter, states: torch.Tensor, k: int, temperature: float = 1.0, seed: int = 0, batch: int = 64
) -> torch.Tensor:
    """``k`` guesses per input as model token ids ``[N, k, T]``: guess 0 greedy, the others sampled at
    ``temperature`` from a seeded generator."""
    inv.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, states.shape[0], batch):
        s = states[i : i + batch]
        b = s.shape[0]
        pre = inv.prefix(s).repeat_interleave(k, dim=0)
        toks = torch.full((b * k, 1), inv.bos, dtype=torch.long)
        greedy = torch.arange(b * k) % k == 0
        for _ in range(inv.seq_len):
            logits = inv.body.unembed(inv.hidden(pre, toks)[:, -1]).float()
            logits[:, inv.n_vocab :] = -torch.inf  # never BOS or UNK
            sampled = torch.multinomial((logits / temperature).softmax(-1), 1, generator=g)[:, 0]
            nxt = torch.where(greedy, logits.argmax(-1), sampled)
            toks = torch.cat([toks, nxt[:, None]], dim=1)
        out.append(inv.vocab[toks[:, 1:]].view(b, k, inv.seq_len))
    return torch.cat(out)


def token_set_f1(guess: Sequence[int], original: Sequence[int]) -> float:
    """F1 of the two token sets (vec2text's ``token_set_f1``): 2PR/(P+R), P = |G∩O|/|G|, R = |G∩O|/|O|."""
    g, o = set(guess), set(original)
    common = len(g & o)
    if common == 0:
        return 0.0
    p, r = common / len(g), common / len(o)
    return 2 * p * r / (p + r)


def guess_metrics(guesses: torch.Tensor, originals: torch.Tensor, skip_first: int = 0) -> dict[str, Any]:
    """The metrics of the module docstring from guesses ``[N, k, T]`` and originals ``[N, T]`` (positions before
    ``skip_first`` left out), with a 95 % t interval of ``exact_token_recovery`` over sequences."""
    g, o = guesses[..., skip_first:], originals[:, skip_first:]
    n = o.shape[0]
    if n == 0 or o.shape[1] == 0:
        raise ValueError("no held-out tokens to score: give more or longer held-out sequences.")
    correct = (g == o[:, None]).float()  # [N, k, T]
    per_seq = correct[:, 0].mean(-1)
    best = correct.mean(-1).max(-1).values
    f1 = [token_set_f1(g[i, 0].tolist(), o[i].tolist()) for i in range(n)]
    lo, hi = confidence_interval(per_seq, method="t") if n >= 2 else (torch.tensor(math.nan), torch.tensor(math.nan))
    return {
        "exact_token_recovery": float(per_seq.mean()),
        "exact_token_recovery_ci": [float(lo), float(hi)],
        "sequence_exact_match": float(correct[:, 0].min(-1).values.mean()),
        "token_f1": float(sum(f1) / n),
        "best_of_k_token_recovery": float(best.mean()),
        "best_of_k_sequence_exact_match": float(correct.min(-1).values.max(-1).values.mean()),
        "n_test_sequences": n,
        "n_test_tokens": int(o.numel()),
    }


# ------------------------------------------------------------------------------------------ training one inverter
def _lr_at(cfg: InverterConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_inverter(
    train_states: torch.Tensor,
    train_tokens: torch.Tensor,
    test_states: torch.Tensor,
    test_tokens: torch.Tensor,
    run_dir: str | Path,
    *,
    positions: Positions = "all",
    dims: Sequence[int] | None = None,
    cfg: InverterConfig | None = None,
    resume: bool = False,
    progress: bool = False,
    description: str = "inverter",
    callbacks: Sequence[Callable] = (),
) -> tuple[Inverter, list[dict]]:
    """Train one inverter on ``train_states`` ``[N, T, d]`` (one layer's residual stream) -> ``train_tokens``
    ``[N, T]``; returns it and its logged metrics (teacher-forced held-out loss and accuracy). Checkpoints go to
    ``run_dir`` through :class:`interplab.train.trainer.Trainer`; ``resume=True`` continues from the newest one (the
    result is identical to an uninterrupted run). ``callbacks``: the trainer's per-step callbacks."""
    from interplab.train.trainer import Trainer

    cfg = cfg or InverterConfig()
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}.")
    if train_states.ndim != 3 or train_states.shape[:2] != train_tokens.shape:
        raise ValueError(
            f"train_states must be [N, T, d] matching train_tokens [N, T]; got {tuple(train_states.shape)} and "
            f"{tuple(train_tokens.shape)}."
        )
    dims = list(range(train_states.shape[-1])) if dims is None else list(dims)
    x_train = select_inputs(train_states, dims, positions)
    x_test = select_inputs(test_states, dims, positions)[: cfg.eval_seqs]
    mean, std = _standardisation(x_train)
    vocab = torch.unique(train_tokens)
    inv = Inverter(len(dims), train_tokens.shape[1], vocab, positions, cfg, mean, std)
    y_train, y_test = inv.to_classes(train_tokens), inv.to_classes(test_tokens[: cfg.eval_seqs])
    opt = torch.optim.AdamW(inv.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x_train.shape[0]

    def step_fn(step: int) -> torch.Tensor:
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        logits = inv(x_train[idx], y_train[idx])
        return F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten())

    def eval_fn(step: int) -> dict:
        if x_test.shape[0] == 0:
            return {}
        logits = inv(x_test, y_test).float()
        target = torch.where(y_test == inv.unk, -100, y_test)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
        acc = (logits[..., : inv.n_vocab].argmax(-1) == y_test).float().mean()
        return {"test_loss": float(loss), "test_tf_accuracy": float(acc)}

    trainer = Trainer.for_config(
        cfg,
        inv,
        opt,
        step_fn,
        eval_fn,
        run_dir,
        generators={"batches": gen},
        callbacks=list(callbacks),
        progress=progress,
        description=description,
        grad_clip=1.0,
    )
    metrics = trainer.fit(resume=resume)
    inv.eval()
    return inv, metrics
