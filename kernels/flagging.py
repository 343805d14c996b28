"""Interference flagging kernels (numba): SumThreshold, the scale-invariant rank operator,
a robust smooth background, and the per-baseline driver over visibilities in MS order.

Pure: arrays in, flags out, no I/O. Conventions: a *plane* is one baseline and one
polarisation, shape ``(ntimes, nchan)``, of visibility amplitudes (the unit of the data, Jy
for calibrated or simulated data); ``mask`` is True where a sample is flagged. Thresholds
are in units of the plane's robust sigma (1.4826 x the median absolute residual).

The background is robust (medians), not a mean, so a block of interference does not
lift it and hide itself.

SumThreshold (Offringa et al. 2010, MNRAS 405, 155): for window lengths M = 1, 2, 4, ...
a run of M consecutive unflagged samples whose mean exceeds chi_M = chi_1 / rho^log2(M)
is flagged whole, first along frequency then along time; samples flagged at a smaller M
are left out of the sums at the larger ones. The scale-invariant rank operator (Offringa
et al. 2012, A&A 539, A95) then flags a sample when some window containing it is at least
(1 - eta) flagged, in each direction.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def sum_threshold_line(x, mask, out, chi1, rho, max_m):
    """One line (1-D) of normalised residuals: OR the SumThreshold flags into ``out``.

    x: (n,) float residual / sigma; mask: (n,) bool input flags (left out of the sums and
    updated as the window grows); out: (n,) bool, flags are OR-ed in. Positive excursions
    only (interference adds power). Returns nothing.
    """
    n = x.size
    m = 1
    while m <= max_m and m <= n:
        thr = chi1 / rho ** (math.log2(m))
        new = np.zeros(n, dtype=np.bool_)
        s = 0.0
        cnt = 0
        for i in range(n):  # window [i - m + 1, i]
            if not mask[i]:
                s += x[i]
                cnt += 1
            j = i - m
            if j >= 0 and not mask[j]:
                s -= x[j]
                cnt -= 1
            if i >= m - 1 and cnt > 0 and s > thr * cnt:
                for k in range(i - m + 1, i + 1):
                    new[k] = True
        for i in range(n):
            if new[i]:
                mask[i] = True
                out[i] = True
        m *= 2


@njit(cache=True)
def sir_line(mask, eta):
    """Scale-invariant rank operator on one line, in place (linear time).

    A sample is flagged when some window containing it holds a flagged fraction of at
    least ``1 - eta``: with v = eta for flagged and eta - 1 for unflagged samples and P
    their prefix sums, sample i is flagged iff max_{k > i} P[k] >= min_{k <= i} P[k].
    """
    n = mask.size
    p = np.zeros(n + 1)
    for i in range(n):
        p[i + 1] = p[i] + (eta if mask[i] else eta - 1.0)
    lo = np.empty(n)
    cur = p[0]
    for i in range(n):
        cur = min(cur, p[i])
        lo[i] = cur
    cur = p[n]
    for i in range(n - 1, -1, -1):
        cur = max(cur, p[i + 1])
        if cur - lo[i] >= -1e-12:
            mask[i] = True


@njit(cache=True)
def _median_or(vals, k, default):
    return np.median(vals[:k]) if k > 0 else default


@njit(cache=True)
def _running_median(x, valid, h, out):
    """Median of the valid entries of ``x`` within +-h of each index (x itself if none)."""
    n = x.size
    buf = np.empty(2 * h + 1)
    for i in range(n):
        k = 0
        for j in range(max(0, i - h), min(n, i + h + 1)):
            if valid[j]:
                buf[k] = x[j]
                k += 1
        out[i] = _median_or(buf, k, x[i])


@njit(cache=True)
def robust_background(a, mask, ht, hf, out):
    """The smooth part of a plane, robust to interference: S(f) + T(t).

    S: per channel the median over time of the unflagged samples, then a running median
    over +-hf channels (removes narrowband lines up to about hf channels wide, and time
    blocks shorter than half the observation). T: per integration the median over
    frequency of (a - S), then a running median over +-ht integrations (follows slow gain
    and sky changes, removes broadband bursts). a, out: (nt, nf); mask: (nt, nf) bool.
    """
    nt, nf = a.shape
    col = np.empty(nt)
    spec = np.zeros(nf)
    has_f = np.zeros(nf, dtype=np.bool_)
    for f in range(nf):
        k = 0
        for t in range(nt):
            if not mask[t, f]:
                col[k] = a[t, f]
                k += 1
        if k > 0:
            spec[f] = np.median(col[:k])
            has_f[f] = True
    s = np.empty(nf)
    _running_median(spec, has_f, hf, s)
    if not has_f.any():
        s[:] = 0.0
    row = np.empty(nf)
    prof = np.zeros(nt)
    has_t = np.zeros(nt, dtype=np.bool_)
    for t in range(nt):
        k = 0
        for f in range(nf):
            if not mask[t, f]:
                row[k] = a[t, f] - s[f]
                k += 1
        if k > 0:
            prof[t] = np.median(row[:k])
            has_t[t] = True
    tt = np.empty(nt)
    _running_median(prof, has_t, ht, tt)
    if not has_t.any():
        tt[:] = 0.0
    for t in range(nt):
        for f in range(nf):
            out[t, f] = s[f] + tt[t]


@njit(cache=True)
def robust_sigma(r, mask):
    """1.4826 x the median absolute value of the unflagged samples of ``r`` (0 if none)."""
    vals = np.empty(r.size)
    k = 0
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            if not mask[i, j]:
                vals[k] = abs(r[i, j])
                k += 1
    if k == 0:
        return 0.0
    return 1.4826 * np.median(vals[:k])


@njit(cache=True)
def flag_plane(amp, mask, chi1, rho, iterations, max_m_freq, max_m_time, eta, ht, hf):
    """SumThreshold flags of one plane, iterated with a refitted background; returns the
    flags this step added (the input ``mask`` is not changed).

    amp: (nt, nf) amplitudes; mask: (nt, nf) bool, True = already flagged. Iteration k of
    ``iterations`` uses chi1 x 2^(iterations - 1 - k) (strongest interference first, so it
    does not bias the background and sigma of the next), then the rank operator (eta).
    """
    nt, nf = amp.shape
    work = mask.copy()
    added = np.zeros((nt, nf), dtype=np.bool_)
    bg = np.empty((nt, nf))
    r = np.empty((nt, nf))
    for k in range(iterations):
        robust_background(amp, work, ht, hf, bg)
        for t in range(nt):
            for f in range(nf):
                r[t, f] = amp[t, f] - bg[t, f]
        sigma = robust_sigma(r, work)
        if sigma <= 0.0:
            break
        chi = chi1 * 2.0 ** (iterations - 1 - k)
        for t in range(nt):
            for f in range(nf):
                r[t, f] /= sigma
        for t in range(nt):
            sum_threshold_line(r[t], work[t], added[t], chi, rho, max_m_freq)
        rt = np.ascontiguousarray(r.T)
        wt = np.ascontiguousarray(work.T)
        at = np.ascontiguousarray(added.T)
        for f in range(nf):
            sum_threshold_line(rt[f], wt[f], at[f], chi, rho, max_m_time)
        work[:, :] = wt.T
        added[:, :] = at.T
    if eta > 0.0:
        full = mask | added
        for t in range(nt):
            sir_line(full[t], eta)
        ft = np.ascontiguousarray(full.T)
        for f in range(nf):
            sir_line(ft[f], eta)
        added = ft.T & ~mask
    return added


@njit(cache=True)
def flag_rows(vis, flags, order, nt, nbl, chi1, rho, iterations, max_m_freq, max_m_time,
              eta, ht, hf):
    """SumThreshold over every baseline of one subband, in place on the raw arrays.

    vis: (nrows, nchan, npol) complex64 raw visibilities; flags: same shape, bool, True =
    flagged (updated: a cell found bad is flagged in every polarisation); order: (nt * nbl,)
    raw row of each (time, baseline) cell, time-major (the MS row order). The plane searched
    is the mean over unflagged polarisations of |V| (interference shows in both linear
    feeds; averaging them gains sqrt(2) in signal to noise). Baselines flagged throughout
    (autocorrelations, dead antennas) are skipped. Returns the cells added per baseline,
    (nbl,) int64 (cells = time x channel; each counts npol visibilities).
    """
    nchan = vis.shape[1]
    npol = vis.shape[2]
    added_per = np.zeros(nbl, dtype=np.int64)
    amp = np.empty((nt, nchan))
    mask = np.empty((nt, nchan), dtype=np.bool_)
    for b in range(nbl):
        for t in range(nt):
            r = order[t * nbl + b]
            for c in range(nchan):
                s = 0.0
                k = 0
                for p in range(npol):
                    if not flags[r, c, p]:
                        s += abs(vis[r, c, p])
                        k += 1
                amp[t, c] = s / k if k > 0 else 0.0
                mask[t, c] = k == 0
        if mask.all():
            continue
        added = flag_plane(amp, mask, chi1, rho, iterations, max_m_freq, max_m_time, eta,
                           ht, hf)
        n = 0
        for t in range(nt):
            r = order[t * nbl + b]
            for c in range(nchan):
                if added[t, c]:
                    n += 1
                    for p in range(npol):
                        flags[r, c, p] = True
        added_per[b] = n
    return added_per
