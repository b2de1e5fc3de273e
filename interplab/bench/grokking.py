"""``interplab bench grokking``: milliseconds per grokking training step for each torch thread count.

The step itself (forward at ``=``, float64 loss, backward, fused AdamW, Nanda et al. 2023's defaults) is built by
the trainer (``interplab.train``) and handed in; this module only times it, so nothing here imports the
training package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from interplab.bench.protocol import DEFAULT_ROUNDS, Timings, interleave
from interplab.runtime import torch_threads

__all__ = ["bench_grokking"]


def bench_grokking(
    step: Callable[[], Any],
    steps: int = 50,
    rounds: int = DEFAULT_ROUNDS,
    threads: Sequence[int] = (1, 2),
    warmup: int = 1,
    epochs: int | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time one training ``step`` (a closure over one model, optimizer and batch) under each torch thread
    count, in the interleaved rounds of :mod:`interplab.bench.protocol`: a round times ``steps`` steps per
    thread count (after 3 untimed steps at that count, so a switch of thread pool is not timed).

    Args:
        step: one full-batch training step, e.g. the grokking trainer's (Nanda et al. 2023).
        steps: timed steps per call.
        rounds, warmup: timed and untimed interleaved rounds.
        threads: torch intra-op thread counts compared (each restored afterwards).
        epochs: the run length, for ``minutes_for_epochs`` (at the fastest step time).
        meta: fields put first in the result (e.g. ``p`` and ``train_pairs``).

    ``ms_per_step[t]``: per round; ``min_ms_per_step`` / ``median_ms_per_step``: over rounds;
    ``ratio_threads_<a>_to_<b>``: ratio of minimums of ``a`` threads' step time to ``b`` threads'."""
    if steps < 1 or not threads or min(threads) < 1:
        raise ValueError("steps and every thread count must be positive.")

    def timed_steps(n_threads: int) -> float:
        with torch_threads(n_threads):
            for _ in range(3):
                step()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            return (time.perf_counter() - t0) / steps

    names = [str(t) for t in threads]
    per_step: dict[str, list[float]] = {name: [] for name in names}
    variants = {str(t): (lambda t=t: timed_steps(t)) for t in threads}
    wall = interleave(variants, rounds=rounds, warmup=warmup, each=lambda name, s: per_step[name].append(s))
    t = Timings(seconds=per_step, warmup=warmup, load_before=wall.load_before, load_after=wall.load_after)
    out: dict[str, Any] = {
        **(meta or {}),
        "steps_per_round": steps,
        "ms_per_step": {n: [round(1000 * x, 2) for x in t.seconds[n]] for n in names},
        "min_ms_per_step": {n: round(1000 * t.min(n), 2) for n in names},
        "median_ms_per_step": {n: round(1000 * t.median(n), 2) for n in names},
        "max_steps_per_s": {n: round(1 / t.min(n), 1) for n in names},
    }
    for a in names[1:]:
        out.update(t.compare(f"ratio_threads_{a}_to_{names[0]}", a, names[0]))
    if epochs is not None:
        out["epochs"] = epochs
        out["minutes_for_epochs"] = {n: round(epochs * t.min(n) / 60, 1) for n in names}
    out.update(t.protocol())
    return out
