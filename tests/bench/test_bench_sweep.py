"""``bench_sweep``: seconds per empty cell for each backend asked for, beside one direct run."""

from __future__ import annotations

import pytest

from interplab.bench.sweep import bench_sweep


def test_overhead_is_reported_per_backend_and_beside_a_direct_run():
    res = bench_sweep(cells=1, rounds=1, warmup=0, backends=["serial"])
    assert set(res["overhead_s"]) == {"serial"}
    assert res["overhead_s"]["serial"] > 0 and res["direct_s"] > 0
    assert res["rounds"] == 1 and "protocol" in res


def test_unknown_backends_are_refused():
    with pytest.raises(ValueError, match="unknown backends"):
        bench_sweep(backends=["spark"])


def test_speedup_of_two_workers_is_measured_on_real_cells():
    res = bench_sweep(cells=1, rounds=1, warmup=0, backends=["serial"], speedup_cells=2, cell_seconds=1.0)
    assert res["speedup_cells"] == 2 and res["speedup_cell_steps"] >= 50
    assert res["speedup_2_workers"] > 0
    assert res["speedup_wall_s"]["1_worker"] > 0 and res["speedup_wall_s"]["2_workers"] > 0
