"""Bandwidth and time smearing: how much of a point source's peak an image keeps when the
visibilities are averaged over ``chan_width_hz`` and ``int_s`` (issue 18: how far channels
and integrations may be averaged before imaging).

A visibility of a point source at direction cosines (l, m, n) from the phase centre has
phase ``phi = 2 pi nu / c (u l + v m + w (n - 1))`` (u, v, w in metres). Averaging over a
rectangular channel of width dnu multiplies its amplitude by
``sinc(dnu / c (u l + v m + w (n - 1)))`` (numpy's sinc, sin(pi x) / (pi x)); averaging over
an interval T while the Earth turns multiplies it by ``sinc(nu / c (u' l + v' m + w' (n-1))
T)`` with the time derivatives of (u, v, w) for a fixed phase centre (Thompson, Moran &
Swenson, eq. 4.1-4.3: u' = Omega (cos H Lx - sin H Ly), v' = Omega sin(dec) u,
w' = -Omega cos(dec) u; L the baseline in the equatorial frame of the site). The peak of the
source in an image is the weighted mean of those factors over the visibilities.

Everything here is small-angle free (exact l, m, n) but linear in time over one interval,
which holds while Omega T << 1 (T of minutes).
"""

from __future__ import annotations

import numpy as np

from engine.constants import C_M_S

OMEGA_EARTH = 7.2921159e-5  # rad/s, sidereal


def enu_from_ecef(ecef_m: np.ndarray, lat_rad: float, lon_rad: float) -> np.ndarray:
    """(N, 3) east-north-up offsets, metres, of geocentric positions from their mean."""
    d = ecef_m - ecef_m.mean(axis=0)
    sl, cl, so, co = np.sin(lat_rad), np.cos(lat_rad), np.sin(lon_rad), np.cos(lon_rad)
    rot = np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])
    return d @ rot.T


def equatorial_baselines(enu_m: np.ndarray, lat_rad: float) -> np.ndarray:
    """(Nbl, 3) baselines (Lx towards hour angle 0 on the equator, Ly towards -6 h, Lz to
    the celestial pole), metres, of every antenna pair from local east-north-up positions
    (Nant, 3)."""
    i, j = np.triu_indices(len(enu_m), k=1)
    d = enu_m[j] - enu_m[i]
    e, n, up = d[:, 0], d[:, 1], d[:, 2]
    sl, cl = np.sin(lat_rad), np.cos(lat_rad)
    return np.stack([-sl * n + cl * up, e, cl * n + sl * up], axis=1)


def uvw_and_rates(L: np.ndarray, ha_rad: float, dec_rad: float):
    """(uvw (Nbl, 3) m, their time derivatives (Nbl, 3) m/s) for a phase centre at hour
    angle ``ha_rad`` and declination ``dec_rad``."""
    sh, ch, sd, cd = np.sin(ha_rad), np.cos(ha_rad), np.sin(dec_rad), np.cos(dec_rad)
    lx, ly, lz = L[:, 0], L[:, 1], L[:, 2]
    u = sh * lx + ch * ly
    v = -sd * ch * lx + sd * sh * ly + cd * lz
    w = cd * ch * lx - cd * sh * ly + sd * lz
    du = OMEGA_EARTH * (ch * lx - sh * ly)
    return np.stack([u, v, w], axis=1), np.stack([du, OMEGA_EARTH * sd * u,
                                                  -OMEGA_EARTH * cd * u], axis=1)


def _weights(uvw_lambda: np.ndarray, weighting: str, fov_rad: float) -> np.ndarray:
    if weighting == "natural":
        return np.ones(len(uvw_lambda))
    if weighting != "uniform":
        raise ValueError(f"weighting {weighting!r}: natural or uniform")
    # uniform: 1 / (samples in the uv cell), cells of 1 / field of view, both half-planes
    uv = np.concatenate([uvw_lambda[:, :2], -uvw_lambda[:, :2]])
    cell = 1.0 / fov_rad
    keys = np.floor(uv / cell).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv.ravel()[: len(uvw_lambda)]]


def peak_response(L: np.ndarray, *, dec_rad: float, freq_hz: float, chan_width_hz: float,
                  int_s: float, offset_rad: float, pa_rad: float, ha_rad=(0.0,),
                  weighting: str = "natural", fov_rad: float | None = None) -> float:
    """The fraction of a point source's peak kept at ``offset_rad`` from the phase centre,
    position angle ``pa_rad`` (north through east), after averaging over ``chan_width_hz``
    and ``int_s``; mean over the phase centre's hour angles ``ha_rad``. ``L``: equatorial
    baselines (``equatorial_baselines``), metres."""
    dl = np.sin(offset_rad) * np.sin(pa_rad)
    dm = np.sin(offset_rad) * np.cos(pa_rad)
    n1 = np.sqrt(1.0 - dl * dl - dm * dm) - 1.0
    num = den = 0.0
    for ha in np.atleast_1d(ha_rad):
        uvw, rate = uvw_and_rates(L, float(ha), dec_rad)
        path = uvw @ np.array([dl, dm, n1])  # metres of delay
        drift = rate @ np.array([dl, dm, n1])  # metres per second
        factor = (np.abs(np.sinc(chan_width_hz / C_M_S * path))
                  * np.abs(np.sinc(freq_hz / C_M_S * drift * int_s)))
        wt = _weights(uvw * freq_hz / C_M_S, weighting, fov_rad or 4 * offset_rad)
        num += float(np.sum(wt * factor))
        den += float(np.sum(wt))
    return num / den


def worst_loss(L: np.ndarray, *, offset_rad: float, npa: int = 12, **kw) -> float:
    """1 - the smallest ``peak_response`` over ``npa`` position angles in [0, pi)."""
    return 1.0 - min(peak_response(L, offset_rad=offset_rad, pa_rad=p, **kw)
                     for p in np.linspace(0.0, np.pi, npa, endpoint=False))
