"""Mosaic windows from observation times and fates (no processing order involved)."""

from engine.windows import CADENCE_S, plan, ready


def _obs(n, *, start=2460950.5, gaps=(), states=None, dec=0.95):
    rows, t = [], start
    for i in range(n):
        if i in gaps:
            t += 3 * CADENCE_S / 86400  # a hole of two missing observations
        rows.append({"obs_id": f"o{i:02d}", "start_jd": t, "end_jd": t + 300 / 86400,
                     "dec_rad": dec, "state": (states or {}).get(i, "imaged")})
        t += CADENCE_S / 86400
    return rows


def test_windows_of_ten_overlapping_by_two():
    wins = plan(_obs(26))
    assert [w.members[0] for w, _ in wins] == ["o00", "o08", "o16"]
    assert all(len(w.members) == 10 for w, _ in wins)
    assert wins[0][0].members[-2:] == wins[1][0].members[:2]
    # deterministic: same observations, same IDs, whatever order they are given in
    assert [w.mosaic_id for w, _ in plan(list(reversed(_obs(26))))] == \
        [w.mosaic_id for w, _ in wins]


def test_a_gap_splits_the_windows():
    wins = plan(_obs(24, gaps={7}))
    # segment o00..o06 is too short; the next segment starts at o07
    assert [w.members[0] for w, _ in wins] == ["o07"]


def test_a_failed_observation_closes_the_window_but_not_the_run():
    wins = plan(_obs(30, states={5: "failed"}))
    assert [w.members[0] for w, _ in wins] == ["o06", "o14"]
    assert all("o05" not in w.members for w, _ in wins)


def test_declination_change_and_span_limit():
    rows = _obs(10) + _obs(10, start=2460950.5 + 10 * CADENCE_S / 86400, dec=0.5)
    assert [len(plan(rows))] == [2]
    assert not plan(_obs(10), max_span_min=30)


def test_ready_needs_every_member_imaged():
    rows = _obs(10, states={9: "imaging"})
    (w, members), = plan(rows)
    assert not ready(members)
    members[9]["state"] = "imaged"
    assert ready(members)
