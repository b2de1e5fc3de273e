"""Causal tracing of factual recall, after Meng et al. (2022), "Locating and Editing Factual
Associations in GPT" (ROME), §2.1, with the resampling corruption of Zhang & Nanda (2023), "Towards
Best Practices of Activation Patching in Language Models: Metrics and Methods".

For a fact prompt ("The Eiffel Tower is located in the city of" → " Paris"):

1. *clean run*: p(answer) = p*;
2. *corrupted run*: the subject is made uninformative —
   ``corruption="noise"``: Gaussian noise N(0, ν²) added to the subject tokens' embeddings
   (``hook_embed``), ν = ``noise_scale`` (3, as ROME) × the standard deviation of subject-token
   embeddings over the fact set, ``n_samples`` draws per fact (ROME: 10);
   ``corruption="resample"`` (symmetric token replacement): the subject's tokens are replaced by
   another subject's, one run per subject (up to ``n_samples``). The candidates are the caller's
   ``resample_subjects`` (in their order) or else the built-in facts' subjects — the fact's own relation
   first, then any other relation, each tier shuffled by the seed, never a subject whose fact has the same
   answer (:func:`resample_candidates`). A candidate is *tried* when its prompt has the same number of
   tokens with every token outside the subject unchanged (so positions align), and *usable* when the
   model's own greedy prediction (top-1 next token) on it is not the answer's first token — the
   definition :func:`~interplab.tasks.facts.known_facts` uses for knowing a fact, so a usable
   corruption is one after which the model no longer gives the answer (:func:`draw_resamples`);
3. *corrupted-with-restoration runs*: the corrupted run with one clean state restored — the residual
   stream after layer L (``hook_resid_post``) at one token, or the MLP / attention output at one token
   over a *window* of ``window`` layers centred on L (ROME: 10, clipped at the ends).

The indirect effect of a state is IE = p_restored − p_corrupted; averaged over facts (AIE) per
layer and per token class: first / middle / last subject token, first subsequent token, further
tokens, last token (ROME's Figure 2 categories). The peak of the MLP map at the last subject token
in middle layers and of the attention map at the last token in late layers is ROME's GPT-2 XL
finding. :func:`refine` then patches single heads (``hook_z``) and scores single MLP neurons
(``mlp.hook_post``: attribution patching to rank, exact restoration of the top ones) at the peaks.

*Peaks.* Restoring the residual stream at the last token after the last layer restores the clean output
exactly (the logits are a function of that state alone): IE = p* − p_corrupted, the total effect TE, by
construction. At an earlier layer L the layers above can still read the corrupted subject positions, so
IE(L, last) is small until the fact has been moved to the last token and about TE after: restoring that
token's state then restores the answer itself. The maximum of the residual map is therefore usually in this
*late last-token window*, where it locates the read-out, not the recall.
:meth:`TracingResult.late_last_token_layers` defines the window as the longest run of final layers in which
restoring the last token's residual restores at least :data:`LATE_FRACTION` (half) of the mean total effect
(the last layer always belongs to it) — the layers from which the last token alone carries most of the
effect. The curve jumps from ≈ 0 to ≈ TE within a layer or two (SmolLM2-135M, "The Eiffel Tower is located
in the city of" → " Paris", noise: 0.02 at layer 22, 0.75 at 23, TE 0.68), so any fraction between about
0.1 and 0.8 gives the same window there; a stricter one breaks on the corrupted run's over- and undershoot
after the jump (layers 24–28 restore 84–88% of TE there). The headline ``peak`` is the residual peak over
the subject tokens (ROME's Figure 1a site), reported beside the MLP and attention peaks (Figures 1b, 1c);
the maximum over all maps is kept as ``peak_overall``, with ``trivial: true`` when it lies in that window.

Where things are: this module holds the procedure (:func:`trace_fact`, :func:`causal_tracing`, its checkpoint and
its workers); the corruptions are in :mod:`interplab.analyses.causal.tracing_corruption`, the traces and
:class:`TracingResult` in :mod:`interplab.analyses.causal.tracing_result`, :func:`refine` in
:mod:`interplab.analyses.causal.tracing_refine` (their public names are importable from here too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interplab.analyses.causal.engine import Cell, Method, run_cells
from interplab.analyses.causal.tracing_corruption import (
    ResampleDraw,
    draw_resamples,
    embedding_noise_std,
    resample_candidates,
    subject_noise,
    subject_span,
)
from interplab.analyses.causal.tracing_refine import refine
from interplab.analyses.causal.tracing_result import (
    BUCKETS,
    KINDS,
    LATE_FRACTION,
    SUBJECT_BUCKETS,
    Corruption,
    FactTrace,
    Kind,
    TracingResult,
    average_indirect_effect,
    bucket_of,
)
from interplab.hooks import Apply
from interplab.tasks.facts import Fact, all_facts
from interplab.tasks.pairs import pairs_from_tokens

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = [
    "BUCKETS",
    "KINDS",
    "LATE_FRACTION",
    "SUBJECT_BUCKETS",
    "Corruption",
    "FactTrace",
    "Kind",
    "ResampleDraw",
    "TracingResult",
    "average_indirect_effect",
    "bucket_of",
    "causal_tracing",
    "draw_resamples",
    "embedding_noise_std",
    "refine",
    "resample_candidates",
    "subject_noise",
    "subject_span",
    "trace_fact",
]

_KIND_HOOK = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}


def _window(layer: int, n_layers: int, window: int) -> list[int]:
    lo = max(0, layer - window // 2)
    hi = min(n_layers, layer - window // 2 + window)
    return list(range(lo, hi))


@torch.no_grad()
def trace_fact(
    model: Model,
    fact: Fact,
    corruption: Corruption = "noise",
    noise_std: float | None = None,
    noise_scale: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    kinds: Sequence[Kind] = KINDS,
    partners: Sequence[Fact] | None = None,
    seed: int = 0,
    method: Method = "fast",
    resample_subjects: Sequence[str] | None = None,
) -> FactTrace:
    """Trace one fact (Meng et al. 2022; see the module docstring).

    Args:
        model: the model (with a tokenizer).
        fact: the fact (prompt template, subject, answer).
        corruption: ``"noise"`` (Gaussian noise on the subject's embeddings) or ``"resample"`` (other subjects,
            :func:`draw_resamples`).
        noise_std: the embeddings' standard deviation ν/``noise_scale`` (:func:`embedding_noise_std`); needed
            for noise.
        noise_scale: the noise's multiple of ``noise_std`` (ROME: 3).
        n_samples: noise draws, or at most this many resampled subjects (the usable ones; see
            :func:`draw_resamples`).
        window: layers restored together for the MLP and attention kinds (ROME: 10).
        kinds: the states restored: ``"resid"``, ``"mlp"``, ``"attn"``.
        partners: facts whose subjects are resampled when ``resample_subjects`` is not given — same relation
            first, then any other (:func:`resample_candidates`); default the built-in facts.
        seed: seed of the noise / the resampled subjects' order.
        method: ``"fast"`` or ``"naive"`` (:func:`interplab.analyses.causal.engine.run_cells`).
        resample_subjects: with ``"resample"``, the candidate subjects to use, in this order (instead of
            ``partners``); those that do not fit the prompt's tokens or still give the answer are dropped.
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind {k!r}: choose from {KINDS}.")
    ids, a, b = subject_span(model, fact.prompt, fact.subject)
    ans, _ = model.first_token_id(fact.answer, "answer")
    p = len(ids)
    clean_row = torch.tensor([ids])
    extra: list[Apply] = []
    draw = None
    if corruption == "noise":
        if noise_std is None:
            raise ValueError("corruption='noise' needs noise_std (see embedding_noise_std).")
        corrupt = clean_row.repeat(n_samples, 1)
        extra = [subject_noise(model, a, b, n_samples, noise_std, noise_scale, seed)]
    elif corruption == "resample":
        if resample_subjects is not None:
            cands = list(resample_subjects)
        else:
            cands = resample_candidates(fact, all_facts() if partners is None else partners, seed)
        draw = draw_resamples(model, fact, cands, n_samples)
        corrupt = torch.tensor(draw.rows)
    else:
        raise ValueError(f"corruption must be 'noise' or 'resample', not {corruption!r}.")
    n = corrupt.shape[0]
    pairs = pairs_from_tokens("fact", clean_row.repeat(n, 1), corrupt, answer_ids=ans, wrong_ids=ans, metric="prob")
    names = [f"blocks.{layer}.{_KIND_HOOK[k]}" for k in kinds for layer in range(model.cfg.n_layers)]
    resids = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    lc, cc = model.run(clean_row, cache=names)
    p_clean = float(pairs.metric_from_final(lc[:, -1].expand(n, -1))[0])
    lx, cx = model.run(corrupt, cache=resids, interventions=extra)
    p_corrupt = float(pairs.metric_from_final(lx[:, -1]).mean())
    L = model.cfg.n_layers
    effects = {}
    for k in kinds:
        cells = []
        for layer in range(L):
            hooks = (
                [f"blocks.{layer}.{_KIND_HOOK[k]}"]
                if k == "resid"
                else [f"blocks.{x}.{_KIND_HOOK[k]}" for x in _window(layer, L, window)]
            )
            first = int(hooks[0].split(".")[1])
            for pos in range(a, p):  # states before the subject are identical in both runs: IE = 0
                cells.append(Cell(hooks[0], first, position=pos, also=tuple(hooks[1:])))
        per, _ = run_cells(
            model, pairs, cells, corrupt, cc, cx, method=method, extra_interventions=extra if method == "naive" else ()
        )
        eff = torch.full((L, p), p_corrupt)
        eff[:, a:] = per.mean(-1).view(L, p - a)
        effects[k] = eff
    return FactTrace(
        fact.prompt,
        fact.subject,
        fact.answer,
        model.to_str_tokens(clean_row[0]),
        (a, b),
        p_clean,
        p_corrupt,
        effects,
        resampled=draw.subjects if draw else [],
        n_resamples_tried=draw.n_tried if draw else 0,
        n_resamples_usable=draw.n_usable if draw else 0,
    )


def causal_tracing(
    model: Model,
    facts: Sequence[Fact],
    corruption: Corruption = "noise",
    noise_scale: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    kinds: Sequence[Kind] = KINDS,
    seed: int = 0,
    method: Method = "fast",
    partners: Sequence[Fact] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    checkpoint: str | Path | None = None,
    resample_subjects: Sequence[str] | None = None,
    backend: str = "serial",
    max_parallel: int | None = None,
    model_ref: str | None = None,
) -> TracingResult:
    """Causal tracing (Meng et al. 2022, §2.1; resampling after Zhang & Nanda 2023) over ``facts``; returns
    per-fact maps and the average indirect effect by token class.

    Args:
        model: the model (with a tokenizer).
        facts: the facts, which should be facts the model knows (:func:`interplab.tasks.facts.known_facts`).
        corruption: ``"noise"`` or ``"resample"`` (see the module docstring); with ``"resample"`` facts
            without a usable resample subject (:func:`draw_resamples`) are skipped (listed in
            ``settings["skipped"]``); when no fact is left the error says why and what to pass.
        noise_scale: ν = ``noise_scale`` × the std of the subject-token embeddings (ROME: 3).
        n_samples: noise draws / at most this many usable resampled subjects per fact (ROME: 10).
        window: layers restored together for the MLP and attention kinds (ROME: 10).
        kinds: the states restored: ``"resid"``, ``"mlp"``, ``"attn"``.
        seed: seed of fact ``i``'s corruption is ``seed + i``.
        method: ``"fast"`` or ``"naive"`` (:func:`interplab.analyses.causal.engine.run_cells`).
        partners: facts whose subjects are resampled, same relation first, then any relation
            (:func:`resample_candidates`; default: ``facts`` and the built-in facts).
        progress: called as ``progress(done, total)`` after each fact.
        checkpoint: a JSON-lines file; each finished fact is appended to it, and facts already in it (same
            prompt, subject, answer and settings) are read back instead of recomputed, so a killed run
            resumes where it stopped.
        resample_subjects: with ``"resample"``, the candidate subjects for every fact, in this order, instead
            of ``partners``' (e.g. for a fact of the user's own relation).
        backend: ``"serial"`` (in this process), ``"process"`` or ``"ray"``: the facts not yet in the checkpoint
            are dealt out in one share per worker, each of which loads the model by ``model_ref`` and
            traces its facts with the same per-fact seeds and noise scale, so the result equals the serial run
            (tested); each finished chunk is appended to the checkpoint.
        max_parallel: workers at once (default: the backend's).
        model_ref: what a worker passes to :func:`interplab.load` (default: the model's registry name, else the
            directory it was loaded from).
    """
    facts = list(facts)
    if not facts:
        raise ValueError("causal tracing needs at least one fact.")
    if backend != "serial":
        from interplab.sweeps.backends import check_backend

        check_backend(backend)
    t0 = time.perf_counter()
    std = embedding_noise_std(model, facts) if corruption == "noise" else None
    if resample_subjects is not None and corruption != "resample":
        raise ValueError("resample_subjects are only used with corruption='resample'.")
    partners = list(partners) if partners is not None else [*facts, *all_facts()]
    traces: list[FactTrace] = []
    skipped: list[str] = []
    key = {
        "model": model.name,
        "corruption": corruption,
        "noise_scale": noise_scale,
        "n_samples": n_samples,
        "window": window,
        "kinds": list(kinds),
        "seed": seed,
    }
    if resample_subjects is not None:  # only then, so checkpoints written before the option still resume
        key["resample_subjects"] = list(resample_subjects)
    done: dict[tuple, FactTrace] = {}
    ck = Path(checkpoint) if checkpoint else None
    if ck is not None and ck.exists():
        for line in ck.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if rec.get("key") == key:
                t = FactTrace.from_json(rec["trace"])
                done[(t.prompt, t.subject, t.answer, rec.get("index"))] = t
    gone: set[int] = set()  # facts the workers could not corrupt by resampling
    if backend != "serial":
        gone = _trace_in_workers(
            model,
            facts,
            done,
            ck,
            key,
            backend,
            max_parallel,
            model_ref,
            {
                "corruption": corruption,
                "noise_std": std,
                "noise_scale": noise_scale,
                "n_samples": n_samples,
                "window": window,
                "kinds": list(kinds),
                "partners": partners,
                "seed": seed,
                "method": method,
                "resample_subjects": resample_subjects,
            },
            skipped,
        )
    for i, f in enumerate(facts):
        old = done.get((f.prompt, f.subject, f.answer, i))
        if old is not None or i in gone:
            if old is not None:
                traces.append(old)
            if progress:
                progress(i + 1, len(facts))
            continue
        try:
            traces.append(
                trace_fact(
                    model,
                    f,
                    corruption=corruption,
                    noise_std=std,
                    noise_scale=noise_scale,
                    n_samples=n_samples,
                    window=window,
                    kinds=kinds,
                    partners=partners,
                    seed=seed + i,
                    method=method,
                    resample_subjects=resample_subjects,
                )
            )
            _append_checkpoint(ck, key, i, traces[-1].to_json())
        except ValueError as e:
            if corruption != "resample":
                raise
            skipped.append(str(e))
        if progress:
            progress(i + 1, len(facts))
    if not traces:
        raise ValueError(f"no fact could be traced: {skipped[0] if skipped else ''}")
    aie = average_indirect_effect(traces)
    return TracingResult(
        traces=traces,
        aie=aie,
        corruption=corruption,
        model_name=model.name,
        settings={
            "noise_scale": noise_scale,
            "noise_std": std,
            "n_samples": n_samples,
            "window": window,
            "seed": seed,
            "method": method,
            "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


def _append_checkpoint(ck: Path | None, key: dict[str, Any], index: int, trace: dict[str, Any]) -> None:
    """Append fact ``index``'s finished trace to the JSON-lines checkpoint (a line cut by a kill is skipped on
    resume)."""
    if ck is not None:
        ck.parent.mkdir(parents=True, exist_ok=True)
        with ck.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "index": index, "trace": trace}) + "\n")


def trace_chunk(model_ref: str, indices: list[int], facts: list[Fact], options: dict[str, Any]) -> list[dict]:
    """A worker's share of :func:`causal_tracing`: load the model by ``model_ref`` (one thread) and trace facts
    ``facts[i]`` for ``i`` in ``indices``, with seed ``options["seed"] + i``; returns ``{"index", "trace"}`` records
    (``{"index", "skipped"}`` for a fact resampling cannot corrupt)."""
    from interplab.sweeps.split import worker_model

    opts = dict(options)
    seed = opts.pop("seed")
    out: list[dict] = []
    with worker_model(model_ref) as model:
        for i in indices:
            f = facts[i]
            try:
                out.append({"index": i, "trace": trace_fact(model, f, seed=seed + i, **opts).to_json()})
            except ValueError as e:
                if opts["corruption"] != "resample":
                    raise
                out.append({"index": i, "skipped": str(e)})
    return out


def _trace_in_workers(
    model: Model,
    facts: list[Fact],
    done: dict[tuple, FactTrace],
    ck: Path | None,
    key: dict[str, Any],
    backend: str,
    max_parallel: int | None,
    model_ref: str | None,
    options: dict[str, Any],
    skipped: list[str],
) -> set[int]:
    """Trace the facts missing from ``done`` through a sweep backend (see :func:`causal_tracing`); fills
    ``done`` (and the checkpoint) with their traces and ``skipped`` with why resampling could not corrupt a fact;
    returns the indices of those facts, which the serial loop then passes over."""
    from interplab.sweeps.split import deal, run_shares

    todo = [i for i, f in enumerate(facts) if (f.prompt, f.subject, f.answer, i) not in done]
    if not todo:
        return set()
    why: dict[int, str] = {}

    def keep(_share: list[int], records: list[dict]) -> None:
        for rec in records:
            i = rec["index"]
            if "skipped" in rec:
                why[i] = rec["skipped"]
                continue
            t = FactTrace.from_json(rec["trace"])
            done[(t.prompt, t.subject, t.answer, i)] = t
            _append_checkpoint(ck, key, i, rec["trace"])

    run_shares(trace_chunk, model, deal(todo, max_parallel), (facts, options), keep, backend, max_parallel, model_ref)
    skipped.extend(why[i] for i in sorted(why))  # in fact order, as the serial loop lists them
    return set(why)
