"""Forced photometry of catalogue sources in a per-observation image.

For every reference-catalogue source inside the image where the drift-averaged primary beam
(the image's ``pb`` file) is at least ``photometry.min_pb``: the restoring beam's amplitude
at the catalogue position (``kernels.photometry``, a matched filter), divided by the beam
there. Flux densities are at the image's frequency (the band centre), in Jy; errors are the
local noise of the residual image (robust rms in a box of ``photometry.noise_box_beams``
beams around the source) divided by the beam, plus ``photometry.flux_error_frac`` of the flux
in quadrature (the flux scale's own uncertainty).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from engine.config import Config
from kernels.photometry import forced_peaks


def _beam_in_pixels(hdr) -> tuple[float, float, float, float]:
    """(a, b, c) of the inverse beam covariance in pixel units, and the beam FWHM in pixels
    (geometric mean), from BMAJ/BMIN/BPA and CDELT1/2 (deg)."""
    from engine.beams import covariance

    inv = np.linalg.inv(covariance(hdr["BMAJ"], hdr["BMIN"], hdr.get("BPA", 0.0)))
    d1, d2 = hdr["CDELT1"], hdr["CDELT2"]
    fwhm_pix = math.sqrt(hdr["BMAJ"] * hdr["BMIN"]) / abs(d2)
    return inv[0, 0] * d1 * d1, inv[0, 1] * d1 * d2, inv[1, 1] * d2 * d2, fwhm_pix


def _local_rms(resid, x, y, half) -> float:
    """Robust rms (1.4826 x MAD) of the residual within +-half pixels of (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    box = resid[max(0, iy - half):iy + half + 1, max(0, ix - half):ix + half + 1]
    box = box[np.isfinite(box)]
    if box.size < 10:
        return float("nan")
    return float(1.4826 * np.median(np.abs(box - np.median(box))))


def measure_image(image: Path, pb: Path, residual: Path, sources, cfg: Config) -> list[dict]:
    """Forced photometry of ``sources`` (objects with name, ra_rad, dec_rad) in one image.

    Returns one dict per measured source: name, ra_deg, dec_deg, flux_jy, err_jy (primary
    beam corrected), apparent_jy (Jy/beam, as in the image), pb, rms_jy, x, y (pixels).
    """
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    pcfg = cfg.photometry
    with fits.open(image) as h:
        hdr = h[0].header
        img = np.ascontiguousarray(np.squeeze(h[0].data), dtype=np.float64)
    beam = np.squeeze(fits.getdata(pb)).astype(np.float64)
    resid = np.squeeze(fits.getdata(residual)).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr).celestial
    sources = list(sources)
    if not sources:
        return []
    ra = np.rad2deg([s.ra_rad for s in sources])
    dec = np.rad2deg([s.dec_rad for s in sources])
    xs, ys = (np.asarray(v, dtype=np.float64) for v in wcs.all_world2pix(ra, dec, 0))
    a, b, c, fwhm = _beam_in_pixels(hdr)
    half = max(2, int(math.ceil(fwhm)))  # the fit box: +-1 FWHM
    noise_half = max(8, int(math.ceil(pcfg.noise_box_beams * fwhm / 2)))
    ny, nx = img.shape
    inside = (xs >= half) & (xs < nx - half) & (ys >= half) & (ys < ny - half)
    pbv = np.full(len(sources), np.nan)
    pbv[inside] = beam[np.round(ys[inside]).astype(int), np.round(xs[inside]).astype(int)]
    keep = inside & np.isfinite(pbv) & (pbv >= pcfg.min_pb)
    amp, used = forced_peaks(img, xs, ys, a, b, c, half)
    out = []
    for i in np.flatnonzero(keep & np.isfinite(amp)):
        rms = _local_rms(resid, xs[i], ys[i], noise_half)
        if not np.isfinite(rms):
            continue
        flux = amp[i] / pbv[i]
        err = math.hypot(rms / pbv[i], pcfg.flux_error_frac * flux)
        out.append({"name": sources[i].name, "ra_deg": float(ra[i]), "dec_deg": float(dec[i]),
                    "flux_jy": float(flux), "err_jy": float(err),
                    "apparent_jy": float(amp[i]), "pb": float(pbv[i]), "rms_jy": rms,
                    "x": float(xs[i]), "y": float(ys[i])})
    return out


def catalogue(cfg: Config) -> list:
    """The sources to measure: ``sky.reference_catalog``, else the calibrator catalogue."""
    from engine import calibrators

    return list(calibrators.load_catalog(cfg.sky.reference_catalog
                                         or "calibrators.csv").values())


def measure_products(files: dict, cfg: Config, extra_sources=()) -> dict:
    """Forced photometry of the catalogue and of ``extra_sources`` (dicts with name, ra_deg,
    dec_deg: sources found before that the catalogue lacks) in an image task's files
    (``image``, ``pb``, ``residual``, each with its ``path``): {"rows": [...], "catalogue":
    n sources, "seconds": wall time}."""
    import time

    from engine.calibrators import Calibrator

    t0 = time.perf_counter()
    srcs = catalogue(cfg)
    known = {s.name for s in srcs}
    srcs += [Calibrator(e["name"], math.radians(e["ra_deg"]), math.radians(e["dec_deg"]),
                        float("nan"), 0.0) for e in extra_sources if e["name"] not in known]
    rows = measure_image(Path(files["image"]["path"]), Path(files["pb"]["path"]),
                         Path(files["residual"]["path"]), srcs, cfg)
    return {"rows": rows, "catalogue": len(srcs), "seconds": time.perf_counter() - t0}
