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
