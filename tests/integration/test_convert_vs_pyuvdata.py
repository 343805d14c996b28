"""The engine's MS against pyuvdata's own phase-and-write_ms of the same files."""

import subprocess
import sys

import numpy as np
import pytest
from casacore import tables

from engine import config
from engine.convert import convert_local
from tests.conftest import ROOT, point_source_obs


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    d = tmp_path_factory.mktemp("vs_pyuvdata")
    paths, cfg, src, mid = point_source_obs(d / "in", overrides={"sim.ntimes": 4})
    c = config.load(None, {"convert.phasing": "single"})
    eng = convert_local(paths, str(d / "engine.ms"), c)
    with tables.table(eng["ms_path"] + "/FIELD", ack=False) as t:
        ra, dec = t.getcol("PHASE_DIR")[0, 0]
    p = subprocess.run([sys.executable, "-m", "tests.reference.pyuvdata_convert",
                        "--exact-frame-pa", str(d / "ref.ms"), repr(float(ra)), repr(float(dec)),
                        *paths], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return eng["ms_path"], str(d / "ref.ms")


def _cols(ms, names):
    with tables.table(ms, ack=False) as t:
        return {n: t.getcol(n) for n in names}


def _sorted(ms, extra=()):
    """Rows sorted by (time, antenna names): the two writers number antennas differently."""
    c = _cols(ms, ["TIME", "ANTENNA1", "ANTENNA2", "UVW", "DATA", "FLAG", *extra])
    with tables.table(ms + "/ANTENNA", ack=False) as t:
        names = np.array(t.getcol("NAME"))
    c["NAME1"], c["NAME2"] = names[c["ANTENNA1"]], names[c["ANTENNA2"]]
    order = np.lexsort((c["NAME2"], c["NAME1"], c["TIME"]))
    return {k: v[order] for k, v in c.items()}


def test_rows_times_antennas_and_channels(both):
    eng, ref = both
    a, b = _sorted(eng), _sorted(ref)
    assert np.array_equal(a["NAME1"], b["NAME1"])
    assert np.array_equal(a["NAME2"], b["NAME2"])
    assert np.allclose(a["TIME"], b["TIME"], atol=1e-3)
    with tables.table(eng + "/SPECTRAL_WINDOW", ack=False) as t:
        fa = t.getcol("CHAN_FREQ")
    with tables.table(ref + "/SPECTRAL_WINDOW", ack=False) as t:
        fb = t.getcol("CHAN_FREQ")
    assert np.allclose(fa, fb, rtol=0, atol=1e-3)


def test_uvw_agree(both):
    """UVW agree to 1 mm on every axis (measured: 0.012 mm on 2.47 km).

    The reference takes pyuvdata's frame position angle with a small offset (see
    tests/reference/pyuvdata_convert.py and the test below); with pyuvdata's default the
    u,v were turned by 5.3e-5 rad (10 cm on the longest baseline), w agreed to 1e-10 m.
    """
    eng, ref = both
    a, b = _sorted(eng), _sorted(ref)
    cross = a["ANTENNA1"] != a["ANTENNA2"]
    assert np.abs(a["UVW"][cross] - b["UVW"][cross]).max() < 1e-3


def test_pyuvdata_default_frame_pa_is_first_order_in_its_offset():
    """Why the reference passes --exact-frame-pa: pyuvdata's default 0.5 deg offset leaves
    an error of about -offset x tan(dec) x frame_pa, which shrinks linearly with the offset
    (first order); at 1e-6 rad it is ~1e-8 rad. Checked on pyuvdata's own function."""
    from astropy import units as u
    from astropy.coordinates import EarthLocation
    from pyuvdata.utils.phasing import calc_app_coords, calc_frame_pos_angle

    loc = EarthLocation.from_geodetic(-118.2817 * u.deg, 37.2339 * u.deg, 1222 * u.m)
    jd = np.array([2460951.0])
    ra, dec = 4.67, np.deg2rad(54.6)
    ara, adec = calc_app_coords(lon_coord=np.array([ra]), lat_coord=np.array([dec]),
                                coord_frame="icrs", time_array=jd, telescope_loc=loc)

    def pa(off):
        return float(calc_frame_pos_angle(time_array=jd, app_ra=ara, app_dec=adec,
                                          telescope_loc=loc, ref_frame="icrs",
                                          offset_pos=off)[0])

    exact = pa(1e-6)  # first-order error ~6e-9 rad, rounding ~1e-9 rad
    assert abs(pa(1e-5) - exact) < 1e-7
    err = pa(np.pi / 360) - exact
    assert abs(err) > 1e-5  # 10 cm on 2.5 km: worth correcting
    predicted = -(np.pi / 360) * np.tan(dec) * exact
    assert abs(err - predicted) < 0.1 * abs(predicted)
    assert abs((pa(np.pi / 3600) - exact) / err - 0.1) < 0.02  # first order: 10x smaller


def test_data_agree(both):
    eng, ref = both
    a, b = _sorted(eng), _sorted(ref)
    cross = (a["ANTENNA1"] != a["ANTENNA2"])
    da, db = a["DATA"][cross], b["DATA"][cross]
    # same complex values: amplitude and phase (phase error < 0.01 rad on every sample)
    assert np.allclose(np.abs(da), np.abs(db), rtol=1e-4, atol=1e-5)
    dphi = np.angle(da * np.conj(db))
    assert np.max(np.abs(dphi)) < 0.01


@pytest.fixture(scope="module")
def averaged(tmp_path_factory):
    """8 channels of 1.46 MHz per subband, averaged 4 to 1 by the engine and by pyuvdata's
    ``frequency_average``; 3 channels of one group flagged in one file on 40 rows."""
    import h5py

    d = tmp_path_factory.mktemp("vs_pyuvdata_avg")
    paths, cfg, src, mid = point_source_obs(d / "in", overrides={"sim.ntimes": 3,
                                                                 "sim.nants": 12,
                                                                 "sim.nchan_per_subband": 8})
    with h5py.File(paths[3], "r+") as f:  # flag 3 of one group's 4 channels on some rows
        fl = f["Data/flags"]  # the correlator's layout: (Nblts, 1, Nfreqs, Npols)
        block = fl[:40, :, 0:3, :]
        block[...] = True
        fl[:40, :, 0:3, :] = block
    width = 187.5e6 / 16 / 8
    # the engine's own flagging off: both sides see the file's flags only
    c = config.load(None, {"convert.phasing": "single", "flag.enabled": False,
                           "convert.max_channel_width_hz": 4.5 * width})
    eng = convert_local(paths, str(d / "engine.ms"), c)
    full = convert_local(paths, str(d / "full.ms"), config.load(
        None, {"convert.phasing": "single", "flag.enabled": False,
               "convert.max_channel_width_hz": 0.0}))
    with tables.table(eng["ms_path"] + "/FIELD", ack=False) as t:
        ra, dec = t.getcol("PHASE_DIR")[0, 0]
    p = subprocess.run([sys.executable, "-m", "tests.reference.pyuvdata_convert",
                        "--exact-frame-pa", "--average", "4", str(d / "ref.ms"),
                        repr(float(ra)), repr(float(dec)), *paths], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return eng["ms_path"], str(d / "ref.ms"), full["ms_path"]


def test_averaged_channels_agree_with_pyuvdata(averaged):
    """Channel frequencies and widths, visibilities and flags of a 4-to-1 average equal
    pyuvdata's frequency_average of the same phased data."""
    eng, ref, _ = averaged
    a, b = _sorted(eng, ["WEIGHT_SPECTRUM"]), _sorted(ref, ["WEIGHT_SPECTRUM"])
    freqs = {}
    for name, ms in (("eng", eng), ("ref", ref)):
        with tables.table(ms + "/SPECTRAL_WINDOW", ack=False) as t:
            freqs[name] = (t.getcol("CHAN_FREQ")[0], t.getcol("CHAN_WIDTH")[0],
                           t.getcol("TOTAL_BANDWIDTH")[0])
    assert freqs["eng"][0].size == 16 * 2
    assert np.allclose(freqs["eng"][0], freqs["ref"][0], rtol=0, atol=1e-3)
    assert np.allclose(np.abs(freqs["eng"][1]), np.abs(freqs["ref"][1]), rtol=1e-9)
    cross = a["ANTENNA1"] != a["ANTENNA2"]
    fa, fb = a["FLAG"][cross], b["FLAG"][cross]
    assert np.array_equal(fa, fb)
    da, db = a["DATA"][cross], b["DATA"][cross]
    ok = ~fa
    assert np.allclose(np.abs(da[ok]), np.abs(db[ok]), rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(np.angle(da[ok] * np.conj(db[ok])))) < 0.01
    # per-channel weights: pyuvdata's summed nsamples of the unflagged samples in a group,
    # so a channel that kept 1 of its 4 samples weighs a quarter of a full one
    wa, wb = a["WEIGHT_SPECTRUM"][cross], b["WEIGHT_SPECTRUM"][cross]
    assert np.allclose(wa[ok], wb[ok], rtol=1e-6)
    assert np.any(wa[ok] < 0.5 * wa[ok].max())  # partial groups are there and lighter


def test_averaged_weight_carries_the_samples(averaged):
    """An averaged channel carries the weight of the recorded channels in it: WEIGHT 4 x
    the unaveraged MS's on unflagged rows, SIGMA = 1 / sqrt(WEIGHT); the flagged samples
    (3 of a group of 4) are out of the average, not flagging the group."""
    eng, _, full = averaged
    a = _cols(eng, ["WEIGHT", "SIGMA", "FLAG", "DATA", "WEIGHT_SPECTRUM"])
    f = _cols(full, ["WEIGHT", "FLAG", "DATA"])
    clean = ~f["FLAG"].any(axis=(1, 2))
    assert clean.sum() > 100
    assert np.allclose(a["WEIGHT"][clean], 4 * f["WEIGHT"][clean], rtol=1e-6)
    assert np.allclose(a["SIGMA"][clean], 1 / np.sqrt(a["WEIGHT"][clean]), rtol=1e-6)
    # the average of the recorded channels, by numpy over the unaveraged MS
    v, fl = f["DATA"], f["FLAG"]
    n = v.shape[1]
    w = (~fl).reshape(v.shape[0], n // 4, 4, -1)
    s = (v.reshape(w.shape) * w).sum(axis=2)
    cnt = w.sum(axis=2)
    expect = np.where(cnt > 0, s / np.maximum(cnt, 1), 0)
    partial = (cnt > 0) & (cnt < 4)
    assert partial.any()  # the flagged samples left out, the group kept
    assert np.array_equal(a["FLAG"], cnt == 0)
    # WEIGHT_SPECTRUM: the group's unflagged samples times the row's per-channel weight;
    # WEIGHT is its mean over the row's unflagged channels
    per_chan = np.where(f["FLAG"], 0, f["WEIGHT"][:, None, :]).reshape(w.shape).sum(axis=2)
    assert np.allclose(a["WEIGHT_SPECTRUM"], per_chan, rtol=1e-6)
    ws = np.where(a["FLAG"], 0, a["WEIGHT_SPECTRUM"]).sum(axis=1)
    nok = (~a["FLAG"]).sum(axis=1)
    assert np.allclose(a["WEIGHT"][nok > 0], (ws / np.maximum(nok, 1))[nok > 0], rtol=1e-6)
    assert np.allclose(a["DATA"], expect, rtol=1e-5, atol=1e-6)
