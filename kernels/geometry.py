"""Baseline geometry kernels: uvw from antenna positions and per-integration rotations.

Conventions
-----------
A rotation ``rot[t]`` is a (3, 3) matrix whose rows are the u, v and w unit vectors of the
phase centre at integration ``t``, expressed in the same Earth-fixed (ITRF) frame as the
antenna positions. ``u`` points east and ``v`` north in the phase centre's celestial frame,
``w`` towards the phase centre.

Two baseline sign conventions exist and both are used:

* UVH5 / pyuvdata: ``uvw = R (x[ant2] - x[ant1])``
* Measurement Set (CASA): ``UVW = R (x[ant1] - x[ant2])``

In both, a point source at unit vector ``s`` gives ``V = S exp(+2 pi i uvw . (s - s0) / lambda)``
with that format's own ``uvw`` (checked against CASA's simulator in the tests). The kernels
here produce the Measurement Set convention.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, parallel=False)
def _baseline_uvw_ms(rot, ant_xyz, time_index, ant1, ant2, out):
    for k in prange(time_index.shape[0]):
        t = time_index[k]
        a1 = ant1[k]
        a2 = ant2[k]
        dx = ant_xyz[a1, 0] - ant_xyz[a2, 0]
        dy = ant_xyz[a1, 1] - ant_xyz[a2, 1]
        dz = ant_xyz[a1, 2] - ant_xyz[a2, 2]
        for r in range(3):
            out[k, r] = rot[t, r, 0] * dx + rot[t, r, 1] * dy + rot[t, r, 2] * dz
    return out


def baseline_uvw_ms(rot, ant_xyz, time_index, ant1, ant2):
    """Measurement Set UVW of every row, in metres.

    Parameters
    ----------
    rot : (Ntimes, 3, 3) float64
        Rows u, v, w of each integration's phase centre in ITRF (unitless).
    ant_xyz : (Nants, 3) float64
        Antenna positions in ITRF, metres; any common origin.
    time_index : (Nrows,) int
        Integration of each row (index into ``rot``).
    ant1, ant2 : (Nrows,) int
        Row indices into ``ant_xyz``.

    Returns
    -------
    (Nrows, 3) float64
        ``UVW = rot[t] @ (x[ant1] - x[ant2])`` in metres (the MS sign convention).
    """
    rot = np.ascontiguousarray(rot, dtype=np.float64)
    ant_xyz = np.ascontiguousarray(ant_xyz, dtype=np.float64)
    ti = np.ascontiguousarray(time_index, dtype=np.int64)
    a1 = np.ascontiguousarray(ant1, dtype=np.int64)
    a2 = np.ascontiguousarray(ant2, dtype=np.int64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise ValueError(f"rot must have shape (Ntimes, 3, 3), got {rot.shape}")
    if ant_xyz.ndim != 2 or ant_xyz.shape[1] != 3:
        raise ValueError(f"ant_xyz must have shape (Nants, 3), got {ant_xyz.shape}")
    if not (ti.shape == a1.shape == a2.shape):
        raise ValueError("time_index, ant1 and ant2 must have one shape")
    if ti.size and (ti.min() < 0 or ti.max() >= rot.shape[0]):
        raise ValueError("time_index out of range of rot")
    if a1.size and (min(a1.min(), a2.min()) < 0 or max(a1.max(), a2.max()) >= ant_xyz.shape[0]):
        raise ValueError("antenna index out of range of ant_xyz")
    out = np.empty((ti.shape[0], 3), dtype=np.float64)
    return _baseline_uvw_ms(rot, ant_xyz, ti, a1, a2, out)
