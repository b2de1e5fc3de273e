"""``interplab finetune MODEL --data FILE|corpus:NAME --out DIR``: LoRA or full fine-tuning
(:mod:`interplab.finetune`); ``DIR`` becomes a model directory that ``interplab.load`` opens, with ``report.html``
(the loss curves, :mod:`interplab.report.sections.finetune`). Also ``interplab bench finetune``
(:mod:`interplab.bench.finetune`): interplab's loop against TRL's ``SFTTrainer``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import typer

from interplab.cli._common import (
    AsJson,
    ModelName,
    OutDir,
    Threads,
    err,
    finish_run,
    guard,
    load_model,
    print_json,
    print_metrics,
)

if TYPE_CHECKING:
    from interplab.finetune.config import Method, SaveAs


def finetune(
    model: str = typer.Argument(..., help="Model to tune: registry name, .gguf path, local directory or hub id."),
    data: str = typer.Option(
        ...,
        "--data",
        help='Text file, JSONL ({"prompt", "completion"} or {"text"} per line), or corpus:NAME (corpus:pydoc).',
    ),
    method: str = typer.Option("lora", "--method", help="lora | full."),
    targets: str = typer.Option(
        "q_proj,v_proj", "--targets", help="LoRA target modules, comma-separated (q,k,v,o,gate,up,down or all-linear)."
    ),
    rank: int = typer.Option(8, "--rank", help="LoRA rank r."),
    alpha: int = typer.Option(16, "--alpha", help="LoRA alpha (the update is alpha/r * B A)."),
    steps: int = typer.Option(40, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per step."),
    seq_len: int = typer.Option(64, "--seq-len", help="Tokens per sequence."),
    lr: float = typer.Option(2e-4, "--lr", help="AdamW learning rate (constant)."),
    seed: int = typer.Option(0, "--seed"),
    heldout_fraction: float = typer.Option(0.1, "--heldout-fraction", help="Share of the data held out."),
    heldout_max: int = typer.Option(32, "--heldout-max", help="At most this many held-out sequences are scored."),
    log_every: int = typer.Option(10, "--log-every", help="Held-out loss every this many steps."),
    ckpt_every: int = typer.Option(10, "--ckpt-every", help="Checkpoint every this many steps."),
    save: str = typer.Option("merged", "--save", help="merged (LoRA folded into the weights) | adapter (PEFT files)."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep checkpoints/ after the run."),
    resume: bool = typer.Option(False, "--resume", help="Continue the killed run in --out from its newest checkpoint."),
    threads: Threads = 2,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Fine-tune a model (LoRA or full; seeded, checkpointed, resumable) and write a model directory that
    ``interplab.load`` opens, with the held-out loss before and after and report.html."""
    from interplab.finetune import FinetuneConfig
    from interplab.finetune import finetune as run_finetune
    from interplab.finetune.loop import check_out
    from interplab.io.runs import Run
    from interplab.report.sections.finetune import finetune_report

    with guard():
        if resume and out is None:
            raise ValueError("--resume needs --out: the directory of the run to continue.")
        cfg = FinetuneConfig(
            method=cast("Method", method),  # both checked by validate()
            targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
            rank=rank,
            alpha=alpha,
            steps=steps,
            batch_size=batch_size,
            seq_len=seq_len,
            lr=lr,
            seed=seed,
            heldout_fraction=heldout_fraction,
            heldout_max=heldout_max,
            log_every=log_every,
            ckpt_every=ckpt_every,
            save=cast("SaveAs", save),
            keep_checkpoints=keep_checkpoints,
            threads=threads,
        ).validate()
        if out is not None:
            check_out(out, resume)  # before Run writes run.json there
        args = {"model": model, "data": data, "resume": resume, **cfg.to_dict()}
        with Run("finetune", args, out=out, seed=seed) as run:
            res = run_finetune(model, data, cfg, out=run.dir, resume=resume, progress=not no_progress)
            finish_run(run, res.headline(), finetune_report(res), report_in_headline=True, run_dir_in_headline=False)
    if as_json:
        print_json(run.headline)
    else:
        for k, v in run.headline.items():
            err.print(f"{k}: {v}", highlight=False)


def bench_finetune_cmd(
    model: ModelName = "smollm2-135m",
    steps: int = typer.Option(4, "--steps", help="Optimizer steps per timed call."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per step."),
    seq_len: int = typer.Option(64, "--seq-len", help="Tokens per sequence."),
    targets: str = typer.Option("q_proj,v_proj", "--targets", help="LoRA target modules, comma-separated."),
    rank: int = typer.Option(8, "--rank"),
    alpha: int = typer.Option(16, "--alpha"),
    lr: float = typer.Option(2e-4, "--lr"),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds (interplab, TRL)."),
    warmup: int = typer.Option(0, "--warmup", help="Untimed rounds before them."),
    no_trl: bool = typer.Option(False, "--no-trl", help="Time interplab alone."),
    threads: Threads = 2,
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """LoRA fine-tuning tokens/s: interplab's loop vs TRL's SFTTrainer on the same LoRA, data, batch and steps
    (interleaved rounds; speedup_vs_trl = median of per-round ratios), with peak memory."""
    from interplab.bench.finetune import bench_finetune
    from interplab.io.runs import Run

    ts = tuple(t.strip() for t in targets.split(",") if t.strip())
    args = {
        "model": model,
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "targets": list(ts),
        "rank": rank,
        "alpha": alpha,
        "lr": lr,
        "rounds": rounds,
        "warmup": warmup,
        "trl": not no_trl,
        "threads": threads,
    }
    with guard(), Run("bench-finetune", args, out=out) as run:
        m = load_model(model)
        with err.status("timing fine-tuning steps …"):
            res = bench_finetune(
                m,
                steps=steps,
                batch_size=batch_size,
                seq_len=seq_len,
                targets=ts,
                rank=rank,
                alpha=alpha,
                lr=lr,
                rounds=rounds,
                warmup=warmup,
                threads=threads,
                trl=not no_trl,
            )
        run.save_json("bench.json", res)
        run.headline.update(res)
    print_metrics(res, as_json, skip_suffix="_rounds")
