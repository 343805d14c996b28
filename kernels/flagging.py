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

from kernels.medians import (_lane_medians, _median, _running_median,
                             sorting_network)


@njit(cache=True)
def _st_line(x, mask, out, chi1, rho, max_m, psum, pcnt):
    """SumThreshold on one line with caller-provided scratch (both at least n + 1 long).

    Window sums from prefix sums of the unflagged samples, recomputed only after a window
    length that flagged something: O(n) per window length, no allocation. A line whose
    largest sample is below the smallest threshold is left at once. x may be a strided view.
    """
    n = x.size
    top = -np.inf
    for i in range(n):
        if not mask[i] and x[i] > top:
            top = x[i]
    m_last = 1
    while m_last * 2 <= max_m and m_last * 2 <= n:
        m_last *= 2
    if top <= chi1 / rho ** (math.log2(m_last)):
        return  # no window's mean can exceed its threshold
    stale = True
    m = 1
    while m <= max_m and m <= n:
        thr = chi1 / rho ** (math.log2(m))
        if stale:
            psum[0] = 0.0
            pcnt[0] = 0
            for i in range(n):
                if mask[i]:
                    psum[i + 1] = psum[i]
                    pcnt[i + 1] = pcnt[i]
                else:
                    psum[i + 1] = psum[i] + x[i]
                    pcnt[i + 1] = pcnt[i] + 1
            stale = False
        hit = False
        for i in range(n - m + 1):  # branch-free, so that it vectorises
            c = pcnt[i + m] - pcnt[i]
            hit |= (c > 0) & (psum[i + m] - psum[i] > thr * c)
        if hit:  # the sums stay those of the mask before this window length
            for i in range(n - m + 1):
                c = pcnt[i + m] - pcnt[i]
                if c > 0 and psum[i + m] - psum[i] > thr * c:
                    for j in range(i, i + m):
                        mask[j] = True
                        out[j] = True
            stale = True
        m *= 2


@njit(cache=True)
def sum_threshold_line(x, mask, out, chi1, rho, max_m):
    """One line (1-D) of normalised residuals: OR the SumThreshold flags into ``out``.

    x: (n,) float residual / sigma; mask: (n,) bool input flags (left out of the sums and
    updated as the window grows); out: (n,) bool, flags are OR-ed in. Positive excursions
    only (interference adds power). Returns nothing.
    """
    n = x.size
    _st_line(x, mask, out, chi1, rho, max_m, np.empty(n + 1), np.empty(n + 1, np.int64))


@njit(cache=True)
def sir_line(mask, eta):
    """Scale-invariant rank operator on one line, in place (linear time).

    A sample is flagged when some window containing it holds a flagged fraction of at
    least ``1 - eta``: with v = eta for flagged and eta - 1 for unflagged samples and P
    their prefix sums, sample i is flagged iff max_{k > i} P[k] >= min_{k <= i} P[k].
    """
    n = mask.size
    _sir_line(mask, eta, np.empty(n + 1), np.empty(n + 1))


@njit(cache=True)
def _sir_line(mask, eta, p, lo):
    n = mask.size
    k = 0
    for i in range(n):
        k += mask[i]
    if k == n or (k == 0 and eta < 1.0):
        return  # nothing to extend (with eta >= 1 every window qualifies, even unflagged)
    p[0] = 0.0
    for i in range(n):
        p[i + 1] = p[i] + (eta if mask[i] else eta - 1.0)
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
def robust_background(a, mask, ht, hf, out):
    """The smooth part of a plane, robust to interference: S(f) + T(t).

    S: per channel the median over time of the unflagged samples, then a running median
    over +-hf channels (removes narrowband lines up to about hf channels wide, and time
    blocks shorter than half the observation). T: per integration the median over
    frequency of (a - S), then a running median over +-ht integrations (follows slow gain
    and sky changes, removes broadband bursts). a, out: (nt, nf); mask: (nt, nf) bool.
    """
    nt, nf = a.shape
    sc = _scratch(nt, nf, ht, hf)
    _background(a, mask, ht, hf, out, sc)


@njit(cache=True)
def _background(a, mask, ht, hf, out, sc):
    (bg, r, work, full, buf, psum, pcnt, tsum, spec, s, prof, tt, has, p1, p2, tcnt, probe,
     cond, w_tf, w_ft, x_ft, m_ft, net_t, net_f) = sc
    nt, nf = a.shape
    _lane_medians(a, mask, spec, has, w_tf, net_t, buf)
    _running_median(spec, has[:nf], hf, s, buf)
    for t in range(nt):
        for f in range(nf):
            x_ft[f, t] = a[t, f] - s[f]
            m_ft[f, t] = mask[t, f]
    _lane_medians(x_ft, m_ft, prof, has, w_ft, net_f, buf)
    _running_median(prof, has[:nt], ht, tt, buf)
    for t in range(nt):
        for f in range(nf):
            out[t, f] = s[f] + tt[t]


@njit(cache=True)
def robust_sigma(r, mask):
    """The noise of a plane of residuals: 1.4826 x the median over integrations of the
    median absolute residual of the integration's unflagged samples (0 if none).

    A median of per-integration medians rather than one median of every sample: as robust
    (a burst moves only its own integration's value; a narrowband line moves each by at
    most its share of channels) and consistent for Gaussian noise, at a fraction of the
    cost. r, mask: (nt, nf).
    """
    nt, nf = r.shape
    return _sigma(r, mask, _scratch(nt, nf, 1, 1))


@njit(cache=True)
def _sigma(r, mask, sc):
    (bg, rr, work, full, buf, psum, pcnt, tsum, spec, s, prof, tt, has, p1, p2, tcnt, probe,
     cond, w_tf, w_ft, x_ft, m_ft, net_t, net_f) = sc
    nt, nf = r.shape
    for t in range(nt):
        for f in range(nf):
            x_ft[f, t] = abs(r[t, f])
            m_ft[f, t] = mask[t, f]
    _lane_medians(x_ft, m_ft, prof, has, w_ft, net_f, buf)
    k = 0
    for t in range(nt):
        if has[t]:
            buf[k] = prof[t]
            k += 1
    return 1.4826 * _median(buf, k, 0.0)


@njit(cache=True)
def _scratch(nt, nf, ht, hf):
    """Work arrays of one plane shape (allocated once per ``flag_rows`` call)."""
    n = max(nt, nf)
    return (np.empty((nt, nf)), np.empty((nt, nf)), np.empty((nt, nf), np.bool_),
            np.empty((nt, nf), np.bool_), np.empty(max(nt * nf, 2 * max(ht, hf) + 1)),
            np.empty(n + 1), np.empty(n + 1, np.int64), np.empty((nt + 1, nf)),
            np.empty(nf), np.empty(nf), np.empty(nt), np.empty(nt), np.empty(n, np.bool_),
            np.empty(n + 1), np.empty(n + 1), np.empty((nt + 1, nf), np.int64),
            np.empty((nt, nf), np.bool_), np.empty(nf, np.bool_), np.empty((nt, nf)),
            np.empty((nf, nt)), np.empty((nf, nt)), np.empty((nf, nt), np.bool_),
            sorting_network(nt), sorting_network(nf))


@njit(cache=True)
def _st_time(r, mask, out, chi1, rho, max_m, psum, pcnt, cond):
    """SumThreshold along time for every channel at once (windows over rows of the plane).

    The same as ``_st_line`` on each column, arranged so that the inner loops run over
    contiguous channels and vectorise. psum: (nt + 1, nf) float; pcnt: (nt + 1, nf) int;
    cond: (nf,) bool scratch.
    """
    nt, nf = r.shape
    top = -np.inf
    for t in range(nt):
        for f in range(nf):
            if not mask[t, f] and r[t, f] > top:
                top = r[t, f]
    m_last = 1
    while m_last * 2 <= max_m and m_last * 2 <= nt:
        m_last *= 2
    if top <= chi1 / rho ** (math.log2(m_last)):
        return
    stale = True
    m = 1
    while m <= max_m and m <= nt:
        thr = chi1 / rho ** (math.log2(m))
        if stale:
            for f in range(nf):
                psum[0, f] = 0.0
                pcnt[0, f] = 0
            for t in range(nt):
                for f in range(nf):
                    ok = not mask[t, f]
                    psum[t + 1, f] = psum[t, f] + (r[t, f] if ok else 0.0)
                    pcnt[t + 1, f] = pcnt[t, f] + ok
            stale = False
        for i in range(nt - m + 1):
            hit = False
            for f in range(nf):
                c = pcnt[i + m, f] - pcnt[i, f]
                cond[f] = (c > 0) & (psum[i + m, f] - psum[i, f] > thr * c)
                hit |= cond[f]
            if hit:  # marked now, summed from the mask before this window length
                for j in range(i, i + m):
                    for f in range(nf):
                        if cond[f]:
                            mask[j, f] = True
                            out[j, f] = True
                stale = True
        m *= 2


@njit(cache=True)
def flag_plane(amp, mask, chi1, rho, iterations, max_m_freq, max_m_time, eta, ht, hf,
               sigma_floor=0.0):
    """SumThreshold flags of one plane, iterated with a refitted background; returns the
    flags this step added (the input ``mask`` is not changed).

    amp: (nt, nf) amplitudes; mask: (nt, nf) bool, True = already flagged. Iteration k of
    ``iterations`` uses chi1 x 2^(iterations - 1 - k) (strongest interference first, so it
    does not bias the background and sigma of the next), then the rank operator (eta).
    ``sigma_floor`` (fraction): the plane's sigma is at least this fraction of its median
    background amplitude (a dynamic-range floor for noiseless or sky-dominated data).
    """
    nt, nf = amp.shape
    added = np.zeros((nt, nf), dtype=np.bool_)
    _flag_plane(amp, mask, added, chi1, rho, iterations, max_m_freq, max_m_time, eta, ht,
                hf, sigma_floor, _scratch(nt, nf, ht, hf))
    return added


@njit(cache=True)
def _flag_plane(amp, mask, added, chi1, rho, iterations, max_m_freq, max_m_time, eta, ht,
                hf, sigma_floor, sc):
    """flag_plane into ``added`` (zeroed by the caller) with the work arrays ``sc``.

    The background and sigma are refitted only after an iteration that added flags (they
    depend on the flags alone, so skipping them otherwise changes nothing). A plane on which
    the lowest threshold alone flags nothing is clean and left after that one pass: a
    higher threshold, on the same background and flags, cannot flag a window the lowest
    one does not (the first window flagged at a higher threshold exceeds the lowest too).
    """
    (bg, r, work, full, buf, psum, pcnt, tsum, spec, s, prof, tt, has, p1, p2, tcnt, probe,
     cond, w_tf, w_ft, x_ft, m_ft, net_t, net_f) = sc
    nt, nf = amp.shape
    for t in range(nt):
        for f in range(nf):
            work[t, f] = mask[t, f]
    stale = True
    sigma = 0.0
    for k in range(iterations):
        if stale:
            _background(amp, work, ht, hf, bg, sc)
            for t in range(nt):
                for f in range(nf):
                    r[t, f] = amp[t, f] - bg[t, f]
            sigma = _sigma(r, work, sc)
            if sigma_floor > 0.0:
                sigma = max(sigma, sigma_floor * abs(_median_bg(bg, buf)))
            if sigma <= 0.0:
                break
            for t in range(nt):
                for f in range(nf):
                    r[t, f] /= sigma
            stale = False
        if k == 0 and iterations > 1:  # is the plane clean?
            for t in range(nt):
                for f in range(nf):
                    full[t, f] = mask[t, f]
                    probe[t, f] = False
            _st_pass(r, full, probe, chi1, rho, max_m_freq, max_m_time, psum, pcnt, tsum,
                     tcnt, cond)
            if _count(probe) == 0:
                break
        chi = chi1 * 2.0 ** (iterations - 1 - k)
        n_before = _count(added)
        _st_pass(r, work, added, chi, rho, max_m_freq, max_m_time, psum, pcnt, tsum, tcnt,
                 cond)
        stale = _count(added) > n_before
    if eta > 0.0:
        for t in range(nt):
            for f in range(nf):
                full[t, f] = mask[t, f] or added[t, f]
        for t in range(nt):
            _sir_line(full[t], eta, p1, p2)
        for f in range(nf):
            _sir_line(full[:, f], eta, p1, p2)
        for t in range(nt):
            for f in range(nf):
                added[t, f] = full[t, f] and not mask[t, f]


@njit(cache=True)
def _st_pass(r, work, out, chi, rho, max_m_freq, max_m_time, psum, pcnt, tsum, tcnt, cond):
    """One SumThreshold pass: along frequency in each integration, then along time."""
    for t in range(r.shape[0]):
        _st_line(r[t], work[t], out[t], chi, rho, max_m_freq, psum, pcnt)
    _st_time(r, work, out, chi, rho, max_m_time, tsum, tcnt, cond)


@njit(cache=True)
def _count(m):
    n = 0
    for t in range(m.shape[0]):
        for f in range(m.shape[1]):
            n += m[t, f]
    return n


@njit(cache=True)
def _median_bg(bg, buf):
    k = 0
    for t in range(bg.shape[0]):
        for f in range(bg.shape[1]):
            buf[k] = bg[t, f]
            k += 1
    return _median(buf, k, 0.0)


@njit(cache=True)
def _baseline_plane(vis, flags, order, nt, nbl, b, amp, mask):
    """The mean over unflagged polarisations of |V| of baseline b: amp, mask (nt, nchan);
    returns the number of cells with data."""
    nchan = vis.shape[1]
    npol = vis.shape[2]
    n_ok = 0
    for t in range(nt):
        r = order[t * nbl + b]
        for c in range(nchan):
            s = 0.0
            k = 0
            for p in range(npol):
                if not flags[r, c, p]:
                    v = vis[r, c, p]
                    s += math.sqrt(v.real * v.real + v.imag * v.imag)
                    k += 1
            amp[t, c] = s / k if k > 0 else 0.0
            mask[t, c] = k == 0
            n_ok += k > 0
    return n_ok


@njit(cache=True)
def flag_rows(vis, flags, order, nt, nbl, chi1, rho, iterations, max_m_freq, max_m_time,
              eta, ht, hf, sigma_floor=0.0):
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
    added = np.empty((nt, nchan), dtype=np.bool_)
    sc = _scratch(nt, nchan, ht, hf)
    for b in range(nbl):
        if _baseline_plane(vis, flags, order, nt, nbl, b, amp, mask) == 0:
            continue
        added[:, :] = False
        _flag_plane(amp, mask, added, chi1, rho, iterations, max_m_freq, max_m_time, eta,
                    ht, hf, sigma_floor, sc)
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
