"""Mosaic windows: which observations form each 10-observation mosaic.

The rule (docs/ARCHITECTURE.md, "Mosaic windows"), in observation-time order:

- Each observation has a fate. Final: *member* (imaged or mosaicked) or *gap* (quarantined,
  failed ``driver.max_attempts`` times, or incomplete and closed: when following, after
  ``discover.incomplete_wait_s`` more, from when discovery no longer completes it). Anything
  else (on its way, waiting for a calibrator, failed with attempts left) is *undecided*.
- A segment is a run of consecutive members of one declination. It ends at a gap, at a
  declination change, and at a hole in time (consecutive starts more than
  ``mosaic.max_gap_obs`` cadences apart: an observation that never came).
- Within a segment, windows of ``mosaic.size`` members start at its first member and then
  every ``size - overlap`` members; a window spanning ``mosaic.max_span_min`` or more is
  dropped (its place is not reused).
- Only what cannot change is planned. An undecided observation ends what can be planned
  before it, and nothing after it is planned until the next boundary that no fate can
  move: a gap, or a hole or declination change that is *settled* (``settled(row)`` of the
  observation after it: no late observation can still arrive in the hole; always true in a
  batch run, after ``discover.incomplete_wait_s`` when following). The run's first
  observation starts a segment only once settled the same way.

A window's membership therefore depends only on observation times and final fates, never on
the order in which observations failed, retried, arrived or finished: every window planned
at any moment is one of the windows planned once every fate is known (property-tested), and
no two windows share more than ``overlap`` members. A rerun finds the same windows and IDs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

from astropy.time import Time

from engine.constants import CADENCE_S
from engine.states import GAP, HAS_IMAGE, ObsState


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


MEMBER, GAP_FATE = "member", "gap"


def incomplete_closed(row, now: float, wait_s: float) -> bool:
    """Whether an incomplete observation is closed: incomplete for ``wait_s`` seconds
    (``discover.incomplete_wait_s``) since it was marked (``updated_at``, Unix time). A
    closed observation is a final gap: discovery no longer completes it with a late file
    (:func:`engine.discover.scan`), since windows may have been planned around it."""
    return row["state"] == ObsState.INCOMPLETE and now - (row.get("updated_at") or now) >= wait_s


def fate(row, max_attempts: int | None = None, closed=None) -> str | None:
    """``"member"``, ``"gap"`` or None (undecided) for an observation row (state, attempts).

    FAILED is a gap once ``max_attempts`` attempts are spent (``max_attempts`` None: never,
    a failed observation is always retried). INCOMPLETE is a gap once ``closed(row)``
    (None: at once; a batch run takes the folder as it is)."""
    state = row["state"]
    if state in HAS_IMAGE:
        return MEMBER
    if state == ObsState.FAILED:
        done = max_attempts is not None and (row.get("attempts") or 0) >= max_attempts
        return GAP_FATE if done else None
    if state == ObsState.INCOMPLETE:
        return GAP_FATE if closed is None or closed(row) else None
    return GAP_FATE if state in GAP else None


def segments(observations, *, max_gap_obs: float, dec_tol_rad: float,
             max_attempts: int | None = None, settled=None, closed=None):
    """The settled segments of time-ordered observation rows (module docstring): lists of
    consecutive member rows of one declination, each ending at a gap, a hole, a declination
    change or an undecided observation, each starting at a boundary no fate can move. The
    first observation is such a start only once settled (an earlier one may still come)."""
    out, cur, prev = [], [], None
    rows = sorted(observations, key=lambda r: r["start_jd"])
    certain = not rows or settled is None or bool(settled(rows[0]))
    for o in rows:
        if prev is not None and (
                (o["start_jd"] - prev["start_jd"]) * 86400 > max_gap_obs * CADENCE_S
                or abs(o["dec_rad"] - prev["dec_rad"]) > dec_tol_rad):
            out.append(cur)
            cur, certain = [], settled is None or bool(settled(o))
        prev = o
        f = fate(o, max_attempts, closed)
        if f == GAP_FATE:
            out.append(cur)
            cur, certain = [], True
        elif f is None:
            out.append(cur)
            cur, certain = [], False
        elif certain:
            cur.append(o)
    out.append(cur)
    return [seg for seg in out if seg]


def config_rule(cfg) -> dict:
    """The configuration's window rule (``mosaic.*``) as keyword arguments of :func:`plan`;
    a following driver adds its ``max_attempts``, ``settled`` and ``closed``."""
    m = cfg.mosaic
    return dict(size=m.size, overlap=m.overlap, max_gap_obs=m.max_gap_obs,
                max_span_min=m.max_span_min, dec_tol_rad=math.radians(m.same_dec_tol_deg))


def plan(observations, *, size: int = 10, overlap: int = 2, max_gap_obs: float = 1.5,
         max_span_min: float = 60.0, dec_tol_rad: float = 1e-3,
         max_attempts: int | None = None, settled=None, closed=None):
    """Every window the observations' final fates already fix (module docstring), each with
    the rows of its members: ``[(Window, [row, ...]), ...]`` in time order.

    ``max_attempts``: a failed observation with this many attempts is a gap (None: failed
    is undecided). ``settled(row)``: whether the hole or declination change before ``row``
    (or, for the first row, the time before it) can no longer be filled by a late
    observation (None: always; a batch run). ``closed(row)``: whether an incomplete
    observation is final (:func:`incomplete_closed`; None: always)."""
    step = max(1, size - overlap)
    windows = []
    for seg in segments(observations, max_gap_obs=max_gap_obs, dec_tol_rad=dec_tol_rad,
                        max_attempts=max_attempts, settled=settled, closed=closed):
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


def open_windows(observations, **rule):
    """Windows not planned yet that would form if every undecided observation became a
    member, each with what it waits for: ``[(Window, [(obs_id, state), ...]), ...]``.

    ``rule``: the keyword arguments of :func:`plan`. A window waits for its undecided
    members; with none, for the undecided observations before it in its segment (their
    fates may still move it) or for a hole before it to settle (``[]``)."""
    max_attempts, closed = rule.get("max_attempts"), rule.get("closed")
    planned = {w.mosaic_id for w, _ in plan(observations, **rule)}
    rows = sorted(observations, key=lambda r: r["start_jd"])
    undecided = [r for r in rows if fate(r, max_attempts, closed) is None]
    hopeful = [{**r, "state": ObsState.IMAGED} if fate(r, max_attempts, closed) is None
               else r for r in rows]
    out = []
    for w, members in plan(hopeful, **{**rule, "settled": None, "closed": None}):
        if w.mosaic_id in planned:
            continue
        ids = set(w.members)
        waits = [(r["obs_id"], r["state"]) for r in undecided if r["obs_id"] in ids]
        if not waits:
            waits = [(r["obs_id"], r["state"]) for r in undecided
                     if r["start_jd"] < w.start_jd and abs(r["dec_rad"] - w.dec_rad)
                     <= rule.get("dec_tol_rad", 1e-3)][-3:]
        out.append((w, waits))
    return out


def ready(rows) -> bool:
    """Every member imaged (its task resolved and its image registered)."""
    return all(r["state"] in HAS_IMAGE for r in rows)
