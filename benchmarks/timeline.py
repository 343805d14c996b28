"""Where an end-to-end run's cores sat idle: the machine's CPU use sampled every second
(/proc/stat) beside the registry's record of which steps were running (its events table).

The scaling question (issue 18: 1 -> 2 worker CPUs) is answered by the idle core-seconds of
the 2-CPU run and what was running while they were idle: a second in which only one
observation was being imaged and nothing else could start (the last one draining, every
other one waiting for its calibrator) is the run's serial part. Linux only (/proc/stat).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

# registry states that are work on a core, per table (the step's name in the breakdown)
STEPS = {"observations": {"converting": "convert", "calibrating": "calibrate",
                          "imaging": "image"},
         "mosaics": {"mosaicking": "mosaic"}}


class CpuSampler:
    """Samples the machine's busy cores (0..ncpu) once a second in a thread:
    ``samples`` is a list of (unix time at the interval's end, busy cores over it)."""

    def __init__(self, period_s: float = 1.0):
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.ncpu = os.cpu_count() or 1

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # all jiffies, idle + iowait

    def _run(self):
        t0, i0 = self._read()
        while not self._stop.wait(self.period_s):
            t1, i1 = self._read()
            if t1 > t0:
                self.samples.append((time.time(), self.ncpu * (1 - (i1 - i0) / (t1 - t0))))
            t0, i0 = t1, i1

    def __enter__(self):
        if Path("/proc/stat").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def step_intervals(db: Path) -> list[tuple[str, str, float, float]]:
    """(step, key, start, end) of every working state a row passed through, from the
    registry's events (unix seconds); a step still open at the end is left out."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = c.execute("SELECT at, table_name, key, old, new FROM events "
                         "ORDER BY at, id").fetchall()
    finally:
        c.close()
    open_: dict = {}
    out = []
    for at, table, key, old, new in rows:
        steps = STEPS.get(table, {})
        if (table, key) in open_ and old in steps:
            step, t0 = open_.pop((table, key))
            out.append((step, key, t0, at))
        if new in steps:
            open_[(table, key)] = (steps[new], at)
    return out


def idle_breakdown(samples, intervals, t0: float, t1: float, ncpu: int) -> dict:
    """Core-seconds idle between ``t0`` and ``t1``, by what was running meanwhile.

    ``samples``: (time, busy cores) at 1 s; ``intervals``: from :func:`step_intervals`.
    Each sample's idle cores (``ncpu`` - busy) go to the label of the steps running at
    that moment: the step names with the number of observations in each, e.g. "image x1"
    or "convert x1 + image x1"; "nothing" when no step ran (the driver's own work:
    discovery, planning, publication, or waiting for files)."""
    by: dict[str, float] = {}
    busy_total = idle_total = 0.0
    prev = t0
    for t, busy in samples:
        if t <= t0 or prev >= t1:
            prev = t
            continue
        dt = min(t, t1) - max(prev, t0)
        prev = t
        counts: dict[str, int] = {}
        for step, _, a, b in intervals:
            if a <= t - dt / 2 < b:
                counts[step] = counts.get(step, 0) + 1
        label = " + ".join(f"{s} x{n}" for s, n in sorted(counts.items())) or "nothing"
        idle = max(ncpu - busy, 0.0) * dt
        by[label] = by.get(label, 0.0) + idle
        busy_total += busy * dt
        idle_total += idle
    wall = t1 - t0
    return {"wall_s": wall, "ncpu": ncpu, "busy_core_s": busy_total,
            "idle_core_s": idle_total,
            "mean_busy_cores": busy_total / wall if wall > 0 else None,
            "idle_core_s_by_running_steps": dict(sorted(by.items(), key=lambda kv: -kv[1])),
            "step_seconds": _step_seconds(intervals)}


def _step_seconds(intervals) -> dict:
    """Total and median seconds of each step over the run."""
    import statistics

    out = {}
    for step in sorted({s for s, *_ in intervals}):
        d = [b - a for s, _, a, b in intervals if s == step]
        out[step] = {"n": len(d), "total_s": sum(d), "median_s": statistics.median(d)}
    return out
