"""Visibility kernels: rephasing, conjugation of reversed baselines, row reordering, DFT.

Sign convention (both UVH5 and Measurement Set, each with its own uvw sign, see
:mod:`kernels.geometry`): a visibility phased to ``s0`` is
``V = sum_k S_k exp(+2 pi i uvw . (s_k - s0) / lambda)``. Moving the phase centre from
``s0`` to ``s1`` therefore multiplies by ``exp(-2 pi i (w1 - w0) / lambda)`` with
``w = uvw . s`` (pyuvdata's ``_apply_w_proj`` uses the same factor).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.constants import C_M_S


@njit(cache=True, nogil=True)
def _phasors(k, freq_hz, uniform, out):
    """``out[c] = exp(i k freq_hz[c])`` (complex128); a recurrence when channels are uniform."""
    nchan = freq_hz.shape[0]
    if uniform and nchan > 1:
        z = complex(math.cos(k * freq_hz[0]), math.sin(k * freq_hz[0]))
        dk = k * (freq_hz[nchan - 1] - freq_hz[0]) / (nchan - 1)
        step = complex(math.cos(dk), math.sin(dk))
        for c in range(nchan):
            out[c] = z
            z *= step
    else:
        for c in range(nchan):
            out[c] = complex(math.cos(k * freq_hz[c]), math.sin(k * freq_hz[c]))


@njit(cache=True, nogil=True)
def _rephase(vis, dw_m, freq_hz, uniform):
    nrow, nchan, npol = vis.shape
    rot = np.empty(nchan, dtype=np.complex128)
    for r in range(nrow):
        _phasors(-2.0 * math.pi * dw_m[r] / C_M_S, freq_hz, uniform, rot)
        for c in range(nchan):
            for p in range(npol):
                vis[r, c, p] = vis[r, c, p] * rot[c]
    return vis


# Largest phase error (rad) a recurrence over "uniform" channels may accumulate
_MAX_RECURRENCE_PHASE_ERR = 1e-7


def _uniform_channels(freq_hz: np.ndarray, dw_m: np.ndarray) -> bool:
    """True when ``exp(i k f_c)`` may be formed by recurrence over the channels.

    The recurrence assumes ``f_c = f_0 + c (f_last - f_0) / (Nchan - 1)``; it is used only
    when the largest departure from that grid costs less than 1e-7 rad of phase at the
    largest ``|dw|`` (rounding of the recurrence itself is ~Nchan x 1e-16 rad per radian).
    """
    n = freq_hz.shape[0]
    if n < 3 or dw_m.size == 0:
        return n == 2
    grid = freq_hz[0] + np.arange(n) * ((freq_hz[-1] - freq_hz[0]) / (n - 1))
    kmax = 2 * math.pi * float(np.abs(dw_m).max()) / C_M_S
    return float(np.abs(freq_hz - grid).max()) * kmax <= _MAX_RECURRENCE_PHASE_ERR


def rephase(vis, dw_m, freq_hz):
    """Rotate visibilities in place to a new phase centre.

    Parameters
    ----------
    vis : (Nrows, Nchan, Npols) complex64 or complex128, C-contiguous
        Visibilities, modified in place and returned.
    dw_m : (Nrows,) float
        ``w_new - w_old`` of each row in metres (same uvw convention as ``vis``).
    freq_hz : (Nchan,) float
        Channel frequencies in Hz.

    Notes
    -----
    ``vis *= exp(-2 pi i dw nu / c)``. The phase is computed in float64 whatever the
    visibility precision, so float32 data keep their accuracy on long baselines. Equally
    spaced channels take one cos/sin per row and a phasor recurrence across the channels.
    """
    if not (isinstance(vis, np.ndarray) and vis.ndim == 3 and vis.flags.c_contiguous
            and np.iscomplexobj(vis)):
        raise ValueError("vis must be a C-contiguous complex array of shape (Nrows, Nchan, Npols)")
    dw = np.ascontiguousarray(dw_m, dtype=np.float64)
    f = np.ascontiguousarray(freq_hz, dtype=np.float64)
    if dw.shape != (vis.shape[0],) or f.shape != (vis.shape[1],):
        raise ValueError(f"dw_m {dw.shape} / freq_hz {f.shape} do not match vis {vis.shape}")
    return _rephase(vis, dw, f, _uniform_channels(f, dw))


@njit(cache=True, nogil=True)
def _conjugate_rows(vis, uvw, rows):
    for i in range(rows.shape[0]):
        r = rows[i]
        for c in range(vis.shape[1]):
            for p in range(vis.shape[2]):
                vis[r, c, p] = vis[r, c, p].conjugate()
        for k in range(3):
            uvw[r, k] = -uvw[r, k]


def conjugate_rows(vis, uvw, rows):
    """Reverse baselines in place: ``vis -> conj(vis)``, ``uvw -> -uvw`` on ``rows``.

    Parameters
    ----------
    vis : (Nrows, Nchan, Npols) complex, C-contiguous
    uvw : (Nrows, 3) float, C-contiguous
    rows : (Nfix,) int
        Rows whose antennas are swapped by the caller (ant1 > ant2 in the raw files).
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if vis.ndim != 3 or uvw.shape != (vis.shape[0], 3):
        raise ValueError(f"vis {vis.shape} and uvw {uvw.shape} do not match")
    if rows.size and (rows.min() < 0 or rows.max() >= vis.shape[0]):
        raise ValueError("rows out of range")
    _conjugate_rows(vis, uvw, rows)
    return vis, uvw


@njit(cache=True, nogil=True)
def _gather_rows(src, order, out):
    for i in range(order.shape[0]):
        out[i] = src[order[i]]
    return out


def gather_rows(src, order, out=None):
    """``out[i] = src[order[i]]`` along the first axis, without a temporary copy.

    Used to put rows into Measurement Set order (time, then ant1, then ant2).
    """
    order = np.ascontiguousarray(order, dtype=np.int64)
    if out is None:
        out = np.empty((order.shape[0],) + src.shape[1:], dtype=src.dtype)
    if order.size and (order.min() < 0 or order.max() >= src.shape[0]):
        raise ValueError("order out of range")
    return _gather_rows(src, order, out)


@njit(cache=True, nogil=True)
def _predict(delay_m, flux, time_index, ant1, ant2, freq_hz, uniform, out):
    nrow = time_index.shape[0]
    nsrc = delay_m.shape[1]
    nchan = freq_hz.shape[0]
    df = freq_hz[1] - freq_hz[0] if nchan > 1 else 0.0
    for r in range(nrow):
        t = time_index[r]
        for s in range(nsrc):
            d = delay_m[t, s, ant2[r]] - delay_m[t, s, ant1[r]]
            k = 2.0 * math.pi * d / C_M_S
            if uniform:  # equally spaced channels: a phasor recurrence, one multiply each
                z = complex(math.cos(k * freq_hz[0]), math.sin(k * freq_hz[0]))
                step = complex(math.cos(k * df), math.sin(k * df))
                for c in range(nchan):
                    out[r, c] += flux[t, s, c] * z
                    z *= step
            else:
                for c in range(nchan):
                    ph = k * freq_hz[c]
                    out[r, c] += flux[t, s, c] * complex(math.cos(ph), math.sin(ph))
    return out


def predict_point_sources(delay_m, flux, time_index, ant1, ant2, freq_hz, dtype=np.complex128):
    """Direct Fourier transform of point sources, UVH5 baseline convention.

    ``V[r, c] = sum_s flux[t, s, c] exp(+2 pi i nu_c (d[t, s, ant2] - d[t, s, ant1]) / c)``
    with ``d[t, s, a] = x_a . (s_s(t) - s0(t))`` the antenna's geometric delay towards
    source ``s`` relative to the phase centre, in metres.

    Parameters
    ----------
    delay_m : (Ntimes, Nsrc, Nants) float64
    flux : (Ntimes, Nsrc, Nchan) float
        Apparent flux density (Jy) including the primary beam.
    time_index, ant1, ant2 : (Nrows,) int
    freq_hz : (Nchan,) float
    dtype : complex dtype of the result

    Returns
    -------
    (Nrows, Nchan) complex

    Equally spaced channels use a phasor recurrence (``z_{c+1} = z_c exp(i k dnu)``), exact
    to rounding (relative error ~ Nchan x 1e-16), several times faster than cos/sin per
    channel.
    """
    delay_m = np.ascontiguousarray(delay_m, dtype=np.float64)
    flux = np.ascontiguousarray(flux, dtype=np.float64)
    f = np.ascontiguousarray(freq_hz, dtype=np.float64)
    ti, a1, a2 = (np.ascontiguousarray(x, dtype=np.int64) for x in (time_index, ant1, ant2))
    if flux.shape != delay_m.shape[:2] + (f.shape[0],):
        raise ValueError(f"flux {flux.shape} does not match delay_m {delay_m.shape} / freqs")
    out = np.zeros((ti.shape[0], f.shape[0]), dtype=np.complex128)
    steps = np.diff(f)
    uniform = bool(steps.size and np.all(np.abs(steps - steps[0]) <= 1e-9 * np.abs(f).max()))
    _predict(delay_m, flux, ti, a1, a2, f, uniform, out)
    return out.astype(dtype, copy=False)


@njit(cache=True, nogil=True)
def _to_ms_order(vis, flags, nsamples, order, conj_in, reverse, dw_m, freq_out, uniform,
                 vis_out, flag_out, wsum, nvalid, nonfinite):
    nrow, nchan, npol = vis.shape
    turn = dw_m.shape[0] > 0
    rot = np.ones(nchan, dtype=np.complex128)
    for i in range(order.shape[0]):
        r = order[i]
        keep = conj_in[r]
        if turn:
            _phasors(-2.0 * math.pi * dw_m[i] / C_M_S, freq_out, uniform, rot)
        for c in range(nchan):
            co = nchan - 1 - c if reverse else c
            for p in range(npol):
                v = vis[r, c, p]
                f = flags[r, c, p]
                if not (math.isfinite(v.real) and math.isfinite(v.imag)):
                    v = 0j
                    f = True
                    nonfinite[i] += 1
                if not keep:
                    v = v.conjugate()
                vis_out[i, co, p] = v * rot[co] if turn else v
                flag_out[i, co, p] = f
                if not f:
                    wsum[i, p] += nsamples[r, c, p]
                    nvalid[i, p] += 1


def to_ms_order(vis, flags, nsamples, order, keep_phase, *, reverse, dw_m=None, freq_hz=None,
                out=None):
    """One pass from raw UVH5 rows to Measurement Set rows, convention and channel order.

    Parameters
    ----------
    vis : (Nblts, Nchan, Npols) complex64
        Raw visibilities, UVH5 convention, as read.
    flags : (Nblts, Nchan, Npols) bool
        Raw flags; rows the caller wants flagged (autocorrelations) already set.
    nsamples : (Nblts, Nchan, Npols) float32
    order : (Nrows,) int
        Raw row feeding each output row (MS order: time, ant1, ant2).
    keep_phase : (Nblts,) bool
        True for raw rows whose antennas were reversed (ant1 > ant2). Going from UVH5 to
        the MS convention conjugates every row; reversing a baseline conjugates it again,
        so those rows keep their raw value and all others are conjugated.
    reverse : bool
        Reverse the channel axis (descending raw frequencies -> ascending).
    dw_m : (Nrows,) float, optional
        Rephase as well: ``w_new - w_old`` (m, MS convention) of each OUTPUT row; the output
        is multiplied by ``exp(-2 pi i dw nu / c)`` as in :func:`rephase`.
    freq_hz : (Nchan,) float, optional
        Frequencies (Hz) of the OUTPUT channels, needed with ``dw_m``.
    out : tuple of (vis_out, flag_out), optional
        Preallocated C-contiguous outputs (reused buffers avoid page faults).

    Returns
    -------
    vis_out (Nrows, Nchan, Npols) complex64, flag_out bool, wsum (Nrows, Npols) float64
    (sum of nsamples over unflagged channels), nvalid (Nrows, Npols) int64, nonfinite
    (Nrows,) int64 (NaN/Inf samples per output row). Non-finite visibilities are zeroed and
    flagged.
    """
    order = np.ascontiguousarray(order, dtype=np.int64)
    keep = np.ascontiguousarray(keep_phase, dtype=np.bool_)
    if vis.shape != flags.shape or vis.shape != nsamples.shape:
        raise ValueError(f"vis {vis.shape}, flags {flags.shape}, nsamples {nsamples.shape}")
    if keep.shape != (vis.shape[0],):
        raise ValueError("keep_phase must have one entry per raw row")
    if order.size and (order.min() < 0 or order.max() >= vis.shape[0]):
        raise ValueError("order out of range")
    n = order.shape[0]
    if out is None:
        vis_out = np.empty((n,) + vis.shape[1:], dtype=vis.dtype)
        flag_out = np.empty((n,) + vis.shape[1:], dtype=np.bool_)
    else:
        vis_out, flag_out = out
        if vis_out.shape != (n,) + vis.shape[1:] or flag_out.shape != vis_out.shape \
                or vis_out.dtype != vis.dtype or not vis_out.flags.c_contiguous:
            raise ValueError("out arrays do not match the input")
    if dw_m is not None and freq_hz is None:
        raise ValueError("rephasing (dw_m) needs the output channels' freq_hz")
    dw = np.zeros(0) if dw_m is None else np.ascontiguousarray(dw_m, dtype=np.float64)
    f = np.zeros(vis.shape[1]) if freq_hz is None else np.ascontiguousarray(freq_hz, np.float64)
    if dw.size and (dw.shape != (n,) or f.shape != (vis.shape[1],)):
        raise ValueError(f"dw_m {dw.shape} / freq_hz {f.shape} do not match {n} rows of "
                         f"{vis.shape[1]} channels")
    wsum = np.zeros((n, vis.shape[2]), dtype=np.float64)
    nvalid = np.zeros((n, vis.shape[2]), dtype=np.int64)
    nonfinite = np.zeros(n, dtype=np.int64)
    _to_ms_order(vis, flags, nsamples, order, keep, bool(reverse), dw, f,
                 _uniform_channels(f, dw), vis_out, flag_out, wsum, nvalid, nonfinite)
    return vis_out, flag_out, wsum, nvalid, nonfinite


@njit(cache=True, nogil=True)
def _average_channels(vis, flags, k, vis_out, flag_out, nvalid, count):
    nrow, nchan, npol = vis.shape
    for r in range(nrow):
        for co in range(nchan // k):
            for p in range(npol):
                s = complex(0.0, 0.0)
                n = 0
                for c in range(co * k, co * k + k):
                    if not flags[r, c, p]:
                        s += vis[r, c, p]
                        n += 1
                count[r, co, p] = n
                if n:
                    vis_out[r, co, p] = s / n
                    flag_out[r, co, p] = False
                    nvalid[r, p] += 1
                else:
                    vis_out[r, co, p] = 0j
                    flag_out[r, co, p] = True


def average_channels(vis, flags, factor: int, out=None):
    """Average groups of ``factor`` adjacent channels over their unflagged samples.

    Parameters
    ----------
    vis : (Nrows, Nchan, Npols) complex64, Nchan a multiple of ``factor``
        Visibilities already phased to the centre they will be imaged at: averaging turns
        a source's phase gradient across the group into a loss of its amplitude (bandwidth
        smearing, :mod:`engine.smearing`).
    flags : (Nrows, Nchan, Npols) bool
    factor : int >= 1
    out : tuple of (vis_out, flag_out, count), optional
        Preallocated C-contiguous outputs of shape (Nrows, Nchan // factor, Npols).

    Returns
    -------
    vis_out complex64, flag_out bool (set where every sample of the group was flagged; the
    value is then 0), nvalid (Nrows, Npols) int64: unflagged output channels per row, and
    count (Nrows, Nchan // factor, Npols) uint8: unflagged samples in each group (0..factor).
    Samples are weighted equally: a row's nsamples are the same in every channel of a
    DSA-110 subband. A group that kept n of its samples has n/factor of a full group's
    weight (its noise variance is factor/n times larger): the MS's WEIGHT_SPECTRUM carries
    ``count`` times the row's nsamples per sample.
    """
    nrow, nchan, npol = vis.shape
    if factor < 1 or factor > 255 or nchan % factor:
        raise ValueError(f"{nchan} channels cannot be averaged in groups of {factor}")
    shape = (nrow, nchan // factor, npol)
    if out is None:
        out = (np.empty(shape, np.complex64), np.empty(shape, np.bool_),
               np.empty(shape, np.uint8))
    vis_out, flag_out, count = out
    if vis_out.shape != shape or flag_out.shape != shape or count.shape != shape:
        raise ValueError(f"outputs have shape {vis_out.shape}, expected {shape}")
    nvalid = np.zeros((nrow, npol), np.int64)
    _average_channels(vis, np.ascontiguousarray(flags, dtype=np.bool_), int(factor), vis_out,
                      flag_out, nvalid, count)
    return vis_out, flag_out, nvalid, count
