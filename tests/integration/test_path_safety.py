"""Path safety wherever a path enters: config, registry rows, manifests, incoming names.

Stage and product paths must stay inside their roots: ``..``, absolute paths elsewhere and
symlinks that lead out are refused with :class:`PathSafetyError` (or ConfigError for the
configuration), before anything is read, moved or deleted.
"""

import json
import os
import shutil

import pytest

from engine import config, discover, scheduler
from engine.errors import ConfigError, PathSafetyError
from engine.publish import register_image, validate_and_publish
from engine.registry import Registry
from tests.integration.test_stale_paths import converted_obs  # noqa: F401 (fixture)


@pytest.mark.parametrize("overrides,phrase", [
    ({"paths.stage": "../elsewhere"}, "'..' is not allowed"),
    ({"paths.products": "stage/products"}, "lies inside paths.stage"),
    ({"paths.stage": "incoming"}, "the areas must be separate folders"),
])
def test_config_paths_are_checked(tmp_path, overrides, phrase):
    cfg = config.load(config.CONFIG_DIR / "ci.toml", overrides)
    with pytest.raises(ConfigError, match=phrase):
        scheduler.Driver(cfg, tmp_path)
    assert not (tmp_path / "incoming").exists()  # nothing created on a refused config


@pytest.mark.parametrize("bad", ["/etc", "../../etc", "link"])
def test_registry_ms_path_outside_stage_is_refused(converted_obs, tmp_path, bad):  # noqa: F811
    cfg, areas, reg, oid, ms = converted_obs
    if bad == "link":  # inside stage by name, outside by its symlink
        os.symlink(tmp_path.parent, areas.stage / "link")
        bad = str(areas.stage / "link")
    m = json.loads(reg.get("observations", oid)["manifest"])
    m["ms_path"] = bad
    with reg.write():
        reg.db["observations"].update(oid, {"manifest": json.dumps(m), "ms_path": bad})
    driver = scheduler.Driver(cfg, tmp_path)
    with pytest.raises(PathSafetyError):
        driver.verified_ms(reg.get("observations", oid))
    # a run quarantines the observation with the reason instead of touching that path
    summary = driver.run()
    row = reg.get("observations", oid)
    assert row["state"] == "quarantined" and oid in summary.failed
    assert "outside" in row["error"] or "'..'" in row["error"]


def test_registered_input_file_moved_outside_incoming_is_refused(copy_obs, ci_cfg, tmp_path):
    base = copy_obs.parent
    reg = Registry(base / "registry.sqlite")
    discover.scan(ci_cfg, reg, copy_obs)
    victim = sorted(copy_obs.glob("*_sb03.hdf5"))[0]
    with reg.write():  # a stale or tampered row that points outside incoming
        reg.db.execute("UPDATE files SET path = ? WHERE path = ?", ["/etc/passwd", str(victim)])
    summary = scheduler.run(ci_cfg, base)
    (obs,) = reg.db["observations"].rows
    assert obs["state"] == "quarantined" and "/etc/passwd" in obs["error"]
    assert "outside" in obs["error"] and not summary.converted


def test_symlink_out_of_incoming_is_quarantined_at_discovery(copy_obs, ci_cfg, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    src = sorted(copy_obs.glob("*_sb04.hdf5"))[0]
    shutil.move(src, outside / src.name)
    os.symlink(outside / src.name, src)
    reg = Registry(tmp_path / "r.sqlite")
    rep = discover.scan(ci_cfg, reg, copy_obs)
    row = reg.get("files", str(src))
    assert row["status"] == "quarantined" and "leads outside the incoming folder" in row["error"]
    assert (str(src), row["error"].split(": ", 1)[1]) in rep.quarantined
    assert (outside / src.name).exists()


def test_manifest_with_a_path_outside_stage_is_not_registered(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    reg = Registry(tmp_path / "r.sqlite")
    outside = tmp_path / "x.fits"
    outside.write_bytes(b"\0" * 2880)
    f = {"path": str(outside), "sha256": "0" * 64, "size": 2880}
    manifest = {"obs_id": "o", "dir": str(stage / "o"), "qa": {}, "caltables": [],
                "files": {"image": f, "pb": f, "png": f}}
    with pytest.raises(PathSafetyError, match="outside"):
        register_image(reg, manifest, stage)
    assert reg.db["images"].count == 0 and reg.db["products"].count == 0


def test_product_row_with_a_stage_path_outside_stage_is_not_moved(tmp_path, ci_cfg):
    stage, products = tmp_path / "stage", tmp_path / "products"
    stage.mkdir()
    products.mkdir()
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "keep.image.fits").write_bytes(b"\0" * 2880)
    reg = Registry(tmp_path / "r.sqlite")
    with reg.write():
        reg.db["products"].insert({"data_id": "image:o", "kind": "image",
                                   "stage_path": str(victim), "state": "staging",
                                   "sha256": "0" * 64, "size": 2880})
    with pytest.raises(PathSafetyError, match="outside"):
        validate_and_publish(reg, ci_cfg, "image:o", {"dynamic_range": 100.0},
                             stage_root=stage, products_root=products)
    assert (victim / "keep.image.fits").exists() and not list(products.iterdir())


def test_caltable_row_outside_stage_is_refused(converted_obs, tmp_path):  # noqa: F811
    cfg, areas, reg, oid, ms = converted_obs
    cfg = config.load(None, {**cfg.as_flat(), "calibrate.enabled": True,
                             "image.require_calibration": True})
    obs = reg.get("observations", oid)
    mid = 0.5 * (obs["start_jd"] + obs["end_jd"]) - 2400000.5
    with reg.write():
        for kind in ("bandpass", "gains"):
            reg.db["caltables"].insert({
                "caltable_id": f"x:{kind}", "obs_id": "x", "kind": kind, "path": "/etc",
                "calibrator": "3C286", "transit_mjd": mid, "valid_from_mjd": mid - 1,
                "valid_to_mjd": mid + 1, "dec_rad": obs["dec_rad"], "sha256": "0" * 64,
                "size": 1})
    driver = scheduler.Driver(cfg, tmp_path)
    with pytest.raises(PathSafetyError, match="outside"):
        driver.calibration.for_observation(obs)
