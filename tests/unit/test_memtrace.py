"""The driver's memory log (engine.memtrace)."""


def test_memory_log_reports_rss_before_and_after_trimming(caplog):
    import logging

    from engine.memtrace import MemoryLog, rss_bytes, trim

    assert rss_bytes() > 10e6  # this Python process
    junk = [bytes(1000) for _ in range(100_000)]  # ~100 MB freed below: trim may return it
    del junk
    assert trim() in (True, False)
    with caplog.at_level(logging.INFO, logger="engine.memtrace"):
        MemoryLog(every_s=300).tick(now=0.0)
    line = next(r.getMessage() for r in caplog.records if "driver memory" in r.getMessage())
    before, after = (float(x) for x in
                     line.split(" MB after malloc_trim")[0].replace(
                         "driver memory: RSS ", "").split(" MB, "))
    assert 0 < after <= before + 1
    private = float(line.split("(private ")[1].split(",")[0])
    assert 0 < private <= after  # the private part of the RSS


def test_memory_log_trims_between_its_reports(monkeypatch, caplog):
    """The driver's loop ticks every few seconds: glibc's free pages go back every
    ``trim_s``, the RSS is logged every ``every_s``."""
    import logging

    from engine import memtrace

    calls = []
    monkeypatch.setattr(memtrace, "trim", lambda: calls.append(1) or True)
    m = memtrace.MemoryLog(every_s=300, trim_s=30)
    with caplog.at_level(logging.INFO, logger="engine.memtrace"):
        for now in range(0, 600, 2):  # a driver loop of 2 s for 10 minutes
            m.tick(now=float(now))
    reports = [r for r in caplog.records if "driver memory" in r.getMessage()]
    assert len(reports) == 2  # at 0 and 300 s
    assert 19 <= len(calls) <= 21  # every 30 s, the reports' own trims included


def test_rss_parts_add_up():
    """/proc's resident memory by kind: private, file-backed and shared parts sum to the
    total (the kernel's own accounting, read independently here)."""
    from engine.memtrace import private_bytes, rss_parts

    p = rss_parts()
    assert p["VmRSS"] == p["RssAnon"] + p["RssFile"] + p["RssShmem"]
    keep = bytearray(50_000_000)
    keep[::4096] = b"x" * len(keep[::4096])  # touch every page
    assert private_bytes() >= p["RssAnon"] + 45e6


ARENAS = r"""
import sys, threading
from engine.memtrace import limit_arenas
n = int(sys.argv[1])
ok = limit_arenas(n)
barrier = threading.Barrier(7)
keep = []

def work():
    keep.append([bytearray(100_000) for _ in range(20)])  # malloc'd, below the mmap threshold
    barrier.wait()
    barrier.wait()

threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
barrier.wait()  # all six threads hold their memory now
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
barrier.wait()
print(ok, vm)
"""


def test_limit_arenas_keeps_threads_in_few_heaps():
    """glibc gives each new thread its own arena (64 MB of address space each) up to 8 per
    core; with ``limit_arenas(1)`` six allocating threads share the main heap. Measured in
    two fresh processes by their VmSize."""
    import subprocess
    import sys

    out = {}
    for n in (0, 1):
        p = subprocess.run([sys.executable, "-c", ARENAS, str(n)], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        ok, vm = p.stdout.split()
        out[n] = (ok == "True", int(vm) * 1024)
    assert out[1][0] and not out[0][0]  # glibc accepted the cap; 0 leaves the default
    assert out[0][1] - out[1][1] > 128e6, out  # several 64 MB arenas fewer
