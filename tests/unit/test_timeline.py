"""benchmarks.timeline: the e2e benchmark's account of idle cores by the steps running,
read from a registry's events table (the registry's own schema) and CPU samples."""

import pytest

from benchmarks.timeline import idle_breakdown, step_intervals
from engine.registry import Registry


def test_idle_cores_are_charged_to_the_steps_running_meanwhile(tmp_path):
    db = tmp_path / "registry.sqlite"
    reg = Registry(db)
    ev = [(100.0, "observations", "a", "complete", "converting"),
          (110.0, "observations", "a", "converting", "converted"),
          (110.0, "observations", "a", "converted", "imaging"),
          (105.0, "observations", "b", "complete", "converting"),
          (120.0, "observations", "b", "converting", "converted"),
          (130.0, "observations", "a", "imaging", "imaged"),
          (130.0, "mosaics", "m", "planned", "mosaicking"),
          (134.0, "mosaics", "m", "mosaicking", "mosaicked"),
          (135.0, "observations", "b", "converted", "imaging")]  # still open at the end
    with reg.write():
        for at, table, key, old, new in ev:
            reg.db["events"].insert({"at": at, "table_name": table, "key": key,
                                     "old": old, "new": new})
    reg.close()
    iv = sorted(step_intervals(db))
    assert iv == [("convert", "a", 100.0, 110.0), ("convert", "b", 105.0, 120.0),
                  ("image", "a", 110.0, 130.0), ("mosaic", "m", 130.0, 134.0)]
    # one sample a second over [100, 140), 1.5 of 2 cores busy throughout
    samples = [(t + 1.0, 1.5) for t in range(100, 140)]
    out = idle_breakdown(samples, iv, 100.0, 140.0, ncpu=2)
    by = out["idle_core_s_by_running_steps"]
    # each second's idle 0.5 core goes to the steps running at its midpoint
    assert by["convert x1"] == pytest.approx(0.5 * 5)  # 100-105: a alone
    assert by["convert x2"] == pytest.approx(0.5 * 5)  # 105-110
    assert by["convert x1 + image x1"] == pytest.approx(0.5 * 10)  # 110-120
    assert by["image x1"] == pytest.approx(0.5 * 10)  # 120-130
    assert by["mosaic x1"] == pytest.approx(0.5 * 4)  # 130-134
    assert by["nothing"] == pytest.approx(0.5 * 6)  # 134-140 (b's imaging never closed)
    assert out["idle_core_s"] == pytest.approx(20.0) and out["busy_core_s"] == pytest.approx(60)
    assert out["step_seconds"]["convert"] == {"n": 2, "total_s": 25.0, "median_s": 12.5}
