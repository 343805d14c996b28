"""A registry path whose product vanished is caught before use and by reconcile."""

import json
import shutil

import pytest

from engine import config, scheduler
from engine.cli import main
from engine.convert import convert_local
from engine.discover import obs_id_for
from engine.errors import StaleProductError
from engine.registry import Registry
from engine.uvh5io import read_header


@pytest.fixture
def converted_obs(one_obs, tmp_path):
    paths, _, cfg = one_obs
    areas = scheduler.Areas.from_config(cfg, tmp_path)
    hdr = read_header(paths[0])
    oid = obs_id_for(hdr.start_jd, hdr.dec_rad)
    ms = areas.stage / oid / f"{oid}.ms"
    ms.parent.mkdir(parents=True)
    manifest = convert_local(paths, str(ms), cfg, workdir=tmp_path)
    reg = Registry(areas.registry)
    with reg.write():
        reg.db["observations"].insert({
            "obs_id": oid, "start_jd": hdr.start_jd, "end_jd": hdr.end_jd,
            "dec_rad": hdr.dec_rad, "n_subbands": 16, "state": "converted", "attempts": 0,
            "ms_path": str(ms), "manifest": json.dumps(manifest)})
    return cfg, areas, reg, oid, ms


def test_deleted_ms_is_caught_before_use(converted_obs):
    cfg, areas, reg, oid, ms = converted_obs
    shutil.rmtree(ms)
    driver = scheduler.Driver(cfg, areas.stage.parent)
    with pytest.raises(StaleProductError, match="missing"):
        driver.verified_ms(reg.get("observations", oid))
    assert reg.get("observations", oid)["state"] == "converted"  # nothing recorded as done


def test_modified_ms_is_caught_before_use(converted_obs):
    cfg, areas, reg, oid, ms = converted_obs
    with open(ms / "table.f0", "ab") as fh:
        fh.write(b"x")
    driver = scheduler.Driver(cfg, areas.stage.parent)
    with pytest.raises(StaleProductError, match="differs from manifest"):
        driver.verified_ms(reg.get("observations", oid))


def test_reconcile_reports_and_repairs(converted_obs, capsys):
    cfg, areas, reg, oid, ms = converted_obs
    shutil.rmtree(ms)
    args = ["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(areas.stage.parent)]
    assert main(args + ["reconcile"]) == 1
    out = capsys.readouterr().out
    assert f"missing        observations {oid}: {ms}: not on disk" in out, out
    assert main(args + ["reconcile", "--repair"]) == 1
    assert Registry(areas.registry).get("observations", oid)["state"] == "failed"


def test_lease_of_a_dead_driver_on_a_converted_row_is_released(converted_obs):
    """A driver that stopped between recording a conversion and submitting the imaging leaves
    a 'converted' row leased for an hour; the next driver must not wait for that."""
    import socket
    import subprocess
    import sys
    import time

    cfg, areas, reg, oid, ms = converted_obs
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    with reg.write():
        reg.db["observations"].update(oid, {"lease_owner": f"{socket.gethostname()}:{gone}",
                                            "lease_expires_at": time.time() + 3600})
    driver = scheduler.Driver(cfg, areas.stage.parent)
    assert driver.reg.acquire_next("probe", states=("converted",)) is None  # still leased
    driver.recover()
    row = driver.reg.acquire_next("probe", states=("converted",))
    assert row is not None and row["obs_id"] == oid
