"""How far the full-scale data may be averaged before imaging (issue 18): the peak a point
source keeps at the full-scale image's edge and corner after averaging channels and
integrations (engine.smearing, checked against brute force in tests/unit/test_smearing.py).

The array: the 96 data stations; the pointing declination and band of the configuration;
the phase centre at hour angles across one observation (+-2.6 min); natural and uniform
weighting (Briggs 0.5 lies between); the worst of 12 position angles. No timing: the
figures decide which averaging keeps the loss under 1 % where sources are still imaged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.smearing import enu_from_ecef, equatorial_baselines, worst_loss
from engine.telescope import Telescope


def bench_smearing(cfg, work: Path) -> dict:
    tel = Telescope(cfg)
    nums = set(tel.antenna_subset(96 if len(tel.data_station_numbers) >= 96 else
                                  len(tel.data_station_numbers)))
    ecef = np.array([x for s, x in zip(tel.stations, tel.station_ecef) if s.number in nums])
    s = cfg.site
    L = equatorial_baselines(enu_from_ecef(ecef, np.radians(s.latitude_deg),
                                           np.radians(s.longitude_deg)),
                             np.radians(s.latitude_deg))
    b = cfg.band
    # time smearing grows with frequency: the band's highest channel
    freq_top = b.top_freq_hz + b.channel_width_hz * b.nchan_per_subband * b.nsubbands
    half = cfg.image.max_imsize / 2 * 3.0 / 3600  # the full-scale grid: 3 arcsec cells
    ha = np.radians(np.linspace(-2.6, 2.6, 5) / 60 * 15)
    out = {"antennas": len(ecef), "baselines": len(L),
           "longest_baseline_m": float(np.linalg.norm(L, axis=1).max()),
           "dec_deg": cfg.sim.dec_deg, "freq_hz": max(b.top_freq_hz, freq_top),
           "channel_hz": abs(b.channel_width_hz), "integration_s": b.integration_s,
           "edge_deg": half, "corner_deg": half * np.sqrt(2), "rows": []}
    for nchan_avg in (1, 2, 4, 8, 16):
        for ntime_avg in (1, 2):
            row = {"channels": nchan_avg, "integrations": ntime_avg}
            for where, off in (("edge", half), ("corner", half * np.sqrt(2))):
                for weighting in ("natural", "uniform"):
                    row[f"loss_{where}_{weighting}"] = worst_loss(
                        L, offset_rad=np.radians(off), dec_rad=np.radians(cfg.sim.dec_deg),
                        freq_hz=out["freq_hz"], chan_width_hz=nchan_avg * abs(b.channel_width_hz),
                        int_s=ntime_avg * b.integration_s, ha_rad=ha, weighting=weighting,
                        fov_rad=np.radians(2 * half))
            out["rows"].append(row)
    return out
