"""Data for sparse autoencoders: an in-memory activation set with the reading interface of
:class:`~interplab.io.activations.ActivationDataset`, and the synthetic sets of the controls (isotropic Gaussian,
a Gaussian mixture, uniform points, sparse data with a known dictionary)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from interplab.io.activations import Stats

__all__ = [
    "SYNTHETIC",
    "SyntheticName",
    "TensorData",
    "gaussian",
    "known_dictionary",
    "make_synthetic",
    "mixture",
    "uniform",
]


class TensorData:
    """An in-memory activation set with the :class:`ActivationDataset` reading interface."""

    def __init__(self, x: torch.Tensor, name: str = "tensor"):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.name = name

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(
        self, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False, **_: Any
    ) -> Iterator[torch.Tensor]:
        """Batches of rows ``[batch_size, d]``, shuffled with ``seed`` (the last one smaller unless ``drop_last``)."""
        n = len(self)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        stop = n - (n % batch_size) if drop_last else n
        for i in range(0, stop, batch_size):
            yield self.x[idx[i : i + batch_size]]

    def stats(self, batch_size: int = 16384) -> Stats:
        """Mean and variance of the rows (``batch_size`` is ignored: the rows are in memory)."""
        return Stats().update(self.x)


def gaussian(n: int, d: int = 64, seed: int = 0) -> torch.Tensor:
    """Isotropic Gaussian N(0, I_d)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def mixture(n: int, d: int = 64, n_components: int = 12, spread: float = 0.1, seed: int = 0) -> torch.Tensor:
    """A mixture of ``n_components`` Gaussians: centres N(0, I_d), each cluster isotropic with std ``spread``.
    Draw train and test rows in one call (as :func:`make_synthetic` does) so they share the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_components, d, generator=g)
    lab = torch.randint(0, n_components, (n,), generator=g)
    return centres[lab] + spread * torch.randn(n, d, generator=g)


def uniform(n: int, d: int = 2, seed: int = 0) -> torch.Tensor:
    """Uniform points in the unit square (d=2) / cube (d=3) / hypercube."""
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def known_dictionary(
    n: int,
    d: int = 64,
    n_atoms: int = 256,
    active: float = 4.0,
    seed: int = 0,
    atoms: torch.Tensor | None = None,
    noise: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse data with a known dictionary: ``x = c @ D`` with ``D`` [n_atoms, d] random unit rows and each
    atom active independently with probability ``active / n_atoms`` (on average ``active`` per row) at a
    magnitude Uniform(0, 1) + 0.5 (so active atoms are clearly non-zero). Returns ``(x, D)``. The toy setting
    of Sharkey et al. (2022), where an SAE should recover ``D``.

    Args:
        n: rows.
        d: dimension.
        n_atoms: dictionary size (ignored when ``atoms`` is given).
        active: mean number of active atoms per row.
        seed: seeds the atoms, the codes and the noise.
        atoms: a dictionary ``[n_atoms, d]`` to use instead of random unit rows.
        noise: standard deviation of isotropic Gaussian noise added to ``x``.
    """
    g = torch.Generator().manual_seed(seed)
    if atoms is None:
        atoms = F.normalize(torch.randn(n_atoms, d, generator=g), dim=-1)
    n_atoms = atoms.shape[0]
    on = torch.rand(n, n_atoms, generator=g) < active / n_atoms
    mag = torch.rand(n, n_atoms, generator=g) + 0.5
    x = (on * mag) @ atoms
    if noise:
        x = x + noise * torch.randn(n, atoms.shape[1], generator=g)
    return x, atoms


SyntheticName = Literal["gaussian", "mixture", "uniform", "uniform-cube", "known-dict"]
"""The synthetic sets (``interplab sae train --data NAME``)."""
SYNTHETIC: tuple[SyntheticName, ...] = get_args(SyntheticName)


def make_synthetic(
    name: SyntheticName, n_train: int = 65536, n_test: int = 16384, d: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """``{"train": [n, d], "test": [m, d], "atoms": D or None, "d": d}`` for a synthetic control.

    Args:
        name: ``gaussian`` (N(0, I), d 64) | ``mixture`` (12 Gaussians, d 64) | ``uniform`` (unit square) |
            ``uniform-cube`` (unit cube) | ``known-dict`` (sparse codes of 256 known atoms, d 64).
        n_train, n_test: rows of each split (drawn in one call, so they share centres and atoms).
        d: dimension (None: the set's default above).
        seed: seeds the draw.
    """
    n = n_train + n_test
    atoms = None
    if name == "gaussian":
        x = gaussian(n, d or 64, seed)
    elif name == "mixture":
        x = mixture(n, d or 64, seed=seed)
    elif name == "uniform":
        x = uniform(n, d or 2, seed)
    elif name == "uniform-cube":
        x = uniform(n, d or 3, seed)
    elif name == "known-dict":
        x, atoms = known_dictionary(n, d or 64, seed=seed)
    else:
        raise ValueError(f"unknown synthetic data {name!r}; choose one of {', '.join(SYNTHETIC)}.")
    return {"train": x[:n_train], "test": x[n_train:], "atoms": atoms, "d": x.shape[1]}
