"""The interference search on the array's antennas, and the array's vote (numba).

An emitter is received by every antenna, so it is in every baseline of an antenna at
once. Averaged over an antenna's N - 1 baselines, each normalised by its own median
amplitude, it stands sqrt(N - 1) times higher above the noise than on one baseline, and the
SumThreshold search runs on N antenna planes instead of N (N - 1) / 2 baseline planes
(96 instead of 4560 at full scale). A problem local to one antenna (its own interference,
a bad feed) raises the amplitude of all its baselines and shows there too. What only one
baseline sees (cross-talk between neighbours) is caught by a robust clip per baseline
before the averaging, so that it neither hides nor is spread.

Pure: arrays in, flags (in place) and counts out. Conventions as ``kernels.flagging``:
vis (nrows, nchan, npol) complex64 raw rows; flags the same shape, True = flagged; order
(nt * nbl,) raw row of each (time, baseline) cell, time-major, the same baseline order in
every integration; ant1, ant2 (nrows,) station numbers; nst the number of station slots.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.flagging import _baseline_plane, _flag_plane, _scratch
from kernels.medians import _median

LEVEL_SAMPLES = 256  # cells per baseline that set its median and MAD
SPECTRUM_MIN_CHANNELS = 8  # channel means that make a robust spectrum level and scale


@njit(cache=True)
def _flag_cell(flags, r, c):
    """Flag every polarisation of (row, channel); returns the visibilities newly flagged."""
    n = 0
    for p in range(flags.shape[2]):
        n += not flags[r, c, p]
        flags[r, c, p] = True
    return n


@njit(cache=True)
def _spectrum_clip(flags, order, nt, nbl, b, amp, mask, clip_sigma, sigma_floor, chan_mean,
                   buf):
    """Flag on baseline b the channels whose mean amplitude over time is above the median
    of the channel means + clip_sigma x max(1.4826 x their MAD, sigma_floor x median): a
    line only this baseline sees, at 1 / sqrt(nt) of the noise of one cell. Needs
    SPECTRUM_MIN_CHANNELS channels with data (else does nothing). Flags every polarisation
    and sets ``mask`` of the flagged cells; returns the visibilities newly flagged."""
    nchan = amp.shape[1]
    k = 0
    for c in range(nchan):
        s = 0.0
        n = 0
        for t in range(nt):
            if not mask[t, c]:
                s += amp[t, c]
                n += 1
        chan_mean[c] = s / n if n > 0 else np.nan
        if n > 0:
            buf[k] = chan_mean[c]
            k += 1
    if k < SPECTRUM_MIN_CHANNELS:
        return 0
    cmed = _median(buf, k, 0.0)
    for j in range(k):
        buf[j] = abs(buf[j] - cmed)
    thr = cmed + clip_sigma * max(1.4826 * _median(buf, k, 0.0), sigma_floor * abs(cmed))
    n_new = 0
    for c in range(nchan):
        if chan_mean[c] > thr:  # NaN (no data) compares False
            for t in range(nt):
                if not mask[t, c]:
                    n_new += _flag_cell(flags, order[t * nbl + b], c)
                    mask[t, c] = True
    return n_new


@njit(cache=True)
def antenna_search(vis, flags, order, nt, nbl, ant1, ant2, nst, clip_sigma, chi1, rho,
                   iterations, max_m_freq, max_m_time, eta, ht, hf, sigma_floor, vote):
    """Per-baseline robust clip, then SumThreshold on each antenna's mean normalised
    amplitude plane; flags in place.

    1. Each cross-correlation baseline's plane (mean over unflagged polarisations of |V|,
       (nt, nchan)): a channel whose mean over time is above the median of the channel
       means + clip_sigma x their sigma (``_spectrum_clip``) is flagged on that baseline;
       then a cell above median + clip_sigma x sigma, sigma = max(1.4826 x MAD,
       sigma_floor x median) of the plane (both from LEVEL_SAMPLES cells or more, evenly
       spread), is flagged in every polarisation (clip_sigma = 0: neither).
    2. Each remaining cell, divided by the baseline's median, is added to the planes of
       both its antennas; an antenna's plane is the mean over its baselines.
    3. ``kernels.flagging._flag_plane`` (SumThreshold iterated with a refitted background,
       then the rank operator; chi1 ... sigma_floor as there) on every antenna plane; a
       cell flagged on antenna a's plane is flagged on every baseline of a.
    4. The array's vote (``vote`` > 0): a cell found on at least ``vote`` of the antennas
       with data there, and on two at least, is flagged on every baseline.

    Returns (n_clip, n_search, n_vote, antenna_added): visibilities newly flagged by steps
    1, 3 and 4, and antenna_added (nst, nt, nchan) bool, the cells step 3 found per station
    (before the vote).
    """
    nchan = vis.shape[1]
    amp = np.empty((nt, nchan))
    mask = np.empty((nt, nchan), np.bool_)
    buf = np.empty(nt * nchan)
    chan_mean = np.empty(nchan)
    ant_sum = np.zeros((nst, nt, nchan))
    ant_cnt = np.zeros((nst, nt, nchan), np.int64)
    n_clip = 0
    for b in range(nbl):
        r0 = order[b]
        a, e = ant1[r0], ant2[r0]
        if a == e:
            continue
        n_ok = _baseline_plane(vis, flags, order, nt, nbl, b, amp, mask)
        if n_ok == 0:
            continue
        # the level and scale from every stride-th cell with data, >= LEVEL_SAMPLES of them
        # (selection is most of this loop's cost; 256 samples give the MAD to ~7 %)
        stride = max(1, n_ok // LEVEL_SAMPLES)
        k = 0
        i = 0
        for t in range(nt):
            for c in range(nchan):
                if not mask[t, c]:
                    if i % stride == 0:
                        buf[k] = amp[t, c]
                        k += 1
                    i += 1
        med = _median(buf, k, 0.0)
        if med <= 0.0:
            continue  # nothing but zero amplitudes left: no level to normalise by
        for j in range(k):
            buf[j] = abs(buf[j] - med)
        sigma = max(1.4826 * _median(buf, k, 0.0), sigma_floor * med)
        thr = med + clip_sigma * sigma if clip_sigma > 0.0 else np.inf
        if clip_sigma > 0.0:
            n_clip += _spectrum_clip(flags, order, nt, nbl, b, amp, mask, clip_sigma,
                                     sigma_floor, chan_mean, buf)
        inv = 1.0 / med
        for t in range(nt):
            r = order[t * nbl + b]
            for c in range(nchan):
                if mask[t, c]:
                    continue
                if amp[t, c] > thr:
                    n_clip += _flag_cell(flags, r, c)
                    continue
                x = amp[t, c] * inv
                ant_sum[a, t, c] += x
                ant_cnt[a, t, c] += 1
                ant_sum[e, t, c] += x
                ant_cnt[e, t, c] += 1
    added = np.zeros((nst, nt, nchan), np.bool_)
    sc = _scratch(nt, nchan, ht, hf)
    for s in range(nst):
        n_cells = 0
        for t in range(nt):
            for c in range(nchan):
                n = ant_cnt[s, t, c]
                mask[t, c] = n == 0
                amp[t, c] = ant_sum[s, t, c] / n if n > 0 else 0.0
                n_cells += n > 0
        if n_cells == 0:
            continue
        _flag_plane(amp, mask, added[s], chi1, rho, iterations, max_m_freq, max_m_time, eta,
                    ht, hf, sigma_floor, sc)
    voted = np.zeros((nt, nchan), np.bool_)
    if vote > 0.0:
        for t in range(nt):
            for c in range(nchan):
                n_data = 0
                n_found = 0
                for s in range(nst):
                    n_data += ant_cnt[s, t, c] > 0
                    n_found += added[s, t, c]
                voted[t, c] = n_found >= 2 and n_found >= vote * n_data
    n_search = 0
    n_vote = 0
    for b in range(nbl):
        r0 = order[b]
        a, e = ant1[r0], ant2[r0]
        if a == e:
            continue
        for t in range(nt):
            r = order[t * nbl + b]
            for c in range(nchan):
                if added[a, t, c] or added[e, t, c]:
                    n_search += _flag_cell(flags, r, c)
                elif voted[t, c]:
                    n_vote += _flag_cell(flags, r, c)
    return n_clip, n_search, n_vote, added


@njit(cache=True)
def extend_vote(flags, before, order, nt, nbl, cross, fraction):
    """The array's vote, in place: a (time, channel) cell that the search flagged (flags and
    not before, in any polarisation) on at least ``fraction`` of the cross-correlation
    baselines that had data there before (not every polarisation flagged), and on at least
    two, is flagged on every cross-correlation baseline. Returns the visibilities newly
    flagged. before: the flags before the search, same shape as flags."""
    nchan = flags.shape[1]
    npol = flags.shape[2]
    n_had = np.zeros(nchan, np.int64)
    n_new = np.zeros(nchan, np.int64)
    n = 0
    for t in range(nt):
        n_had[:] = 0
        n_new[:] = 0
        for b in range(nbl):
            r = order[t * nbl + b]
            if not cross[r]:
                continue
            for c in range(nchan):
                had = False
                new = False
                for p in range(npol):
                    had |= not before[r, c, p]
                    new |= flags[r, c, p] and not before[r, c, p]
                n_had[c] += had
                n_new[c] += new
        hot = False
        for c in range(nchan):
            hot |= n_new[c] >= 2 and n_new[c] >= fraction * max(n_had[c], 1)
        if not hot:
            continue
        for b in range(nbl):
            r = order[t * nbl + b]
            if not cross[r]:
                continue
            for c in range(nchan):
                if n_new[c] >= 2 and n_new[c] >= fraction * max(n_had[c], 1):
                    n += _flag_cell(flags, r, c)
    return n
