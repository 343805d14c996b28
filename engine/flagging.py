"""Flagging in the subband conversion task: bad data and interference, before calibration.

Runs on the raw arrays the subband task already holds (no second pass over the MS), in this
order, each step leaving out what the previous ones flagged:

1. autocorrelations (by the caller) and non-finite values;
2. exact zeros (``flag.zeros``: correlator gaps, dropped packets);
3. an amplitude clip (``flag.clip_jy``, off by default);
4. dead antennas and dead single polarisations: median cross-correlation amplitude below
   ``flag.dead_fraction`` of the array's, or more than ``flag.antenna_max_flagged`` of
   their visibilities already flagged -> flagged throughout the subband;
5. SumThreshold per baseline on the polarisation-averaged amplitude (``kernels.flagging``),
   then the scale-invariant rank operator; or AOFlagger with ``flag.backend = aoflagger``;
6. the array's vote: a (time, channel) found on at least ``flag.extend_baselines`` of the
   baselines is flagged on all of them (an emitter reaches every antenna).

Returns statistics by step, antenna, polarisation for the subband's manifest; the driver
adds them up per observation.
"""

from __future__ import annotations

import numpy as np

from kernels.flagging import flag_rows


def _antenna_amplitudes(amp_row, ok_row, ant1, ant2, cross, ants):
    """Median over each antenna's cross-correlation rows of the row's mean unflagged
    amplitude, per polarisation: (len(ants), npol), NaN where nothing is left."""
    out = np.full((len(ants), amp_row.shape[1]), np.nan)
    for i, a in enumerate(ants):
        rows = cross & ((ant1 == a) | (ant2 == a))
        for p in range(amp_row.shape[1]):
            sel = rows & ok_row[:, p]
            if sel.any():
                out[i, p] = np.median(amp_row[sel, p])
    return out


def flag_subband(vis, flags, order, ant1, ant2, ntimes: int, nbls: int, fcfg) -> dict:
    """Flag one subband in place. vis, flags: (nrows, nchan, npol) raw arrays (flags True =
    bad, autocorrelations already flagged); order: (ntimes * nbls,) raw row of each MS-order
    cell; ant1, ant2: (nrows,) antenna numbers of the raw rows; fcfg: the ``flag`` section.
    """
    nrows, nchan, npol = vis.shape
    cross = ant1 != ant2
    total = int(cross.sum()) * nchan * npol
    auto_cells = (nrows - int(cross.sum())) * nchan * npol

    def n_cross_flagged():  # autocorrelations are flagged throughout: count them off
        return int(np.count_nonzero(flags)) - auto_cells

    flags[~cross] = True
    stats = {"total": total, "input": n_cross_flagged()}
    if not fcfg.enabled or total == 0:
        stats["flagged"] = stats["input"]
        return stats
    before = stats["input"]

    def step(name):
        nonlocal before
        now = n_cross_flagged()
        stats[name] = now - before
        before = now

    flags |= ~np.isfinite(vis)  # NaN/Inf (the MS-order kernel zeroes them later)
    step("nonfinite")
    if fcfg.zeros:
        flags |= vis == 0
        step("zeros")
    if fcfg.clip_jy > 0:
        flags |= np.abs(vis) > fcfg.clip_jy
        step("clip")
    ok = ~flags
    amp = np.abs(vis)  # float32
    amp[flags] = 0.0  # flagged samples (NaN among them) count nothing
    n_ok = np.count_nonzero(ok, axis=1)  # (nrows, npol)
    amp_row = np.where(n_ok > 0, amp.sum(axis=1) / np.maximum(n_ok, 1), np.nan)
    ants = np.unique(np.concatenate([ant1[cross], ant2[cross]]))
    ant_amp = _antenna_amplitudes(amp_row, n_ok > 0, ant1, ant2, cross, ants)
    dead = []
    # each antenna judged on the flags before this step: its flagged fraction per pol
    frac = _antenna_sums(np.count_nonzero(flags, axis=1), ant1, ant2, cross)
    frac = frac / np.maximum(_antenna_sums(np.ones((nrows, 1)), ant1, ant2, cross) * nchan, 1)
    for p in range(npol):
        ref = np.nanmedian(ant_amp[:, p]) if np.isfinite(ant_amp[:, p]).any() else 0.0
        for i, a in enumerate(ants):
            low = not np.isfinite(ant_amp[i, p]) or ant_amp[i, p] < fcfg.dead_fraction * ref
            if low or frac[a, p] > fcfg.antenna_max_flagged:
                dead.append([int(a), p])
    for a, p in dead:
        flags[cross & ((ant1 == a) | (ant2 == a)), :, p] = True
    # an antenna dead in every polarisation is a dead antenna; else a dead polarisation
    by_ant = {}
    for a, p in dead:
        by_ant.setdefault(a, []).append(p)
    stats["dead_antennas"] = sorted(a for a, ps in by_ant.items() if len(ps) == npol)
    stats["dead_pols"] = sorted([a, p] for a, ps in by_ant.items() if len(ps) < npol
                                for p in ps)
    step("dead")
    if fcfg.sumthreshold:
        searched = flags.copy()
        interference_search(vis, flags, order, ntimes, nbls, fcfg)
        step("sumthreshold")
        if fcfg.extend_baselines > 0:
            extend_across_baselines(flags, searched, order, ntimes, nbls, cross,
                                    fcfg.extend_baselines)
            step("extend")
    stats["flagged"] = n_cross_flagged()
    # per antenna: the flagged visibilities of its cross-correlation rows, per polarisation
    counts = _antenna_sums(np.count_nonzero(flags, axis=1), ant1, ant2, cross)
    rows_per_ant = _antenna_sums(np.ones((nrows, 1)), ant1, ant2, cross)[:, 0]
    stats["per_antenna"] = {int(a): [int(c) for c in counts[a]] for a in ants}
    stats["per_antenna_total"] = {int(a): int(rows_per_ant[a]) * nchan for a in ants}
    return stats


def _antenna_sums(per_row, ant1, ant2, cross) -> np.ndarray:
    """Sum of per_row (nrows, k) over each antenna's cross-correlation rows: (max station
    number + 1, k), indexed by station number."""
    a1c, a2c = ant1[cross], ant2[cross]
    size = int(max(a1c.max(), a2c.max())) + 1
    v = per_row[cross]
    return np.stack([np.bincount(a1c, v[:, j], size) + np.bincount(a2c, v[:, j], size)
                     for j in range(v.shape[1])], axis=1)


_AOFLAGGERS: dict = {}


def interference_search(vis, flags, order, ntimes: int, nbls: int, fcfg) -> np.ndarray:
    """Step 5 alone, by ``fcfg.backend``: the engine's SumThreshold (kernels.flagging) or
    AOFlagger (engine.flagging_aoflagger). Flags in place; returns the cells (time x
    channel) added per baseline, (nbls,) int64."""
    order = np.ascontiguousarray(order, dtype=np.int64)
    if fcfg.backend == "aoflagger":
        from engine.flagging_aoflagger import AOFlaggerRows

        key = fcfg.aoflagger_strategy
        if key not in _AOFLAGGERS:  # one loaded strategy per process and file
            _AOFLAGGERS[key] = AOFlaggerRows(key)
        return _AOFLAGGERS[key](vis, flags, order, ntimes, nbls)
    return flag_rows(vis, flags, order, ntimes, nbls, fcfg.chi1_sigma, fcfg.rho,
                     fcfg.iterations, fcfg.max_window_chan, fcfg.max_window_time,
                     fcfg.sir_eta, fcfg.background_half_time, fcfg.background_half_chan,
                     fcfg.sigma_floor)


def extend_across_baselines(flags, before, order, ntimes: int, nbls: int, cross,
                            fraction: float) -> None:
    """Flag a (time, channel) cell on every baseline when the interference search flagged it
    on at least ``fraction`` of the baselines that had data there.

    An emitter reaches every antenna, so it is in every baseline's cell at once; where it
    is near the threshold of one baseline's search, the array's vote finds it whole. A
    cell needs at least two baselines' flags, so a false alarm of one baseline's search
    never carries it. flags (updated) and before
    (the flags before the search): (nrows, nchan, npol); order: (ntimes * nbls,) raw row
    of each (time, baseline), time-major; cross: (nrows,) bool."""
    nchan = flags.shape[1]
    had = ~before.all(axis=2) & cross[:, None]  # (nrows, nchan): a cell with data
    new = (flags & ~before).any(axis=2) & had
    # MS order is time-major: the rows of integration t are order[t * nbls:(t + 1) * nbls]
    n_had = had[order].reshape(ntimes, nbls, nchan).sum(axis=1)
    n_new = new[order].reshape(ntimes, nbls, nchan).sum(axis=1)
    # two baselines at least: a lone false alarm never carries a cell seen by few baselines
    hot = (n_new >= fraction * np.maximum(n_had, 1)) & (n_new >= 2)  # (ntimes, nchan)
    for t in np.flatnonzero(hot.any(axis=1)):
        rows = order[t * nbls:(t + 1) * nbls]
        rows = rows[cross[rows]]
        flags[np.ix_(rows, np.flatnonzero(hot[t]))] = True


STEPS = ("input", "nonfinite", "zeros", "clip", "dead", "sumthreshold", "extend")


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
