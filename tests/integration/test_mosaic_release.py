"""A mosaic is released only when all 10 member images are on disk and verified."""

import json
import shutil

import numpy as np
import pytest
import ray
from astropy.io import fits
from astropy.wcs import WCS

from engine import config, scheduler
from engine.paths import digest
from engine.windows import CADENCE_S


def _fits(path, ra_deg, data):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [ra_deg, 30.0]
    w.wcs.cdelt = [-30 / 3600, 30 / 3600]
    w.wcs.crpix = [33, 33]
    h = w.to_header()
    h["BMAJ"] = h["BMIN"] = 60 / 3600
    h["BPA"] = 0.0
    fits.PrimaryHDU(data.astype(np.float32), h).writeto(path)


@pytest.fixture
def ten_imaged(tmp_path):
    cfg = config.load(config.CONFIG_DIR / "ci.toml")
    driver = scheduler.Driver(cfg, tmp_path)
    reg = driver.reg
    yy, xx = np.mgrid[0:64, 0:64]
    pb = np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / (2 * 15.0 ** 2))
    for i in range(10):
        oid = f"2025-10-02T01-{i:02d}-00_abcd"
        t = 2460950.5 + i * CADENCE_S / 86400
        d = driver.areas.products / oid
        d.mkdir(parents=True)
        img = pb * 1.0 + 0.001 * np.random.default_rng(i).standard_normal(pb.shape)
        _fits(d / f"{oid}.image.fits", 150 + i * 0.3, img)
        _fits(d / f"{oid}.pb.fits", 150 + i * 0.3, pb)
        (ish, isz), (psh, psz) = digest(d / f"{oid}.image.fits"), digest(d / f"{oid}.pb.fits")
        with reg.write():
            reg.db["observations"].insert({"obs_id": oid, "start_jd": t, "end_jd": t + 0.003,
                                           "dec_rad": 0.5236, "state": "imaged",
                                           "n_subbands": 16, "attempts": 0})
            reg.db["images"].insert({"obs_id": oid, "path": str(d / f"{oid}.image.fits"),
                                     "pb_path": str(d / f"{oid}.pb.fits"), "sha256": ish,
                                     "size": isz, "pb_sha256": psh, "pb_size": psz,
                                     "qa": json.dumps({"rms_jy": 0.001})})
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield driver
    ray.shutdown()


@pytest.mark.parametrize("damage", ["removed", "corrupted", "not FITS"])
def test_damaged_member_blocks_release(ten_imaged, damage):
    driver = ten_imaged
    victim = driver.reg.get("images", "2025-10-02T01-04-00_abcd")["path"]
    if damage == "removed":
        shutil.os.remove(victim)
    elif damage == "corrupted":
        with open(victim, "r+b") as fh:
            fh.seek(5000)
            fh.write(b"\x00\x01\x02")
    else:  # same size and checksum recorded for garbage: the FITS check catches it
        with open(victim, "wb") as fh:
            fh.write(b"x" * 5760)
        sha, size = digest(victim)
        with driver.reg.write():
            driver.reg.db["images"].update("2025-10-02T01-04-00_abcd",
                                           {"sha256": sha, "size": size})
    driver.release_mosaics()
    assert not driver.inflight  # nothing handed to a mosaic task
    (mos,) = driver.reg.db["mosaics"].rows
    assert mos["state"] == "failed" and "01-04-00" in mos["error"]


def test_verified_members_are_released_and_published(ten_imaged):
    driver = ten_imaged
    driver.release_mosaics()
    assert len(driver.inflight) == 1
    (ref,) = driver.inflight
    ray.wait([ref], timeout=120)
    key, step = driver.inflight.pop(ref)
    driver.complete(ref, key, step)
    (mos,) = driver.reg.db["mosaics"].rows
    assert mos["state"] == "published", mos["error"]
    data = fits.getdata(mos["path"])
    # the flat 1 Jy sky seen through each beam comes back as 1 Jy where covered
    assert np.nanmedian(data) == pytest.approx(1.0, abs=0.01)
    states = {r["state"] for r in driver.reg.db["observations"].rows}
    assert states == {"mosaicked"}
