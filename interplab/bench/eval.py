"""``interplab bench eval``: items per second of the framing eval through interplab's Inspect provider vs Inspect's own
``hf/`` provider on the same local model directory, and lm-evaluation-harness's ``HFLM`` for the log-likelihoods.

Two workloads, each timed with the shared interleaved protocol (:mod:`interplab.bench.protocol`):

- **log-prob scoring**: ``n_items`` actions × 2 framings (template 0), each scored by the log-probabilities of the
  replies "Yes" and "No". interplab: :func:`interplab.evals.loglik.choice_logliks` (one batched forward pass per batch,
  both one-token choices read off one row); Inspect ``hf/``: one generated token with its top-20 log-probabilities (the
  only way to get log-probs from that provider); lm-eval: ``HFLM.loglikelihood`` on the same (prompt, choice) pairs
  (outside Inspect, so it carries none of Inspect's per-sample cost).
- **generation**: the same samples answered greedily with ``gen_tokens`` new tokens, batched in both providers.

``items_per_s`` is samples / median seconds per round; ``speedup_vs_inspect_hf`` is Inspect ``hf/`` median time /
interplab median time, per workload. Both providers run with the same batch size (Inspect's ``max_connections``).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interplab.bench.protocol import interleave

if TYPE_CHECKING:
    from interplab.models.model import Model

__all__ = ["bench_eval", "model_directory"]


def model_directory(model: Model) -> Path:
    """The local Hugging Face directory ``model`` was loaded from (for a registry model: its converted GGUF)."""
    from interplab.models.registry import REGISTRY, converted_dir, gguf_path

    if model.name in REGISTRY:
        entry = REGISTRY[model.name]
        return Path(converted_dir(gguf_path(entry), entry.sha256, model.name))
    p = Path(model.source or model.name)
    if p.suffix == ".gguf":
        return Path(converted_dir(p, None, p.stem))
    if (p / "config.json").exists():
        return p
    raise ValueError(f"bench eval needs a model with a local directory; {model.name!r} has none ({model.source}).")


def bench_eval(
    model: Model,
    n_items: int = 8,
    rounds: int = 3,
    batch_size: int = 16,
    gen_tokens: int = 16,
    work_dir: str | Path = ".",
) -> dict[str, Any]:
    """Time the framing eval's log-prob scoring and generation through both providers (and HFLM); see the module
    docstring. Inspect logs go under ``work_dir/bench_logs``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Inspect's hf/ provider would otherwise look the name up online
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import GenerateConfig, ModelInfo, set_model_info
    from inspect_ai.solver import generate

    from interplab.evals.loglik import loglik_choices
    from interplab.evals.provider import InterplabAPI, register_model
    from interplab.evals.tasks import framing

    name = f"bench-{model.name}"
    register_model(name, model)
    directory = model_directory(model)
    set_model_info("hf/local", ModelInfo(organization="local", context_length=model.cfg.n_ctx))
    base = framing(templates="first", limit_items=n_items)
    samples = list(base.dataset)
    n = len(samples)
    loglik_task = Task(dataset=base.dataset, solver=[loglik_choices(chat=True)], config=GenerateConfig(temperature=0.0))
    gen_task = Task(
        dataset=base.dataset, solver=[generate()], config=GenerateConfig(temperature=0.0, max_tokens=gen_tokens)
    )
    logs = str(Path(work_dir) / "bench_logs")
    common: dict[str, Any] = {"log_dir": logs, "display": "none", "max_connections": batch_size, "max_samples": n}
    hf_args = {"model_path": str(directory), "do_sample": False, "batch_size": batch_size}

    def ours(task: Task) -> Any:
        (log,) = inspect_eval(task, model=f"interplab/{name}", model_args={"batch_size": batch_size}, **common)
        return log

    def hf(task: Task) -> Any:
        (log,) = inspect_eval(task, model="hf/local", model_args=hf_args, **common)
        return log

    # lm-eval HFLM on the same prompts (the chat template applied as interplab's provider does)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    api = InterplabAPI(name, batch_size=batch_size)
    prompts = [api.prompt_text(str(s.input)) for s in samples]
    reqs = [
        Instance(request_type="loglikelihood", doc={}, arguments=(p, c), idx=i)
        for p in prompts
        for i, c in enumerate(("Yes", "No"))
    ]
    hflm: Any = HFLM  # its __init__ takes **kwargs that its type hints do not show
    lm = hflm(pretrained=model.hf, tokenizer=model.tokenizer, batch_size=batch_size, max_length=model.cfg.n_ctx)

    def lm_eval_loglik() -> list[float]:
        return [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]

    t_ll = interleave(
        {
            "interplab_loglik": lambda: ours(loglik_task),
            "inspect_hf_loglik": lambda: hf(loglik_task),
            "lm_eval_loglik": lm_eval_loglik,
        },
        rounds=rounds,
        warmup=1,
        keep=True,
    )
    t_gen = interleave(
        {"interplab_generate": lambda: ours(gen_task), "inspect_hf_generate": lambda: hf(gen_task)},
        rounds=rounds,
        warmup=1,
        keep=True,
    )

    # the two providers must agree on what they scored: same preferred reply, same greedy answers
    def by_id(log: Any) -> dict[str, Any]:
        return {str(s.id): s for s in log.samples or []}

    ours_ll, hf_ll = by_id(t_ll.last["interplab_loglik"]), by_id(t_ll.last["inspect_hf_loglik"])
    ref = t_ll.last["lm_eval_loglik"]
    ours_vals = [v for s in samples for v in ours_ll[str(s.id)].metadata["choice_logliks"]]
    same_choice = statistics.mean(
        float(ours_ll[k].output.completion == hf_ll[k].output.completion.strip()) for k in ours_ll
    )
    ours_gen, hf_gen = by_id(t_gen.last["interplab_generate"]), by_id(t_gen.last["inspect_hf_generate"])
    same_text = statistics.mean(
        float(ours_gen[k].output.completion.strip() == hf_gen[k].output.completion.strip()) for k in ours_gen
    )

    ips = {k: round(n / t_ll.median(k), 2) for k in t_ll.seconds}
    ips.update({k: round(n / t_gen.median(k), 2) for k in t_gen.seconds})
    return {
        "model": model.name,
        "n_samples": n,
        "batch_size": batch_size,
        "gen_tokens": gen_tokens,
        "items_per_s": ips,
        "speedup_vs_inspect_hf": {
            "loglik": round(t_ll.median("inspect_hf_loglik") / t_ll.median("interplab_loglik"), 2),
            "generate": round(t_gen.median("inspect_hf_generate") / t_gen.median("interplab_generate"), 2),
        },
        "speedup_vs_lm_eval_loglik": round(t_ll.median("lm_eval_loglik") / t_ll.median("interplab_loglik"), 2),
        "max_abs_loglik_diff_vs_lm_eval": round(max(abs(a - b) for a, b in zip(ours_vals, ref, strict=True)), 6),
        "same_preferred_reply_as_hf": round(same_choice, 3),
        "same_greedy_answer_as_hf": round(same_text, 3),
        "seconds_median": {
            **{k: round(t_ll.median(k), 3) for k in t_ll.seconds},
            **{k: round(t_gen.median(k), 3) for k in t_gen.seconds},
        },
        **{f"{k}_rounds": [round(x, 3) for x in v] for k, v in {**t_ll.seconds, **t_gen.seconds}.items()},
        **t_ll.protocol(),
    }
