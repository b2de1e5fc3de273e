"""Results of other commands shown in the model report: run directories, recognised by what they hold.

A *run* here is a directory that a command wrote: ``run.json`` (:class:`interplab.io.runs.Run`: its ``command``
names the kind) and the command's result file (``compare.json``, ``inversion.json``, ``bench.json`` ...). The model
directory itself can hold results too: a fine-tuned model holds ``finetune_result.json`` (and names its base), an
organism holds ``organism.json``; those are found by their file alone.

:data:`RUN_KINDS` is the one registry: kind -> (the report section that shows it, the run.json command names, the
result file that marks it, the function that renders it). The model report's run sections
(:func:`interplab.report.model_report.build_report`, ``interplab report --runs DIR``) render every run of their
section through it; the standalone pages of the commands render the same ``*_parts`` functions.

>>> runs = find_runs(["runs/cmp"], model_dir="runs/ft")  # doctest: +SKIP
>>> run_parts("finetune", runs)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interplab.report.html import Html, heading, text

__all__ = ["RUN_KINDS", "SECTION_NEEDS", "ReportRun", "RunKind", "find_runs", "read_run", "run_parts"]


@dataclass(frozen=True)
class ReportRun:
    """One result shown in the report: its ``kind`` (a key of :data:`RUN_KINDS`), its directory and its
    ``run.json`` (empty when the directory has none, e.g. a population member)."""

    kind: str
    dir: Path
    record: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def section(self) -> str:
        return RUN_KINDS[self.kind].section


@dataclass(frozen=True)
class RunKind:
    """How a kind of run is recognised and shown. ``section``: the report section that shows it; ``commands``: the
    ``run.json`` command names of its runs; ``marker``: the file (a glob) that holds its result; ``parts``: the
    rendering, ``parts(run) -> list[Html]``."""

    section: str
    title: str
    commands: tuple[str, ...]
    marker: str
    parts: Callable[[ReportRun], list[Html]]

    def marked(self, d: Path) -> bool:
        return any(d.glob(self.marker))


# ---- renderings: load the run's result, hand it to the section module's *_parts (the standalone pages use them too)


def _finetune(run: ReportRun) -> list[Html]:
    from interplab.finetune.loop import FinetuneResult
    from interplab.report.sections.finetune import finetune_parts

    return finetune_parts(FinetuneResult.load(run.dir))


def _compare(run: ReportRun) -> list[Html]:
    from interplab.finetune.compare import CompareResult
    from interplab.report.sections.compare import compare_parts

    return compare_parts(CompareResult.load(run.dir), int(run.record.get("arguments", {}).get("top") or 10))


def _invert(run: ReportRun) -> list[Html]:
    from interplab.finetune.invert import InversionResult
    from interplab.report.sections.invert import invert_parts

    return invert_parts(InversionResult.load(run.dir))


def _organism(run: ReportRun) -> list[Html]:
    from interplab.organisms.toy import CARD
    from interplab.report.sections.organisms import cards_parts

    card = json.loads((run.dir / CARD).read_text(encoding="utf-8"))
    return cards_parts([{"name": run.dir.name, **card}])


def _population(run: ReportRun) -> list[Html]:
    from interplab.organisms.population import read_population
    from interplab.report.sections.organisms import cards_parts

    pop = read_population(run.dir)
    cells = [run.dir / "cells" / f"{name}.json" for name in pop["members"]]
    cards = [json.loads(c.read_text(encoding="utf-8")) for c in cells if c.exists()]
    missing = len(cells) - len(cards)
    note = [text(f"{missing} of {len(cells)} members are not built yet.")] if missing else []
    return [
        text(
            f"{pop.get('n_clean')} clean and {pop.get('n_backdoored')} backdoored toy organisms, split {pop['split']}."
        ),
        *note,
        *cards_parts(cards),
    ]


def _bench(run: ReportRun) -> list[Html]:
    from interplab.report.sections.organisms import bench_parts

    res = json.loads((run.dir / "bench.json").read_text(encoding="utf-8"))
    return [text(f"Population: {run.record.get('arguments', {}).get('population', '?')}."), *bench_parts(res)]


def _elicitation(run: ReportRun) -> list[Html]:
    from interplab.organisms.elicitation import ElicitationResult
    from interplab.report.sections.organisms import elicitation_parts

    return elicitation_parts(ElicitationResult.load(run.dir))


def _persistence(run: ReportRun) -> list[Html]:
    from interplab.organisms.persistence import PersistenceResult
    from interplab.report.sections.organisms import persistence_parts

    return persistence_parts(PersistenceResult.load(run.dir))


def _eval(run: ReportRun) -> list[Html]:
    from interplab.report.sections.evals import evals_parts

    parts: list[Html] = []
    for p in sorted(run.dir.glob("evals_*.json")):
        parts += evals_parts(json.loads(p.read_text(encoding="utf-8")))
    return parts


RUN_KINDS: dict[str, RunKind] = {
    "finetune": RunKind("finetune", "Fine-tuning", ("finetune",), "finetune_result.json", _finetune),
    "compare": RunKind("finetune", "Base vs fine-tuned", ("compare",), "compare.json", _compare),
    "invert": RunKind("invert", "Inversion of the residual stream", ("invert",), "inversion.json", _invert),
    "organism": RunKind(
        "organisms",
        "Organism card",
        ("organism-make-toy", "organism-make-backdoor", "organism-make-password-lock"),
        "organism.json",
        _organism,
    ),
    "population": RunKind(
        "organisms", "Organism population", ("organism-make-toy-population",), "population.json", _population
    ),
    "organism-bench": RunKind("organisms", "Backdoor detectors", ("organism-bench",), "bench.json", _bench),
    "eval": RunKind("evals", "Behavioural eval", ("eval",), "evals_*.json", _eval),
    "elicitation": RunKind("organisms", "Elicitation", ("organism-elicit",), "elicitation.json", _elicitation),
    "persistence": RunKind("organisms", "Persistence", ("organism-persist",), "persistence.json", _persistence),
}

# What each run section says when it has nothing to show, and what to do ({model}: the model given).
SECTION_NEEDS: dict[str, str] = {
    "finetune": (
        "--sections finetune: {model} is not a fine-tuned model directory (no finetune_result.json) and no "
        "fine-tuning or compare run was given. Give --model the directory `interplab finetune --out DIR` wrote, "
        "or add --runs DIR with a `finetune` or `compare` run directory."
    ),
    "invert": (
        "--sections invert needs an inversion run: run `interplab invert --model M --layer L --out DIR` and add "
        "--runs DIR."
    ),
    "organisms": (
        "--sections organisms: {model} is not an organism (no organism.json) and no organism runs were given. Give "
        "--model an organism directory (`interplab organism make toy --out DIR`), or add --runs DIR with an "
        "`organism make`, `organism make toy-population` or `organism bench` run directory."
    ),
}


def _kinds_of(command: str) -> list[str]:
    return [k for k, rk in RUN_KINDS.items() if command in rk.commands]


def _cli(command: str) -> str:
    """A run.json command name as typed: ``organism-make-toy-population`` -> ``organism make toy-population``."""
    return command.replace("-", " ", 2) if command.startswith("organism-") else command


def _commands() -> str:
    return ", ".join(_cli(c) for rk in RUN_KINDS.values() for c in rk.commands)


def read_run(directory: str | Path) -> ReportRun:
    """The run in ``directory`` (given with ``--runs``): its kind from ``run.json``'s command, or, without a
    ``run.json``, from the one result file it holds. A ValueError says what is wrong: not a directory, not a run,
    a command the report does not show, a run that failed or is unfinished, a result file missing."""
    d = Path(directory)
    if not d.is_dir():
        what = "is a file" if d.exists() else "does not exist"
        raise ValueError(
            f"--runs {d} {what}: give the directory an interplab command wrote (its --out), holding run.json."
        )
    rec_path = d / "run.json"
    if rec_path.exists():
        try:
            record = json.loads(rec_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            msg = f"--runs {d}: run.json is not valid JSON ({e}); rerun the command that wrote it."
            raise ValueError(msg) from None
        command = str(record.get("command", ""))
        kinds = _kinds_of(command)
        if not kinds:
            raise ValueError(
                f"--runs {d}: a {_cli(command)!r} run, which the report does not show. It shows runs of: {_commands()}."
            )
        status = record.get("status")
        if status != "complete":
            why = f": {record['error']}" if record.get("error") else ""
            raise ValueError(
                f"--runs {d}: the {_cli(command)} run is not complete (status {status!r}{why}). Finish it (rerun "
                "the command with the same --out) or leave it out."
            )
        marked = [k for k in kinds if RUN_KINDS[k].marked(d)]
        if not marked:
            want = " or ".join(RUN_KINDS[k].marker for k in kinds)
            raise ValueError(
                f"--runs {d}: the {_cli(command)} run has no {want}; rerun `interplab {_cli(command)}` with this --out."
            )
        return ReportRun(marked[0], d, record)
    marked = [k for k, rk in RUN_KINDS.items() if rk.marked(d) and "*" not in rk.marker and k != "organism-bench"]
    if len(marked) == 1:
        return ReportRun(marked[0], d, {})
    if not marked:
        raise ValueError(
            f"--runs {d}: not a run directory (no run.json and no result file the report shows). Give the --out "
            f"directory of one of: {_commands()}."
        )
    raise ValueError(
        f"--runs {d}: no run.json, and it holds the results of several kinds ({', '.join(marked)}); give the "
        "directory of one run."
    )


def find_runs(runs: Iterable[str | Path | ReportRun] = (), model_dir: str | Path | None = None) -> list[ReportRun]:
    """The results in the model directory (found by their files: ``finetune_result.json``, ``organism.json``)
    followed by the runs given (:func:`read_run`), each directory once."""
    out: list[ReportRun] = []
    seen: set[tuple[str, Path]] = set()

    def add(r: ReportRun) -> None:
        key = (r.kind, r.dir.resolve())
        if key not in seen:
            seen.add(key)
            out.append(r)

    if model_dir is not None and Path(model_dir).is_dir():
        d = Path(model_dir)
        rec_path = d / "run.json"
        record = json.loads(rec_path.read_text(encoding="utf-8")) if rec_path.exists() else {}
        for kind in ("finetune", "organism"):
            if RUN_KINDS[kind].marked(d):
                add(ReportRun(kind, d, record))
    for r in runs:
        add(r if isinstance(r, ReportRun) else read_run(r))
    return out


def run_parts(section: str, runs: Iterable[ReportRun]) -> list[Html]:
    """Every run of ``section`` rendered through :data:`RUN_KINDS`, each under a heading naming its directory."""
    parts: list[Html] = []
    for r in runs:
        if r.section != section:
            continue
        kind = RUN_KINDS[r.kind]
        rec = r.record
        about = f"Directory {r.dir.resolve()}"
        if rec.get("command"):
            about += f"; interplab {_cli(rec['command'])} run of {rec.get('started', '?')}"
            if rec.get("wall_seconds") is not None:
                about += f" ({rec['wall_seconds']:.0f} s)"
        parts += [heading(f"{kind.title} — {r.dir.name}", 3), text(about + "."), *kind.parts(r)]
    return parts
