"""Timing helpers shared by every benchmark part (pure Python, no TensorFlow).

The rules every figure follows:

- Warm-up is excluded: the first call (tracing, graph optimisation, XLA
  compilation) is timed on its own and reported apart, then `warmup` more
  calls are made untimed.
- A measurement is a *block* of `steps` consecutive calls; its value is the
  block's wall time divided by `steps` (seconds per call).
- Two or more functions compared in a ratio are measured *interleaved*:
  repeat r runs one block of each, in the order A B C on even repeats and
  C B A on odd ones (ABBA...), so slow drift from other processes on a shared
  machine hits every side alike.
- A ratio is the median over repeats of the per-repeat ratio
  `block_A[r] / block_B[r]` (paired: both blocks ran next to each other);
  times reported alone are the median over blocks.
"""

import contextlib
import os
import resource
import statistics
import threading
import time


def time_block(fn, steps=1):
    """Seconds per call of `fn` over `steps` consecutive calls."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def time_first_call(fn):
    """Seconds of one call of `fn` (use for the first, tracing/compiling call)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_times(fns, warmup=2, repeats=5, steps=1, timed_context=None):
    """Times several functions in interleaved blocks.

    Args:
        fns: dict `{name: fn}`; each `fn()` does one unit of work (one train
            step, one batch) and returns when it is finished.
        warmup: untimed calls of each function first.
        repeats: blocks per function.
        steps: calls per block.
        timed_context: optional context manager entered after the warm-up,
            around the timed blocks (e.g. an `RssSampler`).

    Returns:
        dict `{name: [seconds per call, one per block]}`, blocks in time order.

    Example:

    >>> times = interleaved_times({"a": lambda: None, "b": lambda: None}, 1, 3, 2)
    >>> len(times["a"]), len(times["b"])
    (3, 3)
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {name: [] for name in names}
    with timed_context if timed_context is not None else contextlib.nullcontext():
        for repeat in range(repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                times[name].append(time_block(fns[name], steps))
    return times


def median_step_time(fn, warmup=2, repeats=5, steps=1):
    """Median seconds per call of `fn`, warm-up excluded.

    Args:
        fn: a function doing one unit of work.
        warmup: untimed calls first.
        repeats: timed blocks.
        steps: calls per block.

    Returns:
        The median over blocks of the seconds per call.

    Example:

    >>> median_step_time(lambda: sum(range(100)), warmup=1, repeats=3) >= 0.0
    True
    """
    return statistics.median(interleaved_times({"fn": fn}, warmup, repeats, steps)["fn"])


def median(values):
    """Median of a non-empty sequence."""
    return statistics.median(values)


def paired_ratio(numerator, denominator):
    """Median over repeats of `numerator[r] / denominator[r]`.

    Both lists come from the same `interleaved_times` call, so block r of
    each ran next to the other.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired_ratio needs two lists of the same, non-zero length.")
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread(values):
    """`(min, max)` of a list, for the JSON."""
    return (min(values), max(values))


# --- memory -------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes():
    """The process' current resident set size in bytes (Linux `/proc`), or
    its peak so far (`getrusage`) where `/proc` is missing."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples the process RSS in a thread; `peak_growth` is the largest RSS
    seen minus the RSS when sampling started, in bytes.

    TensorFlow releases the GIL while it computes, so the thread keeps
    sampling during a step. The figure is rough: memory the allocator
    kept from earlier work is reused without growing RSS.

    Example:

    >>> with RssSampler() as sampler:
    ...     data = bytearray(50_000_000)
    >>> sampler.peak_growth > 0
    True
    """

    def __init__(self, interval=0.002):
        self.interval = interval
        self.start_rss = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.start_rss = self.peak = rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return False

    @property
    def peak_growth(self):
        return self.peak - self.start_rss
