"""Forced photometry kernel (numba): the restoring beam's amplitude at a fixed position.

Pure: arrays in, numbers out. Conventions: images are (ny, nx) in Jy/beam, FITS pixel order
(row = y); positions are 0-based pixel coordinates (floats); the beam is
B(dx, dy) = exp(-0.5 (a dx^2 + 2 b dx dy + c dy^2)) with dx, dy in pixels from the source
(a, b, c: the inverse beam covariance in pixel units).

For a point source at a known position in an image whose noise is the same everywhere in
the box, the least-squares amplitude of the beam is the matched filter of Condon (1997):
A = sum(I B) / sum(B^2). Its error is the image noise per beam (the noise is correlated on
the scale of the beam, so the pixels are not independent), which the caller takes from the
noise map.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def forced_peak(img, x0, y0, a, b, c, half):
    """Amplitude (Jy/beam) of the beam centred at (x0, y0) fitted to the pixels within
    +-half of it. Non-finite pixels are left out. Returns (amplitude, sum of B^2, pixels
    used); amplitude is NaN when no pixel was usable, or when the position is not finite or
    lies more than ``half`` pixels off the image (a catalogue source the projection cannot
    place, or places far outside: converting such a float to an integer is undefined in
    compiled code, and crashed the image worker)."""
    ny, nx = img.shape
    if not (-half - 1.0 < x0 < nx + half and -half - 1.0 < y0 < ny + half):
        return np.nan, 0.0, 0  # also False for NaN
    ix = int(math.floor(x0 + 0.5))
    iy = int(math.floor(y0 + 0.5))
    num = 0.0
    den = 0.0
    n = 0
    for y in range(max(0, iy - half), min(ny, iy + half + 1)):
        dy = y - y0
        for x in range(max(0, ix - half), min(nx, ix + half + 1)):
            v = img[y, x]
            if not np.isfinite(v):
                continue
            dx = x - x0
            bv = math.exp(-0.5 * (a * dx * dx + 2.0 * b * dx * dy + c * dy * dy))
            num += v * bv
            den += bv * bv
            n += 1
    if den <= 0.0:
        return np.nan, 0.0, 0
    return num / den, den, n


@njit(cache=True)
def forced_peaks(img, xs, ys, a, b, c, half):
    """forced_peak for many positions: (amplitudes, pixels used), each (n,)."""
    out = np.empty(xs.size)
    used = np.empty(xs.size, np.int64)
    for i in range(xs.size):
        amp, _, k = forced_peak(img, xs[i], ys[i], a, b, c, half)
        out[i] = amp
        used[i] = k
    return out, used
