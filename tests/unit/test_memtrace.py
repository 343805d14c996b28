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
                     line.replace("driver memory: RSS ", "").replace(" MB after malloc_trim",
                                                                     "").split(" MB, "))
    assert 0 < after <= before + 1
