"""Bright sources out of the visibilities before cleaning, and back into the image after.

A source drifting through DSA-110's primary beam changes its apparent brightness during the
observation (8 % for a source 0.3 deg off the pointing declination over 309 s) and across
the band. Clean models a constant sky, so it cannot remove such a source's sidelobes:
measured on simulated observations, an 8 Jy source left the residual at 1.40 x the thermal
noise with tclean and WSClean alike (1.10 x without it; docs/IMAGING.md). Reference-catalogue
sources whose apparent flux reaches ``image.subtract_min_flux_jy`` are therefore predicted
through the primary beam at every integration and channel (the calibrator model's kernel),
subtracted from CORRECTED_DATA (CASA ``uvsub``), and restored into the image afterwards as
Gaussians of the restoring beam at their time-averaged apparent flux. Whatever the catalogue
got wrong (a few per cent) stays in the data and is cleaned as usual.

Sources outside the image (its 1.7 deg at full scale against a 10 % beam level 5.4 deg
across) cannot be cleaned at all, and the snapshot PSF's far sidelobes (1 % rms, arms to
7 %) carry them across it: one of 0.93 Jy apparent beyond the edge of a full-scale image
left its residual at 2.4 x thermal, 1.06 x once subtracted (docs/IMAGING.md). Catalogue
sources outside the image down to ``image.subtract_outside_min_jy`` are subtracted the same
way and not restored.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from engine.beams import covariance
from engine.config import Config
from engine.errors import CasaTaskError
from engine.skymodel import catalogue_in_field, predict_into_model, read_layout

log = logging.getLogger(__name__)


def outside_image(ra_rad, dec_rad, centre, half_width_rad: float) -> np.ndarray:
    """True where a direction (rad, J2000) falls outside a square SIN image: its direction
    cosines (l east, m north) from ``centre`` (ra, dec rad) beyond ``half_width_rad`` in
    either axis, or behind the tangent plane (n <= 0)."""
    ra0, dec0 = centre
    ra, dec = np.asarray(ra_rad, float), np.asarray(dec_rad, float)
    dra = ra - ra0
    l_ = np.cos(dec) * np.sin(dra)
    m_ = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    n_ = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(dra)
    return (np.abs(l_) > half_width_rad) | (np.abs(m_) > half_width_rad) | (n_ <= 0)


def missing_catalogue_warning(cfg) -> str | None:
    """The warning a run without ``sky.reference_catalog`` deserves while a subtraction rule
    is on (None otherwise): nothing can be subtracted, so a bright source in the field, or
    one outside the image within the primary beam, leaves its sidelobes in every residual
    (a full-scale image 5-12 x thermal, measured 2026-12-02; QA then refuses it)."""
    if cfg.sky.reference_catalog:
        return None
    im = cfg.image
    if im.subtract_min_flux_jy <= 0 and im.subtract_outside_min_jy <= 0:
        return None
    return ("no sky.reference_catalog: no bright source and no source outside the image "
            "will be subtracted (image.subtract_min_flux_jy, image.subtract_outside_min_jy); "
            "their sidelobes stay in the residuals. Point sky.reference_catalog at a survey "
            "catalogue")


def subtract_bright(ct, casatasks, ms: str, cfg: Config, image=None) -> list[dict]:
    """Subtract catalogue sources clean cannot model from CORRECTED_DATA; return them.

    Two kinds: sources at least ``image.subtract_min_flux_jy`` bright (apparent), anywhere,
    restored into the image afterwards; and, given the image's footprint ``image`` =
    ((ra, dec) centre rad, half width rad), sources outside it at least
    ``image.subtract_outside_min_jy`` bright, whose sidelobes would otherwise stay in the
    residual (they are not restored: the image does not hold them).

    Each entry: name, ra_rad, dec_rad (J2000), ``apparent_jy`` (the time average of catalogue
    flux x primary beam at the image's reference frequency (mid-band) for Taylor-term
    imaging, over the band otherwise) and ``restore`` (bool).
    """
    bright = cfg.image.subtract_min_flux_jy
    outside_limit = cfg.image.subtract_outside_min_jy if image is not None else 0.0
    limits = [x for x in (bright, outside_limit) if x > 0]
    if not limits or not cfg.sky.reference_catalog:
        return []
    lay = read_layout(ct, ms)
    cands = catalogue_in_field(lay, cfg, min(limits), with_flux=True)
    if not cands:
        return []
    if image is not None:
        out = outside_image([c.ra_rad for c, _ in cands], [c.dec_rad for c, _ in cands],
                            *image)
    else:
        out = np.zeros(len(cands), bool)
    keep = [(c, bool(o)) for (c, f), o in zip(cands, out)
            if (bright > 0 and f >= bright) or (o and outside_limit > 0 and f >= outside_limit)]
    if not keep:
        return []
    srcs = [c for c, _ in keep]
    flux, lay = predict_into_model(ct, ms, srcs, cfg, lay)
    try:
        casatasks.uvsub(vis=ms)
    except RuntimeError as exc:
        raise CasaTaskError(f"uvsub on {ms}: {exc}") from None
    if cfg.image.nterms > 1:
        fref = 0.5 * (lay.freqs.min() + lay.freqs.max())
        order = np.argsort(lay.freqs)
        app = [float(np.mean([np.interp(fref, lay.freqs[order], flux[t, k, order])
                              for t in range(flux.shape[0])])) for k in range(len(srcs))]
    else:
        app = [float(flux[:, k, :].mean()) for k in range(len(srcs))]
    res = [{"name": s.name, "ra_rad": s.ra_rad, "dec_rad": s.dec_rad, "apparent_jy": a,
            "restore": not o} for (s, o), a in zip(keep, app)]
    log.info("%s: subtracted %s before cleaning", ms,
             ", ".join(f"{o['name']} ({o['apparent_jy']:.2f} Jy apparent"
                       f"{'' if o['restore'] else ', outside the image'})" for o in res))
    return res


def restore_sources(fits_path, sources: list[dict]) -> None:
    """Add each subtracted source back into the FITS image as a Gaussian of its restoring
    beam (BMAJ, BMIN, BPA) with peak ``apparent_jy`` (Jy/beam)."""
    if not sources:
        return
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with fits.open(fits_path, mode="update") as hdul:
        h = hdul[0].header
        data = hdul[0].data
        img = data.reshape(data.shape[-2:]) if data.ndim > 2 else data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(h).celestial
        inv = np.linalg.inv(covariance(h["BMAJ"], h["BMIN"], h.get("BPA", 0.0)))
        ny, nx = img.shape
        for s in sources:
            x0, y0 = (float(v) for v in wcs.world_to_pixel(
                SkyCoord(s["ra_rad"] * u.rad, s["dec_rad"] * u.rad)))
            r = int(np.ceil(3 * h["BMAJ"] / abs(h["CDELT2"])))
            xs = np.arange(max(0, int(x0) - r), min(nx, int(x0) + r + 2))
            ys = np.arange(max(0, int(y0) - r), min(ny, int(y0) + r + 2))
            if not xs.size or not ys.size:
                continue
            east = (xs[None, :] - x0) * h["CDELT1"]
            north = (ys[:, None] - y0) * h["CDELT2"]
            q = inv[0, 0] * east ** 2 + 2 * inv[0, 1] * east * north + inv[1, 1] * north ** 2
            img[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += (s["apparent_jy"]
                                                        * np.exp(-0.5 * q)).astype(img.dtype)
        h["HISTORY"] = ("restored after subtraction through the primary beam: "
                        + ", ".join(s["name"] for s in sources))[:70]
