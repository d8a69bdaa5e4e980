"""Timing shared by the benchmarks (run as ``python bench/<name>.py``)."""

import os
import platform
import sys
import time


def best_of(fn, repeats: int) -> tuple[float, object]:
    """The fastest of ``repeats`` calls of ``fn`` (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def machine(**extra) -> dict:
    """What a result was measured on: platform, cores, Python, the load average when the
    result is written, and ``extra`` (library versions, torch threads, ...)."""
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0], "load_average": list(os.getloadavg()), **extra}
