"""Calibration and imaging per observation: CASA tclean against WSClean."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from engine import config

CAL_IMAGE = r"""
import json, sys, time
from engine import config, calibrators
from engine.calibrate import solve
from engine.image import image_observation
ms, work, flat, transit_jd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
cfg = config.load(None, flat)
cal = calibrators.get("3C286")
out = {}
t0 = time.perf_counter()
m = solve(ms, work + "/cal", cfg, obs_id="bench", cal={
    "name": cal.name, "ra_rad": cal.ra_rad, "dec_rad": cal.dec_rad, "flux_jy": cal.flux_jy,
    "spectral_index": cal.spectral_index, "transit_jd": transit_jd})
out["calibrate_s"] = time.perf_counter() - t0
out["calibration_qa"] = m["qa"]
tables = [t["path"] for t in m["tables"].values()]
for backend in sys.argv[5].split(","):
    c = config.load(None, {**flat, "image.backend": backend})
    t0 = time.perf_counter()
    r = image_observation(ms, work + "/img_" + backend, c, obs_id="bench", caltables=tables)
    out[backend + "_s"] = time.perf_counter() - t0
    out[backend + "_qa"] = r["qa"]
print("RESULT" + json.dumps(out))
"""


def bench_calibrate_image(cfg, work: Path) -> dict:
    """Calibration (bandpass + gains) and imaging time per observation; tclean vs WSClean.

    One observation holding the transit of 3C286, converted with the calibrator at the
    phase centre; imaging at a fixed 2048 x 2048 (full) or 512 x 512 (small) grid with the
    same parameters for both imagers; each run applies the calibration (applycal) first
    and images CORRECTED_DATA, so both times include applycal.
    """
    import subprocess
    import sys

    from engine import simulate
    from engine.calibrators import get, next_transit_jd
    from engine.convert import convert_local
    from engine.telescope import Telescope

    full = cfg.sim.nants == 96
    flat = {**cfg.as_flat(), "sim.calibrator": "3C286", "sim.transit_obs": 0,
            "sim.gain_amp_rms": 0.1, "sim.gain_phase_rms_deg": 30.0, "sim.noise_jy": 0.05,
            "convert.phasing": "single", "image.imsize": 2048 if full else 512,
            "image.cell_arcsec": 3.0 if full else 8.0, "image.niter": 1000,
            "image.nterms": 1, "image.gridder": "wproject", "image.threshold_sigma": 5.0}
    ccfg = config.load(None, flat)
    cal_dir = work / "cal_in"
    paths, _, _ = simulate.simulate_run(ccfg, cal_dir)
    tel = Telescope(ccfg)
    t_in = simulate.Time(simulate.calibrator_run(ccfg, tel)[0].sim.start, format="isot").jd
    transit = next_transit_jd(get("3C286"), t_in, tel.location)
    c286 = get("3C286")
    sc = config.load(None, {**flat, "convert.single_ra_deg": float(np.rad2deg(c286.ra_rad)),
                            "convert.single_dec_deg": float(np.rad2deg(c286.dec_rad))})
    ms = str(work / "cal.ms")
    t0 = time.perf_counter()
    convert_local([str(p) for p in paths[0]], ms, sc, workdir=work)
    out = {"convert_s": time.perf_counter() - t0}
    backends = "tclean,wsclean" if shutil.which("wsclean") else "tclean"
    p = subprocess.run([sys.executable, "-c", CAL_IMAGE, ms, str(work),
                        json.dumps(sc.as_flat()), repr(float(transit)), backends],
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    res = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1]
    out.update(json.loads(res[len("RESULT"):]))
    out["imsize"] = flat["image.imsize"]
    return out
