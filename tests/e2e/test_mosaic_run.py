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


def _file_span_and_site(uvh5_path):
    """(first integration's start, last integration's end) as MJD (UTC), and the telescope's
    location, of one input file as pyuvdata reads it (time_array is mid-integration, JD)."""
    from pyuvdata import UVData

    uv = UVData.from_file(uvh5_path, file_type="uvh5", read_data=False, run_check=False)
    t, dt = uv.time_array, uv.integration_time / 86400.0
    span = (float((t - dt / 2).min() - 2400000.5), float((t + dt / 2).max() - 2400000.5))
    return span, uv.telescope.location


def _metres_apart(a, b) -> float:
    """Distance (m) between two EarthLocations."""
    return float(np.linalg.norm([(a.x - b.x).to_value(u.m), (a.y - b.y).to_value(u.m),
                                 (a.z - b.z).to_value(u.m)]))


def test_products_say_where_and_when_they_were_observed(run):
    """Every published image (and its residual and beam) and the mosaic carry the site as
    ITRF OBSGEO-X/Y/Z (CASA's exportfits wrote a vector 1.2 km from the Earth's centre) and
    the observing span. References: the site as astropy places it, the input files'
    telescope location and times as pyuvdata reads them; the mosaic spans its members."""
    from astropy.coordinates import EarthLocation
    from astropy.time import Time

    base, cfg, summary = run
    reg = Registry(base / "registry.sqlite")
    site = EarthLocation.from_geodetic(cfg.site.longitude_deg * u.deg,
                                       cfg.site.latitude_deg * u.deg, cfg.site.height_m * u.m)
    members = json.loads(reg.get("mosaics", summary.mosaics[0])["members"])
    spans, freqs = {}, []
    for obs_id in members:
        folder = Path(reg.get("products", f"image:{obs_id}")["published_path"])
        (t0, t1), file_site = _file_span_and_site(reg.subband_files(obs_id)[0])
        spans[obs_id] = (t0, t1)
        for kind in ("image", "residual", "pb"):
            hdr = fits.getheader(folder / f"{obs_id}.{kind}.fits")
            where = EarthLocation.from_geocentric(*(hdr[f"OBSGEO-{k}"] for k in "XYZ"),
                                                  unit=u.m)
            assert abs(where.height.to_value(u.m) - cfg.site.height_m) < 1.0, (kind, hdr)
            assert _metres_apart(where, site) < 1.0, kind
            assert _metres_apart(where, file_site) < 100.0, kind
            if kind == "pb":
                continue
            assert Time(hdr["DATE-OBS"], scale="utc").mjd == pytest.approx(t0, abs=0.5 / 86400)
            assert Time(hdr["DATE-END"], scale="utc").mjd == pytest.approx(t1, abs=0.5 / 86400)
            assert hdr["MJD-OBS"] == pytest.approx(t0, abs=0.5 / 86400)
            assert hdr["MJD-END"] == pytest.approx(t1, abs=0.5 / 86400)
            assert hdr["MJD-AVG"] == pytest.approx((t0 + t1) / 2, abs=0.5 / 86400)
            assert hdr["TIMESYS"] == "UTC"
        # the image's source catalogue carries the image's site and span
        cat = fits.getheader(folder / f"{obs_id}.sources.fits", 1)
        image_hdr = fits.getheader(folder / f"{obs_id}.image.fits")
        for k in ("DATE-OBS", "DATE-END", "MJD-AVG", "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z"):
            assert cat[k] == image_hdr[k], k
        # each member's frequency: its image's FREQ axis (LSRK: it moves by kHz from one
        # observation to the next)
        freqs += [image_hdr[f"CRVAL{i}"] for i in range(1, image_hdr["NAXIS"] + 1)
                  if image_hdr[f"CTYPE{i}"].startswith("FREQ")]
    mos = reg.get("mosaics", summary.mosaics[0])
    hdr = fits.getheader(mos["path"])
    assert Time(hdr["DATE-OBS"], scale="utc").mjd == pytest.approx(
        spans[members[0]][0], abs=0.5 / 86400)
    assert Time(hdr["DATE-END"], scale="utc").mjd == pytest.approx(
        spans[members[-1]][1], abs=0.5 / 86400)
    assert hdr["MJD-AVG"] == pytest.approx(np.mean([sum(s) / 2 for s in spans.values()]),
                                           abs=0.5 / 86400)
    assert [hdr[f"OBSGEO-{k}"] for k in "XYZ"] == pytest.approx(
        [site.x.to_value(u.m), site.y.to_value(u.m), site.z.to_value(u.m)], abs=1.0)
    assert hdr["TELESCOP"] == image_hdr["TELESCOP"]
    # the members' mean frequency, not the band-centre fallback
    assert len(freqs) == len(members)
    assert hdr["RESTFRQ"] == pytest.approx(np.mean(freqs), rel=1e-9)


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
