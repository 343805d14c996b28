"""The cached Earth-orientation table is the one astropy parses itself."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
import numpy as np
from astropy.time import Time
from astropy.utils import iers
if sys.argv[1] == "cached_only":  # the table must come from the cache: parsing fails
    def _no_parsing(cls, *args, **kwargs):
        raise RuntimeError("IERS files parsed although the cache holds the table")
    iers.IERS_Auto.read = classmethod(_no_parsing)
if sys.argv[1] in ("cache", "cached_only"):
    from engine import iers_cache
    iers_cache.install()
    path = str(iers_cache.cache_path())
else:
    path = None
t = Time(["2019-03-01T00:00:00", "2024-06-01T00:00:00", "2025-10-02T01:00:00"])
tab = iers.earth_orientation_table.get()
dut1 = tab.ut1_utc(t, return_status=False).to_value("s")
pmx, pmy = tab.pm_xy(t, return_status=False)
print("RESULT" + json.dumps({"dut1": dut1.tolist(), "pm": [pmx.to_value("arcsec").tolist(),
      pmy.to_value("arcsec").tolist()], "path": path, "class": type(tab).__name__}))
"""


def _run(mode, env):
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])


def test_cached_table_equals_astropys_own(tmp_path):
    (tmp_path / "astropy").mkdir()  # astropy uses $XDG_CACHE_HOME/astropy when it exists
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    made = _run("cache", env)  # parses and writes the cache
    assert made["path"].startswith(str(tmp_path)) and os.path.exists(made["path"])
    read = _run("cached_only", env)  # reads it (astropy's parser disabled)
    plain = _run("astropy", env)  # astropy alone
    assert made["class"] == read["class"] == plain["class"] == "IERS_Auto"
    for r in (made, read):
        assert r["dut1"] == plain["dut1"] and r["pm"] == plain["pm"]
    assert any(abs(v) > 0.01 for v in plain["dut1"])  # real UT1 - UTC values, not zeros


def test_an_unreadable_cache_is_replaced(tmp_path):
    (tmp_path / "astropy").mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    path = _run("cache", env)["path"]
    with open(path, "wb") as f:
        f.write(b"not a pickle")
    again = _run("cache", env)
    plain = _run("astropy", env)
    assert again["dut1"] == plain["dut1"]
    assert os.path.getsize(path) > 1000  # written again in full
