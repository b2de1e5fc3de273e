"""What ``interplab serve`` runs: one analysis of a user's prompt or pair, saved as an ordinary run directory.

Each analysis is a library function (the page adds no numbers of its own): the logit lens
(:func:`~interplab.analyses.observational.lens.logit_lens`, nostalgebraist 2020), the attention patterns
(``blocks.L.attn.hook_pattern``), direct logit attribution
(:func:`~interplab.analyses.observational.dla.direct_logit_attribution`, Elhage et al. 2021) and activation
patching of every head on one clean/corrupt pair
(:func:`~interplab.analyses.causal.patching.activation_patching`, grid ``heads``; Wang et al. 2022; Heimersheim &
Nanda 2024). Every run is a run directory (:class:`~interplab.io.runs.Run`): ``run.json``, the Result's data files
and ``report.html`` built with :mod:`interplab.report.html`, whose escaping is the one the report's tests check.

:func:`check_request` refuses bad input (an empty prompt, a pair of different token lengths, an unknown
analysis) with a :class:`ValueError` that says what to do, before anything is queued.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interplab.io.atomic import save_tensors, write_json, write_text
from interplab.io.runs import Run
from interplab.report.html import Html, Report, attention_viewer, table, text

if TYPE_CHECKING:
    from interplab.analyses.causal.patching import PatchingResult
    from interplab.models.model import Model

__all__ = ["ANALYSES", "Progress", "Request", "check_request", "run_analysis"]

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: what the job is doing and how far along it is (``total`` 0: unknown)."""

ANALYSES: dict[str, dict[str, str]] = {
    "lens": {"title": "Logit lens", "input": "prompt"},
    "attention": {"title": "Attention patterns", "input": "prompt"},
    "dla": {"title": "Direct logit attribution", "input": "prompt"},
    "patching": {"title": "Head patching on a pair", "input": "pair"},
}
"""The analyses the page offers: name -> title and whether it takes a prompt or a clean/corrupt pair."""

PATCHING_STEPS = 10
"""Head patching runs in at most this many slices of layers, so that its progress can be shown."""


@dataclass(frozen=True)
class Request:
    """One job as the page sends it. ``prompt`` (with an optional ``answer`` / ``wrong``) for the prompt analyses;
    ``clean``, ``corrupt``, ``answer`` and ``wrong`` for head patching. Empty strings mean not given."""

    analysis: str
    prompt: str = ""
    answer: str | None = None
    wrong: str | None = None
    clean: str = ""
    corrupt: str = ""

    def arguments(self) -> dict[str, Any]:
        """The fields that matter to this analysis (what ``run.json`` records)."""
        if ANALYSES[self.analysis]["input"] == "pair":
            return {"clean": self.clean, "corrupt": self.corrupt, "answer": self.answer, "wrong": self.wrong}
        if self.analysis == "attention":
            return {"prompt": self.prompt}
        if self.analysis == "lens":
            return {"prompt": self.prompt, "answer": self.answer}
        return {"prompt": self.prompt, "answer": self.answer, "wrong": self.wrong}

    def summary(self) -> str:
        """One line for the page's list of runs."""
        if ANALYSES[self.analysis]["input"] == "pair":
            return f"{self.clean} / {self.corrupt}"
        return self.prompt


def _opt(s: str | None) -> str | None:
    return s if s else None


def check_request(model: Model, req: Request) -> Request:
    """``req`` with empty optional answers (and those its analysis does not use) made None, or a
    :class:`ValueError` saying what is wrong: an unknown analysis, an empty prompt, a prompt longer than the model's
    context, an answer that is no tokens, a pair that lacks a field or whose prompts tokenize to different lengths.
    Only the tokenizer runs."""
    if req.analysis not in ANALYSES:
        raise ValueError(f"unknown analysis {req.analysis!r}; choose one of {', '.join(ANALYSES)}.")
    req = dataclasses.replace(req, answer=_opt(req.answer), wrong=_opt(req.wrong))
    if req.analysis in ("lens", "attention"):  # the answers these analyses do not use are dropped
        req = dataclasses.replace(req, wrong=None, answer=req.answer if req.analysis == "lens" else None)
    model.need_tokenizer()
    if ANALYSES[req.analysis]["input"] == "pair":
        missing = [k for k in ("clean", "corrupt", "answer", "wrong") if not (getattr(req, k) or "").strip()]
        if missing:
            raise ValueError(
                f"head patching needs a clean prompt, a corrupt prompt of the same number of tokens, the answer and "
                f"the competing (wrong) answer; {', '.join(missing)} is empty."
            )
        _pairs(model, req)  # tokenizes both prompts: refuses different lengths with the token counts
        return req
    if not req.prompt.strip():
        raise ValueError("the prompt is empty: type the text whose next token the model should predict.")
    n = model.to_tokens(req.prompt).shape[1]
    if n > model.cfg.n_ctx:
        raise ValueError(f"the prompt is {n} tokens, more than the model's context of {model.cfg.n_ctx}; shorten it.")
    for what, tok in (("answer", req.answer), ("wrong answer", req.wrong)):
        if tok is not None:
            model.first_token_id(tok, what)
    if req.wrong is not None and req.answer is None and req.analysis == "dla":
        raise ValueError("a wrong answer goes with an answer: DLA compares logit(answer) with logit(wrong).")
    return req


def _pairs(model: Model, req: Request):
    from interplab.tasks.user_pairs import one_pair, user_pairs

    assert req.answer is not None and req.wrong is not None
    return user_pairs(model, [one_pair(req.clean, req.corrupt, req.answer, req.wrong)], task="your pair")


# ------------------------------------------------------------------------------------------------ analyses


def _lens(model: Model, req: Request, out: Path, progress: Progress) -> tuple[list[Html], dict[str, Any]]:
    from interplab.analyses.observational.lens import logit_lens
    from interplab.report.sections.lens import lens_parts

    progress("logit lens: running the model", 0, 1)
    res = logit_lens(model, req.prompt, answer=req.answer)
    res.save(out)
    intro = (
        "Logit lens (nostalgebraist 2020): each layer's blocks.L.hook_resid_post through the final norm and the "
        "unembedding.\n"
    )
    parts = lens_parts(res, req.answer is not None, intro=intro)
    return parts, res.headline()


def _attention(model: Model, req: Request, out: Path, progress: Progress) -> tuple[list[Html], dict[str, Any]]:
    progress("attention: running the model", 0, 1)
    tokens = model.to_tokens(req.prompt)
    n_layers = model.cfg.n_layers
    with torch.no_grad():
        _, cache = model.run(tokens, cache=lambda n: n.endswith("attn.hook_pattern"))
    patterns = cache.stack("attn.hook_pattern", range(n_layers))[:, 0].float().cpu()  # [L, H, Q, K]
    str_tokens = model.to_str_tokens(tokens[0])
    save_tensors(out / "attention.safetensors", {"pattern": patterns}, {"hook": "blocks.{L}.attn.hook_pattern"})
    write_json(out / "tokens.json", {"str_tokens": str_tokens, "ids": tokens[0].tolist()}, indent=2)
    progress("attention: drawing the viewer", 1, 2)
    viewer = attention_viewer(
        str_tokens,
        patterns.round(decimals=3),
        layer_names=[f"layer {i}" for i in range(n_layers)],
        head_names=[f"head {h}" for h in range(model.cfg.n_heads)],
    )
    parts = [
        text(
            f"Prompt: {req.prompt}\nblocks.L.attn.hook_pattern for every layer and head (rows: query, columns: key; "
            "click a row to pick the query shown coloured above the grid). Data: attention.safetensors "
            "(pattern [layer, head, query, key]) and tokens.json."
        ),
        viewer,
    ]
    return parts, {"n_tokens": len(str_tokens), "n_layers": n_layers, "n_heads": model.cfg.n_heads}


def _dla(model: Model, req: Request, out: Path, progress: Progress) -> tuple[list[Html], dict[str, Any]]:
    from interplab.analyses.observational.dla import direct_logit_attribution
    from interplab.report.sections.dla import dla_parts

    progress("direct logit attribution: running the model", 0, 1)
    answer: str | int
    if req.answer is not None:
        answer = req.answer
    else:
        with torch.no_grad():
            answer = int(model.run(model.to_tokens(req.prompt)).logits[0, -1].argmax())
    res = direct_logit_attribution(model, req.prompt, answer=answer, distractor=req.wrong)
    res.save(out)
    shown = answer if isinstance(answer, str) else model.to_str_tokens(torch.tensor([answer]))[0]
    return dla_parts(res, req.prompt, shown, req.wrong), res.headline()


def head_patching(model: Model, pairs, progress: Progress, steps: int = PATCHING_STEPS) -> PatchingResult:
    """Denoising activation patching of every head's ``hook_z`` (all positions) on ``pairs``, run as at most
    ``steps`` slices of layers so that ``progress`` can report each; the slices are joined into one Result with the
    numbers of a single :func:`~interplab.analyses.causal.patching.activation_patching` call over every layer (each
    cell is patched alone, and the bootstrap resamples depend only on the number of prompts and the seed)."""
    from interplab.analyses.causal.patching import activation_patching

    n_layers = model.cfg.n_layers
    size = max(1, math.ceil(n_layers / max(1, steps)))
    slices = [list(range(a, min(a + size, n_layers))) for a in range(0, n_layers, size)]
    parts: list[PatchingResult] = []
    for i, layers in enumerate(slices):
        progress(f"patching the heads of layers {layers[0]}–{layers[-1]} of {n_layers}", i, len(slices))
        parts.append(activation_patching(model, pairs, grid="heads", position=None, layers=layers))
    first = parts[0]
    return dataclasses.replace(
        first,
        values=torch.cat([p.values for p in parts]),
        ci_low=torch.cat([p.ci_low for p in parts]),
        ci_high=torch.cat([p.ci_high for p in parts]),
        per_prompt=torch.cat([p.per_prompt for p in parts]),
        labels=[[lab for p in parts for lab in p.labels[0]], first.labels[1]],
        settings={
            **first.settings,
            "n_forward": sum(int(p.settings["n_forward"]) for p in parts),
            "seconds": round(sum(float(p.settings["seconds"]) for p in parts), 3),
            "layer_slices": len(parts),
        },
    )


def _patching(model: Model, req: Request, out: Path, progress: Progress) -> tuple[list[Html], dict[str, Any]]:
    from interplab.report.sections.patching import patching_report

    progress("tokenizing the pair", 0, 0)
    pairs = _pairs(model, req)
    res = head_patching(model, pairs, progress)
    res.save(out)
    rep = patching_report(res, model.name, "your pair", len(pairs))
    h = res.headline()
    intro = text(
        f"Denoising activation patching of every head's output (blocks.L.attn.hook_z, all positions): the corrupt "
        f"prompt is run with one head's clean output restored. 1 = the clean logit difference "
        f"logit({req.answer!r}) − logit({req.wrong!r}) = {h['clean_metric']:.3f} restored, 0 = the corrupt one "
        f"({h['corrupt_metric']:.3f}). One pair: no confidence intervals."
    )
    parts = [intro]
    for _sid, _title, section_parts in rep.sections:
        parts += section_parts
    return parts, h


_RUNNERS: dict[str, Callable[[Model, Request, Path, Progress], tuple[list[Html], dict[str, Any]]]] = {
    "lens": _lens,
    "attention": _attention,
    "dla": _dla,
    "patching": _patching,
}


def run_analysis(
    model: Model,
    req: Request,
    runs_dir: str | Path,
    client_tag: str,
    progress: Progress | None = None,
    started: Callable[[Path], None] | None = None,
) -> Path:
    """Run ``req`` (checked by :func:`check_request`) on ``model`` into a new run directory under ``runs_dir``
    (``<timestamp>-serve-<analysis>``) and return it. ``run.json`` records the model, the analysis, its inputs and
    ``client`` (``client_tag``: a hash of the browser's id, never the id itself); the Result's files and
    ``report.html`` sit beside it. ``started(run_dir)`` is called once the directory exists. If the analysis raises,
    the run is marked failed (``run.json`` keeps the error) and the error propagates."""
    progress = progress or (lambda stage, done, total: None)
    args = {"model": model.name, "analysis": req.analysis, **req.arguments(), "client": client_tag}
    with Run(f"serve-{req.analysis}", args, root=runs_dir) as run:
        if started is not None:
            started(run.dir)
        parts, headline = _RUNNERS[req.analysis](model, req, run.dir, progress)
        progress("writing the run directory", 1, 1)
        title = ANALYSES[req.analysis]["title"]
        rep = Report(f"{title} — {model.name}", subtitle=f"interplab serve · run {run.dir.name}")
        rep.section("Input", table({"analysis": title, **{k: v for k, v in req.arguments().items() if v}}), id="input")
        rep.section(title, *parts, id=req.analysis)
        write_text(run.dir / "report.html", rep.to_html())
        run.artefacts = sorted(
            p.relative_to(run.dir).as_posix()
            for p in run.dir.rglob("*")
            if p.is_file() and p.name != "run.json" and not p.name.endswith(".tmp")
        )
        run.headline.update({"model": model.name, "analysis": req.analysis, "summary": req.summary(), **headline})
    return run.dir
