"""Run an eval on one or more models through Inspect and compute its headline: what ``interplab eval`` does.

:func:`run_eval` runs a built-in task (``framing``, ``truthful``, ``harmful``) or a user's ``path/to/task.py@name``
on every model with Inspect's ``eval_set``, so the ``.eval`` logs land in ``log_dir`` and a rerun into the same
directory resumes: finished samples of an interrupted run are read back from its log, not redone. For a built-in task
it then computes the headline per model (:mod:`interplab.evals.analysis`); for a user task it reports Inspect's own
metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from interplab.evals.tasks import BUILTIN

__all__ = ["model_ref", "read_logs", "run_eval", "task_for"]


def model_ref(name: str) -> str:
    """The Inspect model name of an interplab model name (``smollm2-135m`` → ``interplab/smollm2-135m``)."""
    return name if name.startswith("interplab/") else f"interplab/{name}"


def task_for(
    task: str,
    template_set: str = "all",
    dataset: str | None = None,
    limit_items: int | None = None,
    method: str = "loglik",
    max_tokens: int | None = None,
) -> Any:
    """The Inspect task to run: a built-in one with these settings, or ``path/to/task.py@name`` as it is (checked to
    exist)."""
    from interplab.evals import tasks

    if task in BUILTIN:
        kw: dict[str, Any] = {"templates": template_set, "dataset": dataset, "limit_items": limit_items}
        if max_tokens is not None:
            kw["max_tokens"] = max_tokens
        if task != "harmful":  # harmful always generates
            kw["method"] = method
        return getattr(tasks, task)(**kw)
    file = task.split("@", 1)[0]
    if not (file.endswith(".py") and Path(file).is_file()):
        raise ValueError(
            f"unknown task {task!r}: use one of {', '.join(BUILTIN)}, or path/to/task.py@name for your own Inspect "
            "task (the file must exist)."
        )
    if dataset is not None:
        raise ValueError("--dataset replaces a built-in task's items; a task file brings its own dataset.")
    return task


def read_logs(log_dir: str | Path, models: Sequence[str], task_name: str) -> dict[str, Any]:
    """The newest successful log of ``task_name`` for each model in ``log_dir`` (model name → EvalLog)."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    out: dict[str, Any] = {}
    heads = [read_eval_log(info, header_only=True) for info in list_eval_logs(str(log_dir), recursive=False)]
    heads = [h for h in heads if h.status == "success" and h.eval.task.split("/")[-1] == task_name]
    for m in models:
        ref = model_ref(m)
        best = None
        for head in heads:
            if head.eval.model == ref and (best is None or head.eval.created > best.eval.created):
                best = head
        if best is not None:
            out[m] = read_eval_log(best.location)
    return out


def run_eval(
    task: str,
    models: Sequence[str],
    log_dir: str | Path,
    template_set: str = "all",
    dataset: str | None = None,
    limit_items: int | None = None,
    method: str = "loglik",
    model_args: Mapping[str, Any] | None = None,
    max_tokens: int | None = None,
    batch_size: int = 16,
    display: str = "none",
) -> dict[str, Any]:
    """Run ``task`` on every model of ``models`` into ``log_dir`` (resuming what is there) and return
    ``{"task", "models": {model: headline}, "logs": {model: path}}``.

    ``template_set``: ``all``, ``first`` or indices ``0,2``; ``dataset``: a user's items file for a built-in task;
    ``limit_items``: the first N items; ``method``: ``loglik`` or ``generate`` (framing, truthful); ``model_args``:
    the provider's model args (``steer=``, ``steer_layer=``, ``steer_scale=``, ``ablate=``, ...)."""
    from inspect_ai import eval_set

    import interplab.evals  # noqa: F401 - registers the provider

    if not models:
        raise ValueError("give at least one --model.")
    t = task_for(task, template_set, dataset, limit_items, method, max_tokens)
    args = {"batch_size": batch_size, **dict(model_args or {})}
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    ok, logs = eval_set(
        tasks=[t],
        model=[model_ref(m) for m in models],
        model_args=args,
        log_dir=str(log_dir),
        display=display,  # type: ignore[arg-type]
        retry_attempts=1,  # an earlier run's failed or interrupted log in log_dir is resumed (not redone)
        retry_wait=1,
        max_tasks=1,
        log_format="eval",
        fail_on_error=True,
    )
    if not ok:
        errors = [f"{log.eval.model}: {log.error.message if log.error else log.status}" for log in logs]
        raise RuntimeError("the eval did not complete: " + "; ".join(errors) + f" (logs in {log_dir}; rerun to resume)")
    name = task if task in BUILTIN else logs[0].eval.task.split("/")[-1]
    by_model = read_logs(log_dir, models, name)
    out: dict[str, Any] = {"task": name, "models": {}, "logs": {}}
    for m, log in by_model.items():
        out["logs"][m] = str(log.location)
        if task in BUILTIN:
            from interplab.evals.analysis import headline, sample_frame

            out["models"][m] = headline(task, sample_frame(log))
        else:
            out["models"][m] = {
                s.name: {k: round(v.value, 4) for k, v in s.metrics.items()} for s in (log.results.scores or [])
            }
            out["models"][m]["n_samples"] = log.results.completed_samples if log.results else 0
    return out


def eval_share(model_name: str, log_dir: str, task: str, options: dict[str, Any]) -> dict[str, Any]:
    """A worker's share of :func:`run_eval_split`: one model, loaded here (one torch thread), its logs in
    ``log_dir``."""
    from interplab.evals.provider import register_model
    from interplab.sweeps.split import worker_model

    with worker_model(model_name.removeprefix("interplab/")) as m:
        register_model(model_name.removeprefix("interplab/"), m)
        return run_eval(task, [model_name], log_dir, **options)


def run_eval_split(
    task: str,
    models: Sequence[str],
    log_dir: str | Path,
    backend: str = "serial",
    max_parallel: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`run_eval` with the models spread over the workers of a sweep backend (``process`` or ``ray``; one
    model per worker, its logs in ``log_dir/<n>-<model>``, resumable like :func:`run_eval`); ``serial`` is
    :func:`run_eval` itself. The headlines are those of each model's own run."""
    import re

    from interplab.sweeps.backends import check_backend, map_calls

    check_backend(backend)
    if backend == "serial":
        return run_eval(task, models, log_dir, **options)
    if not models:
        raise ValueError("give at least one --model.")
    dirs = {m: str(Path(log_dir) / f"{i}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', m)[-60:]}") for i, m in enumerate(models)}
    got: dict[str, dict[str, Any]] = {}
    map_calls(
        eval_share,
        [(m, dirs[m], task, options) for m in models],
        lambda call, res: got.__setitem__(call[0], res),
        backend=backend,
        max_parallel=max_parallel,
    )
    first = got[models[0]]
    return {
        "task": first["task"],
        "models": {m: got[m]["models"][m] for m in models},
        "logs": {m: got[m]["logs"][m] for m in models},
    }
