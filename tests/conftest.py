"""Shared fixtures: small real-format observations written by the simulator."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import config, simulate
from engine.telescope import Telescope

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ci_cfg():
    return config.load(ROOT / "configs" / "ci.toml")


@pytest.fixture(scope="session")
def one_obs(tmp_path_factory, ci_cfg):
    """One simulated observation (16 files) with a random sky; returns (paths, sky, cfg)."""
    cfg = config.load(ROOT / "configs" / "ci.toml", {"sim.nobs": 1})
    out = tmp_path_factory.mktemp("one_obs")
    paths, sky, gains = simulate.simulate_run(cfg, out / "incoming")
    return [str(p) for p in paths[0]], sky, cfg


@pytest.fixture
def copy_obs(one_obs, tmp_path):
    """A private copy of ``one_obs`` in ``tmp_path/incoming``."""
    inc = tmp_path / "incoming"
    inc.mkdir()
    for p in one_obs[0]:
        shutil.copy(p, inc)
    return inc


def point_source_obs(out: Path, *, dx_deg=0.6, dy_deg=0.3, flux=5.0, overrides=None):
    """One observation of a single flat-spectrum point source offset from the mid pointing.

    Returns (paths, cfg, (src_ra, src_dec), (mid_ra, mid_dec)), angles in radians.
    """
    from engine import geometry

    ov = {"sim.nants": 40, "sim.nchan_per_subband": 2, "sim.ntimes": 6, "sim.nobs": 1,
          "sim.nsources": 0}
    ov.update(overrides or {})
    cfg = config.load(None, ov)
    tel = Telescope(cfg)
    t0 = simulate.obs_start_times_jd(cfg)[0]
    tm = t0 + cfg.sim.ntimes / 2 * cfg.band.integration_s / 86400
    ra, dec = geometry.meridian_icrs([tm], np.deg2rad(cfg.sim.dec_deg), tel.location)
    src = (ra[0] + np.deg2rad(dx_deg) / np.cos(dec[0]), dec[0] + np.deg2rad(dy_deg))
    sky = simulate.Sky(np.array([src[0]]), np.array([src[1]]), np.array([flux]),
                       np.array([0.0]), names=["s"])
    out.mkdir(parents=True, exist_ok=True)
    paths = simulate.simulate_observation(cfg, tel, t0, out, sky=sky)
    return [str(p) for p in paths], cfg, src, (ra[0], dec[0])


def interpolated_peak(img, x: float, y: float, search: int = 2):
    """Peak near pixel (x, y) and its sub-pixel position (px, py).

    The brightest pixel within ``search`` pixels, refined by a parabola through the
    logarithm of its neighbours on each axis: exact for a Gaussian restoring beam, so the
    value does not depend on where the pixel grid happens to fall.
    """
    ix, iy = int(round(x)), int(round(y))
    box = img[iy - search:iy + search + 1, ix - search:ix + search + 1]
    jy, jx = np.unravel_index(np.nanargmax(box), box.shape)
    py, px = iy - search + jy, ix - search + jx
    peak = float(img[py, px])
    nb = img[py - 1:py + 2, px - 1:px + 2]
    if peak <= 0 or not np.all(nb > 0):
        return peak, float(px), float(py)
    lx, ly = np.log(img[py, px - 1:px + 2]), np.log(img[py - 1:py + 2, px])
    dx = 0.5 * (lx[0] - lx[2]) / (lx[0] - 2 * lx[1] + lx[2])
    dy = 0.5 * (ly[0] - ly[2]) / (ly[0] - 2 * ly[1] + ly[2])
    peak = float(np.exp(lx[1] - 0.25 * (lx[0] - lx[2]) * dx - 0.25 * (ly[0] - ly[2]) * dy))
    return peak, px + dx, py + dy


def assert_published_once(base: Path, n: int):
    """``n`` products, all published, each once in products/ and matching its checksum."""
    from engine.paths import digest
    from engine.registry import Registry

    reg = Registry(base / "registry.sqlite")
    try:
        prods = {r["data_id"]: r for r in reg.db["products"].rows}
    finally:
        reg.close()
    assert len(prods) == n and all(r["state"] == "published" for r in prods.values())
    for r in prods.values():  # each in products/ exactly once, matching its checksum
        dst = Path(r["published_path"])
        assert dst.is_relative_to(base / "products")
        (main,) = [p for p in dst.iterdir() if p.name.endswith(".image.fits")]
        assert digest(main) == (r["sha256"], r["size"])
    assert len(list((base / "products").iterdir())) == n


def strike_running_task(wanted, strike, *, timeout_s: float = 240.0):
    """Start a thread that waits for a RUNNING Ray task with ``wanted(task)`` true, lets it
    run 1 s more, then calls ``strike(task)`` once. Returns ``(thread, struck)``; ``struck``
    holds the task struck (empty if none was seen before the timeout)."""
    import threading
    import time

    struck = []

    def watch():
        from ray.util.state import list_tasks

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                running = list_tasks(filters=[("state", "=", "RUNNING")],
                                     raise_on_missing_output=False)
            except Exception:  # the state API is not up yet
                running = []
            hit = next((t for t in running if wanted(t)), None)
            if hit is not None:
                time.sleep(1.0)  # well inside the task
                strike(hit)
                struck.append(hit)
                return
            time.sleep(0.2)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    return th, struck
