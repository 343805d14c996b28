import json
import os

import h5py
import numpy as np
import pytest

from engine.cli import main
from engine.errors import PathSafetyError
from engine.paths import confine


def test_simulate_cli_writes_files_and_truth(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--scale", "tiny", "--observations", "1", "--dec", "16.3",
                 "--seed", "9", "--start", "2025-11-01T10:00:00", "--out", str(out)]) == 0
    files = sorted(out.glob("*.hdf5"))
    assert len(files) == 16 and files[0].name.startswith("2025-11-01T")
    with h5py.File(files[0]) as f:
        assert np.isclose(np.rad2deg(f["Header/extra_keywords/phase_center_dec"][()]), 16.3)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["seed"] == 9 and len(truth["observations"]) == 1


def test_config_show_and_bad_key(capsys):
    assert main(["config", "show"]) == 0
    assert "nsubbands = 16" in capsys.readouterr().out
    assert main(["--set", "sim.nantz=3", "config", "show"]) == 2
    assert "sim.nantz" in capsys.readouterr().err


def test_paths_are_confined(tmp_path):
    root = tmp_path / "stage"
    root.mkdir()
    assert confine("a/b.ms", root) == root.resolve() / "a" / "b.ms"
    with pytest.raises(PathSafetyError):
        confine("../escape", root)
    with pytest.raises(PathSafetyError):
        confine("/etc/passwd", root)
    os.symlink(tmp_path, root / "link")
    with pytest.raises(PathSafetyError):
        confine("link/elsewhere", root)


def test_calibrator_transits_in_the_chosen_observation(tmp_path):
    from astropy import units as u
    from astropy.coordinates import TETE, SkyCoord
    from astropy.time import Time

    out = tmp_path / "cal"
    assert main(["--set", "sim.transit_obs=1", "simulate", "--scale", "tiny", "--observations",
                 "3", "--calibrator", "3C286", "--out", str(out)]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["transit_obs"] == 1 and "3C286" in truth["sky"]["names"]
    # independent: apparent LST minus the apparent (TETE) RA of 3C286 from the catalog text
    c = SkyCoord("13:31:08.2881", "+30:30:32.959", unit=(u.hourangle, u.deg))
    starts = sorted({h5py.File(p)["Header/time_array"][0] for p in out.glob("*.hdf5")})
    ends = sorted({h5py.File(p)["Header/time_array"][()].max() for p in out.glob("*.hdf5")})
    for k, (t0, t1) in enumerate(zip(starts, ends)):
        ha = []
        for t in (t0, t1):
            tt = Time(t, format="jd")
            lst = tt.sidereal_time("apparent", longitude=-118.2825 * u.deg).rad
            ra = c.transform_to(TETE(obstime=tt)).ra.rad
            ha.append((lst - ra + np.pi) % (2 * np.pi) - np.pi)
        assert (ha[0] < 0 < ha[1]) == (k == 1)
    with h5py.File(next(out.glob("*_sb00.hdf5"))) as f:
        dec = np.rad2deg(f["Header/extra_keywords/phase_center_dec"][()])
    assert abs(dec - 30.509) < 0.5  # pointed at the calibrator (apparent dec of date)


def test_directory_digest_follows_its_definition(tmp_path):
    """Per file, in sorted order: relative name, then sha256 over the sha256 digests of its
    64 MB leaves; a plain file is its plain sha256. Recomputed here with hashlib alone."""
    import hashlib

    from engine.paths import LEAF_BYTES, digest

    ms = tmp_path / "x.ms"
    (ms / "sub").mkdir(parents=True)
    big = os.urandom(LEAF_BYTES + 12345)
    (ms / "table.f1").write_bytes(big)
    (ms / "sub" / "table.dat").write_bytes(b"abc")
    (ms / "table.lock").write_bytes(b"changes whenever casacore opens the table")
    want = hashlib.sha256()
    for name, data in (("sub/table.dat", b"abc"), ("table.f1", big)):
        leaves = hashlib.sha256()
        for off in range(0, max(len(data), 1), LEAF_BYTES):
            leaves.update(hashlib.sha256(data[off:off + LEAF_BYTES]).digest())
        want.update(name.encode())
        want.update(leaves.digest())
    assert digest(ms) == (want.hexdigest(), len(big) + 3)
    assert digest(ms / "table.f1")[0] == hashlib.sha256(big).hexdigest()
    with open(ms / "table.f1", "r+b") as fh:  # one byte in the second leaf
        fh.seek(LEAF_BYTES + 7)
        fh.write(b"\x00" if big[LEAF_BYTES + 7] else b"\x01")
    assert digest(ms)[0] != want.hexdigest()


@pytest.mark.parametrize("offset", [0.0, 0.5, -1.0])
def test_simulated_pointing_is_offset_from_the_calibrator(tmp_path, offset):
    """The pointing declination is the calibrator's apparent (TETE) declination at transit
    plus sim.calibrator_offset_deg; beyond calibrate.max_offset_deg is refused."""
    from astropy import units as u
    from astropy.coordinates import TETE, SkyCoord
    from astropy.time import Time

    out = tmp_path / "cal"
    assert main(["--set", f"sim.calibrator_offset_deg={offset}", "--set", "sim.transit_obs=0",
                 "simulate", "--scale", "tiny", "--observations", "1", "--calibrator",
                 "3C286", "--out", str(out)]) == 0
    with h5py.File(next(out.glob("*_sb00.hdf5"))) as f:
        dec = np.rad2deg(f["Header/extra_keywords/phase_center_dec"][()])
        t = Time(float(np.median(f["Header/time_array"][()])), format="jd")
    c = SkyCoord("13:31:08.2881", "+30:30:32.959", unit=(u.hourangle, u.deg))
    app = c.transform_to(TETE(obstime=t)).dec.deg
    assert dec - app == pytest.approx(offset, abs=2e-4)
    assert main(["--set", "sim.calibrator_offset_deg=2.0", "simulate", "--scale", "tiny",
                 "--observations", "1", "--calibrator", "3C286", "--out",
                 str(tmp_path / "x")]) == 2


def test_status_and_the_other_commands_take_runs_path_options(tmp_path, capsys):
    """`status --registry FILE` (and lightcurves, reconcile) read the registry named there,
    as `run --registry FILE` writes it; without it, no registry is found in the workdir."""
    from engine.registry import Registry

    reg_path = tmp_path / "elsewhere" / "reg.sqlite"
    reg_path.parent.mkdir()
    Registry(reg_path)  # an empty registry at the current schema
    work = tmp_path / "work"
    work.mkdir()
    assert main(["--workdir", str(work), "status"]) == 1
    assert "no registry" in capsys.readouterr().out
    assert main(["--workdir", str(work), "status", "--json", "--registry", str(reg_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == 0 and doc["science"]["sources"] == 0
    assert main(["--workdir", str(work), "lightcurves", "--json",
                 "--registry", str(reg_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"sources": []}


def test_the_example_service_runs_follow_and_restarts_on_failure():
    """configs/systemd/dsa110-engine.service: the engine's `run --follow` command line,
    restarted on failure, stopped with SIGTERM (which drains) with time to drain."""
    import configparser
    import shlex
    from pathlib import Path

    unit = Path(__file__).parents[2] / "configs" / "systemd" / "dsa110-engine.service"
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    cp.read_string(unit.read_text())
    svc = cp["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].endswith("/dsa110-engine") and argv[-2:] == ["run", "--follow"]
    assert svc["Restart"] == "on-failure" and svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) >= 300 and cp["Install"]["WantedBy"]
