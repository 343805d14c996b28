"""A driver killed (SIGKILL) at several points resumes to the same final registry."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from engine import config, simulate

pytestmark = pytest.mark.slow

SETTINGS = ["sim.nobs=4", "sim.nants=8", "mosaic.size=3", "mosaic.overlap=1",
            "image.max_imsize=128", "image.niter=20", "image.nterms=1",
            "image.gridder=standard", "ray.max_obs_in_flight=1"]


def _final(base):
    db = sqlite3.connect(base / "registry.sqlite")
    return {
        "observations": sorted(db.execute("SELECT obs_id, state FROM observations")),
        "products": sorted(db.execute("SELECT data_id, state FROM products")),
        "mosaics": sorted(db.execute("SELECT mosaic_id, state FROM mosaics")),
        "images": db.execute("SELECT count(*) FROM images").fetchone()[0],
    }


def _driver(base):
    args = [sys.executable, "-m", "engine", "--config", str(config.CONFIG_DIR / "ci.toml"),
            "--workdir", str(base)]
    for s in SETTINGS:
        args += ["--set", s]
    return subprocess.Popen(args + ["run"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _kill_when(proc, base, sql, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        try:
            db = sqlite3.connect(base / "registry.sqlite", timeout=1)
            hit = db.execute(sql).fetchone()[0]
            db.close()
        except sqlite3.Error:
            hit = 0
        if hit:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
            proc.wait()
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("ref")
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {s.split("=")[0]: s.split("=")[1] for s in SETTINGS})
    simulate.simulate_run(cfg, base / "incoming")
    p = _driver(base)
    assert p.wait(900) == 0
    return cfg, _final(base)


# the driver is killed at each of these transitions in turn, each written by the driver
# started after the previous kill: (table, new state)
KILL_POINTS = [("observations", "('converting')"), ("observations", "('imaging')"),
               ("products", "('published')"), ("mosaics", "('planned', 'mosaicking')")]


def _last_event(base) -> int:
    db = sqlite3.connect(base / "registry.sqlite", timeout=5)
    try:
        return db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    finally:
        db.close()


def test_a_driver_killed_at_every_stage_resumes_to_the_same_registry(reference, tmp_path):
    """One run, its driver killed four times (converting, imaging, the first publication,
    a mosaic planned or being made), each restart resuming where the last one died; the
    final registry equals the uninterrupted run's."""
    cfg, expected = reference
    simulate.simulate_run(cfg, tmp_path / "incoming")
    p = _driver(tmp_path)
    for table, states in KILL_POINTS:
        since = _last_event(tmp_path) if (tmp_path / "registry.sqlite").exists() else 0
        sql = (f"SELECT count(*) FROM events WHERE id > {since} AND table_name = '{table}' "
               f"AND new IN {states}")
        assert _kill_when(p, tmp_path, sql), f"the run ended before {table} -> {states}"
        p = _driver(tmp_path)
    assert p.wait(900) == 0
    got = _final(tmp_path)
    assert got == expected
    assert expected["mosaics"] and all(s == "published" for _, s in expected["mosaics"])
