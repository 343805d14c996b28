"""Flagging in the subband conversion task: bad data and interference, before calibration.

Runs on the raw arrays the subband task already holds (no second pass over the MS), in this
order, each step leaving out what the previous ones flagged:

1. autocorrelations and non-finite values;
2. exact zeros (``flag.zeros``: correlator gaps, dropped packets);
3. an amplitude clip (``flag.clip_jy``, off by default);
4. dead antennas and dead single polarisations: median cross-correlation amplitude below
   ``flag.dead_fraction`` of the array's, or more than ``flag.antenna_max_flagged`` of
   their visibilities already flagged -> flagged throughout the subband;
5. the interference search on the polarisation-averaged amplitude: by default a robust
   clip per baseline, then SumThreshold and the rank operator on each antenna's mean
   normalised amplitude (``kernels.flag_antennas``, ``flag.search = antenna``); or
   SumThreshold on every baseline (``flag.search = baseline``, ``kernels.flagging``); or
   AOFlagger on every baseline (``flag.backend = aoflagger``);
6. the array's vote: a (time, channel) found on at least ``flag.extend_baselines`` of the
   antennas (antenna search) or baselines (the others) is flagged on every baseline (an
   emitter reaches every antenna).

Steps 1-4 and the statistics are single numba passes (``kernels.flag_deterministic``).
Returns statistics by step, antenna, polarisation for the subband's manifest; the driver
adds them up per observation.
"""

from __future__ import annotations

import numpy as np

from kernels.flag_antennas import antenna_search, extend_vote
from kernels.flag_deterministic import (antenna_row_medians, deterministic_flags,
                                        flag_station_pols, flagged_per_row)
from kernels.flagging import flag_rows


def flag_subband(vis, flags, order, ant1, ant2, ntimes: int, nbls: int, fcfg) -> dict:
    """Flag one subband in place. vis, flags: (nrows, nchan, npol) raw arrays (flags True =
    bad); order: (ntimes * nbls,) raw row of each MS-order cell; ant1, ant2: (nrows,)
    station numbers of the raw rows; fcfg: the ``flag`` section.

    Returns the statistics in visibilities (cross-correlations only): total, input, the
    count each step added (STEPS), flagged, dead_antennas, dead_pols ([station, pol]),
    per_antenna ({station: [flagged per pol]}) and per_antenna_total.
    """
    nrows, nchan, npol = vis.shape
    cross = np.ascontiguousarray(ant1 != ant2)
    ant1 = np.ascontiguousarray(ant1, dtype=np.int64)
    ant2 = np.ascontiguousarray(ant2, dtype=np.int64)
    total = int(cross.sum()) * nchan * npol
    if not fcfg.enabled or total == 0:
        flags[~cross] = True
        n = int(flagged_per_row(flags, cross).sum())
        return {"total": total, "input": n, "flagged": n}
    counts, amp_sum, n_ok = deterministic_flags(vis, flags, cross, bool(fcfg.zeros),
                                                float(fcfg.clip_jy))
    stats = {"total": total, "input": int(counts[0]), "nonfinite": int(counts[1]),
             "zeros": int(counts[2]), "clip": int(counts[3])}
    nst = int(max(ant1.max(), ant2.max())) + 1
    has = n_ok > 0
    row_mean = amp_sum / np.maximum(n_ok, 1)
    ant_amp = antenna_row_medians(row_mean, has, ant1, ant2, cross, nst)  # (nst, npol)
    # each station judged on the flags before this step: its flagged fraction per pol
    rows_per = _station_sums(np.ones((nrows, 1)), ant1, ant2, cross, nst)[:, 0]
    frac = _station_sums(nchan - n_ok, ant1, ant2, cross, nst) / np.maximum(
        rows_per * nchan, 1)[:, None]
    present = rows_per > 0
    dead = np.zeros((nst, npol), bool)
    for p in range(npol):
        col = ant_amp[present, p]
        ref = np.nanmedian(col) if np.isfinite(col).any() else 0.0
        low = ~np.isfinite(ant_amp[:, p]) | (ant_amp[:, p] < fcfg.dead_fraction * ref)
        dead[:, p] = present & (low | (frac[:, p] > fcfg.antenna_max_flagged))
    stats["dead"] = int(flag_station_pols(flags, ant1, ant2, cross, dead))
    both = dead.all(axis=1)
    stats["dead_antennas"] = [int(a) for a in np.flatnonzero(both)]
    stats["dead_pols"] = [[int(a), int(p)] for a, p in np.argwhere(dead & ~both[:, None])]
    if fcfg.sumthreshold:
        by_baseline = fcfg.backend != "engine" or fcfg.search == "baseline"
        searched = flags.copy() if by_baseline and fcfg.extend_baselines > 0 else None
        stats.update(interference_search(vis, flags, order, ntimes, nbls, ant1, ant2, nst,
                                         fcfg))
        if searched is not None:
            stats["extend"] = extend_across_baselines(flags, searched, order, ntimes, nbls,
                                                      cross, fcfg.extend_baselines)
    # per station: the flagged visibilities of its cross-correlation rows, per polarisation
    per_row = flagged_per_row(flags, cross)
    per_station = _station_sums(per_row, ant1, ant2, cross, nst)
    stats["flagged"] = int(per_row.sum())
    stats["per_antenna"] = {int(a): [int(c) for c in per_station[a]]
                            for a in np.flatnonzero(present)}
    stats["per_antenna_total"] = {int(a): int(rows_per[a]) * nchan
                                  for a in np.flatnonzero(present)}
    return stats


def _station_sums(per_row, ant1, ant2, cross, nst: int) -> np.ndarray:
    """Sum of per_row (nrows, k) over each station's cross-correlation rows: (nst, k),
    indexed by station number."""
    a1c, a2c = ant1[cross], ant2[cross]
    v = np.asarray(per_row, dtype=float)[cross]
    return np.stack([np.bincount(a1c, v[:, j], nst) + np.bincount(a2c, v[:, j], nst)
                     for j in range(v.shape[1])], axis=1)


_AOFLAGGERS: dict = {}


def interference_search(vis, flags, order, ntimes: int, nbls: int, ant1, ant2, nst: int,
                        fcfg) -> dict:
    """Step 5 alone, flags in place, by ``fcfg.backend`` and ``fcfg.search``: the engine's
    per-baseline clip and SumThreshold on antenna planes (kernels.flag_antennas), its
    SumThreshold on every baseline plane (kernels.flagging.flag_rows), or AOFlagger on every
    baseline (engine.flagging_aoflagger). Returns the visibilities each step added:
    {"baseline_clip": n, "sumthreshold": n} and, with the antenna search, whose vote is
    over antennas, {"extend": n} (the others vote over baselines afterwards)."""
    order = np.ascontiguousarray(order, dtype=np.int64)
    if fcfg.backend == "engine" and fcfg.search == "antenna":
        n_clip, n_search, n_vote, _ = antenna_search(
            vis, flags, order, ntimes, nbls, ant1, ant2, nst, fcfg.baseline_clip_sigma,
            fcfg.chi1_sigma, fcfg.rho, fcfg.iterations, fcfg.max_window_chan,
            fcfg.max_window_time, fcfg.sir_eta, fcfg.background_half_time,
            fcfg.background_half_chan, fcfg.sigma_floor, fcfg.extend_baselines)
        return {"baseline_clip": int(n_clip), "sumthreshold": int(n_search),
                "extend": int(n_vote)}
    cross = np.ascontiguousarray(ant1 != ant2)
    before = int(flagged_per_row(flags, cross).sum())
    if fcfg.backend == "aoflagger":
        from engine.flagging_aoflagger import AOFlaggerRows

        key = fcfg.aoflagger_strategy
        if key not in _AOFLAGGERS:  # one loaded strategy per process and file
            _AOFLAGGERS[key] = AOFlaggerRows(key)
        _AOFLAGGERS[key](vis, flags, order, ntimes, nbls)
    else:
        flag_rows(vis, flags, order, ntimes, nbls, fcfg.chi1_sigma, fcfg.rho,
                  fcfg.iterations, fcfg.max_window_chan, fcfg.max_window_time,
                  fcfg.sir_eta, fcfg.background_half_time, fcfg.background_half_chan,
                  fcfg.sigma_floor)
    return {"baseline_clip": 0,
            "sumthreshold": int(flagged_per_row(flags, cross).sum()) - before}


def extend_across_baselines(flags, before, order, ntimes: int, nbls: int, cross,
                            fraction: float) -> int:
    """The array's vote (``kernels.flag_antennas.extend_vote``): a (time, channel) cell the
    search flagged on at least ``fraction`` of the baselines that had data there, and on
    two at least, is flagged on all of them. An emitter reaches every antenna, so it is in
    every baseline's cell at once; where it is near one baseline's threshold the array
    finds it whole, and a lone false alarm is never carried. flags (updated), before (the
    flags before the search): (nrows, nchan, npol); order: (ntimes * nbls,) raw row of each
    (time, baseline), time-major; cross: (nrows,) bool. Returns visibilities added."""
    return int(extend_vote(flags, before, np.ascontiguousarray(order, dtype=np.int64),
                           ntimes, nbls, np.ascontiguousarray(cross), float(fraction)))


STEPS = ("input", "nonfinite", "zeros", "clip", "dead", "baseline_clip", "sumthreshold",
         "extend")


def summarise(subbands: list[dict]) -> dict:
    """An observation's flag statistics from its subband manifests' ``flags``.

    ``fraction``: flagged / all cross-correlation visibilities; ``by_step``: the fraction
    each step added; ``by_subband``: fraction per subband index; ``by_antenna``:
    ``{station: [fraction per polarisation]}``; ``dead_antennas`` and ``dead_pols``
    (``[station, pol index]``) as found in any subband.
    """
    total = sum(m["flags"].get("total", 0) for m in subbands if m.get("flags"))
    if total == 0:
        return {"fraction": None, "by_step": {}, "by_subband": {}, "by_antenna": {},
                "dead_antennas": [], "dead_pols": []}
    flagged = sum(m["flags"]["flagged"] for m in subbands if m.get("flags"))
    by_step = {s: sum(m["flags"].get(s, 0) for m in subbands if m.get("flags")) / total
               for s in STEPS}
    by_subband = {int(m["subband"]): m["flags"]["flagged"] / m["flags"]["total"]
                  for m in subbands if m.get("flags", {}).get("total")}
    num, den = {}, {}
    dead_a, dead_p = set(), set()
    for m in subbands:
        f = m.get("flags") or {}
        for a, counts in f.get("per_antenna", {}).items():
            n = f["per_antenna_total"][a]
            num[int(a)] = [x + y for x, y in zip(num.get(int(a), [0] * len(counts)), counts)]
            den[int(a)] = den.get(int(a), 0) + n
        dead_a.update(f.get("dead_antennas", []))
        dead_p.update(tuple(x) for x in f.get("dead_pols", []))
    by_antenna = {a: [x / den[a] for x in num[a]] for a in sorted(num) if den[a]}
    return {"fraction": flagged / total, "by_step": by_step, "by_subband": by_subband,
            "by_antenna": by_antenna, "dead_antennas": sorted(dead_a),
            "dead_pols": sorted(list(p) for p in dead_p)}
