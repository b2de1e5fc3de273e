"""Where a sweep's cells run, behind one small interface: ``with backend: backend.run(specs, on_done)`` runs
every :class:`~interplab.sweeps.cell.CellSpec` and calls ``on_done(outcome)`` in the calling thread as each
cell ends (in any order); a cell that fails, or whose worker dies, comes back as a failed outcome and never stops
the others.

``serial``   one cell after another in child processes (the default; needs nothing).
``process``  up to ``max_parallel`` child processes at once on this machine (default: CPUs / cpus per cell).
``ray``      Ray tasks, one per cell with ``num_cpus=cpus_per_cell`` (and ``memory``, if given): a local Ray
             started here (``ray.init(num_cpus=..., include_dashboard=False)``, usage statistics off) and shut
             down afterwards, or an existing cluster joined with ``address`` (``auto`` or ``HOST:PORT``), left
             running. Needs ``pip install -e .[ray]``.

Each backend runs the same :func:`~interplab.sweeps.cell.run_cell`, so the results do not depend on the backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Self

from interplab.sweeps import cell as cell_module
from interplab.sweeps.cell import CellOutcome, CellSpec, run_cell, stop_running

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendName",
    "BackendUnavailable",
    "ProcessBackend",
    "RayBackend",
    "SerialBackend",
    "available_cpus",
    "cached_cells",
    "check_backend",
    "make_backend",
    "map_calls",
    "parse_bytes",
]

BackendName = Literal["serial", "process", "ray"]
BACKENDS: tuple[str, ...] = ("serial", "process", "ray")
OnDone = Callable[[CellOutcome], None]
OnResult = Callable[[tuple, Any], object]


class BackendUnavailable(ValueError):
    """The backend cannot run here (Ray not installed, no cluster at the address)."""


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def parse_bytes(text: str) -> int:
    """``"2GB"`` / ``"512M"`` / ``"1.5g"`` / ``"1000000"`` -> bytes (K, M, G, T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ValueError(f"--memory-per-cell {text!r}: write a size like 2GB, 512MB or a number of bytes.")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def _safe_run(spec: CellSpec) -> CellOutcome:
    try:
        return run_cell(spec)
    except OSError as e:  # the cell could not even start (e.g. its directory is not writable)
        return CellOutcome(spec.name, "failed", None, 0.0, error=f"{type(e).__name__}: {e}")


class Backend:
    """Runs cells; use as a context manager around :meth:`run` (backends that start something stop it)."""

    name: str = "serial"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, specs: Sequence[CellSpec], on_done: OnDone) -> None:
        raise NotImplementedError

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_result: OnResult) -> None:
        """Call ``fn(*args)`` for every ``args`` of ``calls`` and ``on_result(args, value)`` in the calling thread
        as each returns (in any order). How an experiment spreads its own independent pieces (the cells of
        ``train double-descent`` or ``train scaling``) over the backend's workers; ``fn`` must be a module-level
        function (it is pickled to the workers) and a pure function of its arguments, so every backend gives the
        same values. Here: one call after another, in this process. An exception in a call propagates (the values
        already handed to ``on_result`` are kept by the caller)."""
        for args in calls:
            on_result(args, fn(*args))


class SerialBackend(Backend):
    """One cell at a time, in order."""

    name = "serial"

    def run(self, specs: Sequence[CellSpec], on_done: OnDone) -> None:
        try:
            for spec in specs:
                on_done(_safe_run(spec))
        except BaseException:
            stop_running()
            raise


class ProcessBackend(Backend):
    """Up to ``max_parallel`` cells at once, each in its own child process (threads here only wait on them)."""

    name = "process"

    def __init__(self, max_parallel: int):
        if max_parallel < 1:
            raise ValueError("--max-parallel must be at least 1.")
        self.max_parallel = max_parallel

    def run(self, specs: Sequence[CellSpec], on_done: OnDone) -> None:
        pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="sweep-cell")
        try:
            futures = [pool.submit(_safe_run, s) for s in specs]
            for f in as_completed(futures):
                on_done(f.result())
        except BaseException:  # Ctrl-C, a kill or a failing callback: start no further cells, stop the running ones
            pool.shutdown(wait=False, cancel_futures=True)
            stop_running()
            raise
        pool.shutdown()

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_result: OnResult) -> None:
        """:meth:`Backend.map` over ``max_parallel`` fresh worker processes (spawned, not forked: torch's thread
        pools do not survive a fork)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=self.max_parallel, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(fn, *args): args for args in calls}
            for f in as_completed(futures):
                on_result(futures[f], f.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


class RayBackend(Backend):
    """One Ray task per cell (``num_cpus=cpus_per_cell``, ``memory=memory_per_cell`` bytes), at most
    ``max_parallel`` in flight (default: no limit beyond the cluster's resources). Without ``address`` a local Ray
    with ``num_cpus`` CPUs is started and shut down on exit; a Ray already initialised in this process is used as
    it is and left running."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_parallel: int | None = None,
        cpus_per_cell: float = 1,
        memory_per_cell: int | None = None,
        num_cpus: int | None = None,
    ):
        if max_parallel is not None and max_parallel < 1:
            raise ValueError("--max-parallel must be at least 1.")
        self.address = address
        self.max_parallel = max_parallel
        self.cpus_per_cell = cpus_per_cell
        self.memory_per_cell = memory_per_cell
        self.num_cpus = num_cpus
        self._ray: ModuleType | None = None
        self._started = False

    def __enter__(self) -> Self:
        try:
            import ray
            from ray import cloudpickle
        except ImportError:
            raise BackendUnavailable(
                "the ray backend needs Ray: pip install -e .[ray] (or pip install 'ray>=2.60'); "
                "--backend serial or process need nothing."
            ) from None
        # the cell runner goes to workers by value: a worker then needs no interplab import of its own
        cloudpickle.register_pickle_by_value(cell_module)
        if not ray.is_initialized():
            try:
                if self.address is None:
                    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except ConnectionError as e:
                raise BackendUnavailable(
                    f"could not join the Ray cluster at {self.address!r}: {e} (start one with `ray start --head`; "
                    "with Ray's token authentication set RAY_AUTH_MODE=token)."
                ) from None
            self._started = True
        self._ray = ray
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._started = False

    def run(self, specs: Sequence[CellSpec], on_done: OnDone) -> None:
        ray = self._ray
        if ray is None:
            raise RuntimeError("use the Ray backend inside `with backend:`.")
        opts: dict[str, Any] = {"num_cpus": self.cpus_per_cell, "max_retries": 2}
        if self.memory_per_cell:
            opts["memory"] = self.memory_per_cell
        task = ray.remote(cell_module.run_cell_dict).options(**opts)
        todo = list(specs)
        pending: dict[Any, CellSpec] = {}
        limit = self.max_parallel or len(todo)
        try:
            while todo or pending:
                while todo and len(pending) < limit:
                    spec = todo.pop(0)
                    pending[task.remote(_as_dict(spec))] = spec
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    spec = pending.pop(ref)
                    try:
                        outcome = CellOutcome(**ray.get(ref))
                    except ray.exceptions.RayError as e:  # the task or its worker died (after Ray's retries)
                        outcome = CellOutcome(spec.name, "failed", None, 0.0, error=f"{type(e).__name__}: {e}")
                    on_done(outcome)
        except BaseException:  # Ctrl-C: cancel what is still queued or running (also on a cluster left running)
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_result: OnResult) -> None:
        """:meth:`Backend.map` as one Ray task per call (``num_cpus=cpus_per_cell``); the workers import ``fn``'s
        module, so interplab must be installed on every node."""
        ray = self._ray
        if ray is None:
            raise RuntimeError("use the Ray backend inside `with backend:`.")
        opts: dict[str, Any] = {"num_cpus": self.cpus_per_cell}
        if self.memory_per_cell:
            opts["memory"] = self.memory_per_cell
        task = ray.remote(fn).options(**opts)
        todo, pending = list(calls), {}
        limit = self.max_parallel or len(todo)
        try:
            while todo or pending:
                while todo and len(pending) < limit:
                    args = todo.pop(0)
                    pending[task.remote(*args)] = args
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    on_result(pending.pop(ref), ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def map_calls(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    on_result: OnResult,
    backend: str = "serial",
    max_parallel: int | None = None,
) -> None:
    """Run ``fn(*args)`` for every ``args`` in ``calls`` on the backend called ``backend`` (see
    :meth:`Backend.map`), handing each value to ``on_result(args, value)`` as it arrives."""
    if not calls:
        return
    if backend == "serial":
        max_parallel = None
    with make_backend(backend, max_parallel=max_parallel) as b:
        b.map(fn, calls, on_result)


def cached_cells(
    fn: Callable[..., dict[str, Any]],
    config: dict[str, Any],
    keys: Sequence[tuple],
    cell_dir: str | Path,
    file_name: Callable[..., str],
    kind: str,
    backend: str = "serial",
    max_parallel: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """An experiment's cells kept for resume: ``fn(config, *key)`` for every key whose JSON file
    ``cell_dir/file_name(*key)`` does not exist yet, run through :func:`map_calls` and written (atomically, with
    ``kind``) as each arrives, so a killed run keeps its finished cells. Returns every key's cell, in ``keys``'
    order, and how many were computed now."""
    from interplab.io.atomic import write_json
    from interplab.io.results import read_json

    root = Path(cell_dir)
    root.mkdir(parents=True, exist_ok=True)
    missing = [k for k in keys if not (root / file_name(*k)).exists()]
    map_calls(
        fn,
        [(config, *k) for k in missing],
        lambda args, cell: write_json(root / file_name(*args[1:]), {"kind": kind, **cell}),
        backend=backend,
        max_parallel=max_parallel,
    )
    cells = [read_json(root / file_name(*k), "", kind)[0] for k in keys]
    return [{k: v for k, v in c.items() if k != "kind"} for c in cells], len(missing)


def _as_dict(spec: CellSpec) -> dict[str, Any]:
    return {"name": spec.name, "args": list(spec.args), "run_dir": spec.run_dir, "cwd": spec.cwd, "env": spec.env}


def check_backend(name: str) -> None:
    """A ValueError naming the backends when ``name`` is not one of them."""
    if name not in BACKENDS:
        raise ValueError(f"--backend {name!r}: use one of {', '.join(BACKENDS)}.")


def make_backend(
    name: str,
    *,
    max_parallel: int | None = None,
    address: str | None = None,
    cpus_per_cell: float = 1,
    memory_per_cell: int | None = None,
) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`). ``process`` runs ``max_parallel`` cells at once
    (default: CPUs / ``cpus_per_cell``); a local ``ray`` gets ``max_parallel * cpus_per_cell`` CPUs (default: all)."""
    check_backend(name)
    if cpus_per_cell <= 0:
        raise ValueError("--cpus-per-cell must be positive.")
    if address is not None and name != "ray":
        raise ValueError("--address joins a Ray cluster; use it with --backend ray.")
    if name == "serial":
        if max_parallel not in (None, 1):
            raise ValueError("--backend serial runs one cell at a time; use --backend process for --max-parallel.")
        return SerialBackend()
    if name == "process":
        return ProcessBackend(max_parallel or max(1, int(available_cpus() // cpus_per_cell)))
    num_cpus = None
    if address is None:
        num_cpus = max(1, int(max_parallel * cpus_per_cell)) if max_parallel else available_cpus()
    return RayBackend(address, max_parallel, cpus_per_cell, memory_per_cell, num_cpus)
