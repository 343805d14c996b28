"""Model visibilities of point sources on Measurement Set rows (direct Fourier transform).

Sign convention (the Measurement Set's, see :mod:`kernels.geometry`): with the MS's own
``UVW`` (metres) and a source at direction cosines ``(l, m, n)`` relative to the row's phase
centre, ::

    V[r, c] = sum_s S[t_r, s, c] exp(+2 pi i nu_c (u l + v m + w (n - 1)) / c)

``S`` is the APPARENT flux density (Jy): catalogue flux x spectrum x primary beam at that
integration and channel, so a source drifting through the beam is modelled as the dishes
saw it. The kernel does no geometry beyond the dot product; the caller supplies ``lmn``.
Checked against CASA's ``ft`` in the tests.

Bandwidth smearing (``chan_width_hz``): a recorded channel of width ``dnu`` holds the mean
of the visibility over its band, which for a flat spectrum is the centre value times
``sinc(dnu t / c)`` (numpy's sinc, sin(pi x) / (pi x)), ``t`` the source's delay (m)
relative to the centre the CORRELATOR phased to: ``t = d - d_corr``, with ``d = u l + v m +
w (n - 1)`` the delay relative to the row's phase centre and ``d_corr`` that of the
correlator's centre (0 when the MS keeps the correlator's phasing). An MS channel that is
the mean of ``k`` recorded channels, each rephased at its centre, carries a further
``D_k(dnu d / c) = sin(pi k x) / (k sin(pi x))``; with ``d_corr = 0`` the product is
``sinc(k dnu d / c)``. A source 2 deg out on a 2.6 km baseline keeps 0.86 of its amplitude
in a 977 kHz channel. Time smearing (12.9 s integrations) is not modelled.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.constants import C_M_S
from kernels.visibility import _phasors, _uniform_channels


@njit(cache=True, nogil=True)
def _sinc(x):
    """sin(pi x) / (pi x), 1 at 0."""
    if abs(x) < 1e-8:
        return 1.0
    return math.sin(math.pi * x) / (math.pi * x)


@njit(cache=True, nogil=True)
def _dirichlet(x, k):
    """sin(pi k x) / (k sin(pi x)): the mean of exp(2 pi i j x) over k consecutive j."""
    if k == 1:
        return 1.0
    s = math.sin(math.pi * x)
    if abs(s) < 1e-9:  # x an integer n: the limit is (-1)^(n (k - 1))
        return 1.0 if (round(x) * (k - 1)) % 2 == 0 else -1.0
    return math.sin(math.pi * k * x) / (k * s)


@njit(cache=True, nogil=True)
def _smearing(d, d_corr, rec_width, k):
    """Amplitude factor of a source at delay ``d`` (m) from the row's centre, ``d_corr`` the
    correlator centre's, for an MS channel of ``k`` recorded channels of ``rec_width`` Hz."""
    return (_sinc(rec_width * (d - d_corr) / C_M_S)
            * _dirichlet(rec_width * d / C_M_S, k))


@njit(cache=True, nogil=True)
def _predict_rows(uvw, row_time, row_field, lmn, flux, freq_hz, uniform, width, same_width,
                  k, d_corr, out):
    nrow = uvw.shape[0]
    nsrc = lmn.shape[1]
    nchan = freq_hz.shape[0]
    rot = np.empty(nchan, dtype=np.complex128)
    for r in range(nrow):
        t = row_time[r]
        f = row_field[r]
        dc = d_corr[r] if d_corr.shape[0] else 0.0
        for s in range(nsrc):
            d = uvw[r, 0] * lmn[f, s, 0] + uvw[r, 1] * lmn[f, s, 1] + uvw[r, 2] * lmn[f, s, 2]
            _phasors(2.0 * math.pi * d / C_M_S, freq_hz, uniform, rot)
            if width.shape[0] == 0:
                for c in range(nchan):
                    out[r, c] += flux[t, s, c] * rot[c]
            elif same_width:  # one factor for the row and source
                a = _smearing(d, dc, width[0] / k, k)
                for c in range(nchan):
                    out[r, c] += (flux[t, s, c] * a) * rot[c]
            else:
                for c in range(nchan):
                    out[r, c] += (flux[t, s, c] * _smearing(d, dc, width[c] / k, k)) * rot[c]
    return out


def lmn_offsets(ra_src, dec_src, ra0, dec0):
    """Direction cosines ``(l, m, n - 1)`` of sources relative to phase centres.

    Parameters
    ----------
    ra_src, dec_src : (Nsrc,) float
        Source positions (rad), in the frame of the phase centres (J2000 here).
    ra0, dec0 : (Nfield,) float
        Phase centres (rad).

    Returns
    -------
    (Nfield, Nsrc, 3) float64: ``l = cos d sin(a - a0)``,
    ``m = sin d cos d0 - cos d sin d0 cos(a - a0)``,
    ``n - 1 = sin d sin d0 + cos d cos d0 cos(a - a0) - 1`` (computed without cancellation).
    """
    a = np.asarray(ra_src, dtype=np.float64)[None, :]
    d = np.asarray(dec_src, dtype=np.float64)[None, :]
    a0 = np.asarray(ra0, dtype=np.float64)[:, None]
    d0 = np.asarray(dec0, dtype=np.float64)[:, None]
    da = a - a0
    l_ = np.cos(d) * np.sin(da)
    m_ = np.sin(d) * np.cos(d0) - np.cos(d) * np.sin(d0) * np.cos(da)
    n_ = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(da)
    # n - 1 = -(l^2 + m^2) / (1 + n): no loss of precision near the phase centre
    nm1 = np.where(n_ > 0, -(l_ ** 2 + m_ ** 2) / (1.0 + np.abs(n_)), n_ - 1.0)
    return np.stack([l_, m_, nm1], axis=-1)


def predict_model(uvw, freq_hz, row_time, row_field, lmn, flux, *, chan_width_hz=None,
                  average: int = 1, corr_delay_m=None, dtype=np.complex64):
    """Point-source model visibilities for Measurement Set rows.

    Parameters
    ----------
    uvw : (Nrows, 3) float
        The MS's UVW column (metres, ``x[ant1] - x[ant2]``).
    freq_hz : (Nchan,) float
        Channel frequencies (Hz).
    row_time : (Nrows,) int
        Integration index of each row into ``flux``.
    row_field : (Nrows,) int
        Phase-centre index of each row into ``lmn``.
    lmn : (Nfield, Nsrc, 3) float
        ``(l, m, n - 1)`` of each source relative to each phase centre
        (:func:`lmn_offsets`).
    flux : (Ntimes, Nsrc, Nchan) float
        Apparent flux density (Jy) of each source at each integration and channel.
    chan_width_hz : (Nchan,) float or scalar, optional
        MS channel widths (Hz; the sign is ignored). Given, each source's term carries the
        bandwidth smearing of its channel (module docstring); None models the channel
        centre only (as CASA's ``ft`` does).
    average : int
        Recorded channels averaged into each MS channel (``k``).
    corr_delay_m : (Nrows,) float, optional
        Delay (m) of the correlator's phase centre relative to each row's phase centre,
        ``u l + v m + w (n - 1)`` of that direction; None: the rows keep the correlator's
        phasing (0).
    dtype : complex dtype of the result

    Returns
    -------
    (Nrows, Nchan) complex: the model for one polarization product (XX or YY of an
    unpolarized sky, in the convention XX = YY = I).

    Equally spaced channels use a phasor recurrence (one cos/sin per row and source).
    """
    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    f = np.ascontiguousarray(freq_hz, dtype=np.float64)
    ti = np.ascontiguousarray(row_time, dtype=np.int64)
    fi = np.ascontiguousarray(row_field, dtype=np.int64)
    lmn = np.ascontiguousarray(lmn, dtype=np.float64)
    flux = np.ascontiguousarray(flux, dtype=np.float64)
    nrow = uvw.shape[0]
    if uvw.ndim != 2 or uvw.shape[1] != 3 or ti.shape != (nrow,) or fi.shape != (nrow,):
        raise ValueError(f"uvw {uvw.shape}, row_time {ti.shape}, row_field {fi.shape}")
    if lmn.ndim != 3 or lmn.shape[2] != 3 or flux.ndim != 3:
        raise ValueError(f"lmn {lmn.shape} must be (Nfield, Nsrc, 3), flux {flux.shape} 3-d")
    if flux.shape[1] != lmn.shape[1] or flux.shape[2] != f.shape[0]:
        raise ValueError(f"flux {flux.shape} does not match lmn {lmn.shape} / {f.shape[0]} "
                         "channels")
    if nrow and (ti.min() < 0 or ti.max() >= flux.shape[0] or fi.min() < 0
                 or fi.max() >= lmn.shape[0]):
        raise ValueError("row_time or row_field out of range")
    if chan_width_hz is None:
        width = np.zeros(0)
    else:
        width = np.abs(np.broadcast_to(np.asarray(chan_width_hz, dtype=np.float64), f.shape))
        width = np.ascontiguousarray(width)
    same = bool(width.size and np.all(width == width[0]))
    if int(average) < 1:
        raise ValueError(f"average {average} must be >= 1")
    dc = (np.zeros(0) if corr_delay_m is None
          else np.ascontiguousarray(corr_delay_m, dtype=np.float64))
    if dc.size and dc.shape != (nrow,):
        raise ValueError(f"corr_delay_m {dc.shape} does not match {nrow} rows")
    out = np.zeros((nrow, f.shape[0]), dtype=np.complex128)
    # the recurrence is judged at the largest |w|-scale delay any source has
    dmax = np.abs(uvw).sum(axis=1).max(initial=0.0) * max(np.abs(lmn).max(initial=0.0), 1e-9)
    _predict_rows(uvw, ti, fi, lmn, flux, f, _uniform_channels(f, np.array([dmax])), width,
                  same, int(average), dc, out)
    return out.astype(dtype, copy=False)
