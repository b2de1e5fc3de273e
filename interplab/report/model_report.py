"""The model report: model card, logit lens on a few prompts, attention-pattern viewer.

``build_report(model, out_dir)`` writes ``out_dir/report.html`` (self-contained, works offline) and
the logit-lens data as JSON next to it (``out_dir/lens_<name>.json``). The report only assembles
results; the numbers come from :mod:`interplab.analyses`.

Besides the analyses it runs, the report shows results other commands wrote (the ``finetune``, ``invert``,
``organisms`` and ``evals`` sections): found in the model directory (a fine-tune's ``finetune_result.json``, an
organism's ``organism.json``) and in run directories given with ``runs`` (``interplab report --runs DIR``), rendered
through the registry of run kinds in :mod:`interplab.report.runs`. Every section builder receives a
:class:`ReportContext` (the focus prompt and those runs).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interplab.analyses.observational.lens import LogitLensResult, logit_lens
from interplab.report.html import Html, Report, attention_viewer, heading, table, text
from interplab.report.runs import SECTION_NEEDS, ReportRun, find_runs, run_parts

if TYPE_CHECKING:
    from interplab.models.model import Model
    from interplab.tasks.pairs import PromptPairs

__all__ = ["DEFAULT_PROMPTS", "ReportContext", "ReportPrompt", "build_report", "plan_report"]


@dataclass(frozen=True)
class ReportPrompt:
    name: str
    prompt: str
    answer: str | None = None  # None: the model's own top prediction
    wrong: str | None = None  # DLA's distractor: logit(answer) - logit(wrong); None: logit(answer) alone


DEFAULT_PROMPTS: tuple[ReportPrompt, ...] = (
    ReportPrompt("ioi", "When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ReportPrompt("factual", "The Eiffel Tower is located in the city of", " Paris"),
    ReportPrompt(
        "induction", "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy", " dog"
    ),
)


def _prompts(prompts: Any) -> list[ReportPrompt]:
    if prompts is None:
        return list(DEFAULT_PROMPTS)
    if isinstance(prompts, (str, ReportPrompt, Mapping)):
        prompts = [prompts]
    out: list[ReportPrompt] = []
    for i, p in enumerate(prompts):
        if isinstance(p, ReportPrompt):
            out.append(p)
        elif isinstance(p, str):
            out.append(ReportPrompt(f"prompt{i + 1}", p))
        elif isinstance(p, Mapping):
            out.append(
                ReportPrompt(str(p.get("name") or f"prompt{i + 1}"), p["prompt"], p.get("answer"), p.get("wrong"))
            )
        elif isinstance(p, (tuple, list)) and 1 <= len(p) <= 2:
            out.append(ReportPrompt(f"prompt{i + 1}", p[0], p[1] if len(p) > 1 else None))
        else:
            raise TypeError(
                f"prompt {i}: expected a str, (prompt, answer), a dict with 'prompt' or a ReportPrompt, got {p!r}."
            )
    if not out:
        raise ValueError("prompts is empty; pass None for the built-in prompts.")
    return out


def _file_stem(name: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "prompt"
    base, i = stem, 2
    while stem in taken:
        stem, i = f"{base}_{i}", i + 1
    taken.add(stem)
    return stem


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n:,} ({n / div:.1f}{unit})"
    return f"{n:,}"


def _model_card(model: Model) -> list[Html]:
    info = {
        "name": model.name,
        "family": model.cfg.family,
        "parameters": _human(model.n_params),
        "load time": f"{model.load_seconds:.2f} s",
        "source": model.source or "(in memory)",
        "device": str(model.device),
        "dtype": str(next(model.hf.parameters()).dtype).replace("torch.", ""),
    }
    return [table(info), heading("Config (model.cfg)"), table(model.cfg.to_dict())]


def _lens_parts(res: LogitLensResult, p: ReportPrompt, json_name: str) -> list[Html]:
    from interplab.report.sections.lens import lens_parts

    return [heading(f"{p.name}"), *lens_parts(res, p.answer is not None, data_name=json_name)]


# ---- optional analysis sections: each runs its analysis on a small workload, saves the Result next to the
# report and returns the HTML parts (rendered by interplab.report.sections); build_report records its time


_OV_COPYING: weakref.WeakKeyDictionary[Model, Any] = weakref.WeakKeyDictionary()


def _ov_copying(model: Model) -> Any:
    """The OV copying scores of ``model``, computed once for the heads and the weights sections of one report
    (they are its slowest weight computation: minutes on SmolLM2)."""
    from interplab.analyses.weights.copying import ov_copying

    if model not in _OV_COPYING:
        _OV_COPYING[model] = ov_copying(model)
    return _OV_COPYING[model]


def _heads_section(model: Model, out: Path, _ctx: ReportContext) -> list[Html]:
    """Head detectors (interplab.analyses.observational.heads) on a small input set, with their null baselines."""
    from interplab.analyses.observational.heads import head_scores
    from interplab.report.sections.heads import heads_parts

    res = head_scores(model, n_seqs=8, batch=8, ov=_ov_copying(model))
    res.save(out)
    return heads_parts(res)


def _weights_section(model: Model, out: Path, _ctx: ReportContext) -> list[Html]:
    """Composition scores and per-head OV copying scores (interplab.analyses.weights)."""
    from interplab.analyses.weights import composition_scores, head_circuits
    from interplab.report.sections.weights import weights_parts

    comp = composition_scores(model)
    comp.save(out)
    circ = head_circuits(model, n_directions=1, top_k=5, ov=_ov_copying(model))
    circ.save(out)
    return weights_parts(comp, circ)


def _dla_section(model: Model, out: Path, ctx: ReportContext) -> list[Html]:
    """Direct logit attribution (interplab.analyses.observational.dla) on the focus prompt: of its answer (default:
    the model's top prediction) against its wrong answer when it has one."""
    from interplab.analyses.observational.dla import direct_logit_attribution
    from interplab.report.sections.dla import dla_parts

    focus = ctx.focus
    answer: str | int = focus.answer if focus.answer is not None else _top_prediction(model, focus.prompt)
    res = direct_logit_attribution(model, focus.prompt, answer=answer, distractor=focus.wrong)
    res.save(out)
    shown = answer if isinstance(answer, str) else model.to_str_tokens(torch.tensor([answer]))[0]
    return dla_parts(res, focus.prompt, shown, focus.wrong)


def _top_prediction(model: Model, prompt: str) -> int:
    with torch.no_grad():
        return int(model.run(model.to_tokens(prompt)).logits[0, -1].argmax())


def _ablation_section(model: Model, out: Path, _ctx: ReportContext) -> list[Html]:
    """Head-ablation importance on corpus text (interplab.analyses.causal.ablation), small workload."""
    from interplab.analyses.causal.ablation import head_ablation_importance
    from interplab.report.sections.ablation import ablation_parts

    res = head_ablation_importance(model, n_chunks=4, chunk_len=min(64, model.cfg.n_ctx), how="zero")
    res.save(out)
    return ablation_parts(res)


def _logit_pca_section(model: Model, out: Path, _ctx: ReportContext) -> list[Html]:
    """Logit-lens logits on fixed random tokens, every layer projected on common principal components."""
    from interplab.analyses.observational.logit_pca import logit_pca
    from interplab.report.sections.logit_pca import model_report_parts

    res = logit_pca(model)
    res.save(out)
    return model_report_parts(res)


def _ioi_pairs(model: Model, n: int) -> PromptPairs | list[Html]:
    """IOI pairs for a report section, or the section's explanatory text when they cannot be built
    (too few single-token names; :func:`build_report` has already refused a model without a tokenizer)."""
    from interplab.tasks.ioi import ioi

    try:
        return ioi(model, n=n)
    except ValueError as e:
        return [text(f"IOI prompts cannot be built for this model: {e}")]


def _patching_section(model: Model, out: Path, _ctx: ReportContext) -> list[Html]:
    """IOI activation patching of every head at END (exact, fast path) and attribution patching beside it."""
    from interplab.analyses.causal import activation_patching, attribution_patching, correlation
    from interplab.report.sections.patching import patching_ioi_parts

    pairs = _ioi_pairs(model, 8)
    if isinstance(pairs, list):
        return pairs
    res = activation_patching(model, pairs, grid="heads", position="END", n_boot=200)
    att = attribution_patching(model, pairs, grid="heads", position="END", n_boot=200)
    res.save(out, "patching_ioi_heads.json")
    return patching_ioi_parts(res, att, len(pairs), correlation(att, res))


def _ioi_section(model: Model, out: Path, _ctx: ReportContext) -> list[Html]:
    """The IOI procedure: logit difference, head classes and the circuit with its faithfulness."""
    from interplab.analyses.causal.ioi import ioi_circuit
    from interplab.report.sections.ioi import ioi_parts

    pairs = _ioi_pairs(model, 16)
    if isinstance(pairs, list):
        return pairs
    res = ioi_circuit(model, pairs, detector_seqs=8)
    res.save(out / "ioi")
    return ioi_parts(res)


def _evals_section(model: Model, out: Path, ctx: ReportContext) -> list[Html]:
    """The eval runs given (``--runs DIR`` of ``interplab eval``), or else the framing eval (interplab.evals,
    log-prob method) on 12 actions x 2 templates, with clustered CIs (``interplab eval`` for the full evals); its
    Inspect logs go in ``eval_logs/``."""
    if ctx.has("evals"):
        return run_parts("evals", ctx.runs)
    from interplab.evals.provider import register_model
    from interplab.evals.run import run_eval
    from interplab.io.atomic import write_json
    from interplab.report.sections.evals import evals_parts

    register_model(model.name, model)
    res = run_eval("framing", [model.name], out / "eval_logs", template_set="0,1", limit_items=12)
    write_json(out / "evals_framing.json", res, indent=2, default=str)
    return evals_parts(res)


def _runs_section(section: str) -> Callable[[Model, Path, ReportContext], list[Html]]:
    """The builder of a section that shows results of other commands (:mod:`interplab.report.runs`)."""

    def build(_model: Model, _out: Path, ctx: ReportContext) -> list[Html]:
        return run_parts(section, ctx.runs)

    build.__doc__ = f"The {section} results found in the model directory and the runs given (RUN_KINDS)."
    return build


# Optional sections after the core ones: name -> (title, builder(model, out_dir, context) -> parts)
EXTRA_SECTIONS: dict[str, tuple[str, Callable[[Model, Path, ReportContext], list[Html]]]] = {
    "heads": ("Attention heads", _heads_section),
    "weights": ("Composition and copying (weights)", _weights_section),
    "dla": ("Direct logit attribution", _dla_section),
    "ablation": ("Head-ablation importance", _ablation_section),
    "logit-pca": ("Logit PCA across layers", _logit_pca_section),
    "patching": ("IOI activation and attribution patching", _patching_section),
    "ioi": ("IOI circuit", _ioi_section),
    "evals": ("Behavioural evals", _evals_section),
    "finetune": ("Fine-tuning", _runs_section("finetune")),
    "invert": ("Inversion of the residual stream", _runs_section("invert")),
    "organisms": ("Model organisms", _runs_section("organisms")),
}
# ablation, patching and ioi are opt-in (--sections ...,ablation): on SmolLM2 each takes minutes on 2 cores; evals
# runs an eval; finetune, invert and organisms show results of other commands (added when there are some)
DEFAULT_SECTIONS: tuple[str, ...] = tuple(
    k for k in EXTRA_SECTIONS if k not in ("ablation", "patching", "ioi", "evals", "finetune", "invert", "organisms")
)


@dataclass(frozen=True)
class ReportContext:
    """What every section builder gets besides the model and the output directory: ``focus``, the prompt of the
    attention viewer and the direct logit attribution; ``runs``, the results of other commands to show (found in
    the model directory and given with ``--runs``, :func:`interplab.report.runs.find_runs`)."""

    focus: ReportPrompt
    runs: tuple[ReportRun, ...] = ()

    def has(self, section: str) -> bool:
        return any(r.section == section for r in self.runs)


def plan_report(
    sections: Iterable[str] | None = None,
    runs: Iterable[str | Path | ReportRun] = (),
    model_dir: str | Path | None = None,
    model_name: str | None = None,
) -> tuple[list[str], tuple[ReportRun, ...]]:
    """The sections to build and the runs they show, checked before anything runs (cheap: reads ``run.json`` and
    looks for result files). ``sections=None``: ``DEFAULT_SECTIONS`` plus the sections of the runs found. A
    ValueError says what is wrong and what to do: an unknown section, a ``--runs`` directory that is not a run or
    of a kind the report does not show, a run whose section is not chosen, a run section with nothing to show."""
    runs = list(runs)
    found = tuple(find_runs(runs, model_dir))
    if sections is None:
        chosen = list(DEFAULT_SECTIONS)
        chosen += [s for s in EXTRA_SECTIONS if s not in chosen and any(r.section == s for r in found)]
    else:
        chosen = list(dict.fromkeys(sections))
    unknown = [x for x in chosen if x not in EXTRA_SECTIONS]
    if unknown:
        raise ValueError(f"unknown report section(s) {unknown}; choose from {', '.join(EXTRA_SECTIONS)}.")
    given = {Path(r.dir if isinstance(r, ReportRun) else r).resolve() for r in runs}
    for r in found:
        if r.dir.resolve() in given and r.section not in chosen:
            raise ValueError(
                f"--runs {r.dir}: a {r.kind} run, shown by the {r.section!r} section, which is not in --sections "
                f"{','.join(chosen) or 'none'}; add it (--sections {','.join([*chosen, r.section])})."
            )
    name = model_name or (str(model_dir) if model_dir is not None else "the model")
    for s in chosen:
        if s in SECTION_NEEDS and not any(r.section == s for r in found):
            raise ValueError(SECTION_NEEDS[s].format(model=name))
    return chosen, found


def build_report(
    model: Model,
    out_dir: str | Path,
    prompts: Iterable | None = None,
    top_k: int = 5,
    attention_prompt: int = 0,
    sections: Iterable[str] | None = None,
    runs: Iterable[str | Path | ReportRun] = (),
    model_dir: str | Path | None = None,
) -> Path:
    """Write ``out_dir/report.html`` for ``model`` and return its path.

    ``model``: a loaded :class:`~interplab.models.model.Model` (with a tokenizer); ``out_dir``: created if
    missing; ``top_k``: tokens per layer in the logit-lens tables; ``attention_prompt``: index of the prompt shown
    in the attention viewer and the direct logit attribution (its answer, default the model's top prediction,
    against its ``wrong`` answer when given).

    Sections: model card (name, family, config, parameters, load time, source); logit lens over the
    layers for each prompt (nostalgebraist 2020; figure and top-token table; data saved as ``lens_<name>.json``); an
    attention-pattern viewer (every layer and head) for ``prompts[attention_prompt]``.

    ``prompts``: None for the built-in IOI / factual-recall / induction prompts, or a list of
    strings, ``(prompt, answer)`` pairs, dicts ``{"name", "prompt", "answer", "wrong"}`` or :class:`ReportPrompt`.
    ``sections``: which of the analysis sections in ``EXTRA_SECTIONS`` to add (default ``DEFAULT_SECTIONS``:
    all but the slower ones, plus the sections of the results found; ``()``: none).
    ``runs``: run directories of other commands whose results the ``finetune``, ``invert``, ``organisms`` and
    ``evals`` sections show (:mod:`interplab.report.runs`); ``model_dir``: the model's directory, where a fine-tune's
    ``finetune_result.json`` or an organism's ``organism.json`` is found (default: ``model.source`` when it is one).
    The model needs a tokenizer (the report is about text)."""
    if model_dir is None and model.source and Path(model.source).is_dir():
        model_dir = model.source
    extra, found = plan_report(sections, runs, model_dir, model.name)
    if model.tokenizer is None and not (extra and set(extra) <= set(SECTION_NEEDS)):
        raise ValueError(
            f"build_report needs a model with a tokenizer, and {model.name!r} has none: the report runs text "
            "prompts. Load a model directory that includes its tokenizer, or attach one (model.tokenizer = ...); "
            f"without one, only the sections that show results of other commands ({', '.join(SECTION_NEEDS)}) "
            "can be built."
        )
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ps = _prompts(prompts)
    if not 0 <= attention_prompt < len(ps):
        raise ValueError(f"attention_prompt={attention_prompt} but there are {len(ps)} prompts.")

    report = Report(
        f"interplab report — {model.name}",
        subtitle=f"{model.cfg.family}, {model.cfg.n_layers} layers, "
        f"{model.cfg.n_heads} heads ({model.cfg.n_kv_heads} key/value), d_model {model.cfg.d_model}",
    )
    report.section("Model card", *_model_card(model), id="model-card")

    timings: dict[str, float] = {}
    if model.tokenizer is None:  # a toy organism: its card and results, no text
        report.section(
            "Logit lens and attention",
            text(
                f"{model.name} has no tokenizer: the logit lens and the attention viewer, which run text, are left out."
            ),
            id="no-text",
        )
    else:
        lens_parts: list = [
            text(
                "Logit lens (nostalgebraist 2020): each layer's residual stream (blocks.L.hook_resid_post) "
                "passed through the model's final norm and unembedding. Cells: the lens's top-1 next-token "
                "prediction and its probability; right: the tracked answer's probability at the last position. The "
                "last layer's lens is the model's own output."
            )
        ]
        taken: set[str] = set()
        for p in ps:
            t = time.perf_counter()
            res = logit_lens(model, p.prompt, answer=p.answer, top_k=top_k)
            json_name = f"lens_{_file_stem(p.name, taken)}.json"
            res.save(out, name=json_name)
            lens_parts += _lens_parts(res, p, json_name)
            timings[f"lens:{p.name}"] = time.perf_counter() - t
        report.section("Logit lens", *lens_parts, id="logit-lens")

        t = time.perf_counter()
        ap = ps[attention_prompt]
        tokens = model.to_tokens(ap.prompt)
        with torch.no_grad():
            _, cache = model.run(tokens, cache=lambda n: n.endswith("attn.hook_pattern"))
        patterns = cache.stack("attn.hook_pattern", range(model.cfg.n_layers))[:, 0]  # [L, H, Q, K]
        str_tokens = model.to_str_tokens(tokens[0])
        viewer = attention_viewer(
            str_tokens,
            patterns.round(decimals=3),
            layer_names=[f"layer {i}" for i in range(model.cfg.n_layers)],
            head_names=[f"head {h}" for h in range(model.cfg.n_heads)],
        )
        timings["attention"] = time.perf_counter() - t
        report.section(
            "Attention patterns",
            text(
                f"Prompt: {ap.prompt}\nblocks.L.attn.hook_pattern for every layer and head (rows: query, columns: key; "
                "click a row to pick the query shown coloured above the grid)."
            ),
            viewer,
            id="attention",
        )

    ctx = ReportContext(ps[attention_prompt], found)
    for name in extra:
        title, builder = EXTRA_SECTIONS[name]
        t = time.perf_counter()
        parts = builder(model, out, ctx)
        timings[name.replace("-", "_")] = time.perf_counter() - t
        report.section(title, *parts, id=name)

    timings["total"] = time.perf_counter() - t0
    import platform

    import interplab

    report.section(
        "About this report",
        table(
            {
                "interplab": interplab.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "prompts": len(ps),
                **{f"time {k}": f"{v:.2f} s" for k, v in timings.items()},
            }
        ),
        id="about",
    )
    return report.save(out / "report.html")
