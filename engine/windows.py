"""Mosaic windows: which observations form each 10-observation mosaic.

Observations of one declination are split into contiguous segments: a new segment starts
when the gap between consecutive observation starts exceeds ``mosaic.max_gap_obs`` times
the observation cadence, when the declination changes, or at an observation that failed,
was quarantined or stayed incomplete. Within a segment, windows of ``mosaic.size``
observations start at the segment's first observation and then every ``size - overlap``
observations, and must span less than ``mosaic.max_span_min``. The windows therefore
depend only on the observations (their times and fates), never on processing order, and a
rerun finds the same windows and the same mosaic IDs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from astropy.time import Time

from engine.constants import CADENCE_S
from engine.states import GAP, HAS_IMAGE


@dataclass(frozen=True)
class Window:
    mosaic_id: str
    members: tuple  # obs_ids, time order
    dec_rad: float
    start_jd: float
    end_jd: float


@lru_cache(maxsize=1 << 16)
def mosaic_id_for(members: tuple, start_jd: float) -> str:
    """``mosaic_<start, to the second>_n<size>_<hash of the members>``; cached, since the
    driver re-plans every loop over a registry that may hold years of observations."""
    iso = Time(start_jd, format="jd").isot[:19].replace(":", "-")
    h = hashlib.sha256("|".join(members).encode()).hexdigest()[:6]
    return f"mosaic_{iso}_n{len(members)}_{h}"


def segments(observations, *, max_gap_obs: float, dec_tol_rad: float):
    """Split time-ordered observation rows into contiguous, unbroken, one-dec runs."""
    out, cur = [], []
    for o in sorted(observations, key=lambda r: r["start_jd"]):
        if o["state"] in GAP:
            if cur:
                out.append(cur)
            cur = []
            continue
        if cur and ((o["start_jd"] - cur[-1]["start_jd"]) * 86400 > max_gap_obs * CADENCE_S
                    or abs(o["dec_rad"] - cur[-1]["dec_rad"]) > dec_tol_rad):
            out.append(cur)
            cur = []
        cur.append(o)
    if cur:
        out.append(cur)
    return out


def plan(observations, *, size: int = 10, overlap: int = 2, max_gap_obs: float = 1.5,
         max_span_min: float = 60.0, dec_tol_rad: float = 1e-3):
    """All full windows the observations allow, each with the rows of its members."""
    step = max(1, size - overlap)
    windows = []
    for seg in segments(observations, max_gap_obs=max_gap_obs, dec_tol_rad=dec_tol_rad):
        for i in range(0, len(seg) - size + 1, step):
            rows = seg[i:i + size]
            span_min = (rows[-1]["end_jd"] - rows[0]["start_jd"]) * 1440
            if span_min >= max_span_min:
                continue
            members = tuple(r["obs_id"] for r in rows)
            windows.append((Window(mosaic_id_for(members, rows[0]["start_jd"]), members,
                                   rows[0]["dec_rad"], rows[0]["start_jd"], rows[-1]["end_jd"]),
                            rows))
    return windows


def ready(rows) -> bool:
    """Every member imaged (its task resolved and its image registered)."""
    return all(r["state"] in HAS_IMAGE for r in rows)
