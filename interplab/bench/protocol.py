"""The one timing protocol every benchmark uses: interleaved rounds, summarised by the ratio of minimums.

On a shared machine other jobs only ever slow a call down, never speed it up, so the fastest of many calls
is the best estimate of a variant's own cost, and the **ratio of minimums** (fastest variant call / fastest
baseline call) is the robust comparison. The median of per-round ratios (each round times every variant
back to back, so slow drifts cancel) and the per-round spread (smallest and largest per-round ratio) are
reported beside it: a wide spread says the machine was noisy while the benchmark ran.

Protocol: ``warmup`` untimed rounds, then ``rounds`` (default 15) timed rounds; every round calls each
variant once, in an order that alternates from round to round (A B C, C B A, A B C, …), so no variant
always runs first or after the same neighbour.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_ROUNDS", "Timings", "interleave", "load_average", "timed"]

DEFAULT_ROUNDS = 15
DESCRIPTION = (
    "{warmup} warm-up round(s), then {rounds} interleaved rounds (order A B C, C B A, ... alternating); "
    "ratio = fastest variant call / fastest baseline call (ratio of minimums), with the median of per-round "
    "ratios and the per-round range beside it"
)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` takes (``time.perf_counter``), and what it returned."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def load_average() -> float | None:
    """The 1-minute load average (``os.getloadavg``), or ``None`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@dataclass
class Timings:
    """Seconds per call: ``seconds[variant][round]``; ``last[variant]``: what the variant's last timed call
    returned (benchmarks compare the outputs of the paths they time)."""

    seconds: dict[str, list[float]]
    warmup: int
    last: dict[str, Any] = field(default_factory=dict)
    load_before: float | None = None
    load_after: float | None = None

    @property
    def rounds(self) -> int:
        return len(next(iter(self.seconds.values()), []))

    def min(self, variant: str) -> float:
        return min(self.seconds[variant])

    def median(self, variant: str) -> float:
        return statistics.median(self.seconds[variant])

    def round_ratios(self, num: str, den: str) -> list[float]:
        """``num`` time / ``den`` time, round by round."""
        return [a / b for a, b in zip(self.seconds[num], self.seconds[den], strict=True)]

    def ratio(self, num: str, den: str) -> float:
        """The ratio of minimums: fastest ``num`` call / fastest ``den`` call."""
        return self.min(num) / self.min(den)

    def compare(self, key: str, num: str, den: str, digits: int = 3) -> dict[str, Any]:
        """Summary of ``num`` against ``den`` under ``key``: the ratio of minimums first (``key``), then
        ``key_median`` (median of per-round ratios), ``key_range`` ([smallest, largest] per-round ratio)
        and ``key_rounds`` (every per-round ratio)."""
        rr = self.round_ratios(num, den)
        return {
            key: round(self.ratio(num, den), digits),
            f"{key}_median": round(statistics.median(rr), digits),
            f"{key}_range": [round(min(rr), digits), round(max(rr), digits)],
            f"{key}_rounds": [round(x, digits) for x in rr],
        }

    def times(self, variant: str, unit: str = "ms", digits: int = 1) -> dict[str, float]:
        """``{variant}_{unit}`` (fastest call) and ``{variant}_{unit}_median``, in ``unit`` (``ms`` or ``s``)."""
        scale = 1000.0 if unit == "ms" else 1.0
        return {
            f"{variant}_{unit}": round(self.min(variant) * scale, digits),
            f"{variant}_{unit}_median": round(self.median(variant) * scale, digits),
        }

    def protocol(self) -> dict[str, Any]:
        """How the numbers were taken: rounds, warm-up, the load average before and after, in words."""
        return {
            "protocol": DESCRIPTION.format(warmup=self.warmup, rounds=self.rounds),
            "rounds": self.rounds,
            "warmup_rounds": self.warmup,
            "load_avg_before": self.load_before,
            "load_avg_after": self.load_after,
        }


def interleave(
    variants: Mapping[str, Callable[[], Any]],
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = 1,
    keep: bool = False,
    each: Callable[[str, Any], None] | None = None,
) -> Timings:
    """Time every variant once per round: ``warmup`` untimed rounds, then ``rounds`` timed ones, the order
    alternating from round to round (A B C, C B A, …). ``keep``: hold each variant's last return value in
    ``Timings.last``; ``each(variant, value)``: called after every timed call, outside the timer (to check
    or accumulate outputs). Returns the seconds of every timed call."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0 (got rounds={rounds}, warmup={warmup}).")
    order = list(variants)
    seconds: dict[str, list[float]] = {k: [] for k in order}
    out = Timings(seconds=seconds, warmup=warmup, load_before=load_average())
    for r in range(warmup + rounds):
        this = order if r % 2 == 0 else order[::-1]
        for k in this:
            s, value = timed(variants[k])
            if r < warmup:
                continue
            seconds[k].append(s)
            if each is not None:
                each(k, value)
            if keep:
                out.last[k] = value
            del value
    out.load_after = load_average()
    return out
