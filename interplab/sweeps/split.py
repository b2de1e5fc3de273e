"""One long analysis split over workers through a sweep backend (``serial``, ``process`` or ``ray``): the work
is dealt into shares, each worker loads the model itself (one thread) and computes its share exactly as the
serial loop would (same batches, same seeds), and the caller assembles the shares. Causal tracing deals out
facts; head ablation and activation patching deal out layers, so every forward pass has the shapes of the serial
run and the results are the serial ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from interplab.sweeps.backends import available_cpus, check_backend, map_calls

if TYPE_CHECKING:
    from interplab.models.model import Model

T = TypeVar("T")

__all__ = ["deal", "model_reference", "run_shares", "worker_model"]


def model_reference(model: Model, model_ref: str | None = None) -> str:
    """What a worker passes to :func:`interplab.load` to get ``model`` back: ``model_ref`` if given, else the
    model's registry name, else the directory or file it was loaded from."""
    from interplab.models.registry import REGISTRY

    if model_ref is not None:
        return model_ref
    if model.name in REGISTRY:
        return model.name
    if not model.source:
        raise ValueError(
            f"model {model.name!r} was not loaded from a registry name or a path, so a worker cannot load it; "
            "save it to a directory and load it from there, or pass model_ref=."
        )
    return str(model.source)


def deal(items: Sequence[T], max_parallel: int | None = None) -> list[list[T]]:
    """``items`` dealt round-robin into one share per worker (``max_parallel``, default the CPUs here), never
    more shares than items."""
    n = min(len(items), max_parallel or available_cpus())
    return [list(items[j::n]) for j in range(n)] if n else []


@contextmanager
def worker_model(model_ref: str) -> Iterator[Model]:
    """In a worker: the model loaded by ``model_ref``, with torch on one thread (workers share the CPUs)."""
    from interplab.models.loading import load
    from interplab.runtime import torch_threads

    with torch_threads(1):
        yield load(model_ref)


def run_shares(
    fn: Callable[..., Any],
    model: Model,
    shares: Sequence[Any],
    args: tuple,
    on_result: Callable[[Any, Any], object],
    backend: str,
    max_parallel: int | None = None,
    model_ref: str | None = None,
) -> None:
    """``fn(model_ref, share, *args)`` for every share on ``backend``; ``on_result(share, value)`` in this
    process as each arrives."""
    check_backend(backend)
    ref = model_reference(model, model_ref)
    map_calls(
        fn,
        [(ref, s, *args) for s in shares],
        lambda call, value: on_result(call[1], value),
        backend=backend,
        max_parallel=max_parallel,
    )
