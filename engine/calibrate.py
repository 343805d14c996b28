"""Calibration with CASA: transit detection (driver side) and solving (CASA workers).

An observation holds a calibrator when a catalog source within the primary beam of the
pointing declination reaches apparent hour angle 0 between the observation's first and
last integration. Its MS is converted with the calibrator at the phase centre; CASA then
solves a bandpass (per channel, normalised) and complex gains (per antenna and
polarization) against the model the dishes saw: the calibrator and the bright reference
sources, each through the primary beam at every integration and channel
(:mod:`engine.skymodel`). Tables are valid for windows in OBSERVATION time (MJD) around
the transit.

Sign convention: CASA's gains satisfy ``V_ij = G_i conj(G_j) M_ij`` for the MS's
ANTENNA1 = i, ANTENNA2 = j.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from engine import calibrators, faults
from engine.config import Config
from engine.constants import JD_TO_MJD
from engine.errors import CasaTaskError
from engine.paths import commit_dir, work_folder
from engine.skymodel import write_model

log = logging.getLogger(__name__)


def find_transit(start_jd: float, end_jd: float, dec_app_rad: float, location, cfg: Config):
    """The catalog calibrator transiting inside [start, end] near the pointing, or None.

    Returns ``(Calibrator, transit_jd)``. A calibrator counts when its apparent dec is
    within ``calibrate.max_offset_deg`` of the pointing declination.
    """
    best = None
    for cal in calibrators.load_catalog(cfg.calibrate.catalog).values():
        ha, dec = calibrators.hour_angle_dec(cal, [0.5 * (start_jd + end_jd)], location)
        if abs(np.rad2deg(dec[0] - dec_app_rad)) > cfg.calibrate.max_offset_deg:
            continue
        t = calibrators.next_transit_jd(cal, start_jd - 0.5, location)
        while t < start_jd:
            t = calibrators.next_transit_jd(cal, t + 0.01, location)
        if t <= end_jd and (best is None or cal.flux_jy > best[0].flux_jy):
            best = (cal, t)
    return best


def antennas_with_data(ct, ms: str) -> np.ndarray:
    tb = ct.table()
    tb.open(ms)
    used = np.unique(np.concatenate([tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")]))
    tb.close()
    return used


def pick_refant(ct, ms: str, wanted: str) -> str:
    """The configured reference antenna, or the data antenna nearest the array centre."""
    tb = ct.table()
    tb.open(f"{ms}/ANTENNA")
    names = list(tb.getcol("NAME"))
    pos = tb.getcol("POSITION").T
    tb.close()
    if wanted:
        if wanted not in names:
            raise CasaTaskError(f"{ms}: reference antenna {wanted} has no data row")
        return wanted
    used = antennas_with_data(ct, ms)
    centre = pos[used].mean(axis=0)
    return names[int(used[np.argmin(np.linalg.norm(pos[used] - centre, axis=1))])]


def _table_qa(ct, path: str, used) -> dict:
    """Flagged fraction and median SNR over the antennas that have data."""
    tb = ct.table()
    tb.open(path)
    keep = np.isin(tb.getcol("ANTENNA1"), used)
    flags = tb.getcol("FLAG")[..., keep]
    snr = tb.getcol("SNR")[..., keep]
    tb.close()
    good = snr[~flags]
    return {"flagged_fraction": float(flags.mean()),
            "snr_median": float(np.median(good)) if good.size else 0.0}


def solve(ms: str, out_dir: str, cfg: Config, *, obs_id: str, cal: dict) -> dict:
    """Solve bandpass and gains on the calibrator observation's MS.

    ``cal`` has name, ra_rad, dec_rad, flux_jy, spectral_index, transit_jd. Writes
    ``<obs_id>.B`` and ``<obs_id>.G`` into ``out_dir`` (temporary folder + rename) and
    returns a manifest with paths, sha256, sizes, QA and validity windows in MJD.
    """
    from engine.casaenv import import_casatools

    ct = import_casatools()
    import casatasks

    t0 = time.perf_counter()
    faults.check("calibrate.start", obs_id)
    c = cfg.calibrate
    out_dir = Path(out_dir)
    with work_folder(out_dir) as work:
        refant = pick_refant(ct, ms, c.refant)
        bp, g = str(work / f"{obs_id}.B"), str(work / f"{obs_id}.G")
        try:
            with contextlib.chdir(work):  # CASA drops helper files in the working directory
                model = write_model(ct, ms, cal, cfg)
                casatasks.bandpass(vis=ms, caltable=bp, solint="inf", combine="scan,field",
                                   refant=refant, minsnr=c.minsnr, solnorm=True,
                                   bandtype="B", uvrange=c.uvrange)
                casatasks.gaincal(vis=ms, caltable=g, solint=c.gain_solint,
                                  combine="scan,field", refant=refant, calmode="ap",
                                  minsnr=c.minsnr, gaintable=[bp], uvrange=c.uvrange)
        except RuntimeError as exc:
            raise CasaTaskError(f"calibration of {ms}: {exc}") from None
        for t in (bp, g):
            if not Path(t).exists():
                raise CasaTaskError(f"calibration of {ms} wrote no {Path(t).name}")
        used = antennas_with_data(ct, ms)
        qa = {"bandpass": _table_qa(ct, bp, used), "gains": _table_qa(ct, g, used),
              "refant": refant, "model": model,
              "solve_s": time.perf_counter() - t0}
        tables = commit_dir(work, out_dir, {"bandpass": Path(bp).name, "gains": Path(g).name})
    transit_mjd = cal["transit_jd"] - JD_TO_MJD
    for kind, half in (("bandpass", c.bandpass_valid_h), ("gains", c.gain_valid_h)):
        tables[kind].update(valid_from_mjd=transit_mjd - half / 24.0,
                            valid_to_mjd=transit_mjd + half / 24.0)
    return {"obs_id": obs_id, "calibrator": cal["name"], "transit_mjd": transit_mjd,
            "tables": tables, "qa": qa}


def apply(ct, casatasks, ms: str, caltables: list[str]):
    """applycal the given tables (CORRECTED_DATA); each table must exist and open."""
    tb = ct.table()
    for t in caltables:
        if not Path(t).exists():
            raise CasaTaskError(f"calibration table {t} is missing")
        try:
            tb.open(t)
            tb.close()
        except RuntimeError as exc:
            raise CasaTaskError(f"calibration table {t} does not open: {exc}") from None
    try:
        casatasks.applycal(vis=ms, gaintable=list(caltables),
                           interp=["nearest"] * len(caltables), calwt=False,
                           applymode="calflag", flagbackup=False)
    except RuntimeError as exc:
        raise CasaTaskError(f"applycal on {ms}: {exc}") from None
