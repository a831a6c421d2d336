"""Side-by-side timing for the benchmarks: two workloads interleaved (A, B, A, B, ...), medians reported, so load
on a shared machine hits both alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b` over `repeats` interleaved runs, after one warm-up run each."""
    a(), b()  # warm-up (allocator, lazy inits)
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        for fn, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)
