"""Simulated DSA-110 observations written in the correlator's UVH5 layout.

The files follow the real format (see DSA110.md): 16 subbands per observation with
jittered filename times and one header start time, descending frequencies, XX/YY,
autocorrelations, meridian drift phasing described by ``extra_keywords`` and the
``ant1 > ant2`` quirk of stations 101 and 115. Visibilities are a direct Fourier
transform of a fixed point-source sky through the Airy primary beam, with optional
antenna gains and noise, in the UVH5 convention ``V = S exp(+2 pi i uvw.(s - s0)/lambda)``,
``uvw = x[ant2] - x[ant1]``.

Source directions and the phase centre are computed independently of the engine's
conversion path (ITRF unit vectors from astropy, dot products with antenna positions),
so an engine that gets the geometry wrong disagrees with these files.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
from astropy.time import Time

from engine import geometry, interference
from engine.config import Config
from engine.constants import C_M_S
from engine.errors import ConfigError
from engine.telescope import Telescope, airy_beam
from kernels.visibility import predict_point_sources

log = logging.getLogger(__name__)

QUIRK_STATIONS = (101, 115)
OBS_CADENCE_NTIMES = 24  # observations start every 24 integrations (309.2 s), whatever Ntimes


@dataclass
class Sky:
    """Point sources: ICRS positions (rad), flux density at ``ref_freq_hz`` (Jy), index."""

    ra: np.ndarray
    dec: np.ndarray
    flux_jy: np.ndarray
    spectral_index: np.ndarray
    ref_freq_hz: float = 1.4e9
    names: list = field(default_factory=list)

    def flux_at(self, freq_hz):
        """(Nsrc, Nfreq) flux densities in Jy."""
        return self.flux_jy[:, None] * (np.asarray(freq_hz)[None, :] / self.ref_freq_hz) ** \
            self.spectral_index[:, None]

    def to_json(self) -> str:
        return json.dumps({"ra_rad": self.ra.tolist(), "dec_rad": self.dec.tolist(),
                           "flux_jy": self.flux_jy.tolist(),
                           "spectral_index": self.spectral_index.tolist(),
                           "ref_freq_hz": self.ref_freq_hz, "names": self.names})

    @classmethod
    def from_json(cls, text: str) -> "Sky":
        d = json.loads(text)
        return cls(np.array(d["ra_rad"]), np.array(d["dec_rad"]), np.array(d["flux_jy"]),
                   np.array(d["spectral_index"]), d["ref_freq_hz"], d["names"])


@dataclass
class Gains:
    """Antenna gains per station and polarization with smooth bandpass shapes.

    ``g`` (Nants, 2) complex is the gain at the band centre; ``bp`` (Nants, 2, 3) real holds
    the amplitude slope, amplitude curvature and phase slope (rad) across the band, so
    ``g(nu) = g (1 + b0 x + b1 x^2) exp(i b2 x)`` with ``x = (nu - 1405 MHz) / 93.75 MHz``.
    """

    stations: list
    g: np.ndarray
    bp: np.ndarray

    def at(self, freq_hz) -> np.ndarray:
        """(Nants, Nfreqs, 2) complex gains at ``freq_hz``."""
        x = (np.asarray(freq_hz) - 1405e6) / 93.75e6
        b = self.bp[:, None, :, :]  # (Nants, 1, 2, 3)
        xx = x[None, :, None]
        shape = (1 + b[..., 0] * xx + b[..., 1] * xx ** 2) * np.exp(1j * b[..., 2] * xx)
        return self.g[:, None, :] * shape


def obs_start_times_jd(cfg: Config) -> np.ndarray:
    t0 = Time(cfg.sim.start, format="isot", scale="utc").jd
    step = OBS_CADENCE_NTIMES * cfg.band.integration_s / 86400.0
    return t0 + step * np.arange(cfg.sim.nobs)


def make_sky(cfg: Config, tel: Telescope, *, calibrators=None) -> Sky:
    """A fixed random sky covering the whole run's meridian track, plus calibrators.

    Sources fill the primary beam (|offset| < ``sim.field_radius_deg`` from the pointing
    dec) over the RA range the meridian sweeps during the run.
    """
    rng = np.random.default_rng(cfg.sim.seed)
    starts = obs_start_times_jd(cfg)
    span = cfg.sim.ntimes * cfg.band.integration_s / 86400.0
    dec_app = np.deg2rad(cfg.sim.dec_deg)
    ra_ends, dec_c = geometry.meridian_icrs(np.array([starts[0], starts[-1] + span]), dec_app,
                                            tel.location)
    ra_lo, ra_hi = ra_ends[0], ra_ends[1]
    if ra_hi < ra_lo:
        ra_hi += 2 * np.pi
    n = cfg.sim.nsources * cfg.sim.nobs
    lo, hi = (float(x) for x in cfg.sim.flux_range_jy.split(","))
    r = cfg.sim.field_radius_deg
    dec = dec_c.mean() + np.deg2rad(rng.uniform(-r, r, n))
    ra = (rng.uniform(ra_lo, ra_hi, n)) % (2 * np.pi)
    flux = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    alpha = rng.normal(-0.7, 0.1, n)
    names = [f"src{i:04d}" for i in range(n)]
    if calibrators is not None:
        for c in calibrators:
            ra, dec = np.append(ra, c.ra_rad), np.append(dec, c.dec_rad)
            flux, alpha = np.append(flux, c.flux_jy), np.append(alpha, c.spectral_index)
            names.append(c.name)
    return Sky(ra, dec, flux, alpha, names=names)


def make_gains(cfg: Config, stations: list[int]) -> Gains:
    rng = np.random.default_rng(cfg.sim.seed + 1)
    n = len(stations)
    amp = 1.0 + cfg.sim.gain_amp_rms * rng.standard_normal((n, 2))
    phase = np.deg2rad(cfg.sim.gain_phase_rms_deg) * rng.standard_normal((n, 2))
    bp = rng.standard_normal((n, 2, 3)) * np.array(
        [cfg.sim.gain_amp_rms / 2, cfg.sim.gain_amp_rms / 4,
         np.deg2rad(cfg.sim.gain_phase_rms_deg)])
    return Gains(list(stations), np.clip(amp, 0.1, None) * np.exp(1j * phase), bp)


def baseline_layout(stations: list[int]):
    """Raw-file baseline order for one integration: (ant1, ant2) station numbers.

    Pairs i <= j in station order, autocorrelations included, except that pairs with a
    quirk station as the higher number are written reversed (ant1 > ant2).
    """
    a1, a2 = [], []
    for i, s1 in enumerate(stations):
        for s2 in stations[i:]:
            if s2 in QUIRK_STATIONS and s1 != s2:
                a1.append(s2)
                a2.append(s1)
            else:
                a1.append(s1)
                a2.append(s2)
    return np.array(a1), np.array(a2)


def subchannels_needed(delay_m: np.ndarray, width_hz: float, apparent_jy: np.ndarray,
                       tol: float = 1e-3) -> int:
    """Frequencies per channel for a brute-force channel mean accurate to ``tol`` of the
    brightest apparent source.

    ``delay_m`` (Ntimes, Nsrc, Nants): antenna delays (m) towards each source;
    ``apparent_jy`` (Nsrc,): flux density through the beam. The mean of N equally spaced
    samples of a phase that turns by x across the channel is the true mean times
    1 + (pi x / N)^2 / 6 (to leading order), so source s needs
    N >= pi x_s sqrt(A_s / (6 tol A_max)), x_s its longest baseline's turns.
    """
    if delay_m.size == 0 or not np.any(apparent_jy > 0):
        return 1
    span = (delay_m.max(axis=-1) - delay_m.min(axis=-1)).max(axis=0)  # (Nsrc,) m
    turns = abs(width_hz) * span / C_M_S
    need = np.pi * turns * np.sqrt(np.clip(apparent_jy, 0, None) / (6 * tol
                                                                    * apparent_jy.max()))
    return int(np.clip(np.ceil(need.max()), 1, 256))


def _channel_means(sky, sin_off, delay, time_index, i1, i2, freqs, width_hz: float,
                   nsub: int, dish_m: float) -> np.ndarray:
    """(Nrows, Nchan) complex128 visibilities of unpolarized point sources, each channel the
    mean over ``nsub`` equally spaced frequencies across its width (bandwidth smearing by
    brute force, independent of the engine's analytic model; 1: the channel centre)."""
    off = (np.arange(nsub) + 0.5) / nsub - 0.5
    # in the channels' own order (descending: width < 0), so the frequencies stay equally
    # spaced and the kernel's phasor recurrence applies
    fine = (freqs[:, None] + width_hz * off[None, :]).ravel()  # (Nchan * nsub,)
    flux = sky.flux_at(fine)[None, :, :] * airy_beam(sin_off[:, :, None], fine[None, None, :],
                                                     dish_m)
    vis = predict_point_sources(delay, flux, time_index, i1, i2, fine)
    return vis.reshape(vis.shape[0], freqs.size, nsub).mean(axis=2)


def simulated_stations(cfg: Config, tel: Telescope) -> list[int]:
    """Data stations of a simulation: always the quirk stations, the rest spread evenly."""
    quirks = [s for s in QUIRK_STATIONS if s in tel.data_station_numbers]
    n_other = cfg.sim.nants - len(quirks)
    others = [s for s in tel.data_station_numbers if s not in quirks]
    idx = np.unique(np.round(np.linspace(0, len(others) - 1, n_other)).astype(int))
    return sorted([others[i] for i in idx] + quirks)


def simulate_observation(cfg: Config, tel: Telescope, start_jd: float, out_dir: Path, *,
                         sky: Sky, gains: Gains | None = None, obs_index: int = 0,
                         subbands=None) -> list[Path]:
    """Write one observation's subband files into ``out_dir``; return their paths."""
    sim = cfg.sim
    rng = np.random.default_rng(sim.seed + 1000 + obs_index)
    stations = simulated_stations(cfg, tel)
    station_index = {s.number: i for i, s in enumerate(tel.stations)}
    ant_xyz = tel.station_ecef - tel.site_ecef  # (117, 3) relative to the array reference
    ntimes = sim.ntimes
    times = start_jd + (np.arange(ntimes) + 0.5) * cfg.band.integration_s / 86400.0
    dec_app = np.deg2rad(sim.dec_deg)
    a1_st, a2_st = baseline_layout(stations)
    nbls = a1_st.size
    time_index = np.repeat(np.arange(ntimes), nbls)
    a1_rows, a2_rows = np.tile(a1_st, ntimes), np.tile(a2_st, ntimes)
    # geometry, independent of the engine's uvw path
    s0 = geometry.meridian_itrs(times, dec_app, tel.location)  # (Nt, 3)
    src = geometry.icrs_itrs(sky.ra[None, :], sky.dec[None, :], times[:, None], tel.location)
    delay = np.einsum("tsk,ak->tsa", src - s0[:, None, :], ant_xyz)  # (Nt, Nsrc, 117)
    cos_off = np.clip(np.einsum("tsk,tk->ts", src, s0), -1, 1)
    sin_off = np.sqrt(1 - cos_off ** 2)
    lst = geometry.lst_rad(times, tel.location)
    # file uvw: float32, x2 - x1 projected towards the meridian point (what the correlator
    # writes; the engine recomputes its own)
    wdir = s0
    udir = np.cross([0.0, 0.0, 1.0], wdir)
    udir /= np.linalg.norm(udir, axis=1, keepdims=True)
    vdir = np.cross(wdir, udir)
    rot = np.stack([udir, vdir, wdir], axis=1)
    i1 = np.array([station_index[s] for s in a1_rows])
    i2 = np.array([station_index[s] for s in a2_rows])
    bl = ant_xyz[i2] - ant_xyz[i1]
    uvw_file = np.einsum("rij,rj->ri", rot[time_index], bl).astype(np.float32)
    if gains is not None:
        gi = {s: k for k, s in enumerate(gains.stations)}
        g1i = np.array([gi[s] for s in a1_rows])
        g2i = np.array([gi[s] for s in a2_rows])
    subbands = range(cfg.band.nsubbands) if subbands is None else subbands
    width = tel.channel_width_for(sim.nchan_per_subband)
    if sim.subchannels:
        nsub = sim.subchannels
    else:
        mid = ntimes // 2
        fc = tel.subband_freqs_hz(cfg.band.nsubbands // 2, 1)  # near the band centre
        apparent = sky.flux_at(fc)[:, 0] * airy_beam(sin_off[mid], fc[0], tel.dish_diameter_m)
        nsub = subchannels_needed(delay[:, :, np.unique(np.r_[i1, i2])], width, apparent)
    iso = Time(start_jd, format="jd").isot[:19]
    paths = []
    vis = np.empty((a1_rows.size, sim.nchan_per_subband, 2), dtype=np.complex64)
    events = rfi_events(cfg, stations, obs_index)
    rfi_amp = sim.rfi_sigma * (sim.noise_jy if sim.noise_jy > 0 else 1.0)
    for sb in subbands:
        freqs = tel.subband_freqs_hz(sb, sim.nchan_per_subband)
        vis[...] = _channel_means(sky, sin_off, delay, time_index, i1, i2, freqs, width, nsub,
                                  tel.dish_diameter_m)[:, :, None]  # XX = YY = I
        if gains is not None:
            g_f = gains.at(freqs)  # (Nants, Nfreqs, 2)
            vis *= (g_f[g1i] * np.conj(g_f[g2i])).astype(np.complex64)
        if sim.noise_jy > 0:  # float32 draws, in place: no gigabyte temporaries
            noise = rng.standard_normal(vis.shape + (2,), dtype=np.float32)
            noise *= sim.noise_jy
            vis += noise.view(np.complex64)[..., 0]
        interference.inject(vis, events, sb, time_index, a1_rows, a2_rows, rfi_amp, freqs,
                            stations)
        jitter = rng.uniform(-sim.filename_jitter_s, sim.filename_jitter_s)
        fname = Time(start_jd + jitter / 86400.0, format="jd").isot[:19] + f"_sb{sb:02d}.hdf5"
        path = Path(out_dir) / fname
        write_uvh5(path, cfg=cfg, tel=tel, stations=stations, times=times, lst=lst,
                   time_index=time_index, ant1=a1_rows, ant2=a2_rows, uvw=uvw_file,
                   freqs=freqs, vis=vis, nbls=nbls,
                   dec_app=dec_app, obs_label=iso)
        paths.append(path)
    return paths


def write_uvh5(path: Path, *, cfg, tel, stations, times, lst, time_index, ant1, ant2, uvw,
               freqs, vis, nbls, dec_app, obs_label):
    """Write one subband in the correlator's UVH5 layout, through a temporary name."""
    nblts, nfreqs, npols = vis.shape
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as f:
        h = f.create_group("Header")
        h["latitude"] = cfg.site.latitude_deg
        h["longitude"] = cfg.site.longitude_deg
        h["altitude"] = cfg.site.height_m
        h["telescope_name"] = np.bytes_("OVRO_MMA")
        h["instrument"] = np.bytes_("DSA")
        h["object_name"] = np.bytes_("search")
        h["history"] = np.bytes_(f"simulated by dsa110-engine, observation {obs_label}")
        h["version"] = np.bytes_("1.0")
        h["phase_type"] = np.bytes_("drift")
        h["vis_units"] = np.bytes_("uncalib")
        h["Nants_data"] = len(stations)
        h["Nants_telescope"] = len(tel.stations)
        h["Nbls"] = nbls
        h["Nblts"] = nblts
        h["Nfreqs"] = nfreqs
        h["Npols"] = npols
        h["Nspws"] = 1
        h["Ntimes"] = len(times)
        h["ant_1_array"] = ant1.astype(np.int64)
        h["ant_2_array"] = ant2.astype(np.int64)
        h["antenna_numbers"] = np.array([s.number for s in tel.stations], dtype=np.int64)
        h["antenna_names"] = np.array([np.bytes_(s.name) for s in tel.stations])
        h["antenna_positions"] = tel.station_ecef - tel.site_ecef
        h["antenna_diameters"] = np.full(len(tel.stations), tel.dish_diameter_m)
        h["freq_array"] = freqs[None, :].astype(np.float64)
        h["channel_width"] = tel.channel_width_for(nfreqs)
        h["spw_array"] = np.array([0], dtype=np.int64)
        h["polarization_array"] = np.array([-5, -6], dtype=np.int64)
        h["integration_time"] = np.full(nblts, cfg.band.integration_s)
        h["time_array"] = times[time_index]
        h["lst_array"] = lst[time_index]
        h["uvw_array"] = uvw
        ek = h.create_group("extra_keywords")
        ek["phase_center_dec"] = dec_app
        ek["ha_phase_center"] = 0.0
        ek["phase_center_epoch"] = np.bytes_("HADEC")
        ek["applied_delays_ns"] = np.bytes_(" ".join(["0"] * (2 * len(tel.stations))))
        d = f.create_group("Data")
        d.create_dataset("visdata", data=vis[:, None, :, :])
        d.create_dataset("flags", data=np.zeros((nblts, 1, nfreqs, npols), dtype=bool))
        d.create_dataset("nsamples", data=np.ones((nblts, 1, nfreqs, npols), dtype=np.float32))
    os.replace(tmp, path)


def rfi_events(cfg: Config, stations: list[int], obs_index: int) -> list[dict]:
    """The interference and bad data ``sim.rfi`` asks for in one observation
    (engine/interference.py): placed at random, reproducibly from sim.seed and the index."""
    kinds = [k.strip() for k in cfg.sim.rfi.split(",") if k.strip()]
    if not kinds:
        return []
    try:
        return interference.plan_events(
            kinds, ntimes=cfg.sim.ntimes, nchan=cfg.sim.nchan_per_subband,
            nsubbands=cfg.band.nsubbands, stations=stations, obs=obs_index,
            rng=np.random.default_rng([cfg.sim.seed, 5000, obs_index]))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def write_truth(path: Path, cfg: Config, sky: Sky, gains: Gains | None, paths, *,
                transit_obs: int | None = None) -> Path:
    """The simulation's truth beside the data: sky, gains, noise, files per observation."""
    truth = {"sky": json.loads(sky.to_json()), "noise_jy": cfg.sim.noise_jy,
             "calibrator": cfg.sim.calibrator or None, "transit_obs": transit_obs,
             "start": cfg.sim.start,
             "dec_deg": cfg.sim.dec_deg, "seed": cfg.sim.seed,
             "observations": [[str(p) for p in obs] for obs in paths],
             "rfi": [ev for i in range(len(paths))
                     for ev in rfi_events(cfg, simulated_stations(cfg, Telescope(cfg)), i)],
             "rfi_amplitude_jy": cfg.sim.rfi_sigma * (cfg.sim.noise_jy or 1.0)}
    if gains is not None:
        truth["gains"] = {"stations": gains.stations, "real": gains.g.real.tolist(),
                          "imag": gains.g.imag.tolist(), "bandpass": gains.bp.tolist(),
                          "bandpass_model": "g(nu) = g (1 + b0 x + b1 x^2) exp(i b2 x), "
                                            "x = (nu - 1405 MHz) / 93.75 MHz"}
    path = Path(path)
    path.write_text(json.dumps(truth, indent=1))
    return path


def calibrator_run(cfg: Config, tel: Telescope):
    """With ``sim.calibrator`` set: (cfg with start and dec moved to the transit, calibrator).

    The start moves to the first transit after ``sim.start`` minus the offset that puts the
    transit in the middle of observation ``sim.transit_obs``; the pointing declination
    becomes the calibrator's apparent declination at transit plus
    ``sim.calibrator_offset_deg``, so the calibrator drifts through the beam off its axis as
    it does at the telescope.
    """
    from engine import calibrators
    from engine.config import load

    cal = calibrators.get(cfg.sim.calibrator)
    k = cfg.sim.transit_obs if cfg.sim.transit_obs >= 0 else cfg.sim.nobs // 2
    if k >= cfg.sim.nobs:
        raise ConfigError(f"sim.transit_obs = {k} is beyond sim.nobs = {cfg.sim.nobs}")
    if abs(cfg.sim.calibrator_offset_deg) > cfg.calibrate.max_offset_deg:
        raise ConfigError(f"sim.calibrator_offset_deg = {cfg.sim.calibrator_offset_deg} is "
                          f"beyond calibrate.max_offset_deg = {cfg.calibrate.max_offset_deg}: "
                          "the engine would not use the transit")
    t_in = Time(cfg.sim.start, format="isot", scale="utc").jd
    t_tr = calibrators.next_transit_jd(cal, t_in, tel.location)
    offset = (k * OBS_CADENCE_NTIMES + cfg.sim.ntimes / 2) * cfg.band.integration_s / 86400
    _, dec = calibrators.hour_angle_dec(cal, [t_tr], tel.location)
    flat = cfg.as_flat()
    flat.update({"sim.start": Time(t_tr - offset, format="jd").isot[:23],
                 "sim.dec_deg": float(np.rad2deg(dec[0])) + cfg.sim.calibrator_offset_deg})
    return load(None, flat), cal, k


def simulate_run(cfg: Config, out_dir: Path, *, calibrators=None, gains: bool = True,
                 truth_path: Path | None = None):
    """Simulate ``sim.nobs`` back-to-back observations; return (paths by obs, sky, gains).

    With ``sim.calibrator`` set, the run is moved so the calibrator transits in observation
    ``sim.transit_obs`` at the pointing declination, and the calibrator joins the sky.
    """
    tel = Telescope(cfg)
    transit_obs = None
    if cfg.sim.calibrator:
        cfg, cal, transit_obs = calibrator_run(cfg, tel)
        calibrators = list(calibrators or []) + [cal]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    listed = make_sky(cfg, tel, calibrators=calibrators)
    sky = vary_sky(listed, cfg.sim.variable)
    g = make_gains(cfg, simulated_stations(cfg, tel)) if gains else None
    all_paths = []
    for i, t0 in enumerate(obs_start_times_jd(cfg)):
        all_paths.append(simulate_observation(cfg, tel, t0, out_dir, sky=sky, gains=g,
                                              obs_index=i))
        log.info("simulated observation %d/%d (%s)", i + 1, cfg.sim.nobs,
                 Time(t0, format="jd").isot)
    if truth_path is not None:
        write_truth(truth_path, cfg, sky, g, all_paths, transit_obs=transit_obs)
        write_reference_catalog(Path(truth_path).with_name(REFERENCE_CATALOG), cfg, listed,
                                calibrators or [])
    return all_paths, sky, g


def vary_sky(sky: Sky, spec: str) -> Sky:
    """The sky of this run: ``sim.variable`` ("name:factor,...") multiplies the named
    sources' flux densities (a survey catalogue keeps listing the unvaried sky)."""
    flux = sky.flux_jy.copy()
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        name, _, factor = item.partition(":")
        if name not in sky.names:
            raise ConfigError(f"sim.variable: no source {name!r} in the simulated sky "
                              f"(it has {sky.names[:5]}...)")
        try:
            flux[sky.names.index(name)] *= float(factor)
        except ValueError:
            raise ConfigError(f"sim.variable: {item!r} is not name:factor") from None
    return replace(sky, flux_jy=flux)


REFERENCE_CATALOG = "sky.csv"


def write_reference_catalog(path: Path, cfg: Config, sky: Sky, calibrators) -> Path:
    """The simulated sky as a survey would list it, in the reference-catalogue format.

    Calibrators keep their catalogue values (they set the flux scale); field sources get a
    lognormal flux error of ``sim.catalog_flux_error``, as a survey catalogue is not the
    truth. The engine reads it through ``sky.reference_catalog``.
    """
    from engine.calibrators import Calibrator, write_catalog

    rng = np.random.default_rng(cfg.sim.seed + 7)
    cal_names = {c.name for c in calibrators}
    rows = []
    for name, ra, dec, s, a in zip(sky.names, sky.ra, sky.dec, sky.flux_jy,
                                   sky.spectral_index):
        err = 1.0 if name in cal_names else float(np.exp(rng.normal(0.0,
                                                                    cfg.sim.catalog_flux_error)))
        rows.append(Calibrator(name, float(ra), float(dec), float(s) * err, float(a)))
    write_catalog(path, rows, comment=f"simulated sky, seed {cfg.sim.seed}, field fluxes with "
                                      f"{cfg.sim.catalog_flux_error:.0%} rms errors")
    return Path(path)
