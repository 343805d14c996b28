"""The simulator's files against the format facts of DSA110.md, read back independently."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import pyuvdata
from astropy import units as u
from astropy.coordinates import AltAz, SkyCoord
from astropy.time import Time

from engine.telescope import C_M_S


def test_files_follow_the_format(one_obs):
    paths, sky, cfg = one_obs
    names = sorted(Path(p).name for p in paths)
    assert len(names) == 16
    sbs = sorted(int(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d_sb(\d\d)\.hdf5$", n).group(1))
                 for n in names)
    assert sbs == list(range(16))
    file_times = {Time(n[:19], format="isot").jd for n in names}
    starts, tops = set(), {}
    for p in paths:
        with h5py.File(p, "r") as f:
            h = f["Header"]
            starts.add(float(h["time_array"][0]))
            assert h["uvw_array"].dtype == np.float32
            assert f["Data/visdata"].dtype == np.complex64
            assert int(h["Nants_telescope"][()]) == 117
            ek = h["extra_keywords"]
            assert ek["phase_center_epoch"][()] == b"HADEC"
            assert float(ek["ha_phase_center"][()]) == 0.0
            assert abs(float(ek["phase_center_dec"][()]) - np.deg2rad(cfg.sim.dec_deg)) < 1e-12
            tops[int(Path(p).name[-7:-5])] = h["freq_array"][()].ravel()
    assert len(starts) == 1  # header time identical across the 16 files
    (start,) = starts
    assert max(abs(t - start) * 86400 for t in file_times) <= cfg.sim.filename_jitter_s + 7
    assert tops[0].max() > tops[15].max()  # sb00 holds the highest frequencies
    assert all(np.all(np.diff(f) < 0) for f in tops.values())  # descending in each file


def test_pyuvdata_reads_the_files(one_obs):
    paths, sky, cfg = one_obs
    uv = pyuvdata.UVData.from_file(paths[0], file_type="uvh5", run_check=False)
    n = cfg.sim.nants
    assert uv.Nants_data == n and uv.Nbls == n * (n + 1) // 2
    assert uv.Nblts == uv.Nbls * cfg.sim.ntimes
    assert list(uv.polarization_array) == [-5, -6]
    assert np.all(uv.channel_width < 0)
    assert uv.vis_units == "uncalib"
    ants = dict(zip(uv.telescope.antenna_numbers, uv.telescope.antenna_names))
    rev = uv.ant_1_array > uv.ant_2_array
    assert rev.any()  # the quirk is present ...
    assert set(uv.ant_1_array[rev]) <= {101, 115}  # ... and only for stations 101 and 115
    assert ants[101] == "DSA-101"
    assert np.any(uv.ant_1_array == uv.ant_2_array)  # autocorrelations present
    dt = np.diff(np.unique(uv.time_array)) * 86400
    assert np.allclose(dt, 12.884902, atol=1e-3)
    # the only default check the correlator's format fails is its float32 uvw_array
    with pytest.raises(ValueError, match="_uvw_array is not the appropriate type"):
        pyuvdata.UVData.from_file(paths[0], file_type="uvh5")
    uv.uvw_array = uv.uvw_array.astype(np.float64)
    assert uv.check(strict_uvw_antpos_check=False)


def test_point_source_gives_the_analytic_phase(tmp_path):
    """Independent path: alt-az of source and pointing from astropy, ENU baselines."""
    from tests.conftest import point_source_obs

    paths, cfg, src, _ = point_source_obs(tmp_path, dx_deg=0.4, dy_deg=-0.2,
                                          overrides={"sim.nants": 8, "sim.ntimes": 2})
    uv = pyuvdata.UVData.from_file(paths[0], file_type="uvh5", run_check=False)
    loc = uv.telescope.location
    t = Time(uv.time_array, format="jd")
    frame = AltAz(obstime=t, location=loc)
    s_src = SkyCoord(src[0] * u.rad, src[1] * u.rad).transform_to(frame)
    # the pointing: apparent HA = 0 at dec, i.e. the meridian at that altitude, no refraction
    alt0 = 90 - (cfg.sim.dec_deg - cfg.site.latitude_deg)

    def enu(az, alt):
        return np.stack([np.cos(alt) * np.sin(az), np.cos(alt) * np.cos(az), np.sin(alt)], -1)
    pointing = enu(np.zeros(t.size), np.full(t.size, np.deg2rad(alt0)))
    d_s = enu(s_src.az.rad, s_src.alt.rad) - pointing
    enu_ant = pyuvdata.utils.ENU_from_ECEF(
        uv.telescope.antenna_positions + uv.telescope._location.xyz(), center_loc=loc)
    idx = {n: i for i, n in enumerate(uv.telescope.antenna_numbers)}
    b = enu_ant[[idx[a] for a in uv.ant_2_array]] - enu_ant[[idx[a] for a in uv.ant_1_array]]
    f = uv.freq_array.ravel()[0]
    expect = np.exp(2j * np.pi * np.sum(b * d_s, axis=1) * f / C_M_S)
    got = uv.data_array[:, 0, 0] / np.abs(uv.data_array[:, 0, 0])
    cross = uv.ant_1_array != uv.ant_2_array
    # 0.5 arcsec of frame differences (aberration, polar motion) on < 3 km: < 0.05 rad
    err = np.angle(got[cross] * np.conj(expect[cross]))
    assert np.max(np.abs(err)) < 0.05
    # the amplitude is the flux through the primary beam (< flux, > half of it here)
    assert np.all((np.abs(uv.data_array[cross, 0, 0]) < 5.0)
                  & (np.abs(uv.data_array[cross, 0, 0]) > 2.5))


def test_gains_corrupt_visibilities_as_g1_conj_g2(tmp_path):
    """Data with gains divided by g1 conj(g2) (from the truth) equal the gain-free data."""
    from engine import config, simulate
    from engine.telescope import Telescope

    cfg = config.load(None, {"sim.nants": 6, "sim.nchan_per_subband": 3, "sim.ntimes": 2,
                             "sim.nobs": 1, "sim.nsources": 2, "sim.gain_amp_rms": 0.1,
                             "sim.gain_phase_rms_deg": 30})
    tel = Telescope(cfg)
    sky = simulate.make_sky(cfg, tel)
    gains = simulate.make_gains(cfg, simulate.simulated_stations(cfg, tel))
    t0 = simulate.obs_start_times_jd(cfg)[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pa = simulate.simulate_observation(cfg, tel, t0, tmp_path / "a", sky=sky, gains=gains,
                                       subbands=[4])[0]
    pb = simulate.simulate_observation(cfg, tel, t0, tmp_path / "b", sky=sky, subbands=[4])[0]
    with h5py.File(pa) as fa, h5py.File(pb) as fb:
        va, vb = fa["Data/visdata"][:, 0], fb["Data/visdata"][:, 0]
        a1, a2 = fa["Header/ant_1_array"][()], fa["Header/ant_2_array"][()]
        f = fa["Header/freq_array"][0]
    x = (f - 1405e6) / 93.75e6
    idx = {s: i for i, s in enumerate(gains.stations)}

    def g(st):  # the documented bandpass model, evaluated here from the raw coefficients
        b = gains.bp[idx[st]]
        return gains.g[idx[st]][None, :] * (1 + b[:, 0] * x[:, None] + b[:, 1] * x[:, None] ** 2
                                            ) * np.exp(1j * b[:, 2] * x[:, None])

    expect = np.array([vb[r] * g(a1[r]) * np.conj(g(a2[r])) for r in range(len(a1))])
    np.testing.assert_allclose(va, expect, rtol=1e-4, atol=1e-5)
    assert not np.allclose(va, vb)


def test_simulated_channels_carry_the_bandwidth_smearing(tmp_path):
    """``sim.subchannels``: each channel is the mean over its width, as the correlator
    averages (16 frequencies, and the default's own choice). A lone source 4 deg east of
    the meridian: the smeared-to-plain amplitude ratio of every baseline and channel is
    sinc(dnu d / c), the delay d (m) read from the plain visibilities' phase slope across
    the 244 kHz channels."""
    from engine import config, simulate
    from engine.telescope import Telescope

    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        "sim.nants": 12, "sim.ntimes": 2, "sim.nchan_per_subband": 48, "sim.noise_jy": 0.0,
        "sim.rfi": "", "sim.gain_amp_rms": 0.0, "sim.gain_phase_rms_deg": 0.0})
    tel = Telescope(cfg)
    start = simulate.obs_start_times_jd(cfg)[0]
    lst = Time(start, format="jd", location=tel.location).sidereal_time("apparent").rad
    dec = np.deg2rad(cfg.sim.dec_deg)
    sky = simulate.Sky(np.array([lst + np.deg2rad(4.0) / np.cos(dec)]), np.array([dec]),
                       np.array([5.0]), np.array([0.0]))
    vis = {}
    for nsub in (1, 16, 0):
        c = config.load(config.CONFIG_DIR / "ci.toml", {**cfg.as_flat(), "sim.subchannels": nsub})
        (tmp_path / str(nsub)).mkdir()
        (p,) = simulate.simulate_observation(c, tel, start, tmp_path / str(nsub), sky=sky,
                                             subbands=[3])
        with h5py.File(p, "r") as f:
            vis[nsub] = f["Data/visdata"][:, 0, :, 0].astype(complex)
            freqs = f["Header/freq_array"][()].ravel()
            cross = f["Header/ant_1_array"][()] != f["Header/ant_2_array"][()]
    plain, smeared = vis[1][cross], vis[16][cross]
    width = abs(freqs[1] - freqs[0])
    slope = np.diff(np.unwrap(np.angle(plain), axis=1), axis=1).mean(axis=1) / np.diff(freqs)[0]
    d = C_M_S * slope / (2 * np.pi)  # (Nrows,) m
    expect = np.abs(np.sinc(width * d / C_M_S))
    ratio = np.abs(smeared) / np.abs(plain)
    assert np.abs(d).max() > 100  # long baselines see the source far from the centre
    assert expect.min() < 0.99  # so the smearing is measurable
    np.testing.assert_allclose(ratio, expect[:, None] * np.ones_like(ratio), rtol=0, atol=2e-3)
    # the default (0: as many as the sky's delays need) is as good
    np.testing.assert_allclose(np.abs(vis[0][cross]) / np.abs(plain),
                               expect[:, None] * np.ones_like(ratio), rtol=0, atol=2e-3)
