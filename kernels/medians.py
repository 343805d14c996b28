"""Median kernels (numba) for the flagger: selection, rank counting, running medians and
sorting networks applied across lanes. Pure: arrays in, numbers out; ``buf`` arguments are
caller-provided scratch, reordered in place."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _select(buf, lo, hi, k):
    """Rearrange buf[lo:hi] so that buf[k] is its k-th smallest (quickselect, in place)."""
    while hi - lo > 16:
        mid = (lo + hi) // 2  # median of three as the pivot
        a, b, c = buf[lo], buf[mid], buf[hi - 1]
        piv = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi - 1
        while i <= j:
            while buf[i] < piv:
                i += 1
            while buf[j] > piv:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return
    for i in range(lo + 1, hi):  # insertion sort of what is left
        v = buf[i]
        j = i - 1
        while j >= lo and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v


@njit(cache=True)
def _median_by_rank(buf, k):
    """Median of buf[:k], k > 0, by counting ranks: O(k^2) compares but no data-dependent
    branches (faster than a selection for the short lines of a plane). Ties are exact: x_i
    is the j-th smallest for every j with #(x < x_i) <= j < #(x <= x_i)."""
    h = k // 2
    lo_val = 0.0
    hi_val = 0.0
    for i in range(k):
        v = buf[i]
        less = 0
        leq = 0
        for j in range(k):
            less += buf[j] < v
            leq += buf[j] <= v
        if less <= h < leq:
            hi_val = v
        if less <= h - 1 < leq:
            lo_val = v
    return hi_val if k % 2 else 0.5 * (lo_val + hi_val)


@njit(cache=True)
def _median(buf, k, default):
    """Median of buf[:k] (the mean of the middle two for even k, as numpy), reordering it;
    ``default`` when k is 0."""
    if k == 0:
        return default
    if k <= 64:
        return _median_by_rank(buf, k)
    h = k // 2
    _select(buf, 0, k, h)
    if k % 2:
        return buf[h]
    lower = buf[0]
    for i in range(1, h):  # the largest of the lower half
        lower = max(lower, buf[i])
    return 0.5 * (lower + buf[h])


@njit(cache=True)
def _running_median(x, valid, h, out, buf):
    """Median of the valid entries of ``x`` within +-h of each index (x itself where none
    is near); all zeros when no entry is valid."""
    n = x.size
    anyv = False
    for i in range(n):
        anyv = anyv or valid[i]
    if not anyv:
        out[:] = 0.0
        return
    for i in range(n):
        k = 0
        for j in range(max(0, i - h), min(n, i + h + 1)):
            if valid[j]:
                buf[k] = x[j]
                k += 1
        out[i] = _median(buf, k, x[i])


@njit(cache=True)
def sorting_network(n):
    """Compare-exchange pairs (i < j: min to i, max to j) that sort n values: Batcher's
    odd-even merge sort for the next power of two, without the pairs that reach past n
    (those would only meet the +inf padding, so dropping them changes nothing).
    Returns (P, 2) int64."""
    size = 1
    while size < n:
        size *= 2
    out = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        out.append((i + j, i + j + k))
            k //= 2
        p *= 2
    arr = np.empty((len(out), 2), np.int64)
    for i in range(len(out)):
        arr[i, 0] = out[i][0]
        arr[i, 1] = out[i][1]
    return arr


@njit(cache=True)
def _lane_medians(x, mask, out, has, work, pairs, buf):
    """Median over axis 0 of each lane (column) of x, (n, L), leaving out masked samples.

    Lanes without a masked sample are sorted all at once by the network ``pairs`` (the
    inner loops run over contiguous lanes and vectorise, with no data-dependent branch);
    the others are taken one by one. out: (L,) medians (0 where nothing is left); has: (L,)
    bool, False there. work: (n, L) scratch, buf: (n,) scratch.
    """
    n, nl = x.shape
    for t in range(n):
        for f in range(nl):
            work[t, f] = x[t, f]
    for q in range(pairs.shape[0]):
        i = pairs[q, 0]
        j = pairs[q, 1]
        for f in range(nl):
            u = work[i, f]
            v = work[j, f]
            work[i, f] = min(u, v)
            work[j, f] = max(u, v)
    h = n // 2
    for f in range(nl):
        k = 0
        for t in range(n):
            k += not mask[t, f]
        has[f] = k > 0
        if k == n:
            out[f] = work[h, f] if n % 2 else 0.5 * (work[h - 1, f] + work[h, f])
        else:
            k = 0
            for t in range(n):
                if not mask[t, f]:
                    buf[k] = x[t, f]
                    k += 1
            out[f] = _median(buf, k, 0.0)
