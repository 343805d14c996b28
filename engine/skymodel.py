"""The calibrator's model as the dishes saw it, written into MODEL_DATA (CASA workers).

CASA's ``ft`` of a component list models a source as if it sat on the beam axis. DSA-110
points at a fixed declination and the sky drifts through the 2.7 deg primary beam, so a
calibrator 0.57 deg off the pointing declination is seen at 0.889 of its flux at 1.405 GHz,
0.903 at 1.31 GHz and 0.874 at 1.50 GHz, and its response changes from integration to
integration as it drifts. Solving against an on-axis model puts 1/0.889 into every gain and a
3 % slope into the bandpass. Here every model source carries

    S(t, nu) = S_1.4 (nu / 1.4 GHz)^alpha * B(theta(t), nu)

with ``B`` the telescope's primary beam (:func:`engine.telescope.primary_beam`) at the
source's angle ``theta`` from the pointing of integration ``t`` (the MS's POINTING table),
predicted on the MS's own UVW by the numba kernel :func:`kernels.predict.predict_model`.
The calibrator is joined by every reference-catalogue source whose apparent flux reaches
``calibrate.model_min_flux_jy``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engine import calibrators
from engine.config import Config
from engine.errors import CasaTaskError
from engine.telescope import primary_beam
from kernels.predict import lmn_offsets, predict_model

log = logging.getLogger(__name__)

# rows predicted and written per block: bounds memory at full scale (768 channels)
ROWS_PER_BLOCK = 8192


@dataclass(frozen=True)
class MSLayout:
    """What the model needs from an MS: rows' integration and field, channels, pointing."""

    uvw: np.ndarray  # (Nrows, 3) m, MS convention
    row_time: np.ndarray  # (Nrows,) index into times
    row_field: np.ndarray  # (Nrows,) index into fields
    times: np.ndarray  # (Ntimes,) MJD seconds
    freqs: np.ndarray  # (Nchan,) Hz
    fields: np.ndarray  # (Nfield, 2) J2000 phase centres (rad)
    pointing: np.ndarray  # (Ntimes, 2) J2000 pointing centre per integration (rad)
    npol: int
    chan_width: np.ndarray | None = None  # (Nchan,) Hz, positive; None: no smearing model
    average: int = 1  # recorded channels in each MS channel (MS keyword DSA110_CHAN_AVERAGE)


def read_layout(ct, ms: str) -> MSLayout:
    """Read the row geometry, channels, phase centres and per-integration pointing."""
    tb = ct.table()
    tb.open(ms)
    try:
        uvw = tb.getcol("UVW").T.copy()
        t = tb.getcol("TIME")
        field = tb.getcol("FIELD_ID")
        npol = int(tb.getcell("DATA", 0).shape[0]) if tb.nrows() else 0
        kws = tb.keywordnames()
        average = int(tb.getkeyword("DSA110_CHAN_AVERAGE")) if "DSA110_CHAN_AVERAGE" in kws \
            else 1
    finally:
        tb.close()
    times, row_time = np.unique(t, return_inverse=True)
    tb.open(f"{ms}/SPECTRAL_WINDOW")
    freqs = tb.getcol("CHAN_FREQ")[:, 0].astype(np.float64)
    widths = np.abs(tb.getcol("CHAN_WIDTH")[:, 0].astype(np.float64))
    tb.close()
    tb.open(f"{ms}/FIELD")
    fields = tb.getcol("PHASE_DIR")[:, 0, :].T.copy()
    tb.close()
    tb.open(f"{ms}/POINTING")
    try:
        if tb.nrows() == 0:
            raise CasaTaskError(f"{ms}: the POINTING table is empty, so the primary-beam "
                                "response of the model sources cannot be known")
        pt = tb.getcol("TIME")
        pd = tb.getcol("DIRECTION")[:, 0, :].T
    finally:
        tb.close()
    nearest = np.abs(pt[None, :] - times[:, None]).argmin(axis=1)
    return MSLayout(uvw, row_time, field.astype(np.int64), times, freqs, fields,
                    pd[nearest], npol, widths, average)


def angular_distance(ra1, dec1, ra2, dec2):
    """Great-circle distance (rad) between positions (rad), broadcasting (haversine)."""
    s = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return 2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0)))


def apparent_flux(sources, pointing, freqs, cfg: Config) -> np.ndarray:
    """(Ntimes, Nsrc, Nchan) flux density (Jy) through the primary beam.

    ``sources``: objects with ra_rad, dec_rad, flux_jy, spectral_index (1.4 GHz);
    ``pointing``: (Ntimes, 2) J2000 pointing per integration (rad); ``freqs``: Hz.
    """
    ra = np.array([s.ra_rad for s in sources])
    dec = np.array([s.dec_rad for s in sources])
    theta = angular_distance(pointing[:, 0:1], pointing[:, 1:2], ra[None, :], dec[None, :])
    spec = np.array([s.flux_jy * (freqs / 1.4e9) ** s.spectral_index for s in sources])
    beam = primary_beam(np.sin(theta)[:, :, None], freqs[None, None, :], cfg)
    return spec[None, :, :] * beam


def catalogue_in_field(layout: MSLayout, cfg: Config, min_flux_jy: float,
                       with_flux: bool = False) -> list:
    """Reference-catalogue sources whose apparent flux density at the band centre and the
    middle integration reaches ``min_flux_jy`` (Jy), brightest first; with ``with_flux``,
    (source, apparent Jy) pairs."""
    name = cfg.sky.reference_catalog
    cat = list(calibrators.load_catalog(name).values()) if name else []
    if not cat:
        return []
    mid = layout.pointing[len(layout.pointing) // 2][None, :]
    fc = np.array([float(np.median(layout.freqs))])
    app = apparent_flux(cat, mid, fc, cfg)[0, :, 0]
    order = [i for i in np.argsort(-app) if app[i] >= min_flux_jy]
    return [(cat[i], float(app[i])) if with_flux else cat[i] for i in order]


def model_sources(cal: dict, layout: MSLayout, cfg: Config) -> list:
    """The calibrator, plus reference-catalogue sources bright enough through the beam.

    A catalogue source joins when its apparent flux at the band centre and the middle
    integration reaches ``calibrate.model_min_flux_jy``; the calibrator itself (matched by
    name or within 10 arcsec) is taken from ``cal``.
    """
    main = calibrators.Calibrator(cal["name"], cal["ra_rad"], cal["dec_rad"], cal["flux_jy"],
                                  cal["spectral_index"])
    out = [main]
    for s in catalogue_in_field(layout, cfg, cfg.calibrate.model_min_flux_jy):
        d = angular_distance(s.ra_rad, s.dec_rad, main.ra_rad, main.dec_rad)
        if s.name != main.name and d > np.deg2rad(10 / 3600):
            out.append(s)
    return out


def predict_into_model(ct, ms: str, srcs: list, cfg: Config, lay: MSLayout | None = None):
    """Write the beam-attenuated model of ``srcs`` into MODEL_DATA (created if absent), with
    the bandwidth smearing of the MS's channels (:func:`kernels.predict.predict_model`).

    Returns the apparent fluxes used, (Ntimes, Nsrc, Nchan) Jy, and the layout.
    """
    lay = lay or read_layout(ct, ms)
    flux = apparent_flux(srcs, lay.pointing, lay.freqs, cfg)  # (Nt, Nsrc, Nchan)
    lmn = lmn_offsets([s.ra_rad for s in srcs], [s.dec_rad for s in srcs],
                      lay.fields[:, 0], lay.fields[:, 1])
    # the correlator phased each integration to the meridian, the pointing: the recorded
    # channels were smeared relative to it (Nfield, Ntimes, 3)
    corr = lmn_offsets(lay.pointing[:, 0], lay.pointing[:, 1], lay.fields[:, 0],
                       lay.fields[:, 1])
    tb = ct.table()
    tb.open(ms, nomodify=False)
    try:
        if "MODEL_DATA" not in tb.colnames():
            _add_model_column(tb)
        nrow = tb.nrows()
        for r0 in range(0, nrow, ROWS_PER_BLOCK):
            r1 = min(nrow, r0 + ROWS_PER_BLOCK)
            rt, rf = lay.row_time[r0:r1], lay.row_field[r0:r1]
            d_corr = np.einsum("rk,rk->r", lay.uvw[r0:r1], corr[rf, rt])
            v = predict_model(lay.uvw[r0:r1], lay.freqs, rt, rf, lmn, flux,
                              chan_width_hz=lay.chan_width, average=lay.average,
                              corr_delay_m=d_corr)  # (rows, chans), smeared
            block = np.broadcast_to(v.T[None, :, :], (lay.npol,) + v.T.shape)
            tb.putcol("MODEL_DATA", np.ascontiguousarray(block), startrow=r0, nrow=r1 - r0)
    except RuntimeError as exc:
        raise CasaTaskError(f"{ms}: writing MODEL_DATA failed: {exc}") from None
    finally:
        tb.close()
    return flux, lay


def write_model(ct, ms: str, cal: dict, cfg: Config) -> dict:
    """The calibrator's model (calibrator + bright field sources) into MODEL_DATA.

    Returns a summary: sources used, the calibrator's apparent/catalogue flux ratio at the
    band edges and centre and over the observation, and the time spent.
    """
    import time

    t0 = time.perf_counter()
    lay = read_layout(ct, ms)
    srcs = model_sources(cal, lay, cfg)
    flux, lay = predict_into_model(ct, ms, srcs, cfg, lay)
    spec = srcs[0].flux_jy * (lay.freqs / 1.4e9) ** srcs[0].spectral_index
    ratio = flux[:, 0, :].mean(axis=0) / spec  # calibrator's beam response per channel
    per_time = flux[:, 0, :].mean(axis=1) / spec.mean()
    lo, hi = int(np.argmin(lay.freqs)), int(np.argmax(lay.freqs))
    summary = {"sources": [s.name for s in srcs],
               "calibrator_beam_low": float(ratio[lo]), "calibrator_beam_high": float(ratio[hi]),
               "calibrator_beam_mean": float(ratio.mean()),
               "calibrator_beam_time_range": [float(per_time.min()), float(per_time.max())],
               "model_s": time.perf_counter() - t0}
    log.info("%s: model of %d source(s); calibrator beam response %.3f (low) .. %.3f (high)",
             ms, len(srcs), summary["calibrator_beam_low"], summary["calibrator_beam_high"])
    return summary


def _add_model_column(tb) -> None:
    """MODEL_DATA with DATA's description, in its own tiled storage manager."""
    desc = dict(tb.getcoldesc("DATA"))
    desc.update(dataManagerType="TiledShapeStMan", dataManagerGroup="TiledMODEL_DATA",
                comment="model: catalogue sources through the primary beam")
    npol, nchan = (int(x) for x in desc["shape"])
    rows = max(1, (1 << 20) // (8 * npol * nchan))
    tb.addcols({"MODEL_DATA": desc}, {"TYPE": "TiledShapeStMan", "NAME": "TiledMODEL_DATA",
                                      "SPEC": {"DEFAULTTILESHAPE": [npol, nchan, rows]}})
