"""The ``interplab`` model provider for Inspect AI: any model ``interplab.load`` reads, as ``interplab/<name>``.

``interplab/smollm2-135m``, ``interplab//path/to/model.gguf``, ``interplab//path/to/dir`` or
``interplab/HuggingFaceTB/SmolLM2-135M-Instruct`` run any Inspect task on a model loaded by
:func:`interplab.load`, offline:

- greedy decoding by default; sampling only when the task or ``--temperature`` asks for a temperature > 0, seeded
  by ``GenerateConfig.seed`` (0 when unset), so a rerun gives the same answers;
- the model's own chat template; on a template without a system role (Gemma's) the system text opens the first user
  turn, once (:func:`chat_prompt`); a model without a template (the bundled Gemma-3-270M GGUF) gets ``role: content``
  lines after its BOS token, and its answers stop at the next ``user:`` line;
- requests from concurrent samples are gathered into batches of ``batch_size`` (model arg, default 16): batched
  generation and one forward pass per batch for log-likelihoods (:meth:`InterplabAPI.loglikelihood`, used by
  :mod:`interplab.evals.loglik`), where a context whose choices are all one token is run once for all its choices;
  in both, the tokens every prompt of a batch begins with are run once and their key/value cache shared;
- ``count_text_tokens`` uses the model's tokenizer (Inspect's default downloads a tiktoken vocabulary), and the model
  info is registered with ``set_model_info`` so that Inspect never looks the name up on the hub.

Interventions through model arguments (``-M key=value`` on Inspect's command line, ``model_args`` in Python), applied
with the one hook mechanism (:mod:`interplab.hooks`) during every forward pass of generation and scoring:

- ``steer=FILE.safetensors`` (one tensor ``[d_model]``, or the tensor named ``steer_key``), ``steer_layer=L``
  (adds to ``blocks.L.hook_resid_post``; ``steer_hook=NAME`` for another hook point), ``steer_scale=S`` (default 1):
  :class:`interplab.hooks.AddVector` at every position (Turner et al. 2023, activation addition);
- ``ablate=L.H,L.H``: zero-ablate those heads' outputs (``blocks.L.attn.hook_z``, :class:`interplab.hooks.Ablate`).

Other model args: ``batch_size``, ``device``, ``dtype`` (``float32``, ``bfloat16``, ...).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inspect_ai.model import (
    ChatMessage,
    GenerateConfig,
    ModelAPI,
    ModelInfo,
    ModelOutput,
    ModelUsage,
    set_model_info,
)
from inspect_ai.model._model_info import MODEL_INFO_LOOKUP_API_KEY
from inspect_ai.tool import ToolChoice, ToolInfo

if TYPE_CHECKING:
    import torch

    from interplab.hooks import Intervention
    from interplab.models.model import Model

__all__ = ["InterplabAPI", "chat_prompt", "fold_system", "parse_interventions", "register_model"]

DEFAULT_BATCH = 16
DEFAULT_MAX_TOKENS = 128
MIN_SHARED_PREFIX = 8  # tokens every row of a log-likelihood batch must share before they are run once
_KNOWN_ARGS = {
    "steer",
    "steer_layer",
    "steer_scale",
    "steer_hook",
    "steer_key",
    "ablate",
    "batch_size",
    "device",
    "dtype",
}

_MODELS: dict[tuple[str, str, str], Model] = {}
_MODELS_LOCK = threading.Lock()


def register_model(name: str, model: Model, device: str = "cpu", dtype: str = "") -> None:
    """Make an already loaded :class:`~interplab.models.model.Model` available as ``interplab/<name>`` (tests,
    benchmarks, and a session that has the model in memory: no second load)."""
    _MODELS[(name, device, dtype)] = model


def _load(name: str, device: str, dtype: str) -> Model:
    key = (name, device, dtype)
    with _MODELS_LOCK:
        if key not in _MODELS:
            import torch

            import interplab

            dt = getattr(torch, dtype) if dtype else None
            _MODELS[key] = interplab.load(name, device=device, dtype=dt)
        return _MODELS[key]


def parse_interventions(model: Model, args: dict[str, Any]) -> list[Intervention]:
    """The interventions the model args ask for (see the module docstring), checked against ``model``: the same
    parser as ``interplab generate`` (:func:`interplab.steering.interventions_from_args`), so ``steer`` may also be
    contrast prompts ``"A"-"B"``."""
    from interplab.steering import interventions_from_args

    return interventions_from_args(model, args)


@dataclass
class _Request:
    kind: str  # "generate" | "loglik"
    payload: Any
    key: Any
    future: asyncio.Future = field(repr=False)


class _Batcher:
    """Gathers requests from concurrent samples and runs them in batches, one batch at a time, in a worker thread."""

    def __init__(self, run: Callable[[str, list[Any]], list[Any]], batch_size: int) -> None:
        self.run = run
        self.batch_size = batch_size
        self.pending: list[_Request] = []
        self.worker: asyncio.Task | None = None

    async def submit(self, kind: str, payload: Any, key: Any = None) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append(_Request(kind, payload, (kind, key), fut))
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        import anyio

        while self.pending:
            for _ in range(3):  # let every sample that is ready enqueue its request
                await asyncio.sleep(0)
            first = self.pending[0].key
            batch = [r for r in self.pending if r.key == first][: self.batch_size]
            taken = {id(r) for r in batch}
            self.pending = [r for r in self.pending if id(r) not in taken]
            try:
                results = await anyio.to_thread.run_sync(self.run, batch[0].kind, [r.payload for r in batch])
            except Exception as e:  # noqa: BLE001 - not swallowed: every waiting sample gets the error
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
                continue
            for r, res in zip(batch, results, strict=True):
                if not r.future.done():
                    r.future.set_result(res)


class InterplabAPI(ModelAPI):
    """Inspect ``ModelAPI`` over an interplab :class:`~interplab.models.model.Model` (see the module docstring)."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 - ModelAPI's own signature
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        unknown = sorted(set(model_args) - _KNOWN_ARGS)
        if unknown:
            raise ValueError(
                f"interplab provider: unknown model arg(s) {unknown}; known: {', '.join(sorted(_KNOWN_ARGS))}."
            )
        self.args = dict(model_args)
        self.device = str(model_args.get("device", "cpu"))
        self.dtype = str(model_args.get("dtype", ""))
        self.batch_size = int(model_args.get("batch_size", DEFAULT_BATCH))
        self._interventions: list[Intervention] | None = None
        self._batcher = _Batcher(lambda kind, payloads: self._run_batch(kind, payloads), self.batch_size)
        if api_key == MODEL_INFO_LOOKUP_API_KEY:  # Inspect canonicalising the name: no weights needed
            return
        m = self.model  # load now: a bad name fails before any sample runs
        self.interventions  # noqa: B018 - check the intervention args before any sample runs
        info = ModelInfo(organization="interplab", model=m.name, context_length=m.cfg.n_ctx, output_tokens=m.cfg.n_ctx)
        set_model_info(f"interplab/{model_name}", info)
        set_model_info(model_name, info)

    # ------------------------------------------------------------------ the model
    @property
    def model(self) -> Model:
        return _load(self.model_name, self.device, self.dtype)

    @property
    def interventions(self) -> list[Intervention]:
        if self._interventions is None:
            self._interventions = parse_interventions(self.model, self.args)
        return self._interventions

    def max_connections(self) -> int:
        """Samples in flight at once: one batch's worth."""
        return self.batch_size

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def collapse_user_messages(self) -> bool:
        return True

    async def count_text_tokens(self, text: str) -> int:
        tok = self.model.tokenizer
        return len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else len(text.split())

    @property
    def has_chat_template(self) -> bool:
        """Whether the model's tokenizer has a chat template (otherwise prompts are ``role: content`` lines)."""
        return bool(getattr(self.model.need_tokenizer(), "chat_template", None))

    def prompt_text(self, messages: Sequence[ChatMessage] | str) -> str:
        """The text the model sees for ``messages``: :func:`chat_prompt` of the system, user and assistant turns."""
        if isinstance(messages, str):
            msgs = [{"role": "user", "content": messages}]
        else:
            msgs = [{"role": m.role, "content": m.text} for m in messages if m.role in ("system", "user", "assistant")]
        return chat_prompt(self.model.need_tokenizer(), msgs)

    # ------------------------------------------------------------------ Inspect entry points
    async def generate(
        self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice, config: GenerateConfig
    ) -> ModelOutput:
        prompt = self.prompt_text(input)
        max_new = config.max_tokens or DEFAULT_MAX_TOKENS
        sample = config.temperature is not None and config.temperature > 0
        key = (max_new, sample, config.temperature if sample else None, config.top_p if sample else None, config.seed)
        text, n_in, n_out, stop = await self._batcher.submit("generate", (prompt, key), key)
        return ModelOutput.from_content(
            model=self.model_name,
            content=text,
            stop_reason=stop,
        ).model_copy(update={"usage": ModelUsage(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)})

    async def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation after ``context`` (tokenised as lm-evaluation-harness does:
        trailing spaces of the context move to the continuation, the continuation's tokens are those of
        ``context + continuation`` after the context's), batched with other samples' requests."""
        return await self._batcher.submit("loglik", (context, list(continuations)))

    # ------------------------------------------------------------------ batches (worker thread)
    def _run_batch(self, kind: str, payloads: list[Any]) -> list[Any]:
        import torch

        with torch.no_grad():
            return self._generate_batch(payloads) if kind == "generate" else self._loglik_batch(payloads)

    def _generate_batch(self, payloads: list[tuple[str, tuple]]) -> list[tuple[str, int, int, str]]:
        """Batched decoding. The tokens every prompt begins with (a chat template's system prompt, a template's
        opening words) are run once, batch 1, and their key/value cache repeated over the batch; each row is then
        ``[shared prefix][padding][rest of its prompt]`` (the attention mask hides the padding, positions count
        only real tokens), so every row sees exactly its own prompt, as with left padding. Rows shorter than
        ``MIN_SHARED_PREFIX`` shared tokens are simply left-padded. A model without a chat template stops at the
        next ``"\\nuser:"`` line (its role-line prompt's next turn), which is cut from the answer."""
        import torch

        m = self.model
        tok = m.need_tokenizer()
        max_new, sample, temperature, top_p, seed = payloads[0][1]
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p, _ in payloads]
        n = max(len(x) for x in ids)
        shared = min(_common_prefix(ids), min(len(x) for x in ids) - 1) if len(ids) > 1 else 0
        if shared < MIN_SHARED_PREFIX or m.cfg.family == "toy":
            shared = 0
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        inp = torch.full((len(ids), n), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros_like(inp)
        for i, x in enumerate(ids):  # [shared prefix][padding][rest]: every prompt ends at the last position
            inp[i, :shared] = torch.tensor(x[:shared], dtype=torch.long)
            inp[i, n - len(x) + shared :] = torch.tensor(x[shared:], dtype=torch.long)
            mask[i, :shared] = 1
            mask[i, n - len(x) + shared :] = 1
        kw: dict[str, Any] = {"do_sample": sample}
        if sample:
            torch.manual_seed(0 if seed is None else int(seed))
            kw["temperature"] = float(temperature)
            if top_p is not None:
                kw["top_p"] = float(top_p)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        stop_text = None if getattr(tok, "chat_template", None) else "\nuser:"
        if stop_text is not None:
            kw.update(stop_strings=[stop_text], tokenizer=tok)
        with m.hooks(self.interventions):
            if shared:
                pre = m.hf(input_ids=inp[:1, :shared].to(m.device), use_cache=True, logits_to_keep=1)
                kw["cache"] = pre.cache
                kw["cache"].batch_repeat_interleave(len(ids))
            out = m.hf.generate(
                input_ids=inp.to(m.device),
                attention_mask=mask.to(m.device),
                max_new_tokens=int(max_new),
                pad_token_id=pad,
                **kw,
            )
        new = out[:, n:].cpu()
        ends = set(_as_list(m.hf.generation_config.eos_token_id) or _as_list(tok.eos_token_id))
        if stop_text is not None and pad is not None:
            ends.add(int(pad))  # what follows a row stopped by its stop string
        res = []
        for i, x in enumerate(ids):
            toks = new[i].tolist()
            cut = next((j for j, t in enumerate(toks) if t in ends), None)
            stop = "stop" if cut is not None else "max_tokens"
            toks = toks[:cut] if cut is not None else toks
            text = tok.decode(toks, skip_special_tokens=True)
            if stop_text is not None and stop_text in text:
                text, stop = text[: text.index(stop_text)], "stop"
            res.append((text, len(x), len(toks), stop))
        return res

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-evaluation-harness's ``HFLM._encode_pair`` (no special tokens; the chat template carries BOS)."""
        tok = self.model.need_tokenizer()
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        if not ctx:
            ctx, whole = [_prefix_token(tok)], [_prefix_token(tok), *whole]
        return ctx, whole[len(ctx) :]

    def _loglik_batch(self, payloads: list[tuple[str, list[str]]]) -> list[list[float]]:
        """One forward pass over the batch: a context whose continuations are all one token (yes/no, A/B/C/D) is
        one row that scores every choice at its last position; otherwise one row per (context, continuation)."""
        import torch

        from interplab.models.scoring import unembed_resid

        m = self.model
        rows: list[list[int]] = []
        reads: list[list[tuple[int, int, list[int]]]] = []  # per payload, per choice: (row, first pos, tokens)
        for context, conts in payloads:
            pairs = [self._encode_pair(context, c) for c in conts]
            for c, (_, ce) in zip(conts, pairs, strict=True):
                if not ce:
                    raise ValueError(f"continuation {c!r} is no tokens after its context.")
            if len({tuple(ctx) for ctx, _ in pairs}) == 1 and all(len(ce) == 1 for _, ce in pairs):
                rows.append(pairs[0][0])
                r = len(rows) - 1
                reads.append([(r, len(pairs[0][0]) - 1, ce) for _, ce in pairs])
            else:
                mine = []
                for ctx, ce in pairs:
                    rows.append((ctx + ce)[:-1])
                    mine.append((len(rows) - 1, len(ctx) - 1, ce))
                reads.append(mine)
        n = max(len(r) for r in rows)
        if n > m.cfg.n_ctx:
            raise ValueError(f"a prompt of {n} tokens exceeds {m.name}'s context of {m.cfg.n_ctx}.")
        pad = 0
        inp = torch.full((len(rows), n), pad, dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: causal attention never sees it
            inp[i, : len(r)] = torch.tensor(r)
        first_read = min(start for mine in reads for _, start, _ in mine)
        shared = min(_common_prefix(rows), first_read)
        if shared >= MIN_SHARED_PREFIX and len(rows) > 1 and m.cfg.family != "toy":
            need = sorted({p for mine in reads for _, start, ce in mine for p in range(start, start + len(ce))})
            where = torch.full((n,), -1, dtype=torch.long)
            where[torch.tensor(need)] = torch.arange(len(need))
            logits = self._forward_shared_prefix(inp, shared, [p - shared for p in need])  # [b, len(need), vocab]

            def logprobs(r: int, pos: torch.Tensor) -> torch.Tensor:
                return logits[r, where[pos]].float().log_softmax(-1)
        else:
            resid = m.run(inp, interventions=self.interventions, return_resid=True).logits

            def logprobs(r: int, pos: torch.Tensor) -> torch.Tensor:
                return unembed_resid(m, resid[r, pos]).float().log_softmax(-1)

        # a context's one-token choices all read the same row and position: one log-softmax over the vocabulary for
        # them all (only the last span is kept, so memory stays one span's worth)
        last: tuple[tuple[int, int, int], torch.Tensor] | None = None
        out: list[list[float]] = []
        for mine in reads:
            vals = []
            for r, start, ce in mine:
                span = (r, start, len(ce))
                if last is None or last[0] != span:
                    last = (span, logprobs(r, torch.arange(start, start + len(ce))))
                logp = last[1]
                vals.append(float(logp[torch.arange(len(ce)), torch.tensor(ce)].double().sum()))
            out.append(vals)
        return out

    def _forward_shared_prefix(self, inp: torch.Tensor, shared: int, keep: list[int]) -> torch.Tensor:
        """Logits ``[b, len(keep), vocab]`` at positions ``shared + keep`` of every row, running the ``shared``
        tokens all rows begin with once (batch 1, its key/value cache repeated over the batch) and then the rest of
        each row: the chat template's system prompt and the template's opening words cost one row instead of ``b``.
        Only the positions read are unembedded (``logits_to_keep``; Gemma's 262k-token unembedding would otherwise
        dominate). Interventions apply to both passes (the same hook session)."""
        import torch

        m = self.model
        with m.hooks(self.interventions):
            pre = m.hf(input_ids=inp[:1, :shared].to(m.device), use_cache=True)
            cache = pre.cache
            cache.batch_repeat_interleave(inp.shape[0])
            idx = torch.tensor(keep, device=m.device)
            return m.hf(input_ids=inp[:, shared:].to(m.device), cache=cache, use_cache=True, logits_to_keep=idx).logits


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` with the system turns' text moved to the start of the first user turn, joined by a blank line:
    Gemma's own convention (its chat template has no system role and writes ``system + "\\n\\n" + user``)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def chat_prompt(tok: Any, messages: list[dict[str, str]]) -> str:
    """Prompt text for ``messages`` (dicts with ``role`` and ``content``), ending where the assistant's reply starts.

    - A tokenizer with a chat template renders them with the generation prompt. A template without a system role
      (Gemma's, some Mistral ones) either raises on a system turn or drops it silently; then the system text goes at
      the start of the first user turn (:func:`fold_system`) and the template renders that, so a system instruction
      reaches the prompt exactly once on every model.
    - Without a template: ``role: content`` lines and ``assistant:``, after the BOS token when the tokenizer adds one
      by default (prompts are tokenised without special tokens; Gemma's predictions fall apart without its BOS).
    """
    if not getattr(tok, "chat_template", None):
        bos = tok.bos_token if _adds_bos(tok) else ""
        return bos + "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    from jinja2.exceptions import TemplateError

    system = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
    if system:
        try:
            text = str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except TemplateError:  # a template that refuses the system role
            text = None
        if text is not None and all(s in text for s in system):
            return text
        messages = fold_system(messages)
    return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _adds_bos(tok: Any) -> bool:
    if tok.bos_token is None or tok.bos_token_id is None:
        return False
    ids = tok("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tok.bos_token_id


def _common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest token prefix every row shares."""
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    return [int(v) for v in x] if isinstance(x, (list, tuple)) else [int(x)]


def _prefix_token(tok: Any) -> int:
    for t in (tok.bos_token_id, tok.eos_token_id):
        if t is not None:
            return int(t)
    raise ValueError("an empty context needs a BOS or EOS token to condition on; this tokenizer has neither.")
