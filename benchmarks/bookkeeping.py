"""Bookkeeping cases: discovery of a day of files, and a registry holding a year."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def bench_discovery(cfg, work: Path) -> dict:
    """A full day of observations (280 x 16 tiny files): scan + register, then leasing."""
    from engine import config as cmod
    from engine import discover, simulate
    from engine.registry import Registry
    from engine.telescope import Telescope

    day = cmod.load(None, {"sim.nants": 2, "sim.nchan_per_subband": 1, "sim.ntimes": 1,
                           "sim.nobs": 280, "sim.nsources": 1, "discover.settle_s": 0})
    tel = Telescope(day)
    inc = work / "day"
    inc.mkdir(parents=True, exist_ok=True)
    sky = simulate.make_sky(day, tel)
    t0 = time.perf_counter()
    for i, start in enumerate(simulate.obs_start_times_jd(day)):
        simulate.simulate_observation(day, tel, start, inc, sky=sky, obs_index=i)
    t_sim = time.perf_counter() - t0
    reg = Registry(work / "day.sqlite")
    t0 = time.perf_counter()
    rep = discover.scan(day, reg, inc)
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep2 = discover.scan(day, reg, inc)
    t_rescan = time.perf_counter() - t0
    lat = []
    while True:
        t0 = time.perf_counter()
        row = reg.acquire_next("bench")
        lat.append(time.perf_counter() - t0)
        if row is None:
            break
        reg.transition("observations", row["obs_id"], "converting")
    return {"files": len(rep.registered), "observations_complete": len(rep.completed),
            "simulate_s": t_sim, "scan_register_s": t_scan, "rescan_s": t_rescan,
            "rescan_new": len(rep2.registered), "acquire_next_median_ms":
            1e3 * float(np.median(lat)), "acquire_next_max_ms": 1e3 * float(np.max(lat))}


def bench_registry(cfg, work: Path, *, n_obs: int = 100_000) -> dict:
    """A year of observations (~100,000, 16 files each) in the registry: how fast the
    driver's per-loop questions are answered (lease the oldest, status, mosaic windows,
    a rescan of a folder of new files)."""
    import shutil

    from engine import discover, simulate, windows
    from engine.cli import main as cli_main
    from engine.registry import Registry
    from engine.telescope import Telescope

    path = work / "year.sqlite"
    reg = Registry(path)
    rng = np.random.default_rng(1)
    small = config_for_scan()
    new_jd = simulate.obs_start_times_jd(small)[0]
    cad = windows.CADENCE_S / 86400
    t0_jd = new_jd - (n_obs + 1) * cad  # the year ends just before the new observation
    dec = np.deg2rad(small.sim.dec_deg)
    # a year's history: almost everything done, the last few hundred still in work
    states = np.where(np.arange(n_obs) < n_obs - 300, "mosaicked",
                      rng.choice(["complete", "imaged", "awaiting_calibration"], n_obs))
    t_fill = time.perf_counter()
    with reg.write():
        reg.db.conn.executemany(
            "INSERT INTO observations (obs_id, start_jd, end_jd, dec_rad, n_subbands, state, "
            "attempts, updated_at) VALUES (?, ?, ?, ?, 16, ?, 0, 0)",
            ((f"obs{i:06d}", t0_jd + i * cad, t0_jd + i * cad + 0.0035, dec, s)
             for i, s in enumerate(states)))
        reg.db.conn.executemany(
            "INSERT INTO files (path, obs_id, subband, header_start_jd, status, size, mtime) "
            "VALUES (?, ?, ?, ?, 'ok', 1, 0)",
            ((f"/data/incoming/{i:06d}_sb{sb:02d}.hdf5", f"obs{i:06d}", sb, t0_jd + i * cad)
             for i in range(n_obs) for sb in range(16)))
    reg.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # bulk load done: fold the WAL in
    t_fill = time.perf_counter() - t_fill
    lat = []
    for _ in range(50):  # about 100 of the 300 in work are complete
        t0 = time.perf_counter()
        row = reg.acquire_next("bench")
        lat.append(time.perf_counter() - t0)
        reg.transition("observations", row["obs_id"], "converting")
    t0 = time.perf_counter()
    counts = reg.counts("observations")
    t_counts = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = list(reg.db["observations"].rows_where(
        select="obs_id, start_jd, end_jd, dec_rad, state"))
    n_windows = sum(1 for _ in windows.plan(rows))
    t_windows = time.perf_counter() - t0
    t0 = time.perf_counter()  # what every later driver loop pays (window IDs are cached)
    rows = list(reg.db["observations"].rows_where(
        select="obs_id, start_jd, end_jd, dec_rad, state"))
    sum(1 for _ in windows.plan(rows))
    t_windows_again = time.perf_counter() - t0
    reg.close()
    import contextlib
    import io

    status_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            cli_main(["--set", f"paths.registry={path}", "status", "--json"])
        status_s.append(time.perf_counter() - t0)
    # one new observation arriving in a folder, scanned against the year-long registry
    inc = work / "new"
    shutil.rmtree(inc, ignore_errors=True)
    inc.mkdir()
    tel = Telescope(small)
    simulate.simulate_observation(small, tel, new_jd, inc,
                                  sky=simulate.make_sky(small, tel))
    reg = Registry(path)
    t0 = time.perf_counter()
    discover.scan(small, reg, inc)
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    discover.scan(small, reg, inc)
    t_rescan = time.perf_counter() - t0
    reg.close()
    return {"observations": n_obs, "files": 16 * n_obs, "fill_s": t_fill,
            "registry_mb": path.stat().st_size / 1e6,
            "acquire_next_median_ms": 1e3 * float(np.median(lat)),
            "acquire_next_max_ms": 1e3 * float(np.max(lat)),
            "counts_ms": 1e3 * t_counts, "status_cli_ms": 1e3 * min(status_s),
            "mosaic_windows_first_ms": 1e3 * t_windows,
            "mosaic_windows_ms": 1e3 * t_windows_again, "windows": n_windows,
            "scan_new_obs_ms": 1e3 * t_scan, "rescan_ms": 1e3 * t_rescan,
            "in_work": {k: v for k, v in counts.items() if k != "mosaicked"}}


def config_for_scan():
    from engine import config

    return config.load(None, {"sim.nants": 2, "sim.nchan_per_subband": 1, "sim.ntimes": 1,
                              "sim.nobs": 1, "sim.nsources": 1, "discover.settle_s": 0})
