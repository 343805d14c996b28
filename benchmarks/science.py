"""Calibration and imaging per observation, before and after the science-fidelity change.

One observation holding the transit of J0834+555 (8.3 Jy) 0.57 deg off the pointing
declination, with antenna gains and bandpasses and the telescope's noise, converted once with
the calibrator at the phase centre. The same MS is then calibrated and imaged by

* ``before``: the engine at ``BEFORE_REF`` (on-axis point-source model through CASA's ``ft``;
  clean threshold 5 x the DIRTY image's MAD, 1000 iterations), unpacked from git;
* ``after``: this engine (model through the primary beam, the bright calibrator subtracted
  through the beam and restored, clean to 3 x the residual's rms, two-stage masking),

each with tclean and, where installed, WSClean, on the same grid, one after the other in one
run. Every run applies its own calibration (applycal) and images CORRECTED_DATA, so imaging
times include applycal. Reported: times, the residual rms against the data's thermal estimate
(computed by this engine's estimator for both), and the median measured / expected peak of
the field sources (expected: catalogue flux x primary beam averaged over the observation, at
the image's reference frequency).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine import config

BEFORE_REF = "43dc108"  # main before issue 13

CAL_IMAGE = r"""
import json, sys, time
from engine import config, calibrators
from engine.calibrate import solve
from engine.image import image_observation
ms, work, flat, transit_jd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
cfg = config.load(None, flat)
cal = calibrators.get(sys.argv[6])
out = {}
t0 = time.perf_counter()
m = solve(ms, work + "/cal", cfg, obs_id="bench", cal={
    "name": cal.name, "ra_rad": cal.ra_rad, "dec_rad": cal.dec_rad, "flux_jy": cal.flux_jy,
    "spectral_index": cal.spectral_index, "transit_jd": transit_jd})
out["calibrate_s"] = time.perf_counter() - t0
out["calibration_qa"] = m["qa"]
tables = [t["path"] for t in m["tables"].values()]
for label, over in json.loads(sys.argv[5]).items():
    c = config.load(None, {**flat, **over})
    t0 = time.perf_counter()
    r = image_observation(ms, work + "/img_" + label, c, obs_id="bench", caltables=tables)
    out[label + "_s"] = time.perf_counter() - t0
    out[label + "_qa"] = r["qa"]
    out[label + "_image"] = r["files"]["image"]["path"]
import engine
out["engine_file"] = engine.__file__
print("RESULT" + json.dumps(out))
"""

NOISE = r"""
import json, sys
from engine.casaenv import import_casatools
from engine.noise import thermal_estimate
ct = import_casatools()
a = json.loads(sys.argv[2])
print("RESULT" + json.dumps(thermal_estimate(ct, sys.argv[1], "CORRECTED_DATA", **a)))
"""


def _subprocess(script, *args, env=None, cwd=None) -> dict:
    """Run ``script`` with ``python -c``; its first import path is ``cwd`` (so the engine
    under test is the one in ``cwd`` when given)."""
    p = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                       text=True, env=env, cwd=cwd)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])


def _unpack(ref: str, dest: Path) -> Path:
    """The engine at git ``ref`` as a source tree (engine/, kernels/, configs/)."""
    root = Path(__file__).resolve().parent.parent
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", ref, "engine", "kernels",
                              "configs"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _flux_ratio(image_path: str, sky, pointing, freqs, cfg, skip: str) -> dict:
    """Median and count of measured / expected peak for field sources at S/N > 20."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS

    from engine.calibrators import Calibrator
    from engine.image import _mad_rms
    from engine.skymodel import apparent_flux
    from tests.conftest import interpolated_peak

    with fits.open(image_path) as h:
        img = np.squeeze(h[0].data).astype(float)
        wcs = WCS(h[0].header).celestial
    rms = _mad_rms(img)
    srcs = [Calibrator(n, r, d, f, a) for n, r, d, f, a in
            zip(sky.names, sky.ra, sky.dec, sky.flux_jy, sky.spectral_index) if n != skip]
    fref = np.array([0.5 * (freqs.min() + freqs.max())])
    expected = apparent_flux(srcs, pointing, fref, cfg)[:, :, 0].mean(axis=0)
    ratios = []
    for s, e in zip(srcs, expected):
        x, y = (float(v) for v in wcs.world_to_pixel(SkyCoord(s.ra_rad * u.rad,
                                                              s.dec_rad * u.rad)))
        if not (5 <= x < img.shape[1] - 5 and 5 <= y < img.shape[0] - 5):
            continue
        peak = interpolated_peak(img, x, y)[0]
        if peak / rms > 20:
            ratios.append(peak / e)
    return {"median_flux_ratio": float(np.median(ratios)) if ratios else None,
            "n_sources": len(ratios)}


def calibrator_observation(cfg, work: Path, grid: dict) -> dict:
    """One observation of J0834+555 transiting 0.57 deg off the pointing declination, with
    gains (10 %, 30 deg), bandpasses and the telescope's noise, at ``cfg``'s scale, plus what
    judging its images needs. ``grid``: configuration applied on top (imaging grid, phasing).

    Returns {"paths", "sky", "flat" (the configuration with the calibrator at the single
    phase centre), "transit" (JD), "cal", "pointing" (Ntimes, 2) rad, "freqs" Hz, "noise_jy"}.
    """
    from engine import geometry, simulate
    from engine.calibrators import get, next_transit_jd
    from engine.telescope import Telescope

    # the telescope's noise: 0.5 mJy/beam in a full observation is 6.5 Jy per visibility
    # and polarization in 244 kHz x 12.9 s; wider simulated channels average it down
    noise = 6.5 * np.sqrt(cfg.sim.nchan_per_subband / 48)
    flat = {**cfg.as_flat(), "sim.calibrator": "J0834+555", "sim.calibrator_offset_deg": 0.57,
            "sim.transit_obs": 0, "sim.nobs": 1, "sim.gain_amp_rms": 0.1,
            "sim.gain_phase_rms_deg": 30.0, "sim.noise_jy": float(noise), **grid}
    ccfg = config.load(None, flat)
    cal_dir = work / "cal_in"
    paths, sky, _ = simulate.simulate_run(ccfg, cal_dir, truth_path=cal_dir / "truth.json")
    tel = Telescope(ccfg)
    moved = simulate.calibrator_run(ccfg, tel)[0]
    t_in = simulate.Time(moved.sim.start, format="isot").jd
    cal = get("J0834+555")
    transit = next_transit_jd(cal, t_in, tel.location)
    start = simulate.obs_start_times_jd(moved)[0]
    times = start + (np.arange(moved.sim.ntimes) + 0.5) * moved.band.integration_s / 86400
    ra, dec = geometry.meridian_icrs(times, np.deg2rad(moved.sim.dec_deg), tel.location)
    freqs = np.concatenate([tel.subband_freqs_hz(sb, moved.sim.nchan_per_subband)
                            for sb in range(16)])
    flat.update({"convert.single_ra_deg": float(np.rad2deg(cal.ra_rad)),
                 "convert.single_dec_deg": float(np.rad2deg(cal.dec_rad)),
                 "sky.reference_catalog": str(cal_dir / "sky.csv")})
    return {"paths": [str(p) for p in paths[0]], "sky": sky, "flat": flat,
            "transit": transit, "cal": cal, "pointing": np.stack([ra, dec], axis=1),
            "freqs": freqs, "noise_jy": float(noise)}


def bench_calibrate_image(cfg, work: Path) -> dict:
    """Calibration and imaging before/after on one off-axis calibrator observation."""
    from engine.convert import convert_local

    full = cfg.sim.nants == 96
    grid = {"image.imsize": 2048 if full else 512, "image.cell_arcsec": 3.0 if full else 8.0,
            "image.nterms": 1, "image.gridder": "wproject", "convert.phasing": "single",
            # the MS both engines image: the recorded channels (the before engine has no
            # averaging; benchmarks/imaging.py measures it)
            "convert.max_channel_width_hz": 0.0}
    obs = calibrator_observation(cfg, work, grid)
    flat, cal, sky = obs["flat"], obs["cal"], obs["sky"]
    sc = config.load(None, flat)
    ms = str(work / "cal.ms")
    t0 = time.perf_counter()
    convert_local(obs["paths"], ms, sc, workdir=work)
    out = {"convert_s": time.perf_counter() - t0, "imsize": grid["image.imsize"],
           "noise_jy": obs["noise_jy"], "before_ref": BEFORE_REF}
    backends = ["tclean", "wsclean"] if shutil.which("wsclean") else ["tclean"]
    variants = json.dumps({b: {"image.backend": b} for b in backends})
    pointing, freqs, transit = obs["pointing"], obs["freqs"], obs["transit"]
    before_tree = _unpack(BEFORE_REF, work / "before_src")
    old_keys = {k: v for k, v in flat.items() if k.split(".")[0] in ("image", "convert")
                and k in ("image.imsize", "image.cell_arcsec", "image.nterms",
                          "image.gridder", "convert.phasing", "image.backend")}
    old_keys.update({"convert.single_ra_deg": sc.convert.single_ra_deg,
                     "convert.single_dec_deg": sc.convert.single_dec_deg})
    new_flat = sc.as_flat()
    root = Path(__file__).resolve().parent.parent
    runs = {"before": (old_keys, {**os.environ, "PYTHONPATH": str(before_tree)}, before_tree),
            "after": (new_flat, None, root)}
    for label, (keys, env, cwd) in runs.items():
        wdir = work / label
        shutil.rmtree(wdir, ignore_errors=True)
        wdir.mkdir()
        res = _subprocess(CAL_IMAGE, ms, wdir, json.dumps(keys), repr(float(transit)), variants,
                          cal.name, env=env, cwd=cwd)
        res["engine"] = res.pop("engine_file", None)
        for b in backends:
            res[b + "_flux"] = _flux_ratio(res.pop(b + "_image"), sky, pointing, freqs, sc,
                                           cal.name)
        out[label] = res
    # the before images' residual is not exported: their noise against the same estimate
    est = _subprocess(NOISE, ms, json.dumps({
        "cell_arcsec": grid["image.cell_arcsec"], "imsize": grid["image.imsize"],
        "weighting": sc.image.weighting, "robust": sc.image.robust}))
    out["thermal_jy"] = est["thermal_jy"]
    for b in backends:
        out["before"][b + "_rms_over_thermal"] = out["before"][b + "_qa"]["rms_jy"] / est[
            "thermal_jy"]
    return out
