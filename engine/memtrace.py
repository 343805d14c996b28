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


RSS_PARTS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def rss_parts(pid: int | None = None) -> dict | None:
    """A process's resident memory by kind, bytes (Linux /proc/<pid>/status): ``VmRSS`` the
    total; ``RssAnon`` its private heap and stacks (what a leak grows); ``RssFile`` mapped
    files (libraries, memory-mapped data); ``RssShmem`` shared memory it has touched, such as
    pages of Ray's object store, which the store owns and bounds (``object_store_memory``)
    and which stay counted in every process that read or wrote them. None off Linux."""
    out = {}
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in RSS_PARTS:
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        return None
    return out if len(out) == len(RSS_PARTS) else None


def private_bytes(pid: int | None = None) -> int | None:
    """Resident memory a process owns alone (``RssAnon``), bytes: the driver's memory
    limit and the soak's flatness check use this, not VmRSS, which also counts the shared
    object-store pages the process has touched. None off Linux."""
    parts = rss_parts(pid)
    return parts["RssAnon"] if parts else None


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
    """``tick()`` from the driver's loop: every ``trim_s`` glibc's free pages back to the
    system (``malloc_trim``), every ``every_s`` the RSS (and with tracing, the top growths)
    into the log.

    Why trim on a schedule: the driver's live allocations stay flat over a night (memray,
    issue 17's note), but Ray's and gRPC's threads each allocate in their own glibc arena,
    and the pages freed inside an arena stay resident until trimmed, so the RSS of an
    untrimmed driver rose about 400 MB an hour at the soak's pace."""

    def __init__(self, every_s: float = 300.0, trim_s: float = 30.0):
        self.every_s, self.next = every_s, 0.0
        self.trim_s, self.next_trim = trim_s, 0.0
        self.top = int(os.environ.get(VAR) or 0)
        self.base = None
        if self.top > 0:  # tracing: every minute
            self.every_s = min(every_s, 60.0)
            tracemalloc.start(8)
            self.base = tracemalloc.take_snapshot()

    def tick(self, now: float | None = None):
        now = time.monotonic() if now is None else now
        if now < self.next:  # no report due: a trim, if one is
            if now >= self.next_trim:
                self.next_trim = now + self.trim_s
                trim()
            return
        self.next = now + self.every_s
        self.next_trim = now + self.trim_s
        rss = rss_bytes()
        trim()
        after = rss_parts() or {}
        log.info("driver memory: RSS %.0f MB, %.0f MB after malloc_trim (private %.0f, "
                 "files %.0f, shared %.0f)", (rss or 0) / 1e6, after.get("VmRSS", 0) / 1e6,
                 after.get("RssAnon", 0) / 1e6, after.get("RssFile", 0) / 1e6,
                 after.get("RssShmem", 0) / 1e6)
        if self.base is not None:
            snap = tracemalloc.take_snapshot()
            for stat in snap.compare_to(self.base, "traceback")[: self.top]:
                frames = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                     for f in stat.traceback[:4])
                log.info("  %+.1f kB in %+d blocks: %s", stat.size_diff / 1e3,
                         stat.count_diff, frames)
