"""``interplab models`` and ``interplab info``: the named models and one model's configuration."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli._common import OutDir, guard, load_model, print_json


def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    out: OutDir = None,
) -> None:
    """List the named models: family, parameters, whether installed here, and how to install."""
    from interplab.io.runs import Run
    from interplab.models.registry import REGISTRY, is_available

    with Run("models", {}, out=out) as run:
        rows = [
            {
                "name": m.name,
                "family": m.family,
                "params": m.params,
                "available": is_available(m),
                "install": None if is_available(m) else m.install,
                "hub_id": m.hub_id,
                "description": m.description,
            }
            for m in REGISTRY.values()
        ]
        run.save_json("models.json", rows)
        run.headline["models"] = rows
    if as_json:
        print_json(rows)
        return
    t = Table("name", "family", "params", "available", "install")
    for r in rows:
        t.add_row(
            r["name"], r["family"], f"{r['params'] / 1e6:.1f}M", "yes" if r["available"] else "no", r["install"] or ""
        )
    Console().print(t)


def info(
    name: str = typer.Argument(..., help="Registry name, .gguf path, local directory or hub id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    run_dir: OutDir = None,
) -> None:
    """Print a model's configuration (layers, heads, dimensions, family)."""
    from interplab.io.runs import Run

    with guard(), Run("info", {"name": name}, out=run_dir) as run:
        m = load_model(name)
        out = {
            "name": m.name,
            **m.cfg.to_dict(),
            "n_params": m.n_params,
            "source": m.source,
            "load_seconds": round(m.load_seconds, 2),
            "n_hook_points": len(m.hook_names()),
            "hook_names": m.hook_names(),
        }
        run.save_json("info.json", out)
        run.headline.update({k: v for k, v in out.items() if k != "hook_names"})
        out = run.headline
    if as_json:
        print_json(out)
    else:
        t = Table("field", "value")
        for k, v in out.items():
            t.add_row(k, str(v))
        Console().print(t)
