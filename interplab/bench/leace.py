"""``interplab bench leace``: LEACE fit time, interplab vs EleutherAI's ``concept-erasure`` (same data, interleaved).

Both fit the same eraser (no shrinkage, no trace constraint) on the same float64 data; theirs is also timed in
float32 with its defaults. The output difference between the two erasers is reported beside the times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from interplab.bench.protocol import DEFAULT_ROUNDS, interleave
from interplab.runtime import torch_threads

__all__ = ["bench_leace"]


def bench_leace(
    n: int = 8192,
    d: int = 576,
    k: int = 2,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = 2,
    threads: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """LEACE (Belrose et al. 2023) fit time: interplab's ``LeaceEraser`` against ``concept_erasure.LeaceFitter``
    where it is installed, under the shared protocol (:mod:`interplab.bench.protocol`).

    Args:
        n, d, k: rows, dimensions and classes of ``sklearn.datasets.make_classification`` data (``seed``).
        rounds, warmup: timed and untimed interleaved rounds.
        threads: torch and BLAS threads while timing (restored afterwards).

    ``ratio_interplab_to_concept_erasure_f64``: the ratio of minimums (below 1: interplab is faster), with
    the median and range of per-round ratios beside it."""
    from sklearn.datasets import make_classification
    from threadpoolctl import threadpool_limits

    from interplab.analyses.representations.erasure import LeaceEraser

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
    variants: dict[str, Callable[[], Any]] = {"interplab_f64": lambda: LeaceEraser().fit(X, y)}
    try:
        from concept_erasure import LeaceFitter

        variants["concept_erasure_f64"] = lambda: (
            LeaceFitter.fit(Xt, z, shrinkage=False, constrain_cov_trace=False).eraser
        )
        variants["concept_erasure_f32_defaults"] = lambda: LeaceFitter.fit(Xt.float(), z.float()).eraser
        have_peer = True
    except ImportError:
        have_peer = False
    with torch_threads(threads), threadpool_limits(threads):
        t = interleave(variants, rounds=rounds, warmup=warmup)
    out: dict[str, Any] = {
        "n": n,
        "d": d,
        "classes": k,
        "threads": threads,
        "concept_erasure_installed": have_peer,
    }
    for name in variants:
        out.update(t.times(name, "ms", 2))
    if have_peer:
        out.update(t.compare("ratio_interplab_to_concept_erasure_f64", "interplab_f64", "concept_erasure_f64"))
        ours = LeaceEraser().fit(X, y).transform(X)
        theirs = variants["concept_erasure_f64"]()(Xt).numpy()
        out["max_abs_diff_outputs"] = float(np.abs(ours - theirs).max())
    else:
        out["concept_erasure"] = "not installed (pip install concept-erasure): no side-by-side figure"
    out.update(t.protocol())
    return out
