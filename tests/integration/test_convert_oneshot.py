"""The one-shot ``convert`` command: subbands in spawned worker processes, the same MS as
conversion in one process (python-casacore reads both)."""

import json
import subprocess
import sys

import numpy as np

from engine.casaenv import import_casacore_tables
from engine.convert import convert_local
from tests.conftest import ROOT


def test_convert_command_in_worker_processes_writes_the_serial_ms(one_obs, tmp_path):
    paths, _, cfg = one_obs
    serial = tmp_path / "serial" / "obs.ms"
    serial.parent.mkdir()
    convert_local(paths, str(serial), cfg)
    shot = tmp_path / "shot" / "obs.ms"
    shot.parent.mkdir()
    inc = tmp_path / "incoming"
    inc.mkdir()
    for p in paths:  # a folder, as an operator would give it
        (inc / p.rsplit("/", 1)[1]).symlink_to(p)
    r = subprocess.run([sys.executable, "-m", "engine", "--config",
                        str(ROOT / "configs" / "ci.toml"), "convert", str(inc),
                        "--out", str(shot), "--workers", "2"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads(r.stdout)
    assert sorted(m["subband"] for m in manifest["subbands"]) == list(range(16))
    tables = import_casacore_tables()
    with tables.table(str(serial), ack=False) as a, tables.table(str(shot), ack=False) as b:
        assert a.nrows() == b.nrows() > 0
        for col in ("TIME", "ANTENNA1", "ANTENNA2", "UVW", "DATA", "FLAG", "WEIGHT"):
            np.testing.assert_array_equal(a.getcol(col), b.getcol(col), err_msg=col)
    assert not list(shot.parent.glob("*.zarr"))  # the subband store is cleaned up


def test_convert_command_names_the_bad_file(one_obs, tmp_path):
    """A truncated subband converted in a worker process: the command fails naming it."""
    paths, _, _ = one_obs
    inc = tmp_path / "incoming"
    inc.mkdir()
    for p in paths:
        (inc / p.rsplit("/", 1)[1]).write_bytes(open(p, "rb").read())
    bad = sorted(inc.glob("*.hdf5"))[5]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    r = subprocess.run([sys.executable, "-m", "engine", "--config",
                        str(ROOT / "configs" / "ci.toml"), "convert", str(inc),
                        "--out", str(tmp_path / "x.ms"), "--workers", "2"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode != 0
    assert bad.name in r.stderr
