"""What the simulator can do wrong on purpose: interference and bad data, with a truth list.

``sim.rfi`` names the kinds to inject (comma-separated; empty: none, the default):

``narrowband``    a persistent emitter in two channels of subband 3, every integration
``burst``         a broadband burst: one integration, every channel of every subband
``intermittent``  an emitter switching on and off: one channel of subband 9, on for two
                  integrations in every six
``zeros``         a correlator gap: 3 integrations x 8 channels of subband 12 exactly zero
``dead_antenna``  one antenna without signal (1e-3 of its normal amplitude), everywhere
``dead_pol``      one polarisation (YY) of another antenna without signal, everywhere

Interference adds ``sim.rfi_sigma`` x ``sim.noise_jy`` (1 Jy if there is no noise) of
amplitude with a random phase per visibility (an emitter near the ground does not fringe
like the sky) to every cross-correlation in both polarisations. Each event is listed with
the integrations, subbands, channels (file channel index within the subband), antennas
(station numbers) and polarisation indices it touched, so a test can build the exact
truth mask without this module.
"""

from __future__ import annotations

import numpy as np

KINDS = ("narrowband", "burst", "intermittent", "zeros", "dead_antenna", "dead_pol")


def plan_events(kinds: list[str], *, ntimes: int, nchan: int, nsubbands: int,
                stations: list[int]) -> list[dict]:
    """The events of one observation (the same for every observation of a run)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"sim.rfi: unknown kinds {sorted(unknown)}; known: {list(KINDS)}")
    every_t = list(range(ntimes))
    every_c = list(range(nchan))
    out = []
    for kind in kinds:
        if kind == "narrowband":
            out.append({"kind": kind, "subbands": [min(3, nsubbands - 1)], "times": every_t,
                        "channels": sorted({nchan // 3, min(nchan // 3 + 1, nchan - 1)})})
        elif kind == "burst":
            out.append({"kind": kind, "subbands": list(range(nsubbands)),
                        "times": [ntimes // 2], "channels": every_c})
        elif kind == "intermittent":
            out.append({"kind": kind, "subbands": [min(9, nsubbands - 1)],
                        "times": [t for t in every_t if t % 6 < 2],
                        "channels": [(2 * nchan) // 3]})
        elif kind == "zeros":
            t0 = max(0, ntimes // 4)
            out.append({"kind": kind, "subbands": [min(12, nsubbands - 1)],
                        "times": list(range(t0, min(ntimes, t0 + 3))),
                        "channels": list(range(0, min(nchan, 8)))})
        elif kind == "dead_antenna":
            out.append({"kind": kind, "subbands": list(range(nsubbands)), "times": every_t,
                        "channels": every_c, "antennas": [stations[len(stations) // 3]],
                        "pols": [0, 1]})
        elif kind == "dead_pol":
            out.append({"kind": kind, "subbands": list(range(nsubbands)), "times": every_t,
                        "channels": every_c, "antennas": [stations[(2 * len(stations)) // 3]],
                        "pols": [1]})
    return out


def inject(vis, events: list[dict], sb: int, time_index, ant1, ant2, amplitude: float,
           rng: np.random.Generator):
    """Apply the events that touch subband ``sb`` to its visibilities, in place.

    vis: (nblts, nchan, npol) complex64 in the file's row order; time_index, ant1, ant2:
    (nblts,) integration index and station numbers of each row.
    """
    cross = ant1 != ant2
    for ev in events:
        if sb not in ev["subbands"]:
            continue
        rows_t = np.isin(time_index, ev["times"]) & cross
        chans = np.asarray(ev["channels"])
        if ev["kind"] in ("dead_antenna", "dead_pol"):
            rows = cross & (np.isin(ant1, ev["antennas"]) | np.isin(ant2, ev["antennas"]))
            for p in ev["pols"]:
                vis[rows, :, p] *= np.float32(1e-3)
            continue
        rows = np.flatnonzero(rows_t)
        if ev["kind"] == "zeros":
            vis[np.ix_(rows, chans)] = 0
            continue
        phase = rng.uniform(0, 2 * np.pi, (rows.size, chans.size, vis.shape[2]))
        vis[np.ix_(rows, chans)] += (amplitude * np.exp(1j * phase)).astype(np.complex64)
