"""Data for concept erasure: scikit-learn's ``make_classification``, a data set whose class means are equal but
whose concept a non-linear probe still recovers (:func:`make_outlier_data`), and labelled activations on disk
(:func:`load_acts_dir`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_acts_dir", "make_outlier_data", "make_synthetic_data"]


def make_synthetic_data(n: int = 2000, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``make_classification`` (2 classes, ``d`` features, 5 informative): ``interplab erase
    --data synthetic``.

    Args:
        n: rows.
        d: features.
        seed: ``random_state`` of ``make_classification``.
    """
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=min(5, d),
        n_redundant=min(2, max(d - 5, 0)),
        n_classes=2,
        random_state=seed,
    )
    return np.asarray(X), np.asarray(y)


def make_outlier_data(
    n: int = 2000,
    d: int = 10,
    outlier_frac: float = 0.1,
    gap: float = 1.0,
    shift: float = 1.0,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two balanced classes where equalising the class means leaves the concept easy to recover.

    Coordinate 0: class 0 ~ N(−gap, noise²); class 1's bulk ~ N(+gap, noise²) but a fraction ``outlier_frac``
    of class 1 sits far on the other side, at ``−gap − 2·gap·(1 − f)/f``, chosen so that both class means on
    coordinate 0 are exactly ``−gap`` in expectation. Coordinate 1: a plain mean shift of ``shift`` (class 1
    ~ N(+shift/2, 1), class 0 ~ N(−shift/2, 1)). Other coordinates: N(0, 1) noise. A random rotation mixes
    all coordinates so that no method can exploit the axes.

    Mean-based erasers (mean difference, LEACE) remove coordinate 1's direction and equalise the means but
    leave coordinate 0's bulk separation: a threshold, an MLP or gradient-boosted trees still reach about
    ``1 − f/2`` accuracy (0.95 at f = 0.1) against a majority rate of 0.5.

    Args:
        n: rows (half in each class).
        d: features (at least 2).
        outlier_frac: fraction ``f`` of class 1 placed far on class 0's side of coordinate 0.
        gap: half the distance between the two bulks on coordinate 0.
        shift: class-mean difference on coordinate 1.
        noise: standard deviation of coordinate 0 around its bulk.
        seed: seeds the data and the rotation.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    X = rng.standard_normal((n, d))
    f = outlier_frac
    far = -gap - 2 * gap * (1 - f) / f
    out = (y == 1) & (rng.random(n) < f)
    x0 = np.where(y == 1, gap, -gap).astype(np.float64)
    x0[out] = far
    X[:, 0] = x0 + noise * rng.standard_normal(n)
    X[:, 1] = np.where(y == 1, shift / 2, -shift / 2) + rng.standard_normal(n)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return X @ Q, y


def load_acts_dir(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Activations and labels for ``interplab erase --data acts DIR``.

    Read through the shared loader :func:`interplab.io.activations.load_acts`: ``DIR/acts.safetensors`` with tensors
    ``x`` ``[n, d]`` (float) and ``y`` ``[n]`` (integer labels) — what ``interplab ccs`` writes. A sharded
    directory from ``interplab acts`` carries no labels and is refused with that reason. Several
    ``*.safetensors`` files in DIR, each holding ``x`` and ``y``, are concatenated in sorted file-name order."""
    from safetensors.numpy import load_file

    from interplab.io.activations import MANIFEST, PLAIN, load_acts

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"activation directory {p} does not exist (expected DIR/acts.safetensors with x [n, d] and y [n])."
        )
    if (p / PLAIN).is_file() or (p / MANIFEST).is_file():
        a = load_acts(p)
        if a.y is None:
            raise ValueError(
                f"{p} holds activations without labels (an `interplab acts` dataset); concept erasure needs "
                "a label per row: write DIR/acts.safetensors with x [n, d] and y [n] (interplab ccs does)."
            )
        X, y = a.x.double().numpy(), a.y.reshape(-1).numpy()
        if len(X) != len(y):
            raise ValueError(f"x must be [n, d] and y [n]; got {X.shape} and {y.shape}.")
        return X, y
    files = sorted(p.glob("*.safetensors"))  # DIR/acts.safetensors itself was read above
    if not files:
        raise FileNotFoundError(
            f"no acts.safetensors (or *.safetensors shards) in {p}; write tensors x [n, d] and y [n]."
        )
    xs, ys = [], []
    for f in files:
        t = load_file(str(f))
        if "x" not in t or "y" not in t:
            raise ValueError(f"{f} must hold tensors 'x' [n, d] and 'y' [n]; it has {sorted(t)}.")
        xs.append(np.asarray(t["x"], dtype=np.float64))
        ys.append(np.asarray(t["y"]).reshape(-1))
    X, y = np.concatenate(xs), np.concatenate(ys)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"x must be [n, d] and y [n]; got {X.shape} and {y.shape}.")
    return X, y
