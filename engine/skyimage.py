"""Synthetic sky images for testing source finders and catalogue QA, independent of the
engine's imaging: point sources convolved with an elliptical Gaussian restoring beam, on
noise correlated by the same beam (as a synthesis image's noise is), SIN projection.

Units: Jy/beam; angles in degrees unless named _arcsec; the beam as FWHM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def _gaussian(shape, x0, y0, bmaj_px, bmin_px, bpa_deg):
    """Unit-peak elliptical Gaussian; bpa east of north, i.e. from +y towards -x (RA)."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    t = np.deg2rad(bpa_deg)
    dx, dy = x - x0, y - y0
    u = -dx * np.sin(t) + dy * np.cos(t)  # along the major axis
    v = dx * np.cos(t) + dy * np.sin(t)
    return np.exp(-0.5 * ((u / (bmaj_px * FWHM_TO_SIGMA)) ** 2
                          + (v / (bmin_px * FWHM_TO_SIGMA)) ** 2))


def random_sources(rng, n: int, wcs, shape, *, snr_min: float, snr_max: float, rms: float,
                   min_sep_px: float, margin_px: float) -> list[tuple[float, float, float]]:
    """n sources, (ra_deg, dec_deg, peak_jy), peaks log-uniform in S/N, at least
    min_sep_px apart and margin_px from the edges."""
    ny, nx = shape
    xy = []
    while len(xy) < n:
        x, y = rng.uniform(margin_px, nx - margin_px), rng.uniform(margin_px, ny - margin_px)
        if all((x - a) ** 2 + (y - b) ** 2 >= min_sep_px ** 2 for a, b in xy):
            xy.append((x, y))
    xs, ys = np.array(xy).T
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    snr = np.exp(rng.uniform(np.log(snr_min), np.log(snr_max), n))
    return [(float(a), float(d), float(s * rms)) for a, d, s in zip(ra, dec, snr)]


def sky_wcs(n, cell_arcsec: float, ra_deg: float, dec_deg: float) -> WCS:
    """SIN projection centred on (ra_deg, dec_deg); ``n``: side, or (ny, nx)."""
    ny, nx = (n, n) if np.isscalar(n) else n
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [ra_deg, dec_deg]
    w.wcs.crpix = [nx / 2 + 1, ny / 2 + 1]
    w.wcs.cdelt = [-cell_arcsec / 3600, cell_arcsec / 3600]
    return w


def write_image(path: Path, wcs, n, beam_arcsec: tuple[float, float, float],
                rms: float, sources, rng) -> np.ndarray:
    """Write the image (float32 FITS with BMAJ/BMIN/BPA) and return its data (ny, nx);
    ``n``: side, or (ny, nx).

    The noise is white noise convolved with the beam, scaled to ``rms`` Jy/beam. Each source
    is added on a stamp of +-4 FWHM around it (the Gaussian is below 1e-11 of its peak
    beyond)."""
    ny, nx = (n, n) if np.isscalar(n) else n
    cell = abs(wcs.wcs.cdelt[1]) * 3600
    bmaj, bmin, bpa = beam_arcsec[0] / cell, beam_arcsec[1] / cell, beam_arcsec[2]
    kern = _gaussian((ny, nx), nx // 2, ny // 2, bmaj, bmin, bpa)
    white = rng.normal(size=(ny, nx))
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * np.fft.fft2(np.fft.ifftshift(kern))))
    del white, kern
    data = noise * (rms / noise.std())
    half = int(np.ceil(4 * max(bmaj, bmin)))
    if len(sources):
        xs, ys = wcs.all_world2pix([s[0] for s in sources], [s[1] for s in sources], 0)
        for (ra, dec, peak), x, y in zip(sources, xs, ys):
            x0, y0 = max(0, int(x) - half), max(0, int(y) - half)
            x1, y1 = min(nx, int(x) + half + 1), min(ny, int(y) + half + 1)
            if x1 <= x0 or y1 <= y0:
                continue  # off the image
            data[y0:y1, x0:x1] += peak * _gaussian((y1 - y0, x1 - x0), x - x0, y - y0,
                                                   bmaj, bmin, bpa)
    hdr = wcs.to_header()
    hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = beam_arcsec[0] / 3600, beam_arcsec[1] / 3600, bpa
    hdr["BUNIT"] = "Jy/beam"
    fits.PrimaryHDU(data.astype(np.float32), hdr).writeto(path, overwrite=True)
    return data
