"""What the simulator can do wrong on purpose: interference and bad data, with a truth list.

``sim.rfi`` names the kinds to inject (comma-separated; empty: none, the default). Where each
event lands is drawn at random for every observation (from ``sim.seed`` and the
observation's index, so a run is reproducible and a different seed puts it elsewhere):

``narrowband``    a persistent emitter in one or two adjacent channels of one subband (one
                  when a subband has fewer than 24 channels), every integration
``burst``         a broadband burst: one integration, every channel of every subband
``intermittent``  an emitter switching on and off: one channel of one subband, on for 1-3
                  integrations in every 4-8
``zeros``         a correlator gap: 2-4 integrations x 4-12 channels of one subband exactly 0
``dead_antenna``  one antenna without signal (1e-3 of its normal amplitude), everywhere
``dead_pol``      one polarisation of another antenna without signal, everywhere
``crosstalk``     a line that one baseline alone sees (coupling between two antennas'
                  electronics): one channel of one subband, every integration, a fixed
                  phase, on one baseline of two other antennas

Interference adds ``sim.rfi_sigma`` x ``sim.noise_jy`` (1 Jy if there is no noise) of
amplitude to every cross-correlation in both polarisations, with the phase an emitter on
the ground gives: one signal reaching each antenna with its own delay (drawn per event, up
to the array's light-crossing time), so V_ab(nu) = A exp(2 pi i nu (d_a - d_b) + i phi_t)
(coherent across baselines, closing like a point source; phi_t: the emitter's phase per
integration). Unflagged, it biases the calibration as a real emitter does.

Each event is listed with the observation, integrations, subbands, channels (file channel
index within the subband), antennas (station numbers: every baseline of them), baselines
(station pairs: those baselines alone) and polarisation indices it touched,
so a test can build the exact truth mask without this module.
"""

from __future__ import annotations

import numpy as np

KINDS = ("narrowband", "burst", "intermittent", "zeros", "dead_antenna", "dead_pol",
         "crosstalk")
DELAY_MAX_S = 9e-6  # about the light-crossing time of the 2.7 km array


def plan_events(kinds: list[str], *, ntimes: int, nchan: int, nsubbands: int,
                stations: list[int], rng: np.random.Generator, obs: int = 0) -> list[dict]:
    """The events of one observation, placed at random by ``rng``."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"sim.rfi: unknown kinds {sorted(unknown)}; known: {list(KINDS)}")
    every_t = list(range(ntimes))
    every_c = list(range(nchan))
    if len(stations) < 4:
        raise ValueError(f"sim.rfi needs 4 antennas at least (dead ones and a crosstalk "
                         f"pair); the simulated array has {len(stations)}")
    dead = [int(s) for s in rng.choice(stations, size=4, replace=False)]
    out = []
    for kind in kinds:
        ev = {"kind": kind, "obs": obs, "emitter_seed": int(rng.integers(2 ** 31))}
        sb = int(rng.integers(nsubbands))
        if kind == "narrowband":
            c = int(rng.integers(nchan))
            # one or two of the telescope's 244 kHz channels; in coarser simulated channels
            # (fewer than 24 per subband) a line that narrow fills one channel at most
            width = int(rng.integers(1, 3)) if nchan >= 24 else 1
            ev.update(subbands=[sb], times=every_t,
                      channels=sorted({c, min(c + width - 1, nchan - 1)}))
        elif kind == "burst":
            ev.update(subbands=list(range(nsubbands)), times=[int(rng.integers(ntimes))],
                      channels=every_c)
        elif kind == "intermittent":
            period = int(rng.integers(4, 9))
            on = int(rng.integers(1, 4))
            phase = int(rng.integers(period))
            ev.update(subbands=[sb], times=[t for t in every_t if (t + phase) % period < on],
                      channels=[int(rng.integers(nchan))])
        elif kind == "zeros":
            nt = min(ntimes, int(rng.integers(2, 5)))
            nc = min(nchan, int(rng.integers(4, 13)))
            t0 = int(rng.integers(ntimes - nt + 1))
            c0 = int(rng.integers(nchan - nc + 1))
            ev.update(subbands=[sb], times=list(range(t0, t0 + nt)),
                      channels=list(range(c0, c0 + nc)))
        elif kind == "dead_antenna":
            ev.update(subbands=list(range(nsubbands)), times=every_t, channels=every_c,
                      antennas=[dead[0]], pols=[0, 1])
        elif kind == "dead_pol":
            ev.update(subbands=list(range(nsubbands)), times=every_t, channels=every_c,
                      antennas=[dead[1]], pols=[int(rng.integers(2))])
        elif kind == "crosstalk":
            ev.update(subbands=[sb], times=every_t, channels=[int(rng.integers(nchan))],
                      baselines=[sorted(dead[2:4])])
        if ev["times"]:
            out.append(ev)
    return out


def inject(vis, events: list[dict], sb: int, time_index, ant1, ant2, amplitude: float,
           freqs_hz, stations: list[int]):
    """Apply the events that touch subband ``sb`` to its visibilities, in place.

    vis: (nblts, nchan, npol) complex64 in the file's row order; time_index, ant1, ant2:
    (nblts,) integration index and station numbers of each row; freqs_hz: (nchan,) the
    subband's channel frequencies; stations: every station of the file (the emitter's
    delays are drawn for them in this order, so every subband sees the same emitter).
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
        erng = np.random.default_rng(ev["emitter_seed"])
        if ev["kind"] == "crosstalk":
            (a, b), = ev["baselines"]
            on = rows[((ant1[rows] == a) & (ant2[rows] == b))
                      | ((ant1[rows] == b) & (ant2[rows] == a))]
            v = np.complex64(amplitude * np.exp(1j * erng.uniform(0, 2 * np.pi)))
            vis[np.ix_(on, chans)] += v
            continue
        delay = dict(zip(stations, erng.uniform(-DELAY_MAX_S, DELAY_MAX_S, len(stations))))
        phi_t = erng.uniform(0, 2 * np.pi, int(np.max(time_index)) + 1)
        d = np.array([delay[a] - delay[b] for a, b in zip(ant1[rows], ant2[rows])])
        ph = 2 * np.pi * d[:, None] * np.asarray(freqs_hz)[chans][None, :] \
            + phi_t[time_index[rows]][:, None]
        v = (amplitude * np.exp(1j * ph)).astype(np.complex64)
        vis[np.ix_(rows, chans)] += v[:, :, None]
