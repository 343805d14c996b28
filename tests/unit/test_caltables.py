"""Which calibration an observation gets: a typed answer (tables, or wait), by its time."""

import pytest

from engine import config
from engine.caltables import Calibration, CalibrationLookup
from engine.errors import StaleProductError
from engine.paths import digest
from engine.registry import Registry

OBS = {"start_jd": 2460951.0, "end_jd": 2460951.0 + 309 / 86400, "dec_rad": 0.9}
MID_MJD = 0.5 * (OBS["start_jd"] + OBS["end_jd"]) - 2400000.5


def _register(reg, stage, *, dec_rad=0.9, mjd=MID_MJD):
    tables = {}
    for kind in ("bandpass", "gains"):
        p = stage / "cal" / f"cal.{kind[0].upper()}"
        p.mkdir(parents=True, exist_ok=True)
        (p / "table.dat").write_bytes(kind.encode() * 100)
        sha, size = digest(p)
        tables[kind] = {"path": str(p), "sha256": sha, "size": size,
                        "valid_from_mjd": mjd - 0.02, "valid_to_mjd": mjd + 0.02}
    reg.register_caltables({"obs_id": "cal", "calibrator": "3C286", "transit_mjd": mjd,
                            "qa": {}, "tables": tables}, dec_rad)
    return tables


@pytest.fixture
def setup(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    return Registry(tmp_path / "r.sqlite"), stage


def _lookup(reg, stage, **over):
    return CalibrationLookup(reg, config.load(None, over), stage).for_observation(OBS)


def test_the_four_answers(setup):
    reg, stage = setup
    assert _lookup(reg, stage, **{"calibrate.enabled": False}) == Calibration(
        reason="calibrate.enabled is false")
    waiting = _lookup(reg, stage, **{"image.require_calibration": True})
    assert waiting.wait and not waiting.tables and f"{MID_MJD:.5f}" in waiting.reason
    raw = _lookup(reg, stage, **{"image.require_calibration": False})
    assert not raw.wait and not raw.tables
    tables = _register(reg, stage)
    got = _lookup(reg, stage)
    assert got.tables == (tables["bandpass"]["path"], tables["gains"]["path"])
    assert not got.wait


def test_declination_tolerance_is_the_configured_one(setup):
    reg, stage = setup
    _register(reg, stage, dec_rad=0.9 + 0.015)  # 0.86 deg from the observation
    assert _lookup(reg, stage).tables  # default 1.15 deg
    assert _lookup(reg, stage, **{"calibrate.same_dec_tol_deg": 0.5}).wait


def test_a_changed_table_is_refused(setup):
    reg, stage = setup
    _register(reg, stage)
    (stage / "cal" / "cal.G" / "table.dat").write_bytes(b"gains".swapcase() * 100)  # same size
    with pytest.raises(StaleProductError):
        _lookup(reg, stage)
