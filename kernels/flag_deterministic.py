"""The flagger's deterministic steps and its per-row, per-antenna statistics, in single
numba passes over a subband's raw arrays (numpy did each as a separate pass over 10 M
visibilities: 0.4 s of a full-scale subband).

Pure: arrays in, flags (in place) and counts out. Conventions: vis (nrows, nchan, npol)
complex64 raw visibilities; flags the same shape, bool, True = flagged; cross (nrows,) bool,
True for a cross-correlation row; ant1, ant2 (nrows,) station numbers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.medians import _median


@njit(cache=True)
def deterministic_flags(vis, flags, cross, zeros, clip):
    """Autocorrelations, then non-finite values, exact zeros (if ``zeros``) and |V| > clip
    (if clip > 0, data units), in that order, flagged in place; each visibility is charged
    to the first step that flags it.

    Returns (counts, amp_sum, n_ok): counts (4,) int64 = cross-correlation visibilities
    flagged on input, then added by nonfinite, zeros, clip; amp_sum (nrows, npol) float64 =
    sum of |V| over the row's unflagged channels; n_ok (nrows, npol) int64 = their number.
    """
    nrows, nchan, npol = vis.shape
    counts = np.zeros(4, np.int64)
    amp_sum = np.zeros((nrows, npol))
    n_ok = np.zeros((nrows, npol), np.int64)
    for r in range(nrows):
        if not cross[r]:
            for c in range(nchan):
                for p in range(npol):
                    flags[r, c, p] = True
            continue
        for c in range(nchan):
            for p in range(npol):
                if flags[r, c, p]:
                    counts[0] += 1
                    continue
                v = vis[r, c, p]
                if not (math.isfinite(v.real) and math.isfinite(v.imag)):
                    flags[r, c, p] = True
                    counts[1] += 1
                    continue
                if zeros and v.real == 0.0 and v.imag == 0.0:
                    flags[r, c, p] = True
                    counts[2] += 1
                    continue
                a = math.sqrt(v.real * v.real + v.imag * v.imag)
                if clip > 0.0 and a > clip:
                    flags[r, c, p] = True
                    counts[3] += 1
                    continue
                amp_sum[r, p] += a
                n_ok[r, p] += 1
    return counts, amp_sum, n_ok


@njit(cache=True)
def antenna_row_medians(row_mean, row_has, ant1, ant2, cross, nst):
    """Per station and polarisation, the median over its cross-correlation rows that have
    data (row_has) of row_mean: (nst, npol) float64, NaN where the station has none.

    row_mean, row_has: (nrows, npol); nst: number of station slots (max station + 1)."""
    nrows, npol = row_mean.shape
    out = np.full((nst, npol), np.nan)
    per = np.zeros(nst, np.int64)
    for r in range(nrows):
        if cross[r]:
            per[ant1[r]] += 1
            per[ant2[r]] += 1
    start = np.zeros(nst + 1, np.int64)
    for a in range(nst):
        start[a + 1] = start[a] + per[a]
    rows = np.empty(start[nst], np.int64)
    fill = start[:nst].copy()
    for r in range(nrows):
        if cross[r]:
            rows[fill[ant1[r]]] = r
            fill[ant1[r]] += 1
            rows[fill[ant2[r]]] = r
            fill[ant2[r]] += 1
    buf = np.empty(max(start[nst], 1))
    for a in range(nst):
        for p in range(npol):
            k = 0
            for i in range(start[a], start[a + 1]):
                r = rows[i]
                if row_has[r, p]:
                    buf[k] = row_mean[r, p]
                    k += 1
            if k > 0:
                out[a, p] = _median(buf, k, 0.0)
    return out


@njit(cache=True)
def flag_station_pols(flags, ant1, ant2, cross, dead):
    """Flag every cross-correlation visibility of a dead (station, polarisation), in place;
    dead: (nst, npol) bool. Returns the number of visibilities newly flagged."""
    nrows, nchan, npol = flags.shape
    n = 0
    for r in range(nrows):
        if not cross[r]:
            continue
        for p in range(npol):
            if dead[ant1[r], p] or dead[ant2[r], p]:
                for c in range(nchan):
                    n += not flags[r, c, p]
                    flags[r, c, p] = True
    return n


@njit(cache=True)
def flagged_per_row(flags, cross):
    """Flagged visibilities per cross-correlation row and polarisation: (nrows, npol) int64
    (zero for autocorrelation rows)."""
    nrows, nchan, npol = flags.shape
    out = np.zeros((nrows, npol), np.int64)
    for r in range(nrows):
        if cross[r]:
            for c in range(nchan):
                for p in range(npol):
                    out[r, p] += flags[r, c, p]
    return out
