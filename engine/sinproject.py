"""SIN-projection geometry for reprojecting one image onto another grid without SkyCoord.

An image on a SIN (orthographic) grid with reference (alpha0, delta0) and no PV terms has,
for a sky direction of unit vector e (equatorial), the direction cosines
``(l, m, n) = R e`` with ``R`` rows ``e_alpha = (-sin a0, cos a0, 0)``,
``e_delta = (-sin d0 cos a0, -sin d0 sin a0, cos d0)`` and
``e_r = (cos d0 cos a0, cos d0 sin a0, sin d0)``: l towards east, m towards north, n
towards the reference (FITS paper II, SIN with LONPOLE 180). Its intermediate world
coordinates are ``(x, y) = (l, m)`` in degrees x 180/pi, and its pixels (FITS paper I)
``x_i = CDELT_i sum_j PC_ij (p_j - CRPIX_j)``. A pixel of one SIN grid therefore maps to
another's by a 2x2 matrix, a 3x3 rotation and a 2x2 matrix: :func:`frames` builds them for
:func:`kernels.mosaic.accumulate_sin`. Pixels are 0-based here (astropy's convention), x
along the first FITS axis.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS


def is_plain_sin(w: WCS) -> bool:
    """True for a celestial RA/Dec SIN grid this module maps exactly: no PV terms (no
    slant, NCP), no distortions, LONPOLE 180 (the default for a reference below the pole)."""
    ctype = [c.upper() for c in w.wcs.ctype]
    if w.naxis != 2 or ctype != ["RA---SIN", "DEC--SIN"]:
        return False
    if any(v != 0 for _, _, v in w.wcs.get_pv()) or w.has_distortion:
        return False
    w.wcs.set()
    return bool(np.isclose(w.wcs.lonpole, 180.0)) and abs(w.wcs.crval[1]) < 90.0


def _rotation(w: WCS) -> np.ndarray:
    a0, d0 = np.deg2rad(w.wcs.crval[:2])
    return np.array([[-np.sin(a0), np.cos(a0), 0.0],
                     [-np.sin(d0) * np.cos(a0), -np.sin(d0) * np.sin(a0), np.cos(d0)],
                     [np.cos(d0) * np.cos(a0), np.cos(d0) * np.sin(a0), np.sin(d0)]])


def _linear(w: WCS) -> np.ndarray:
    """Pixel offsets -> (l, m) in radians: diag(CDELT) PC x pi/180 (a CD matrix too)."""
    w.wcs.set()
    return np.deg2rad(w.wcs.get_cdelt()[:, None] * w.wcs.get_pc())


def same_frame(a: WCS, b: WCS) -> bool:
    """Both grids in one celestial reference system (RADESYS and, for FK4/FK5, EQUINOX)."""
    a.wcs.set()
    b.wcs.set()
    if a.wcs.radesys.strip().upper() != b.wcs.radesys.strip().upper():
        return False
    return a.wcs.radesys.strip().upper() not in ("FK4", "FK5") or a.wcs.equinox == b.wcs.equinox


def frames(w_out: WCS, w_in: WCS):
    """(out_lin, out_c, rot, in_lin, in_c) mapping output pixels to input pixels (see
    :func:`kernels.mosaic.accumulate_sin`), or None when either grid is not a plain SIN
    grid in the same frame (then map with astropy)."""
    if not (is_plain_sin(w_out) and is_plain_sin(w_in) and same_frame(w_out, w_in)):
        return None
    out_lin = _linear(w_out)
    in_lin = np.linalg.inv(_linear(w_in))
    rot = _rotation(w_in) @ _rotation(w_out).T
    return (out_lin, np.asarray(w_out.wcs.crpix[:2], float) - 1.0, rot, in_lin,
            np.asarray(w_in.wcs.crpix[:2], float) - 1.0)


def footprint(w_in: WCS, shape_in, w_out: WCS, shape_out, pad: int = 2):
    """(y0, y1, x0, x1): the output pixels an input image of ``shape_in`` (ny, nx) can
    cover, from its border mapped through astropy (a continuous map of a rectangle has the
    bounding box of its border), padded and clipped to ``shape_out``; None if it misses."""
    ny, nx = shape_in
    xs = np.concatenate([np.arange(nx), np.arange(nx), np.zeros(ny), np.full(ny, nx - 1)])
    ys = np.concatenate([np.zeros(nx), np.full(nx, ny - 1), np.arange(ny), np.arange(ny)])
    ra, dec = w_in.wcs_pix2world(xs, ys, 0)
    xo, yo = w_out.wcs_world2pix(ra, dec, 0)
    ok = np.isfinite(xo) & np.isfinite(yo)
    if not ok.any():
        return None
    Ny, Nx = shape_out
    y0 = max(int(np.floor(yo[ok].min())) - pad, 0)
    y1 = min(int(np.ceil(yo[ok].max())) + pad + 1, Ny)
    x0 = max(int(np.floor(xo[ok].min())) - pad, 0)
    x1 = min(int(np.ceil(xo[ok].max())) + pad + 1, Nx)
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None
