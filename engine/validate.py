"""Phase-centre validation of a Measurement Set that knows drift-scan phasing is normal.

Meridian phasing gives one FIELD per integration, each at the J2000 position of the
meridian at that time: consecutive fields are ~0.054 deg apart and a 309 s observation
spans ~1.3 deg. Those separations are reported as information, never as errors. What is
an error: UVW that do not follow from the antenna positions and each row's PHASE_DIR, or
a PHASE_DIR that is not where the data were phased (for meridian phasing, the meridian
at the pointing declination at the row's time).
"""

from __future__ import annotations

import logging

import numpy as np

from engine import geometry
from engine.constants import JD_TO_MJD
from engine.errors import ObservationError
from kernels.geometry import baseline_uvw_ms

log = logging.getLogger(__name__)

MJD_S_TO_JD = 1 / 86400.0


def _sep_arcsec(a, b):
    """Great-circle separation of (ra, dec) pairs in arcsec."""
    cos = (np.sin(a[..., 1]) * np.sin(b[..., 1])
           + np.cos(a[..., 1]) * np.cos(b[..., 1]) * np.cos(a[..., 0] - b[..., 0]))
    return np.rad2deg(np.arccos(np.clip(cos, -1, 1))) * 3600


def validate_phasing(geo: dict, location, *, dec_app_rad: float | None = None,
                     uvw_tol_m: float = 1e-3, dir_tol_arcsec: float = 1.0) -> dict:
    """Check UVW and PHASE_DIR of an MS (``geo`` from :func:`engine.msio.read_geometry`).

    Returns a report with the field separations; raises ObservationError on a real
    inconsistency.
    """
    t_jd = geo["TIME"] * MJD_S_TO_JD + JD_TO_MJD
    times, tidx = np.unique(t_jd, return_inverse=True)
    fields = geo["PHASE_DIR"]
    fid = geo["FIELD_ID"]
    # each integration must use one field
    pairs = np.unique(np.stack([tidx, fid], axis=1), axis=0)
    if np.unique(pairs[:, 0]).size != pairs.shape[0]:
        raise ObservationError("an integration mixes several phase centres")
    field_of_time = np.empty(times.size, dtype=int)
    field_of_time[pairs[:, 0]] = pairs[:, 1]
    dirs = fields[field_of_time]
    rot = geometry.uvw_frames(dirs[:, 0], dirs[:, 1], times, location)
    expect = baseline_uvw_ms(rot, geo["POSITION"], tidx, geo["ANTENNA1"], geo["ANTENNA2"])
    err = np.abs(expect - geo["UVW"]).max() if expect.size else 0.0
    if err > uvw_tol_m:
        raise ObservationError(f"UVW disagree with antenna positions and PHASE_DIR by up to "
                               f"{err:.4f} m (tolerance {uvw_tol_m} m)")
    report = {"nfields": int(fields.shape[0]), "uvw_max_error_m": float(err)}
    if fields.shape[0] > 1:
        step = _sep_arcsec(fields[1:], fields[:-1])
        report.update(field_step_arcsec_median=float(np.median(step)),
                      field_span_arcsec=float(_sep_arcsec(fields[0], fields[-1])))
        log.info("time-dependent phasing: %d fields, %.0f arcsec apart, %.0f arcsec in all "
                 "(expected for meridian drift scans)", fields.shape[0],
                 report["field_step_arcsec_median"], report["field_span_arcsec"])
    if dec_app_rad is not None and fields.shape[0] == times.size:
        ra, dec = geometry.meridian_icrs(times, dec_app_rad, location)
        off = _sep_arcsec(dirs, np.stack([ra, dec], axis=1)).max()
        report["phase_dir_vs_meridian_arcsec"] = float(off)
        if off > dir_tol_arcsec:
            raise ObservationError(f"PHASE_DIR is up to {off:.1f} arcsec from the meridian at "
                                   "the pointing declination, where the data are phased")
    return report
