"""The first step of conversion: the plan of one observation, from its 16 headers alone.

:func:`plan_observation` reads nothing but metadata. It checks that the files form one
observation (same shapes, start time within ``discover.time_tolerance_s``, same pointing,
no duplicate subband, frequencies that tile one contiguous band) and fixes the layout every
later step follows: the ascending channel grid, each file's channel slot, the channel
averaging factor. :mod:`engine.convert` carries out the plan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.config import Config
from engine.errors import InputFileError, ObservationError
from engine.uvh5io import Header, parse_filename, read_header


@dataclass
class SubbandSlot:
    path: str
    subband: int
    chan0: int  # first channel of this file in the ascending grid
    nchan: int
    descending: bool


@dataclass
class Plan:
    """Layout of one observation, fixed before any visibility is read."""

    obs_id: str
    slots: list
    freq_hz: list  # ascending
    chan_width_hz: float
    nrows: int
    nbls: int
    ntimes: int
    npols: int
    start_jd: float
    dec_rad: float
    flag: dict = field(default_factory=dict)  # the ``flag`` configuration section
    average: int = 1  # channels averaged into one in the store and the MS

    @property
    def nchan_out(self) -> int:
        """Channels in the store and the MS (after averaging)."""
        return len(self.freq_hz) // self.average

    def out_freq_hz(self) -> np.ndarray:
        """(nchan_out,) centre frequencies (Hz, ascending) of the averaged channels."""
        return np.asarray(self.freq_hz).reshape(-1, self.average).mean(axis=1)

    def out_slice(self, slot: "SubbandSlot") -> slice:
        """The slot's channels in the store and the MS."""
        return slice(slot.chan0 // self.average, (slot.chan0 + slot.nchan) // self.average)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        d["slots"] = [SubbandSlot(**s) for s in d["slots"]]
        return cls(**d)


def plan_observation(obs_id: str, paths, cfg: Config, *, headers: list[Header] | None = None
                     ) -> Plan:
    """Check that the files form one observation and fix its channel and row layout."""
    paths = [str(p) for p in paths]
    headers = headers or [read_header(p) for p in paths]
    if len(paths) != cfg.band.nsubbands:
        raise ObservationError(f"{obs_id}: {len(paths)} files, expected {cfg.band.nsubbands}")
    ref = headers[0]
    sbs = []
    for p, h in zip(paths, headers):
        sbs.append(parse_filename(p)[1])
        for attr in ("nblts", "npols", "ntimes"):
            if getattr(h, attr) != getattr(ref, attr):
                raise InputFileError(p, f"{attr} = {getattr(h, attr)} differs from "
                                        f"{Path(ref.path).name} ({getattr(ref, attr)})")
        if abs(h.start_jd - ref.start_jd) * 86400 > cfg.discover.time_tolerance_s:
            raise InputFileError(p, "header start time differs from the rest of the observation")
        if abs(h.dec_rad - ref.dec_rad) > 1e-6:
            raise InputFileError(p, f"pointing dec {np.rad2deg(h.dec_rad):.4f} deg differs from "
                                    f"{np.rad2deg(ref.dec_rad):.4f} deg in the other files")
    if len(set(sbs)) != len(sbs):
        raise ObservationError(f"{obs_id}: duplicate subbands {sorted(sbs)}")
    freqs = np.concatenate([h.freq_hz for h in headers])
    order = np.argsort(freqs)
    f_sorted = freqs[order]
    steps = np.diff(f_sorted)
    width = float(np.median(np.abs(np.concatenate([np.diff(h.freq_hz) for h in headers
                                                   if h.nfreqs > 1]) if any(
        h.nfreqs > 1 for h in headers) else np.abs(steps))))
    if steps.size and (steps.min() <= 0 or np.max(np.abs(steps - width)) > 1e-3 * width):
        raise ObservationError(f"{obs_id}: subband frequencies do not tile one contiguous "
                               "band (overlap, gap or unequal channel widths)")
    slots = []
    for p, h, sb in zip(paths, headers, sbs):
        lo = int(np.searchsorted(f_sorted, h.freq_hz.min()))
        desc = bool(h.nfreqs > 1 and h.freq_hz[0] > h.freq_hz[-1])
        slots.append(SubbandSlot(p, sb, lo, h.nfreqs, desc))
    nbls = ref.nblts // ref.ntimes
    if nbls * ref.ntimes != ref.nblts:
        raise InputFileError(ref.path, f"Nblts = {ref.nblts} is not Ntimes ({ref.ntimes}) x Nbls")
    return Plan(obs_id, sorted(slots, key=lambda s: s.chan0), f_sorted.tolist(), width,
                ref.nblts, nbls, ref.ntimes, ref.npols, ref.start_jd, ref.dec_rad,
                flag=dict(vars(cfg.flag)),
                average=averaging_factor([s.nchan for s in slots], width,
                                         cfg.convert.max_channel_width_hz))


def averaging_factor(nchans, width_hz: float, max_width_hz: float) -> int:
    """The largest number of channels averaged into one: it divides every subband's channel
    count (no group straddles two files) and keeps the averaged width <= ``max_width_hz``
    (``convert.max_channel_width_hz``; 0 or a width below one channel: no averaging)."""
    common = int(np.gcd.reduce(np.asarray(nchans, dtype=np.int64)))
    best = 1
    for k in range(1, common + 1):
        if common % k == 0 and k * abs(width_hz) <= max_width_hz * (1 + 1e-9):
            best = k
    return best
