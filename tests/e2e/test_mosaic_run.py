"""End to end: 12 observations, one calibrator transit, the driver, one published mosaic."""

import json
import os
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import ray
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from engine import config, scheduler, simulate
from engine.faults import VAR as FAULTS
from engine.registry import Registry
from tests.conftest import interpolated_peak

OVERRIDES = {"sim.nants": 16, "sim.nchan_per_subband": 2, "sim.ntimes": 3, "sim.nobs": 12,
             "sim.nsources": 2, "sim.flux_range_jy": "1.0,3.0", "sim.field_radius_deg": 0.6,
             "sim.noise_jy": 0.5, "sim.gain_amp_rms": 0.05, "sim.gain_phase_rms_deg": 10.0,
             "sim.calibrator": "3C286", "sim.transit_obs": 11, "sim.seed": 21,
             "image.require_calibration": True, "image.cell_arcsec": 8.0, "image.imsize": 1024,
             "image.nterms": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("mosaic_run")
    cfg = config.load(config.CONFIG_DIR / "ci.toml", OVERRIDES)
    simulate.simulate_run(cfg, base / "incoming", truth_path=base / "truth.json")
    if ray.is_initialized():
        ray.shutdown()
    # the calibration and the mosaic task each meet one transient error (as an I/O error
    # on a shared file system becomes): Ray retries them (ray.retries_*) and they succeed
    marks = base / "transient_marks"
    faults = ",".join(f"{p}@*=transient:{marks}" for p in ("calibrate.start", "mosaic.start"))
    with patch.dict(os.environ, {FAULTS: faults}):
        summary = scheduler.run(cfg, base)
    ray.shutdown()
    return base, cfg, summary


def test_transient_errors_were_retried(run):
    base, cfg, summary = run
    assert cfg.ray.retries_calibrate >= 1 and cfg.ray.retries_mosaic >= 1
    # one marker per task that failed once: the calibration and the mosaic
    assert len(list((base / "transient_marks").iterdir())) == 2
    assert summary.calibrated and summary.mosaics and not summary.failed


def test_twelve_images_and_one_mosaic_published(run):
    base, cfg, summary = run
    assert not summary.failed, summary.failed
    reg = Registry(base / "registry.sqlite")
    assert reg.counts("products") == {"published": 13}
    assert len(summary.mosaics) == 1
    mos = reg.get("mosaics", summary.mosaics[0])
    members = json.loads(mos["members"])
    obs = sorted(reg.db["observations"].rows, key=lambda r: r["start_jd"])
    assert members == [o["obs_id"] for o in obs[:10]]  # the first 10 consecutive
    prod = reg.get("products", mos["mosaic_id"])  # a mosaic's data_id is its mosaic_id
    assert prod["state"] == "published" and Path(prod["published_path"]).is_dir()
    with fits.open(mos["path"]) as h:
        hdr = h[0].header
    assert [hdr[f"MEMBER{i:02d}"] for i in range(1, 11)] == members
    assert (Path(prod["published_path"]) / f"{mos['mosaic_id']}.png").exists()
    assert (Path(prod["published_path"]) / f"{mos['mosaic_id']}.weight.fits").exists()


def test_sources_recovered_in_the_mosaic(run):
    """Mosaic = primary-beam-corrected sky: catalog fluxes within 10 %, positions 0.2 beam."""
    base, cfg, summary = run
    reg = Registry(base / "registry.sqlite")
    mos = reg.get("mosaics", summary.mosaics[0])
    with fits.open(mos["path"]) as h:
        img = np.squeeze(h[0].data)
        hdr = h[0].header
    wcs = WCS(hdr).celestial
    weight = np.squeeze(fits.getdata(mos["path"].replace(".fits", ".weight.fits")))
    beam = np.sqrt(hdr["BMAJ"] * hdr["BMIN"]) * 3600
    cell = abs(hdr["CDELT2"]) * 3600
    rms = 1.4826 * np.nanmedian(np.abs(img - np.nanmedian(img)))
    sky = json.loads((base / "truth.json").read_text())["sky"]
    checked = 0
    for ra, dec, s, a, name in zip(sky["ra_rad"], sky["dec_rad"], sky["flux_jy"],
                                   sky["spectral_index"], sky["names"]):
        if name == "3C286":
            continue
        x, y = (float(v) for v in wcs.world_to_pixel(SkyCoord(ra * u.rad, dec * u.rad)))
        ix, iy = int(round(x)), int(round(y))
        if not (3 <= ix < img.shape[1] - 3 and 3 <= iy < img.shape[0] - 3):
            continue
        if weight[iy, ix] < 0.05 * np.nanmax(weight):  # inside the well-covered area
            continue
        box = img[iy - 2:iy + 3, ix - 2:ix + 3]
        if not np.all(np.isfinite(box)) or box.max() < 20 * rms:
            continue
        peak, fx, fy = interpolated_peak(img, x, y)
        expected = s * (1.405e9 / 1.4e9) ** a  # flux density at the band centre
        assert abs(peak / expected - 1) < 0.10, f"{name}: {peak:.3f} vs {expected:.3f} Jy"
        assert np.hypot(fx - x, fy - y) * cell / beam < 0.2, name
        checked += 1
    assert checked >= 3


def test_a_damaged_mosaic_is_made_again_after_reconcile_repair(run, capsys):
    """Last in this module (it changes the run): the published mosaic loses its weight map;
    reconcile reports it, --repair plans the window again, and the next run re-makes the
    mosaic from the verified member images and publishes it once, with the same pixels."""
    from engine.cli import main

    base, cfg, summary = run
    reg = Registry(base / "registry.sqlite")
    mos = reg.get("mosaics", summary.mosaics[0])
    with fits.open(mos["path"]) as h:
        before = np.array(h[0].data)
    weight = Path(mos["path"]).with_name(f"{mos['mosaic_id']}.weight.fits")
    weight.unlink()
    args = ["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(base)]
    capsys.readouterr()
    assert main(args + ["reconcile", "--json", "--repair"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert [(p["what"], p["key"]) for p in rep["problems"]] == [
        ("missing", mos["mosaic_id"])]
    assert reg.get("mosaics", mos["mosaic_id"])["state"] == "planned"
    if ray.is_initialized():
        ray.shutdown()
    again = scheduler.run(config.load(config.CONFIG_DIR / "ci.toml", OVERRIDES), base)
    ray.shutdown()
    assert again.mosaics == [mos["mosaic_id"]] and not again.converted and not again.imaged
    mos = reg.get("mosaics", mos["mosaic_id"])
    assert mos["state"] == "published" and weight.exists()
    with fits.open(mos["path"]) as h:
        np.testing.assert_array_equal(h[0].data, before)
    left = [p for p in json.loads(_json_reconcile(main, args, capsys))["problems"]]
    assert [p["what"] for p in left] == ["orphan"]  # the damaged folder, moved aside
    assert ".broken-" in left[0]["path"]


def _json_reconcile(main, args, capsys):
    capsys.readouterr()
    main(args + ["reconcile", "--json"])
    return capsys.readouterr().out
