"""``interplab bench leace``: LEACE fit time, interplab vs EleutherAI's ``concept-erasure`` (same data, interleaved).

Protocol (as in :mod:`interplab.bench.core`): warm-up rounds, then interleaved rounds (ours, theirs in rotating
order); medians over rounds and the median of per-round ratios. Both fit the same eraser (no shrinkage, no
trace constraint) on the same float64 data; theirs is also timed in float32 with its defaults. The output
difference between the two erasers is reported beside the times.
"""

from __future__ import annotations

import statistics

import numpy as np


def bench_leace(
    n: int = 8192, d: int = 576, k: int = 2, rounds: int = 7, warmup: int = 2, threads: int = 2, seed: int = 0
) -> dict:
    from interplab.runtime import torch_threads

    with torch_threads(threads):
        return _bench_leace(n, d, k, rounds, warmup, threads, seed)


def _bench_leace(n: int, d: int, k: int, rounds: int, warmup: int, threads: int, seed: int) -> dict:
    import torch
    from sklearn.datasets import make_classification
    from threadpoolctl import threadpool_limits

    from interplab.analyses.representations.erasure import LeaceEraser
    from interplab.bench.core import _interleaved

    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=min(32, d // 2),
        n_redundant=min(2, d // 4),
        n_classes=k,
        random_state=seed,
    )
    Xt, yt = torch.tensor(X), torch.tensor(y)
    z = yt.double() if k == 2 else torch.nn.functional.one_hot(yt, k).double()
    variants = {"interplab_f64": lambda: LeaceEraser().fit(X, y)}
    try:
        from concept_erasure import LeaceFitter

        variants["concept_erasure_f64"] = lambda: (
            LeaceFitter.fit(Xt, z, shrinkage=False, constrain_cov_trace=False).eraser
        )
        variants["concept_erasure_f32_defaults"] = lambda: LeaceFitter.fit(Xt.float(), z.float()).eraser
        have_peer = True
    except ImportError:
        have_peer = False
    with threadpool_limits(threads):
        per_round = _interleaved(variants, rounds, warmup)
    times = {name: [this[name] for this in per_round] for name in variants}
    out = {"n": n, "d": d, "classes": k, "threads": threads, "rounds": rounds, "concept_erasure_installed": have_peer}
    for name, ts in times.items():
        out[f"{name}_ms"] = round(statistics.median(ts), 2)
    if have_peer:
        ratios = [a / b for a, b in zip(times["interplab_f64"], times["concept_erasure_f64"])]
        out["ratio_interplab_to_concept_erasure_f64"] = round(statistics.median(ratios), 3)
        ours = LeaceEraser().fit(X, y).transform(X)
        theirs = variants["concept_erasure_f64"]()(Xt).numpy()
        out["max_abs_diff_outputs"] = float(np.abs(ours - theirs).max())
    return out
