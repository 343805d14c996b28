"""The calibrator model against CASA's ``ft`` and against the primary-beam physics; the
thermal-noise estimate against the noise tclean actually puts in an image.

Every check runs CASA in a subprocess (the conversion in this process loads python-casacore;
one casacore per process).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation, HADec, SkyCoord
from astropy.time import Time
from scipy.special import j1

from engine import config, simulate
from engine.convert import convert_local
from engine.telescope import Telescope

C = 299792458.0


def _run(script: str, *args) -> dict:
    p = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])


def _ms(tmp_path, overrides: dict):
    cfg = config.load(config.CONFIG_DIR / "ci.toml", overrides)
    tel = Telescope(cfg)
    if cfg.sim.calibrator:
        cfg, cal, _ = simulate.calibrator_run(cfg, tel)
        sky = simulate.make_sky(cfg, tel, calibrators=[cal])
    else:
        cal, sky = None, simulate.make_sky(cfg, tel)
    start = simulate.obs_start_times_jd(cfg)[0]
    paths = simulate.simulate_observation(cfg, tel, start, tmp_path, sky=sky)
    ms = tmp_path / "obs.ms"
    convert_local([str(p) for p in paths], str(ms), cfg)
    return cfg, cal, start, ms


FT_VS_KERNEL = r"""
import json, sys, numpy as np
from engine.casaenv import import_casatools
ct = import_casatools()
import casatasks
from engine.skymodel import read_layout
from kernels.predict import lmn_offsets, predict_model
ms, cl_path = sys.argv[1], sys.argv[2]
lay = read_layout(ct, ms)
ra0, dec0 = lay.fields[0]
out = {}
for name, (dra, ddec) in (("on_axis", (0.0, 0.0)), ("offset", (0.3, -0.2))):
    ra, dec = ra0 + np.deg2rad(dra) / np.cos(dec0), dec0 + np.deg2rad(ddec)
    cl = ct.componentlist()
    cl.addcomponent(dir=f"J2000 {ra}rad {dec}rad", flux=2.0, fluxunit="Jy", freq="1.4GHz",
                    shape="point", spectrumtype="spectral index", index=-0.7)
    cl.rename(cl_path + name); cl.close()
    casatasks.ft(vis=ms, complist=cl_path + name, usescratch=True)
    tb = ct.table(); tb.open(ms)
    casa = tb.getcol("MODEL_DATA")[0].T  # (Nrows, Nchan) XX
    tb.close()
    flux = 2.0 * (lay.freqs / 1.4e9) ** -0.7
    flux = np.broadcast_to(flux, (len(lay.times), 1, len(lay.freqs)))
    mine = predict_model(lay.uvw, lay.freqs, lay.row_time, lay.row_field,
                         lmn_offsets([ra], [dec], lay.fields[:, 0], lay.fields[:, 1]), flux,
                         dtype=np.complex128)
    out[name] = {"max_abs_diff": float(np.abs(casa - mine).max()),
                 "max_abs": float(np.abs(casa).max()),
                 "phase_rms_deg": float(np.rad2deg(np.angle(casa * np.conj(mine))).std())}
print("RESULT" + json.dumps(out))
"""


def test_kernel_model_matches_casa_ft(tmp_path):
    """On axis and 0.36 deg off the phase centre, with a spectral index: the kernel's model
    equals CASA's ``ft`` (which knows no primary beam, so none is applied here)."""
    # an empty, noiseless sky is all zeros, which flagging (rightly) takes for a correlator
    # gap; only the MS's geometry is used here
    _, _, _, ms = _ms(tmp_path, {"sim.nants": 10, "sim.nsources": 0, "sim.noise_jy": 0.0,
                                 "convert.phasing": "single", "flag.enabled": False})
    res = _run(FT_VS_KERNEL, ms, tmp_path / "cl")
    for name, r in res.items():
        # CASA's ft grids in float32: agreement to ~1e-4 of the flux
        assert r["max_abs_diff"] < 2e-3 * r["max_abs"], (name, r)
        assert r["phase_rms_deg"] < 0.1, (name, r)


WRITE_MODEL = r"""
import json, sys, numpy as np
from engine.casaenv import import_casatools
ct = import_casatools()
from engine import config
from engine.skymodel import write_model
cfg = config.load(None, json.loads(sys.argv[2]))
cal = json.loads(sys.argv[3])
summary = write_model(ct, sys.argv[1], cal, cfg)
tb = ct.table(); tb.open(sys.argv[1])
m = tb.getcol("MODEL_DATA"); t = tb.getcol("TIME")
tb.close()
tb.open(sys.argv[1] + "/SPECTRAL_WINDOW"); f = tb.getcol("CHAN_FREQ")[:, 0]; tb.close()
times = np.unique(t)
# the calibrator is at the phase centre: its model is real, the same on every baseline
per_time = [m[:, :, t == x].mean(axis=2) for x in times]
print("RESULT" + json.dumps({"summary": summary, "freq": f.tolist(), "times_s": times.tolist(),
      "xx": [p[0].real.tolist() for p in per_time], "yy": [p[-1].real.tolist() for p in per_time],
      "imag_max": float(np.abs(m.imag).max())}))
"""


@pytest.mark.parametrize("offset_deg", [0.0, 0.57, 1.0])
def test_calibrator_model_is_what_the_dishes_saw(tmp_path, offset_deg):
    """The calibrator's model at every integration and channel is its catalogue spectrum times
    the Airy power beam at its distance from the pointing (apparent HA 0 at the pointing
    declination), computed here with astropy and scipy alone. The telescope's 244 kHz
    channels: their bandwidth smearing (relative to the correlator's meridian centre, 1 deg
    away) is below 0.3 % on the longest baseline and 0.05 % in the mean over baselines."""
    cfg, cal, start, ms = _ms(tmp_path, {
        "sim.nants": 10, "sim.nsources": 0, "sim.noise_jy": 0.0, "sim.calibrator": "3C286",
        "sim.nchan_per_subband": 48, "convert.max_channel_width_hz": 0.0,
        "sim.transit_obs": 0, "sim.ntimes": 6, "sim.calibrator_offset_deg": offset_deg,
        "convert.phasing": "single"})
    flat = {**cfg.as_flat(), "convert.single_ra_deg": float(np.rad2deg(cal.ra_rad)),
            "convert.single_dec_deg": float(np.rad2deg(cal.dec_rad))}
    # converted again with the calibrator at the phase centre, as the driver does
    ms2 = tmp_path / "cal.ms"
    convert_local(sorted(str(p) for p in tmp_path.glob("*.hdf5")), str(ms2),
                  config.load(None, flat))
    res = _run(WRITE_MODEL, ms2, json.dumps(flat), json.dumps({
        "name": cal.name, "ra_rad": cal.ra_rad, "dec_rad": cal.dec_rad, "flux_jy": cal.flux_jy,
        "spectral_index": cal.spectral_index}))
    freq = np.array(res["freq"])
    site = EarthLocation.from_geodetic(-118.2825 * u.deg, 37.2339 * u.deg, 1222 * u.m)
    times = Time(np.array(res["times_s"]) / 86400.0, format="mjd", scale="utc")
    point = SkyCoord(HADec(ha=np.zeros(len(times)) * u.rad,
                           dec=np.full(len(times), cfg.sim.dec_deg) * u.deg,
                           obstime=times, location=site)).icrs
    theta = point.separation(SkyCoord(cal.ra_rad * u.rad, cal.dec_rad * u.rad)).rad
    x = np.pi * 4.65 * np.sin(theta)[:, None] * freq[None, :] / C
    beam = (2 * j1(x) / x) ** 2
    expected = cal.flux_jy * (freq / 1.4e9) ** cal.spectral_index * beam
    np.testing.assert_allclose(np.array(res["xx"]), expected, rtol=2e-3)
    np.testing.assert_allclose(np.array(res["yy"]), expected, rtol=2e-3)
    assert res["imag_max"] < 1e-4 * cal.flux_jy
    if offset_deg == 0.57:  # the numbers: 0.889 at 1.405 GHz, 3 % more at the bottom
        centre = np.interp(1.405e9, freq, np.array(res["xx"]).mean(axis=0)) / (
            cal.flux_jy * (1.405e9 / 1.4e9) ** cal.spectral_index)
        assert centre == pytest.approx(0.889, abs=0.01)
        s = res["summary"]
        slope = s["calibrator_beam_low"] - s["calibrator_beam_high"]
        assert slope == pytest.approx(0.03, abs=0.006)


NOISE = r"""
import json, sys
from engine import config
from engine.image import image_observation
cfg = config.load(None, json.loads(sys.argv[3]))
print("RESULT" + json.dumps(image_observation(sys.argv[1], sys.argv[2], cfg, obs_id="n")))
"""


@pytest.mark.parametrize("weighting,robust", [("natural", 0.0), ("briggs", 0.5),
                                              ("uniform", 0.0)])
def test_thermal_estimate_is_the_noise_tclean_makes(tmp_path, weighting, robust):
    """Noise only: the dirty image's rms equals the estimate from the visibilities through
    the imaging weights; for natural weights both equal sigma / sqrt(2 N) from the
    simulated per-visibility noise (4 arcsec cells grid every baseline)."""
    noise = 0.3
    cfg, _, _, ms = _ms(tmp_path, {"sim.nants": 14, "sim.nsources": 0, "sim.noise_jy": noise,
                                   "sim.ntimes": 4, "convert.phasing": "single"})
    flat = {**cfg.as_flat(), "image.niter": 0, "image.weighting": weighting,
            "image.robust": robust, "image.nterms": 1, "image.cell_arcsec": 4.0,
            "image.imsize": 512, "image.gridder": "standard"}
    qa = _run(NOISE, ms, tmp_path / "img", json.dumps(flat))["qa"]
    # measured: natural and Briggs within 3 %; uniform 0.93 (CASA's uniform weight density
    # is not the plain cell count with the Hermitian partner that kernels.weights uses)
    assert qa["thermal_ratio"] == pytest.approx(1.0, abs=0.1 if weighting == "uniform"
                                                else 0.06), qa
    assert qa["vis_sigma_jy"] == pytest.approx(noise / np.sqrt(2), rel=0.03), qa
    if weighting == "natural":
        nbl = 14 * 13 // 2
        n = nbl * 4 * 16 * cfg.sim.nchan_per_subband
        assert qa["thermal_jy"] == pytest.approx(noise / np.sqrt(2 * n), rel=0.03), qa


def test_partly_flagged_averaged_channels_weigh_what_they_kept(tmp_path):
    """Noise only, 4 channels averaged into one. The same files imaged as recorded and
    with 3 of the 4 samples of one of each file's two groups flagged (as next to a narrow
    interferer): that channel carries a quarter of its neighbour's weight (WEIGHT_SPECTRUM),
    and tclean's natural-weighted dirty image has the rms of all the unflagged recorded
    samples, sigma / sqrt(2 N), N counted from the files' flags alone. With one weight per
    row (both channels alike) the rms would be 1.25 x higher (E[n] E[1/n] = 2.5 x 0.625
    for groups keeping n = 1 or 4 samples)."""
    import h5py

    noise = 0.3
    width = 187.5e6 / 16 / 8
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        "sim.nants": 14, "sim.nsources": 0, "sim.noise_jy": noise, "sim.ntimes": 4,
        "sim.nchan_per_subband": 8, "convert.phasing": "single", "flag.enabled": False,
        "convert.max_channel_width_hz": 4.5 * width})
    tel = Telescope(cfg)
    start = simulate.obs_start_times_jd(cfg)[0]
    paths = simulate.simulate_observation(cfg, tel, start, tmp_path,
                                          sky=simulate.make_sky(cfg, tel))
    flat = {**cfg.as_flat(), "image.niter": 0, "image.weighting": "natural",
            "image.nterms": 1, "image.cell_arcsec": 4.0, "image.imsize": 512,
            "image.gridder": "standard"}
    ratio, thermal = {}, {}
    for case in ("recorded", "partly_flagged"):
        n_eff = 0
        for p in paths:
            with h5py.File(p, "r+") as f:
                fl = f["Data/flags"][...]  # (Nblts, 1, Nfreqs, Npols)
                if case == "partly_flagged":
                    fl[:, :, [0, 1, 2], :] = True
                    f["Data/flags"][...] = fl
                cross = f["Header/ant_1_array"][...] != f["Header/ant_2_array"][...]
                n_eff += int((~fl[cross, 0, :, 0]).sum())
        ms = tmp_path / f"{case}.ms"
        convert_local([str(p) for p in paths], str(ms), cfg)
        qa = _run(NOISE, ms, tmp_path / f"img_{case}", json.dumps(flat))["qa"]
        ratio[case] = qa["residual_rms_jy"] / (noise / np.sqrt(2 * n_eff))
        # the engine's own estimate weighs each channel's noise by its WEIGHT_SPECTRUM too
        thermal[case] = qa["thermal_jy"] / (noise / np.sqrt(2 * n_eff))
    # measured over seeds 1234, 2, 3: recorded 0.947, 0.944, 0.956 of sigma / sqrt(2 N) (the
    # imager's offset, the same with and without the flags), partly flagged 1.006, 0.992 and
    # within 3 % of the recorded; one weight per row (no WEIGHT_SPECTRUM) gave 1.238
    assert all(0.92 < r < 1.06 for r in ratio.values()), ratio
    assert 0.95 < ratio["partly_flagged"] / ratio["recorded"] < 1.10, ratio
    # the estimate: 1.003 both (one noise per baseline whatever the weight gave 1.085 flagged)
    assert all(abs(t - 1) < 0.03 for t in thermal.values()), thermal
