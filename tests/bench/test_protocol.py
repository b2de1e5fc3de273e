"""The shared benchmark protocol (interplab.bench.protocol) and the grokking step timer, without models."""

import pytest

from interplab.bench.grokking import bench_grokking
from interplab.bench.protocol import Timings, interleave


def test_interleave_alternates_order_and_skips_warmup():
    calls: list[str] = []
    t = interleave({k: (lambda k=k: calls.append(k)) for k in "ABC"}, rounds=3, warmup=1)
    assert calls == list("ABCCBAABCCBA")
    assert t.rounds == 3 and all(len(v) == 3 for v in t.seconds.values())
    assert t.protocol()["rounds"] == 3 and t.protocol()["warmup_rounds"] == 1


def test_ratio_of_minimums_first_then_median_and_range():
    t = Timings(seconds={"base": [1.0, 2.0, 1.0], "x": [1.5, 1.2, 3.0]}, warmup=0)
    c = t.compare("r", "x", "base")
    assert c["r"] == pytest.approx(1.2)  # 1.2 / 1.0, minimums taken from different rounds
    assert c["r_median"] == pytest.approx(1.5) and c["r_range"] == [0.6, 3.0]
    assert list(c) == ["r", "r_median", "r_range", "r_rounds"]
    assert t.times("x") == {"x_ms": 1200.0, "x_ms_median": 1500.0}


def test_interleave_keeps_outputs_and_rejects_bad_rounds():
    t = interleave({"a": lambda: 1, "b": lambda: 2}, rounds=2, warmup=0, keep=True)
    assert t.last == {"a": 1, "b": 2}
    with pytest.raises(ValueError):
        interleave({"a": lambda: 1}, rounds=0)


def test_bench_grokking_times_each_thread_count():
    import torch

    before = torch.get_num_threads()
    n = {"steps": 0}

    def step():
        n["steps"] += 1

    res = bench_grokking(step, steps=2, rounds=2, threads=(1, 2), warmup=0, epochs=10, meta={"p": 23})
    assert res["p"] == 23 and len(res["ms_per_step"]["1"]) == 2 and res["min_ms_per_step"]["2"] >= 0
    assert "ratio_threads_2_to_1" in res and res["minutes_for_epochs"]["1"] >= 0
    assert n["steps"] == 2 * 2 * (3 + 2) and torch.get_num_threads() == before
