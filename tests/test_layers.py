"""The package's import layers, checked on the source with ``ast`` (every ``import`` and ``from`` statement, at
module level and inside functions): analyses never import the report or the CLI; a CLI leaf never imports the
CLI package root (only ``interplab.cli._common``); only the trainers (``train``, ``finetune``, ``organisms``) and
the CLI import ``interplab.train``."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "interplab"


def imports(source: str, package: str) -> set[str]:
    """Every module a source file imports, anywhere in it: ``import a.b`` gives ``a.b``; ``from a import b`` gives
    ``a`` and ``a.b`` (``b`` may be a module); relative imports are resolved against ``package``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _package(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def _hits(found: set[str], target: str) -> list[str]:
    return sorted(
        {target if m.startswith(target + ".") else m for m in found if m == target or m.startswith(target + ".")}
    )


Rule = Callable[[str, set[str]], list[str]]


def analyses_never_import_report_or_cli(rel: str, found: set[str]) -> list[str]:
    if not rel.startswith("interplab/analyses/"):
        return []
    return _hits(found, "interplab.report") + _hits(found, "interplab.cli")


def cli_leaves_never_import_the_cli_root(rel: str, found: set[str]) -> list[str]:
    if not rel.startswith("interplab/cli/") or rel == "interplab/cli/__init__.py":
        return []
    return sorted(m for m in found if m == "interplab.cli")


def only_trainers_and_cli_import_train(rel: str, found: set[str]) -> list[str]:
    if rel.startswith(("interplab/train/", "interplab/finetune/", "interplab/organisms/", "interplab/cli/")):
        return []
    return _hits(found, "interplab.train")


@pytest.mark.parametrize(
    "rule",
    [analyses_never_import_report_or_cli, cli_leaves_never_import_the_cli_root, only_trainers_and_cli_import_train],
)
def test_import_layers(rule: Rule) -> None:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).as_posix()
        hits = rule(rel, imports(path.read_text(encoding="utf-8"), _package(path)))
        if hits:
            bad.append(f"{rel} imports {', '.join(hits)}")
    assert bad == []


def test_layer_check_sees_from_forms_relative_imports_and_imports_inside_functions() -> None:
    src = "def f():\n    from interplab import cli\n    import interplab.report.html\n\nfrom .. import train\n"
    found = imports(src, "interplab.analyses.causal")
    assert {"interplab.cli", "interplab.report.html", "interplab.analyses.train"} <= found
    assert cli_leaves_never_import_the_cli_root("interplab/cli/x.py", imports("from interplab import cli", "")) == [
        "interplab.cli"
    ]
    assert (
        cli_leaves_never_import_the_cli_root("interplab/cli/x.py", imports("from interplab.cli._common import err", ""))
        == []
    )
