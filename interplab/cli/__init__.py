"""``interplab`` command line: each command is a thin shell over a library function.

Analysis commands write a run directory (``runs/<timestamp>-<command>/`` or ``--out``) with
``run.json`` and their data; ``--json`` prints the headline numbers to stdout (all other output goes
to stderr). Bad input exits with status 2 and a message saying what was wrong and what to do.

This module only assembles the app: each command is a module-level function in a leaf module
(``models``, ``report``, ``generate``, ``observational``, ``diffing``, ``causal``, ``representations``, ``sae``,
``train``, ``finetune``, ``compare``, ``invert``, ``organism``, ``eval``, ``serve``, ``sweep``, ``bench``); the
leaves share :mod:`interplab.cli._common` and never import this module.
"""

from __future__ import annotations

import os

import typer

from interplab.cli import (
    bench,
    causal,
    compare,
    diffing,
    finetune,
    generate,
    invert,
    models,
    observational,
    representations,
    sae,
    serve,
    sweep,
    train,
)
from interplab.cli import eval as eval_cmd
from interplab.cli import organism as organism_cmd
from interplab.cli import report as report_cmd

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Interpretability and AI-safety experiments on transformers."
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go in BENCHMARKS.md).")
sae_app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders on activations, with controls.")

app.command("models")(models.models)
app.command("info")(models.info)
app.command("report")(report_cmd.report)
app.command("generate")(generate.generate)
app.command("chat")(generate.chat)
app.command("diff")(diffing.diff)
app.command("compare")(compare.compare)
app.command("heads")(observational.heads)
app.command("ig")(observational.ig)
app.command("tuned-lens")(observational.tuned_lens)
app.command("ablate")(causal.ablate)
app.command("patch")(causal.patch)
app.command("ioi")(causal.ioi)
app.command("trace")(causal.trace)
app.command("erase")(representations.erase)
app.command("ccs")(representations.ccs)
app.command("acts")(sae.acts)
sae_app.command("train")(sae.sae_train)
sae_app.command("features")(sae.sae_features)
app.command("train")(train.train)
app.command("invert")(invert.invert)
app.command("finetune")(finetune.finetune)
app.command("sweep", context_settings=sweep.CONTEXT_SETTINGS)(sweep.sweep)
app.command("serve")(serve.serve)
app.command("eval")(eval_cmd.eval_cmd)
app.add_typer(bench_app, name="bench")
app.add_typer(organism_cmd.organism_app, name="organism")
app.add_typer(sae_app, name="sae")
bench_app.command("hooks")(bench.bench_hooks_cmd)
bench_app.command("ablation")(bench.bench_ablation_cmd)
bench_app.command("patching")(bench.bench_patching_cmd)
bench_app.command("leace")(bench.bench_leace_cmd)
bench_app.command("sae")(bench.bench_sae_cmd)
bench_app.command("grokking")(bench.bench_grokking_cmd)
bench_app.command("sweep")(bench.bench_sweep_cmd)
bench_app.command("finetune")(finetune.bench_finetune_cmd)
bench_app.command("eval")(eval_cmd.bench_eval_cmd)

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
