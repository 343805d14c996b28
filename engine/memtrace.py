"""The driver's own memory, for a standing driver that must not grow: its RSS (from
/proc) and, when ``DSA110_TRACEMALLOC`` names a number N, Python's allocation tracing with
the N largest growths since the driver started, logged on a schedule.

Diagnostics, and one setting: :func:`limit_arenas` caps glibc's malloc arenas (one per
thread by default, up to 8 x cores), a common source of a long-lived threaded process's
native memory growth.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
import tracemalloc

log = logging.getLogger(__name__)
VAR = "DSA110_TRACEMALLOC"


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size of a process (this one by default), bytes; None off Linux."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def trim() -> bool:
    """Ask glibc to return free heap memory to the system (``malloc_trim(0)``); False where
    there is no glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` (``mallopt(M_ARENA_MAX, n)``, as the environment
    variable MALLOC_ARENA_MAX does at start-up); 0 leaves glibc's default. Applies to arenas
    created afterwards, so it is called before the driver starts threads. False where there
    is no glibc or it refused."""
    if n <= 0:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(n)))
    except (OSError, AttributeError):
        return False


class MemoryLog:
    """``tick()`` from the driver's loop: every ``every_s`` the RSS (and with tracing, the
    top growths) into the log."""

    def __init__(self, every_s: float = 300.0):
        self.every_s, self.next = every_s, 0.0
        self.top = int(os.environ.get(VAR) or 0)
        self.base = None
        if self.top > 0:  # tracing: every minute
            self.every_s = min(every_s, 60.0)
            tracemalloc.start(8)
            self.base = tracemalloc.take_snapshot()

    def tick(self, now: float | None = None):
        now = time.monotonic() if now is None else now
        if now < self.next:
            return
        self.next = now + self.every_s
        rss = rss_bytes()
        trim()
        after = rss_bytes()
        log.info("driver memory: RSS %.0f MB, %.0f MB after malloc_trim", (rss or 0) / 1e6,
                 (after or 0) / 1e6)
        if self.base is not None:
            snap = tracemalloc.take_snapshot()
            for stat in snap.compare_to(self.base, "traceback")[: self.top]:
                frames = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                     for f in stat.traceback[:4])
                log.info("  %+.1f kB in %+d blocks: %s", stat.size_diff / 1e3,
                         stat.count_diff, frames)
