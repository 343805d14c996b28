"""Gaussian restoring beams: a common beam for several images, and convolution to it.

A beam is ``(bmaj, bmin, bpa)``: FWHM of the major and minor axes (deg) and the position
angle of the major axis (deg, north through east), as in FITS BMAJ/BMIN/BPA. Its
covariance on the sky, with ``x`` east and ``y`` north, is
``S = s_maj^2 a a^T + s_min^2 b b^T`` with ``a = (sin bpa, cos bpa)``,
``b = (cos bpa, -sin bpa)`` and ``s = FWHM / sqrt(8 ln 2)``.

Convolving an image restored with beam ``S_i`` by the Gaussian of covariance ``S_c - S_i``
(unit integral) gives beam ``S_c``; multiplying by ``area_c / area_i`` keeps a point source's
peak equal to its flux density, so Jy/beam means the same in every convolved image
(CASA's ``imsmooth(kernel="commonbeam")`` does the same).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def covariance(bmaj, bmin, bpa_deg) -> np.ndarray:
    """(2, 2) sky covariance (deg^2; x east, y north) of a beam."""
    pa = np.deg2rad(bpa_deg)
    a = np.array([np.sin(pa), np.cos(pa)])
    b = np.array([np.cos(pa), -np.sin(pa)])
    return ((bmaj * FWHM_TO_SIGMA) ** 2 * np.outer(a, a)
            + (bmin * FWHM_TO_SIGMA) ** 2 * np.outer(b, b))


def from_covariance(cov) -> tuple[float, float, float]:
    """(bmaj, bmin, bpa) of a (2, 2) sky covariance; bpa in (-90, 90] deg."""
    vals, vecs = np.linalg.eigh(cov)
    major = vecs[:, 1]  # eigh sorts ascending
    pa = np.rad2deg(np.arctan2(major[0], major[1]))
    pa = (pa + 90.0) % 180.0 - 90.0
    if pa == -90.0:
        pa = 90.0
    return (float(np.sqrt(max(vals[1], 0.0)) / FWHM_TO_SIGMA),
            float(np.sqrt(max(vals[0], 0.0)) / FWHM_TO_SIGMA), float(pa))


def _sqrtm(m):
    vals, vecs = np.linalg.eigh(m)
    return vecs @ np.diag(np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def common_beam(beams, margin: float = 1e-3) -> tuple[float, float, float]:
    """A beam that contains every beam in ``beams`` (each ``(bmaj, bmin, bpa)``, deg).

    Grown one beam at a time: in the frame where the current common covariance is the
    identity, every eigenvalue of the next beam above 1 is raised into it. The result
    contains each input (``S_c - S_i`` positive semi-definite), is one of the inputs when
    one contains all others, and is widened by ``margin`` so that no convolution kernel is
    degenerate.
    """
    covs = [covariance(*b) for b in beams]
    if not covs:
        raise ValueError("no beams")
    c = covs[0]
    for s in covs[1:]:
        root = _sqrtm(c)
        inv = np.linalg.inv(root)
        vals, vecs = np.linalg.eigh(inv @ s @ inv.T)
        c = root @ vecs @ np.diag(np.maximum(vals, 1.0)) @ vecs.T @ root.T
    return from_covariance(c * (1.0 + margin) ** 2)


def contains(outer, inner, tol: float = 1e-9) -> bool:
    """True when beam ``outer`` contains beam ``inner`` (both ``(bmaj, bmin, bpa)``)."""
    d = covariance(*outer) - covariance(*inner)
    return bool(np.linalg.eigvalsh(d).min() >= -tol * np.abs(covariance(*outer)).max())


def area(beam) -> float:
    """Beam solid angle, deg^2 (pi bmaj bmin / (4 ln 2))."""
    return float(np.pi * beam[0] * beam[1] / (4.0 * np.log(2.0)))


def convolve_to(image, beam, target, cdelt_deg) -> np.ndarray:
    """``image`` restored with ``beam``, convolved to ``target`` and rescaled (Jy/beam).

    ``cdelt_deg`` = (CDELT1, CDELT2) of the image (CDELT1 < 0: x pixels run west). NaNs are
    treated as zeros for the convolution and restored afterwards. The convolution is done
    with FFTs (on every CPU) on a grid padded by the kernel's extent (no wrap-around).
    """
    return convolve_all([image], beam, target, cdelt_deg)[0]


def convolve_all(images, beam, target, cdelt_deg) -> list:
    """:func:`convolve_to` of several images of one grid and one beam (a member image and
    its residual): one kernel, one padded stack, one batched FFT pair. Single precision
    (float32 in and out) when every image is float32, double otherwise: on full-scale
    members (2048^2) the rounding was at most 1.5e-5 of the brightest pixel (a dynamic
    range of 7e4, beyond a snapshot's) and 1.5 % of the noise (benchmarks/mosaic.py)."""
    kernel = covariance(*target) - covariance(*beam)
    if np.linalg.eigvalsh(kernel).min() < -1e-12 * np.abs(kernel).max():
        raise ValueError(f"target beam {target} does not contain beam {beam}")
    shapes = {np.shape(a) for a in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"images must share one 2-d shape, got {sorted(shapes)}")
    # sky (east, north) -> pixel (x, y): x = east / CDELT1 (CDELT1 < 0: x runs west)
    jac = np.diag([1.0 / cdelt_deg[0], 1.0 / cdelt_deg[1]])
    kpix = jac @ kernel @ jac.T
    pad = int(np.ceil(5 * np.sqrt(np.abs(np.diag(kpix)).max()))) + 1
    ny, nx = shapes.pop()
    # padded at least by the kernel's extent, to sizes the FFT factors fast (2, 3, 5, 7)
    shape = (sfft.next_fast_len(ny + 2 * pad, real=True),
             sfft.next_fast_len(nx + 2 * pad, real=True))
    single = all(np.asarray(a).dtype == np.float32 for a in images)
    dtype = np.float32 if single else np.float64
    padded = np.zeros((len(images), *shape), dtype=dtype)
    bads = []
    for k, a in enumerate(images):
        bad = ~np.isfinite(a)
        padded[k, pad:pad + ny, pad:pad + nx] = a
        padded[k, pad:pad + ny, pad:pad + nx][bad] = 0.0
        bads.append(bad)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    # Fourier transform of a unit-integral Gaussian: exp(-2 pi^2 k^T S k), with the
    # rescaling to the target's Jy/beam folded in
    ft = ((area(target) / area(beam)) * np.exp(
        -2 * np.pi ** 2 * (kpix[0, 0] * kx ** 2 + 2 * kpix[0, 1] * kx * ky
                           + kpix[1, 1] * ky ** 2))).astype(dtype)
    spec = sfft.rfft2(padded, workers=-1, overwrite_x=True)
    spec *= ft
    full = sfft.irfft2(spec, s=shape, workers=-1, overwrite_x=True)
    out = []
    for k, bad in enumerate(bads):
        o = full[k, pad:pad + ny, pad:pad + nx].copy()
        o[bad] = np.nan
        out.append(o)
    return out
