"""Side-by-side timing for the benchmarks: two workloads interleaved (A, B, A, B, ...), medians reported, so load
on a shared machine hits both alike; and the FLOPs a workload counts, to set a measured ratio beside."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


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


def flops(fn: Callable[[], object]) -> int:
    """FLOPs `fn()` runs, counted by `torch.utils.flop_counter.FlopCounterMode` (forward and backward alike)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
