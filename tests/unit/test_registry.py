import math
import multiprocessing as mp
import random

import pytest

from engine.discover import obs_id_for
from engine.errors import IllegalTransition
from engine.registry import SCHEMA_VERSION, Registry


def _add(reg, start_jd, dec=0.95):
    oid = obs_id_for(start_jd, dec)
    with reg.write():
        reg.db["observations"].insert({"obs_id": oid, "start_jd": start_jd, "end_jd": start_jd,
                                       "dec_rad": dec, "n_subbands": 16, "state": "complete",
                                       "attempts": 0})
    return oid


def test_acquire_is_oldest_observation_time_first(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    step = 309.24 / 86400
    starts = [2460950.5 + d + k * step for d in (0, 1) for k in range(20)]
    shuffled = starts[:]
    random.Random(3).shuffle(shuffled)
    for s in shuffled:  # registered in shuffled order across two days
        _add(reg, s)
    got = []
    while (row := reg.acquire_next("me")) is not None:
        got.append(row["start_jd"])
        reg.transition("observations", row["obs_id"], "converting")
    assert got == sorted(starts)


def test_ids_deterministic_and_distinct_in_one_second():
    a = obs_id_for(2460950.5, 0.95)
    assert a == obs_id_for(2460950.5, 0.95)
    from astropy.time import Time

    assert ":" not in a
    assert a.startswith(Time(2460950.5, format="jd").isot[:19].replace(":", "-"))
    assert obs_id_for(2460950.5 + 0.3 / 86400, 0.95) != a  # same second, other observation
    assert obs_id_for(2460950.5, 0.50) != a  # same time, other pointing


def test_illegal_transition_raises_and_events_are_logged(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    oid = _add(reg, 2460950.5)
    with pytest.raises(IllegalTransition):
        reg.transition("observations", oid, "imaged")
    reg.transition("observations", oid, "converting")
    ev = reg.events("observations", oid)
    assert [(e["old"], e["new"]) for e in ev][-1] == ("complete", "converting")
    assert reg.schema_version() == SCHEMA_VERSION


def _race(path, n, q):
    reg = Registry(path)
    got = []
    while (row := reg.acquire_next(f"p{mp.current_process().pid}")) is not None:
        got.append(row["obs_id"])
        reg.transition("observations", row["obs_id"], "converting")
    q.put(got)


def test_two_processes_never_share_an_observation(tmp_path):
    path = tmp_path / "r.sqlite"
    reg = Registry(path)
    ids = [_add(reg, 2460950.5 + k * 0.004) for k in range(60)]
    reg.close()
    q = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_race, args=(path, 60, q)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert sorted(got[0] + got[1]) == sorted(ids)
    assert not set(got[0]) & set(got[1])


def test_caltable_validity_is_observation_time_whatever_the_clock(tmp_path, monkeypatch):
    import time as _time

    reg = Registry(tmp_path / "r.sqlite")
    transit = 60950.86
    reg.register_caltables({
        "obs_id": "cal", "calibrator": "3C286", "transit_mjd": transit, "qa": {},
        "tables": {"bandpass": {"path": "b", "sha256": "x", "size": 1,
                                "valid_from_mjd": transit - 0.5, "valid_to_mjd": transit + 0.5},
                   "gains": {"path": "g", "sha256": "y", "size": 1,
                             "valid_from_mjd": transit - 1 / 24,
                             "valid_to_mjd": transit + 1 / 24}}},
        dec_rad=0.53)

    def valid(mjd, dec):  # the default calibrate.same_dec_tol_deg
        return reg.valid_caltables(mjd, dec, dec_tol_rad=math.radians(1.15))

    # the clock a week (and a year) later changes nothing: only observation time counts
    for offset in (0, 7 * 86400, 365 * 86400):
        monkeypatch.setattr(_time, "time", lambda o=offset: 1.8e9 + o)
        assert valid(transit + 0.01, 0.53)["gains"]["path"] == "g"
        assert valid(transit + 7, 0.53) is None  # an observation a week later
    assert valid(transit + 2 / 24, 0.53) is None  # gains expired after 1 h
    assert valid(transit, 0.90) is None  # another declination strip


def test_repair_refuses_a_row_with_a_task_in_flight(tmp_path):
    """reconcile --repair checks both moves before making either (reviewer's find)."""
    from engine.errors import RegistryError

    reg = Registry(tmp_path / "r.sqlite")
    with reg.write():
        reg.db["observations"].insert({"obs_id": "o", "start_jd": 1.0, "end_jd": 1.1,
                                       "dec_rad": 0.5, "state": "imaging", "attempts": 0})
        reg.db["products"].insert({"data_id": "image:o", "kind": "image",
                                   "state": "published", "stage_path": "/x"})
    with pytest.raises(RegistryError, match="in flight"):
        reg.repair_image("image:o", "converted", "test")
    assert reg.get("products", "image:o")["state"] == "published"
    with reg.write():
        reg.db["observations"].update("o", {"state": "mosaicked"})
    reg.repair_image("image:o", "converted", "test")
    assert reg.get("products", "image:o")["state"] == "rejected"
    assert reg.get("observations", "o")["state"] == "converted"


def test_a_failed_mosaic_is_planned_again_at_most_max_attempts_times(tmp_path):
    from engine.recovery import retry_failed
    from engine.states import MosaicState
    from engine.windows import Window

    reg = Registry(tmp_path / "r.sqlite")
    reg.plan_mosaic(Window("mosaic_x", ("a", "b"), 0.95, 2460950.5, 2460950.6))
    for attempt in (1, 2, 3):
        reg.transition("mosaics", "mosaic_x", MosaicState.MOSAICKING)
        assert reg.fail_mosaic("mosaic_x", "disk full") == attempt
        retry_failed(reg, 3, lambda obs: False)
        state = reg.get("mosaics", "mosaic_x")["state"]
        assert state == (MosaicState.PLANNED if attempt < 3 else MosaicState.FAILED)
    retry_failed(reg, 3, lambda obs: False, failed_before=1e12)
    assert reg.get("mosaics", "mosaic_x")["state"] == MosaicState.FAILED


def test_subband_stores_are_swept_only_past_conversion(tmp_path):
    from engine.stage_budget import sweep_subband_stores

    reg = Registry(tmp_path / "r.sqlite")
    stage = tmp_path / "stage"
    states = {"complete": 2460950.5, "converting": 2460950.51, "failed": 2460950.52,
              "converted": 2460950.53, "imaged": 2460950.54, "quarantined": 2460950.55}
    ids = {}
    for state, jd in states.items():
        oid = _add(reg, jd)
        reg.db["observations"].update(oid, {"state": state})
        ids[state] = oid
        (stage / oid / f"{oid}.zarr" / "sb00").mkdir(parents=True)
        (stage / oid / f"{oid}.ms").mkdir()
    (stage / "unknown_obs" / "unknown_obs.zarr").mkdir(parents=True)
    swept = sweep_subband_stores(reg, stage)
    assert sorted(swept) == sorted([ids["converted"], ids["imaged"], ids["quarantined"],
                                    "unknown_obs"])
    for state, oid in ids.items():
        kept = state in ("complete", "converting", "failed")
        assert (stage / oid / f"{oid}.zarr").exists() == kept
        assert (stage / oid / f"{oid}.ms").exists()  # never an MS
