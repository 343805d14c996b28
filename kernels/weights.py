"""Imaging weights and the thermal noise they give a dirty image.

A dirty image pixel is ``I = sum_k W_k Re(V_k e^{i phi_k}) / sum_k W_k``; with independent
circular noise of rms ``sigma_k`` on each of the real and imaginary parts of ``V_k``, its
rms is ::

    sigma_image = sqrt(sum_k W_k^2 sigma_k^2) / sum_k W_k

The imaging weight ``W_k`` of a visibility with data weight ``w_k`` falling in uv cell ``c``
(the Hermitian partner ``-uv`` counted too, as imagers grid both) whose summed data weight is
``D_c`` is (Briggs 1995, CASA's and WSClean's definition)::

    natural  W = w
    uniform  W = w / D_c
    briggs   W = w / (1 + D_c f^2),   f^2 = (5 10^-R)^2 / (sum_c D_c^2 / sum_c D_c)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.constants import C_M_S


@njit(cache=True, nogil=True)
def _cell(u_m, v_m, freq_hz, du, n):
    """Grid cell (iu, iv) of one visibility, -1 when outside the n x n grid (or not
    finite: the test is made on floats, since converting NaN to an integer is undefined)."""
    fu = u_m * freq_hz / C_M_S / du + 0.5 + n // 2
    fv = v_m * freq_hz / C_M_S / du + 0.5 + n // 2
    if not (0.0 <= fu < n and 0.0 <= fv < n):
        return -1, -1
    iu = int(math.floor(u_m * freq_hz / C_M_S / du + 0.5)) + n // 2
    iv = int(math.floor(v_m * freq_hz / C_M_S / du + 0.5)) + n // 2
    if iu < 0 or iv < 0 or iu >= n or iv >= n:
        return -1, -1
    return iu, iv


@njit(cache=True, nogil=True)
def _density(uv, freq_hz, valid, w, du, n, out):
    for r in range(uv.shape[0]):
        for c in range(freq_hz.shape[0]):
            if not valid[r, c]:
                continue
            for sgn in (1.0, -1.0):
                iu, iv = _cell(sgn * uv[r, 0], sgn * uv[r, 1], freq_hz[c], du, n)
                if iu >= 0:
                    out[iv, iu] += w[r, c]
    return out


@njit(cache=True, nogil=True)
def _noise_sums(uv, freq_hz, valid, w, sig2, density, du, n, mode, f2):
    s1 = 0.0
    s2 = 0.0
    for r in range(uv.shape[0]):
        for c in range(freq_hz.shape[0]):
            if not valid[r, c]:
                continue
            iu, iv = _cell(uv[r, 0], uv[r, 1], freq_hz[c], du, n)
            if iu < 0:
                continue
            d = density[iv, iu]
            if mode == 1:
                wk = w[r, c] / d
            elif mode == 2:
                wk = w[r, c] / (1.0 + d * f2)
            else:
                wk = w[r, c]
            s1 += wk
            s2 += wk * wk * sig2[r, c]
    return s1, s2


MODES = {"natural": 0, "uniform": 1, "briggs": 2}


def image_noise(uv_m, freq_hz, valid, weight, sigma_vis, *, cell_rad: float, imsize: int,
                weighting: str, robust: float = 0.0) -> float:
    """Thermal rms (same unit as ``sigma_vis``) of a dirty mfs image with these weights.

    Parameters
    ----------
    uv_m : (Nrows, 2) float
        u and v of each row (metres).
    freq_hz : (Nchan,) float
    valid : (Nrows, Nchan) bool
        Visibilities that enter the image (unflagged cross-correlations).
    weight : (Nrows,) or (Nrows, Nchan) float
        Data weight of each row (the MS's WEIGHT) or visibility (WEIGHT_SPECTRUM).
    sigma_vis : (Nrows,) or (Nrows, Nchan) float
        Noise rms of the real (= imaginary) part of each row's or visibility's Stokes-I
        value.
    cell_rad, imsize : image cell (rad) and side (pixels); the uv cell is
        ``1 / (imsize cell_rad)`` wavelengths.
    weighting : "natural", "uniform" or "briggs"; ``robust`` is Briggs' R.
    """
    uv = np.ascontiguousarray(uv_m, dtype=np.float64)
    f = np.ascontiguousarray(freq_hz, dtype=np.float64)
    ok = np.ascontiguousarray(valid, dtype=np.bool_)
    w = np.asarray(weight, dtype=np.float64)
    s2 = np.asarray(sigma_vis, dtype=np.float64) ** 2
    shape = (uv.shape[0], f.shape[0])
    if uv.ndim != 2 or uv.shape[1] < 2 or ok.shape != shape \
            or w.shape not in ((uv.shape[0],), shape) or s2.shape not in ((uv.shape[0],), shape):
        raise ValueError(f"uv {uv.shape}, valid {ok.shape}, weight {w.shape}, "
                         f"sigma_vis {s2.shape} do not match {f.shape[0]} channels")
    # per-row values as (Nrows, Nchan) views with a zero channel stride: no copies
    w = np.broadcast_to(w[:, None] if w.ndim == 1 else w, shape)
    s2 = np.broadcast_to(s2[:, None] if s2.ndim == 1 else s2, shape)
    if weighting not in MODES:
        raise ValueError(f"weighting {weighting!r} is not one of {tuple(MODES)}")
    n = int(imsize)
    du = 1.0 / (n * cell_rad)
    density = np.zeros((n, n))
    f2 = 0.0
    if weighting != "natural":
        _density(uv, f, ok, w, du, n, density)
        if weighting == "briggs":
            f2 = (5.0 * 10.0 ** (-robust)) ** 2 / ((density ** 2).sum() / density.sum())
    s1, s2sum = _noise_sums(uv, f, ok, w, s2, density, du, n, MODES[weighting], f2)
    return math.sqrt(s2sum) / s1 if s1 > 0 else math.nan
