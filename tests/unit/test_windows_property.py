"""Property test of the mosaic-window rule (engine/windows.py): for a day of observations
with random fates, arriving up to two observations late and finishing in a random order
(failures retried, some for good; incomplete ones closed, or completed by a late
file), every window planned at any moment is one of the windows
the final fates give, all of those are planned by the end, and no two share more than
``overlap`` members. Hundreds of random orders, each checked after every event."""

import itertools

import numpy as np
import pytest

from engine.windows import CADENCE_S, plan

N_OBS = 280  # a day of 309 s observations
MAX_ATTEMPTS = 3
LATE = 2  # an observation arrives at most this many observations late
SIZE, OVERLAP = 10, 2


def _day(rng):
    """Observation rows (final fate in 'fate', attempts it takes) and the ones missing."""
    start = 2460950.5 - 40 * CADENCE_S / 86400  # the day crosses 00:00 UTC
    rows, missing = [], set()
    for i in range(N_OBS):
        t = start + i * CADENCE_S / 86400 + rng.uniform(-2, 2) / 86400
        dec = 0.95 if i < 170 else 0.60  # the telescope moved once
        u = rng.uniform()
        fate = ("missing" if u < 0.02 else "quarantined" if u < 0.04 else
                "incomplete" if u < 0.05 else "failed" if u < 0.07 else
                "late_complete" if u < 0.08 else "imaged")
        if fate == "missing":
            missing.add(i)
        rows.append({"obs_id": f"o{i:03d}", "start_jd": t, "end_jd": t + 300 / 86400,
                     "dec_rad": dec, "fate": fate, "i": i,
                     "failures": (MAX_ATTEMPTS if fate == "failed"
                                  else int(rng.integers(0, MAX_ATTEMPTS)))})
    return rows, missing


def _events(rng, rows, missing, late=LATE):
    """One random interleaving of every observation's events, each observation's in its
    own order: arrive, then (fail, retry) per failure, then its final state. Arrival order
    is time order with each observation at most LATE places late but four stragglers
    ``late`` places late; between two arrivals,
    and after the last, steps of arrived observations in random order."""
    delay = rng.uniform(0, min(late, LATE) + 0.99, len(rows))
    delay[rng.choice(len(rows), 4, replace=False)] = late + 0.5  # stragglers
    arrival = [i for _, i in sorted((r["i"] + delay[r["i"]], r["i"]) for r in rows)
               if i not in missing]
    queues = {}
    for i in arrival:
        r = rows[i]
        fails = r["failures"] if r["fate"] in ("imaged", "failed") else 0
        ev = []
        for k in range(1, fails + 1):
            ev += [("fail", i, k)] + ([("retry", i, k)] if k < MAX_ATTEMPTS else [])
        if r["fate"] == "incomplete":  # marked incomplete, later closed
            ev += [("incomplete", i, None), ("close", i, None)]
        elif r["fate"] == "late_complete":  # marked incomplete, then its late file came
            ev += [("incomplete", i, None), ("imaged", i, None)]
        elif r["fate"] != "failed":
            ev.append((r["fate"], i, None))
        queues[i] = ev
    out, live = [], []

    def step():
        j = int(rng.integers(len(live)))
        out.append(queues[live[j]].pop(0))
        if not queues[live[j]]:
            live.pop(j)

    for i in arrival:
        out.append(("arrive", i, None))
        if queues[i]:
            live.append(i)
        for _ in range(int(rng.integers(0, 8))):
            if live:
                step()
    while live:
        step()
    return out


def _replay(rows, events, *, late=LATE, trust_holes=False):
    """Plan after every event as the driver would; return every window ever planned and
    the final rows. A hole is settled once ``late`` + 1 observations arrived after the one
    that follows it; ``trust_holes``: at once (wrong)."""
    current, arrived_at, seen = {}, {}, {}

    def settled(row):
        return trust_holes or len(arrived_at) - arrived_at[row["obs_id"]] > late

    for kind, i, arg in events:
        oid = rows[i]["obs_id"]
        if kind == "arrive":
            arrived_at[oid] = len(arrived_at)
            current[oid] = {**rows[i], "state": "discovered", "attempts": 0}
        elif kind == "fail":
            current[oid].update(state="failed", attempts=arg)
        elif kind == "retry":
            current[oid].update(state="converting")
        elif kind == "close":
            current[oid].update(closed=True)
        else:
            current[oid].update(state=kind)
        for w, members in plan(current.values(), size=SIZE, overlap=OVERLAP,
                               max_attempts=MAX_ATTEMPTS, settled=settled,
                               closed=lambda r: r.get("closed", False)):
            seen.setdefault(w.mosaic_id, w)
            assert all(m["state"] == "imaged" for m in members)
    return seen, list(current.values())


def _truth(final):
    """What the final fates alone give (a batch run over the finished day), checked."""
    wins = plan(final, size=SIZE, overlap=OVERLAP, max_attempts=MAX_ATTEMPTS)
    truth = {w.mosaic_id: w for w, _ in wins}
    assert len(truth) >= 15
    for a, b in itertools.combinations(truth.values(), 2):
        assert len(set(a.members) & set(b.members)) <= OVERLAP
    by_id = {r["obs_id"]: r for r in final}
    for w in truth.values():  # no window holds a gap, a hole or a declination change
        idx = [int(o[1:]) for o in w.members]
        assert idx == list(range(idx[0], idx[0] + SIZE))
        assert all(by_id[o]["fate"] in ("imaged", "late_complete") for o in w.members)
        assert len({by_id[o]["dec_rad"] for o in w.members}) == 1
    return truth


@pytest.mark.parametrize("day_seed", range(4))
def test_windows_do_not_depend_on_the_order_of_events(day_seed):
    rows, missing = _day(np.random.default_rng(day_seed))
    truth = None
    for order_seed in range(75):  # 4 days x 75 orders = 300 random orders
        events = _events(np.random.default_rng(1000 * day_seed + order_seed), rows, missing)
        seen, final = _replay(rows, events)
        truth = truth or _truth(final)
        assert set(seen) <= set(truth), "a window planned early is not a final window"
        # at the end of the stream nothing arrives after the last observations, so windows
        # after the newest hole may still wait; all others were planned
        newest_hole = max(missing, default=-1)
        assert {k for k, w in truth.items() if int(w.members[0][1:]) < newest_hole} \
            <= set(seen)


def test_very_late_observations_and_the_check_can_fail():
    """Observations up to 15 places late: the settled rule still plans only final windows;
    a planner that takes a hole for a boundary at once plans, in some orders, windows the
    final fates do not give (the check is able to fail)."""
    bad = 0
    for day_seed in range(3):
        rows, missing = _day(np.random.default_rng(100 + day_seed))
        truth = None
        for order_seed in range(5):
            events = _events(np.random.default_rng(order_seed), rows, missing, late=15)
            seen, final = _replay(rows, events, late=15)
            truth = truth or _truth(final)
            assert set(seen) <= set(truth)
            wrong, _ = _replay(rows, events, late=15, trust_holes=True)
            bad += bool(set(wrong) - set(truth))
    assert bad > 0
