"""``map_calls``: an experiment's independent pieces (here double-descent cells) give the same values on the
serial, process and Ray backends, and each value reaches the caller as it arrives."""

from __future__ import annotations

import pytest

from interplab.sweeps.backends import map_calls
from interplab.train.double_descent import run_cell

CFG = {"n_train": 60, "data_seed": 0, "steps": 15, "lr": 3e-3, "n_evals": 3, "threads": 1}
CALLS = [(CFG, noise, 0, width) for noise in (0.0, 0.2) for width in (2, 6)]


def _gather(backend: str, max_parallel: int | None = None) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    map_calls(run_cell, CALLS, lambda args, v: out.__setitem__(args[1:], v), backend=backend, max_parallel=max_parallel)
    return out


def test_process_backend_gives_the_serial_values():
    serial = _gather("serial")
    assert len(serial) == 4
    assert _gather("process", max_parallel=2) == serial


@pytest.mark.ray
def test_ray_backend_gives_the_serial_values():
    assert _gather("ray", max_parallel=2) == _gather("serial")


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="use one of serial, process, ray"):
        map_calls(run_cell, CALLS, lambda a, v: None, backend="dask")
