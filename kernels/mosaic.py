"""Primary-beam-weighted mosaic accumulation.

For each output pixel ``k`` with input-pixel coordinates ``(x_k, y_k)`` in one image
(0-based, x along the FITS first axis), samples ``I`` of the image (bilinear or Lanczos) and
``B`` of its primary beam (bilinear) are accumulated as::

    num[k] += w * B * I
    den[k] += w * B**2

with ``w = 1 / sigma**2`` the image's noise weight, and ``cov[k] = max(cov[k], B)`` records
the best primary-beam response at each pixel. The mosaic is ``num / den``: the optimal
(minimum-variance) combination of primary-beam-attenuated images.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def _bilinear(a, x, y):
    ny, nx = a.shape
    # compared as floats first: a NaN or huge position converted to an integer is undefined
    if not (0.0 <= x < nx - 1 and 0.0 <= y < ny - 1):
        return math.nan
    x0 = int(math.floor(x))
    y0 = int(math.floor(y))
    if x0 < 0 or y0 < 0 or x0 + 1 >= nx or y0 + 1 >= ny:
        return math.nan
    fx = x - x0
    fy = y - y0
    return ((1 - fx) * (1 - fy) * a[y0, x0] + fx * (1 - fy) * a[y0, x0 + 1]
            + (1 - fx) * fy * a[y0 + 1, x0] + fx * fy * a[y0 + 1, x0 + 1])


@njit(cache=True, nogil=True)
def _lanczos_weight(d, a):
    if d == 0.0:
        return 1.0
    if abs(d) >= a:
        return 0.0
    pd = math.pi * d
    return a * math.sin(pd) * math.sin(pd / a) / (pd * pd)


@njit(cache=True, nogil=True)
def _lanczos(img, x, y, a):
    """Lanczos-``a`` interpolation, normalised by its weights; bilinear where the window
    leaves the image or holds a NaN."""
    ny, nx = img.shape
    if not (a - 1.0 <= x < nx - a and a - 1.0 <= y < ny - a):  # NaN too: see _bilinear
        return _bilinear(img, x, y)
    x0 = int(math.floor(x))
    y0 = int(math.floor(y))
    if x0 - a + 1 < 0 or y0 - a + 1 < 0 or x0 + a >= nx or y0 + a >= ny:
        return _bilinear(img, x, y)
    total = 0.0
    wsum = 0.0
    for j in range(y0 - a + 1, y0 + a + 1):
        wy = _lanczos_weight(y - j, a)
        for i in range(x0 - a + 1, x0 + a + 1):
            v = img[j, i]
            if not math.isfinite(v):
                return _bilinear(img, x, y)
            w = wy * _lanczos_weight(x - i, a)
            total += w * v
            wsum += w
    return total / wsum


@njit(cache=True, nogil=True)
def _accumulate(num, den, cov, image, beam, weight, xin, yin, order):
    n = num.shape[0]
    for k in range(n):
        x = xin[k]
        y = yin[k]
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        b = _bilinear(beam, x, y)
        v = _bilinear(image, x, y) if order == 0 else _lanczos(image, x, y, order)
        if not (math.isfinite(b) and math.isfinite(v)) or b <= 0:
            continue
        num[k] += weight * b * v
        den[k] += weight * b * b
        if b > cov[k]:
            cov[k] = b


def accumulate(num, den, cov, image, beam, weight, xin, yin, *, lanczos: int = 0):
    """Add one image to the running sums (in place).

    Parameters
    ----------
    num, den, cov : (Npix,) float64
        Running sums and best beam response over the flattened output grid.
    image, beam : (Ny, Nx) float
        Image (Jy/beam) and primary beam (0..1) on the same input grid.
    weight : float
        ``1 / sigma**2`` of the image (1/Jy^2).
    xin, yin : (Npix,) float64
        Input-pixel coordinates of each output pixel (NaN where it has none).
    lanczos : int
        0: the image is sampled bilinearly, like the beam. ``a`` > 0: Lanczos-``a``
        (normalised), which keeps the peak of a restoring beam sampled by only 2-3 pixels
        (bilinear loses up to 13 % of it at half a pixel's shift).
    """
    for a in (num, den, cov, xin, yin):
        if a.ndim != 1 or a.shape != num.shape:
            raise ValueError("num, den, cov, xin and yin must be 1-d arrays of one length")
    if image.shape != beam.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and beam {beam.shape} must be one 2-d shape")
    _accumulate(num, den, cov, np.ascontiguousarray(image, dtype=np.float64),
                np.ascontiguousarray(beam, dtype=np.float64), float(weight),
                np.ascontiguousarray(xin, dtype=np.float64),
                np.ascontiguousarray(yin, dtype=np.float64), int(lanczos))
    return num, den, cov


@njit(cache=True, nogil=True)
def _lanczos_weights(d0, a, w, cphi, sphi):
    """w[k] = L_a(t_k), t_k = d0 + a - 1 - k for k in 0..2a-1 (d0 in [0, 1): the offset from
    the window's floor pixel); returns their sum. Two trigonometric calls (a = 3) or three,
    not 4a: sin(pi t_k) = (-1)^n sin(pi d0) and sin(pi t_k / a) = sin(pi d0 / a + pi n / a) by the
    angle sum, n = a - 1 - k; ``cphi``, ``sphi``: cos and sin of pi n / a (``_phases``)."""
    sa = math.sin(math.pi * d0 / a)
    ca = math.cos(math.pi * d0 / a)
    if a == 3:  # sin(3 t) = sin t (3 - 4 sin^2 t): two trigonometric calls, not three
        sp = sa * (3.0 - 4.0 * sa * sa)
    else:
        sp = math.sin(math.pi * d0)
    s = 0.0
    for k in range(2 * a):
        n = a - 1 - k
        t = d0 + n
        if t == 0.0:
            w[k] = 1.0
        else:
            sign = 1.0 if n % 2 == 0 else -1.0
            w[k] = a * sign * sp * (sa * cphi[k] + ca * sphi[k]) / (math.pi * math.pi * t * t)
        s += w[k]
    return s


@njit(cache=True, nogil=True)
def _phases(a):
    """cos and sin of pi n / a for n = a - 1 - k, k in 0..2a-1 (``_lanczos_weights``)."""
    c = np.empty(2 * a)
    s = np.empty(2 * a)
    for k in range(2 * a):
        c[k] = math.cos(math.pi * (a - 1 - k) / a)
        s[k] = math.sin(math.pi * (a - 1 - k) / a)
    return c, s


@njit(cache=True, nogil=True)
def _window_sum(img, x0, y0, a, wx, wy):
    """sum w_x w_y img over the 2a x 2a window at (x0 - a + 1, y0 - a + 1); not finite if
    the window holds a non-finite value (NaN and infinities propagate through the sums; a
    test per pixel would stop the loop from being vectorised)."""
    total = 0.0
    for j in range(2 * a):
        row = 0.0
        for i in range(2 * a):
            row += wx[i] * img[y0 - a + 1 + j, x0 - a + 1 + i]
        total += wy[j] * row
    return total


@njit(cache=True, nogil=True, parallel=True)
def _accumulate_sin(num, den, cov, rnum, var, image, resid, beam, weight, vweight,
                    out_lin, out_c, rot, in_lin, in_c, y0, y1, x0, x1, order):
    ny_in, nx_in = image.shape
    with_resid = resid.shape[0] > 0
    for j in prange(y0, y1):
        wx = np.empty(max(2 * order, 1))
        wy = np.empty(max(2 * order, 1))
        cphi, sphi = _phases(max(order, 1))
        for i in range(x0, x1):
            dx = i - out_c[0]
            dy = j - out_c[1]
            lo = out_lin[0, 0] * dx + out_lin[0, 1] * dy
            mo = out_lin[1, 0] * dx + out_lin[1, 1] * dy
            r2 = lo * lo + mo * mo
            if r2 >= 1.0:
                continue
            no = math.sqrt(1.0 - r2)
            li = rot[0, 0] * lo + rot[0, 1] * mo + rot[0, 2] * no
            mi = rot[1, 0] * lo + rot[1, 1] * mo + rot[1, 2] * no
            ni = rot[2, 0] * lo + rot[2, 1] * mo + rot[2, 2] * no
            if ni <= 0.0:  # behind the member's tangent plane
                continue
            x = in_lin[0, 0] * li + in_lin[0, 1] * mi + in_c[0]
            y = in_lin[1, 0] * li + in_lin[1, 1] * mi + in_c[1]
            b = _bilinear(beam, x, y)
            if not math.isfinite(b) or b <= 0:
                continue
            fx = int(math.floor(x))
            fy = int(math.floor(y))
            norm = 1.0
            inside = (order > 0 and fx - order + 1 >= 0 and fy - order + 1 >= 0
                      and fx + order < nx_in and fy + order < ny_in)
            if inside:
                norm = (_lanczos_weights(x - fx, order, wx, cphi, sphi)
                        * _lanczos_weights(y - fy, order, wy, cphi, sphi))
                v = _window_sum(image, fx, fy, order, wx, wy) / norm
                if not math.isfinite(v):
                    v = _bilinear(image, x, y)
            else:
                v = _bilinear(image, x, y)
            if not math.isfinite(v):
                continue
            num[j, i] += weight * b * v
            den[j, i] += weight * b * b
            if b > cov[j, i]:
                cov[j, i] = b
            if with_resid:
                r = _window_sum(resid, fx, fy, order, wx, wy) / norm if inside else math.nan
                if not math.isfinite(r):
                    r = _bilinear(resid, x, y)
                if math.isfinite(r):
                    rnum[j, i] += weight * b * r
                var[j, i] += vweight * b * b


def _kernel_float(a):
    """float32 and float64 arrays are read as they are; anything else as float64."""
    return a.dtype if a.dtype in (np.float32, np.float64) else np.float64


def accumulate_sin(num, den, cov, image, beam, weight, frames, box, *, lanczos: int = 0,
                   resid=None, rnum=None, var=None, vweight: float = 0.0):
    """Add one image to the running sums on a 2-D output grid (in place), mapping every
    output pixel in ``box`` to the image directly through the two SIN projections.

    Parameters
    ----------
    num, den, cov : (Ny, Nx) float64
        Running sums and best beam response on the output grid, as in :func:`accumulate`.
    image, beam : (ny, nx) float32 or float64 (read as they are; the sums are float64)
        Image (Jy/beam) and primary beam (0..1) on the member's grid.
    weight : float
        ``1 / sigma**2`` of the image (1/Jy^2).
    frames : (out_lin, out_c, rot, in_lin, in_c)
        ``out_lin`` (2, 2): output pixel offsets -> direction cosines (l, m) (radians per
        pixel, CDELT x PC); ``out_c`` (2,): the output's reference pixel (0-based, x, y);
        ``rot`` (3, 3): output (l, m, n) -> member (l, m, n); ``in_lin`` (2, 2): member
        (l, m) -> pixel offsets (the inverse of the member's CDELT x PC); ``in_c`` (2,): the
        member's reference pixel (0-based). Built by :func:`engine.sinproject.frames`.
    box : (y0, y1, x0, x1)
        Output rows y0..y1-1 and columns x0..x1-1 to visit (the member's footprint).
    lanczos : int
        As in :func:`accumulate`; the residual is sampled with the same weights.
    resid, rnum : (ny, nx), (Ny, Nx), optional
        The member's residual image and its running sum ``rnum += w B R``.
    var, vweight : (Ny, Nx), float, optional
        ``var += vweight B**2`` (a thermal-noise map's sum with vweight = (w sigma_th)^2).
    """
    for a in (num, den, cov, rnum, var):
        if a is not None and (a.shape != num.shape or a.ndim != 2 or a.dtype != np.float64
                              or not a.flags.c_contiguous):
            raise ValueError("num, den, cov, rnum and var must be C-ordered float64 2-d "
                             "arrays of one shape")
    if image.shape != beam.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and beam {beam.shape} must be one 2-d shape")
    if resid is None:
        resid, rnum, var = (np.zeros((0, 0)),) * 3
    elif resid.shape != image.shape or rnum is None or var is None:
        raise ValueError("resid must match the image, and comes with rnum and var")
    out_lin, out_c, rot, in_lin, in_c = (np.ascontiguousarray(f, dtype=np.float64)
                                         for f in frames)
    y0, y1, x0, x1 = (int(v) for v in box)
    ny, nx = num.shape
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
    if y1 <= y0 or x1 <= x0:
        return num, den, cov
    image, resid, beam = (np.ascontiguousarray(a, dtype=_kernel_float(a))
                          for a in (image, resid, beam))
    _accumulate_sin(num, den, cov, rnum, var, image, resid, beam, float(weight),
                    float(vweight), out_lin, out_c, rot, in_lin, in_c,
                    y0, y1, x0, x1, int(lanczos))
    return num, den, cov
