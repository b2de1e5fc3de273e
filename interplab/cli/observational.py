"""``interplab heads``: head detectors with null baselines (:mod:`interplab.analyses.observational.heads`);
``interplab ig``: integrated gradients over a prompt's tokens
(:mod:`interplab.analyses.observational.integrated_gradients`)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from interplab.cli._common import AsJson, ModelName, OutDir, err, finish_run, guard, load_model, print_json


def heads(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model whose heads to score."),
    batch: int = typer.Option(8, "--batch", help="Sequences per forward pass (bounds memory)."),
    seq_len: int | None = typer.Option(
        None, "--seq-len", help="Length of the repeated random sequence (default 50, or what fits)."
    ),
    n_seqs: int = typer.Option(32, "--n-seqs", help="Sequences per input set."),
    text: str | None = typer.Option(
        None,
        "--text",
        help="Text for previous-token and sink scores: 'pydoc', a text file or 'random' (default: pydoc, or random "
        "without a tokenizer).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random tokens and null inputs."),
    out: str | None = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-heads)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline (per class [layer, head, score]) as JSON."),
) -> None:
    """Head detectors: previous-token, duplicate-token, induction, sink, copying, copy-suppression heads, with
    null baselines."""
    from interplab.analyses.observational.heads import head_scores
    from interplab.io.runs import Run
    from interplab.report.sections.heads import heads_report

    args = {"model": model, "batch": batch, "seq_len": seq_len, "n_seqs": n_seqs, "text": text}
    with guard(), Run("heads", args, out=out, seed=seed) as run:
        m = load_model(model)
        run.timings["load_seconds"] = round(m.load_seconds, 2)
        with err.status("scoring heads …"):
            res = head_scores(m, n_seqs=n_seqs, batch=batch, seq_len=seq_len, text=text, seed=seed)
        run.timings.update({k: res.settings[k] for k in ("attention_seconds", "copying_seconds")})
        res.save(run.dir)
        res.to_frame("wide").to_parquet(run.dir / "heads.parquet", index=False)
        finish_run(run, {"model": m.name, **res.headline()}, heads_report(res, m.name), run_dir_in_headline=False)
    if as_json:
        print_json(run.headline)
    else:
        t = Table("class", "members", "top heads (layer.head score / null)")
        for c in res.classes:
            t.add_row(
                c, str(len(res.members(c))), ", ".join(f"{a}.{b} {s:.2f}/{n:.2f}" for a, b, s, n in res.top(c, 5))
            )
        Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/]")


def ig(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The prompt whose tokens are attributed."),
    answer: str | None = typer.Option(
        None, "--answer", help="The answer whose logit is explained (default: the model's top prediction)."
    ),
    wrong: str | None = typer.Option(None, "--wrong", help="A competing answer: explain logit(answer) - logit(wrong)."),
    model: ModelName = "smollm2-135m",
    steps: int = typer.Option(50, "--steps", help="Quadrature points (more steps: smaller completeness gap)."),
    baseline: str = typer.Option("zero", "--baseline", help="zero | pad: the embedding the path starts from."),
    baseline_token: str | None = typer.Option(
        None,
        "--baseline-token",
        help="Start the path from this token's embedding at every position (e.g. ' the'): converges in far fewer "
        "steps than the zero embedding on pre-norm models.",
    ),
    method: str = typer.Option("gausslegendre", "--method", help="gausslegendre | trapezoid quadrature."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Completeness must hold within this fraction."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Integrated gradients (Sundararajan et al. 2017) of an answer's logit over the prompt's tokens, with the
    completeness check: a result whose attributions do not sum to F(input) - F(baseline) is not called IG."""
    from typing import Any, cast

    import torch

    from interplab.analyses.observational.integrated_gradients import Quadrature, integrated_gradients
    from interplab.io.runs import Run
    from interplab.report.sections.dla import integrated_gradients_report

    args = {"model": model, "prompt": prompt, "answer": answer, "wrong": wrong, "steps": steps, "baseline": baseline}
    args["baseline_token"] = baseline_token
    with guard(), Run("ig", {**args, "method": method, "tolerance": tolerance}, out=out) as run:
        if baseline not in ("zero", "pad"):
            raise ValueError(f"--baseline {baseline!r}: use zero or pad (or --baseline-token TEXT).")
        m = load_model(model)
        start: Any = baseline
        if baseline_token is not None:
            n_pos = m.to_tokens(prompt).shape[1]
            tid = m.first_token_id(baseline_token, "baseline token")[0]
            with torch.no_grad():
                _, c = m.run(torch.full((1, n_pos), tid), cache=["hook_embed"])
            start = c["hook_embed"][0]
        target: str | int = answer if answer is not None else 0
        if answer is None:
            with torch.no_grad():
                target = int(m.run(m.to_tokens(prompt)).logits[0, -1].argmax())
        with err.status(f"integrated gradients over {steps} steps …"):
            res = integrated_gradients(
                m,
                prompt,
                target,
                wrong,
                baseline=start,
                n_steps=steps,
                method=cast("Quadrature", method),
                tolerance=tolerance,
            )
        res.save(run.dir)
        h = res.headline()
        finish_run(run, {"model": m.name, **h}, integrated_gradients_report(res, m.name))
    if as_json:
        print_json(run.headline)
    else:
        t = Table("position", "token", "attribution", title=h["method"])
        for i, tok, v in h["top_tokens"]:
            t.add_row(str(i), repr(tok), f"{v:.4f}")
        Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/]")


def tuned_lens(
    model: ModelName = "smollm2-135m",
    steps: int = typer.Option(200, "--steps", help="Adam steps over all layers' translators."),
    n_chunks: int = typer.Option(32, "--n-chunks", help="Training chunks of the corpus."),
    heldout_chunks: int = typer.Option(8, "--heldout-chunks", help="Held-out chunks the KL is measured on."),
    chunk_len: int = typer.Option(64, "--chunk-len", help="Tokens per chunk."),
    batch_tokens: int = typer.Option(256, "--batch-tokens", help="Training tokens per step."),
    lr: float = typer.Option(1e-3, "--lr"),
    text: str | None = typer.Option(None, "--text", help="UTF-8 text file (default: the pydoc topics)."),
    seed: int = typer.Option(0, "--seed"),
    resume: str | None = typer.Option(None, "--resume", help="Run directory of a killed run: continue its training."),
    out: OutDir = None,
    as_json: AsJson = False,
) -> None:
    """Tuned lens (Belrose et al. 2023): train per-layer affine translators on the corpus (checkpointed,
    resumable) and compare their held-out KL to the final distribution with the logit lens's, per layer."""
    from pathlib import Path

    from rich.progress import Progress

    from interplab.analyses.observational.tuned_lens import TunedLensConfig, train_tuned_lens
    from interplab.io.runs import Run
    from interplab.report.sections.dla import tuned_lens_report

    cfg = TunedLensConfig(
        n_chunks=n_chunks,
        heldout_chunks=heldout_chunks,
        chunk_len=chunk_len,
        steps=steps,
        batch_tokens=batch_tokens,
        lr=lr,
        seed=seed,
        text=text,
    )
    if resume:
        if not (Path(resume) / "checkpoint.safetensors").exists():
            raise typer.BadParameter(f"{resume} holds no checkpoint.safetensors: it is not a tuned-lens run directory.")
        out = resume
    with guard(), Run("tuned-lens", {"model": model, **cfg.__dict__}, out=out, seed=seed) as run:
        m = load_model(model)
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("training translators", total=steps)
            lens, res = train_tuned_lens(
                m, cfg, checkpoint_dir=run.dir, on_step=lambda s, loss: bar.update(task, completed=s)
            )
        res.save(run.dir)
        from interplab.io.atomic import save_tensors

        save_tensors(run.dir / "tuned_lens.safetensors", dict(lens.state_dict()))
        finish_run(run, {"model": m.name, **res.headline()}, tuned_lens_report(res))
    if as_json:
        print_json(run.headline)
    else:
        t = Table("layer", "KL logit lens", "KL tuned lens", title="held-out KL(final || lens), nats")
        for i, (a, b) in enumerate(zip(res.kl_logit_lens.tolist(), res.kl_tuned_lens.tolist(), strict=True)):
            t.add_row(str(i), f"{a:.3f}", f"{b:.3f}")
        Console().print(t)
        err.print(f"run directory [bold]{run.dir.resolve()}[/]")
