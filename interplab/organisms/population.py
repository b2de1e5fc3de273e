"""Populations of toy organisms — clean and backdoored models with different seeds, triggers and targets — the
object over which backdoor detectors are scored (as in the NIST TrojAI rounds: ROC-AUC and cross-entropy over a
population of clean and trojaned models).

A population directory::

    population.json          the recipe: counts, split, base seed, the shared training settings
    members/<name>/          one organism directory per member (see :mod:`interplab.organisms.toy`)
    cells/<name>.json        the member's card, written when it is finished (the sweep engine's resume record)

Members are built with the one sweep engine (:func:`interplab.sweeps.backends.cached_cells` over
``serial``/``process``/``ray`` backends): a rerun builds only the members without a cell file, and a member killed
mid-training continues from its own checkpoint, so a killed build resumes where it stopped and gives the same
models as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from interplab.io.atomic import write_json
from interplab.organisms.toy import ToyRecipe, draw_trigger, train_toy_organism

__all__ = ["POPULATION", "build_member", "make_population", "member_names", "read_population"]

POPULATION = "population.json"
POPULATION_KIND = "interplab-organism-population"


def member_names(n_clean: int, n_backdoored: int) -> list[str]:
    return [f"clean-{i:03d}" for i in range(n_clean)] + [f"backdoor-{i:03d}" for i in range(n_backdoored)]


def member_recipe(config: dict[str, Any], name: str) -> ToyRecipe:
    """The recipe of member ``name``: its own seed (from the population's base seed, split and index) and, for a
    backdoored member, a trigger and target drawn from the split's pools with a generator of that seed."""
    kind, index = name.split("-")
    split = config["split"]
    offset = {"dev": 0, "test": 500_000}[split] + (0 if kind == "clean" else 100_000)
    seed = int(config["seed"]) * 1_000_000 + offset + int(index)
    base = ToyRecipe.from_dict(config["recipe"])
    if kind == "clean":
        return replace(base, seed=seed, trigger=(), target=-1)
    trigger, target = draw_trigger(base.task, split, torch.Generator().manual_seed(seed))
    return replace(base, seed=seed, trigger=trigger, target=target)


def build_member(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Train (or finish, or read back) one member into ``config['root']/members/<name>``; returns its card."""
    recipe = member_recipe(config, name)
    card = train_toy_organism(recipe, Path(config["root"]) / "members" / name, split=config["split"])
    return {"name": name, **{k: v for k, v in card.to_dict().items() if k != "kind"}}


def read_population(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    p = d / POPULATION
    if not p.exists():
        raise ValueError(
            f"{d} is not an organism population (no {POPULATION}); make one with "
            "`interplab organism make toy-population --n-clean N --n-backdoored N --out DIR`."
        )
    data = json.loads(p.read_text(encoding="utf-8"))
    if data.get("kind") != POPULATION_KIND:
        raise ValueError(f"{p} is not an organism population file (kind={data.get('kind')!r}).")
    return data


def make_population(
    out: str | Path,
    n_clean: int,
    n_backdoored: int,
    split: str = "test",
    seed: int = 0,
    recipe: ToyRecipe | None = None,
    backend: str = "serial",
    max_parallel: int | None = None,
) -> dict[str, Any]:
    """Build (or complete) a population of ``n_clean`` clean and ``n_backdoored`` backdoored toy organisms in
    ``out``. Returns ``{"n_clean", "n_backdoored", "seconds", "n_built_now", "members"}``.

    Args:
        out: the population directory (created; an existing one with the same recipe is completed).
        n_clean, n_backdoored: how many members of each kind (>= 0, together >= 1).
        split: ``"dev"`` or ``"test"``: which half of the rare and content tokens triggers and targets come from.
        seed: the population's base seed (members' seeds derive from it, the split and their index).
        recipe: the training settings shared by every member (default :class:`ToyRecipe`'s).
        backend, max_parallel: the sweep backend that trains the members (``serial``, ``process``, ``ray``).
    """
    from interplab.sweeps.backends import cached_cells, check_backend

    check_backend(backend)
    if n_clean < 0 or n_backdoored < 0 or n_clean + n_backdoored < 1:
        raise ValueError("a population needs --n-clean and --n-backdoored >= 0 and at least one member.")
    if split not in ("dev", "test"):
        raise ValueError(f"--split must be dev or test, not {split!r}.")
    base = recipe or ToyRecipe()
    base.task.validate()
    d = Path(out)
    config = {
        "kind": POPULATION_KIND,
        "format_version": 1,
        "split": split,
        "seed": seed,
        "recipe": {k: v for k, v in base.to_dict().items() if k not in ("trigger", "target", "seed")},
    }
    if (d / POPULATION).exists():
        old = read_population(d)
        same = {k: old.get(k) for k in config} == config
        if not same:
            raise ValueError(f"{d} holds a population with another recipe, split or seed; give another --out.")
    names = member_names(n_clean, n_backdoored)
    write_json(d / POPULATION, {**config, "n_clean": n_clean, "n_backdoored": n_backdoored, "members": names}, indent=1)
    t = time.perf_counter()
    cells, n_new = cached_cells(
        build_member,
        {**config, "root": str(d.resolve())},
        [(n,) for n in names],
        d / "cells",
        lambda name: f"{name}.json",
        "organism-member",
        backend=backend,
        max_parallel=max_parallel,
    )
    return {
        "n_clean": n_clean,
        "n_backdoored": n_backdoored,
        "seconds": round(time.perf_counter() - t, 3),
        "n_built_now": n_new,
        "members": cells,
    }
