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
    # failed for good (its attempts spent): a gap, like a quarantined observation
    rows = _obs(30, states={5: "failed"})
    rows[5]["attempts"] = 3
    wins = plan(rows, max_attempts=3)
    assert [w.members[0] for w, _ in wins] == ["o06", "o14"]
    assert all("o05" not in w.members for w, _ in wins)
    assert [w.mosaic_id for w, _ in plan(_obs(30, states={5: "quarantined"}))] == \
        [w.mosaic_id for w, _ in wins]


def test_an_undecided_observation_holds_back_what_its_fate_could_move():
    """The old failure: o05 failed once (to be retried); windows were cut at it, o05 then
    succeeded and the windows planned meanwhile overlapped the final ones by 8."""
    rows = _obs(30, states={5: "failed"})
    rows[5]["attempts"] = 1
    wins = plan(rows, max_attempts=3)
    assert wins == []  # o00..o04 is too short; nothing after o05 is fixed yet
    rows[5]["state"] = "imaged"
    assert [w.members[0] for w, _ in plan(rows, max_attempts=3)] == ["o00", "o08", "o16"]
    # an observation on its way holds back the same way; a quarantined one after it
    # settles what follows
    rows = _obs(40, states={3: "imaging", 12: "quarantined"})
    assert [w.members[0] for w, _ in plan(rows)] == ["o13", "o21", "o29"]


def test_a_hole_is_a_boundary_only_once_settled():
    rows = _obs(24, gaps={7})
    assert plan(rows, settled=lambda r: False) == []  # o00..o06 too short, o07.. waits
    assert [w.members[0] for w, _ in plan(rows, settled=lambda r: r["obs_id"] == "o07")] \
        == ["o07"]


def test_declination_change_and_span_limit():
    rows = _obs(10) + _obs(10, start=2460950.5 + 10 * CADENCE_S / 86400, dec=0.5)
    assert [len(plan(rows))] == [2]
    assert not plan(_obs(10), max_span_min=30)


def test_ready_needs_every_member_imaged():
    (w, members), = plan(_obs(10))
    assert ready(members)
    members[9]["state"] = "imaging"
    assert not ready(members)


def test_open_windows_say_what_they_wait_for():
    from engine.windows import open_windows

    rows = _obs(26, states={3: "imaging", 12: "awaiting_calibration"})
    opened = open_windows(rows)
    assert [w.members[0] for w, _ in opened] == ["o00", "o08", "o16"]
    assert opened[0][1] == [("o03", "imaging")]
    assert opened[1][1] == [("o12", "awaiting_calibration")]
    # o16..o25 are all imaged: held only by the undecided observations before them
    assert opened[2][1] == [("o03", "imaging"), ("o12", "awaiting_calibration")]
    rows[3]["state"] = rows[12]["state"] = "imaged"
    assert open_windows(rows) == []


def test_an_incomplete_observation_is_a_gap_only_once_closed():
    """A late file may still complete an incomplete observation until it is closed
    (discover.incomplete_wait_s after it was marked): until then it holds back the windows
    after it, as an undecided one does; the first observation waits to be settled too."""
    from engine.windows import incomplete_closed

    rows = _obs(30, states={5: "incomplete"})
    rows[5]["updated_at"] = 1000.0
    assert plan(rows, closed=lambda r: incomplete_closed(r, 1500.0, 600.0)) == []
    closed = plan(rows, closed=lambda r: incomplete_closed(r, 1600.0, 600.0))
    assert [w.members[0] for w, _ in closed] == ["o06", "o14"]
    assert [w.mosaic_id for w, _ in closed] == [w.mosaic_id for w, _ in plan(rows)]
    # a first observation not yet settled: an earlier one may still come
    assert plan(_obs(10), settled=lambda r: r["obs_id"] != "o00") == []
