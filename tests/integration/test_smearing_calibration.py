"""Bandwidth smearing in calibration (slow): wide channels, a calibrator 1 deg from the
correlator's phase centre, and the solved gains against the simulated ones.

The simulator smears each channel by brute force (the mean over many frequencies across
it, in the frame the correlator phased to); the engine's model carries the analytic factor
(kernels.predict). With 5.86 MHz channels, a calibrator 1 deg north of the meridian centre
loses amplitude on the north-south baselines (the delay of a declination offset): with the
smearing model the median solved gain is within 0.22 % of the truth in every channel; a
model without it solved them 0.8-1.0 % low, and in single phasing a model smeared in the
MS's frame instead of the correlator's did as well (measured). The expected gains are the
simulation's truth; nothing here is taken from the engine.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.time import Time

from engine import config, simulate
from engine.convert import convert_local
from tests.e2e.test_calibration_science import SOLUTIONS

pytestmark = pytest.mark.slow

SOLVE = r"""
import json, sys
from engine import config
from engine.calibrate import solve
cfg = config.load(None, json.loads(sys.argv[3]))
out = solve(sys.argv[1], sys.argv[2], cfg, obs_id="cal", cal=json.loads(sys.argv[4]))
print("RESULT" + json.dumps({k: v["path"] for k, v in out["tables"].items()}))
"""


def _result(p):
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])


@pytest.mark.parametrize("phasing", ["single", "meridian"])
def test_gains_from_a_smeared_calibrator_are_the_simulated_ones(tmp_path, phasing):
    """Median |B x G| / |simulated gain| over antennas within 0.5 % in every channel, single
    phasing at the calibrator (as the driver does: the correlator's centre is 1 deg away) and
    meridian phasing (the correlator's own frame)."""
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        "sim.nants": 24, "sim.nchan_per_subband": 2, "sim.ntimes": 8, "sim.nobs": 1,
        "sim.nsources": 0, "sim.noise_jy": 0.3, "sim.gain_amp_rms": 0.1,
        "sim.gain_phase_rms_deg": 30.0, "sim.calibrator": "J0834+555",
        "sim.calibrator_offset_deg": 1.0, "sim.transit_obs": 0, "sky.reference_catalog": "",
        "flag.enabled": False, "convert.phasing": phasing})
    paths, sky, gains = simulate.simulate_run(cfg, tmp_path / "in",
                                              truth_path=tmp_path / "truth.json")
    truth = json.loads((tmp_path / "truth.json").read_text())
    k = sky.names.index(truth["calibrator"])
    flat = cfg.as_flat()
    if phasing == "single":
        flat.update({"convert.single_ra_deg": float(np.rad2deg(sky.ra[k])),
                     "convert.single_dec_deg": float(np.rad2deg(sky.dec[k]))})
    ms = tmp_path / "cal.ms"
    convert_local([str(p) for p in paths[0]], str(ms), config.load(None, flat))
    start = Time(truth["start"]).jd  # the calibrator's run starts where it transits
    cal = {"name": truth["calibrator"], "ra_rad": float(sky.ra[k]), "dec_rad": float(sky.dec[k]),
           "flux_jy": float(sky.flux_jy[k]), "spectral_index": float(sky.spectral_index[k]),
           "transit_jd": start + cfg.sim.ntimes * cfg.band.integration_s / 2 / 86400}
    tabs = _result(subprocess.run([sys.executable, "-c", SOLVE, str(ms), str(tmp_path / "cal"),
                                   json.dumps(flat), json.dumps(cal)],
                                  capture_output=True, text=True, timeout=900))
    res = _result(subprocess.run([sys.executable, "-c", SOLUTIONS, tabs["bandpass"],
                                  tabs["gains"], str(ms)],
                                 capture_output=True, text=True, timeout=300))
    freq = np.array(res["freq"])
    g_sim = np.abs(gains.at(freq))  # (Nants, Nchan, 2) in the simulator's station order

    def cparam(kind):
        arr = np.array(res[kind]["c"])
        return np.hypot(arr[..., 0], arr[..., 1]), np.array(res[kind]["f"]), res[kind]["ant"]

    B, fB, antB = cparam("B")  # (Npol, Nchan, Nrows)
    G, fG, antG = cparam("G")
    ratios = []
    for row, a in enumerate(antB):
        st = int(res["names"][a].split("-")[1])
        if st not in gains.stations or fB[..., row].all():
            continue
        solved = B[:, :, row] * G[:, :, antG.index(a)]  # (2, Nchan)
        ratios.append(solved / g_sim[gains.stations.index(st)].T)
    ratios = np.array(ratios)
    assert len(ratios) >= 22
    med = np.median(ratios, axis=0)  # (2, Nchan)
    assert np.all(np.abs(med - 1) < 0.005), f"{phasing}: median |BG| / |g| {med}"
