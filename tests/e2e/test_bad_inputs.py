"""Issue 8's corpus: one driver run over an incoming folder where most observations hold a
different kind of bad input next to good data.

Every bad file or observation must end with a clear reason that names the file, be
quarantined or waited for as fits, and the good observations must be published as if
nothing happened. Nothing in the incoming folder is deleted or changed by the engine.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import ray

from engine import config, scheduler, simulate
from engine.registry import Registry

OLD = time.time() - 3600  # files written an hour ago have settled


def _sb(files, n):
    return next(p for p in files if p.name.endswith(f"_sb{n:02d}.hdf5"))


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _drop_last_channel(f):
    h, d = f["Header"], f["Data"]
    for name in ("visdata", "flags", "nsamples"):
        a = d[name][()]
        del d[name]
        d.create_dataset(name, data=a[..., :-1, :])
    fr = h["freq_array"][()]
    del h["freq_array"]
    h.create_dataset("freq_array", data=fr[..., :-1])
    h["Nfreqs"][()] = fr.shape[-1] - 1


def _other_antenna(f):
    """Row 1 becomes a baseline to a telescope antenna that carries no data elsewhere."""
    a1, a2 = f["Header"]["ant_1_array"][()], f["Header"]["ant_2_array"][()]
    spare = sorted(set(f["Header"]["antenna_numbers"][()]) - set(a1) - set(a2))[0]
    a2[1] = spare
    f["Header"]["ant_2_array"][...] = a2


def _nan_inf(f):
    v = f["Data"]["visdata"]
    block = v[0:4]
    block[0, ..., 0] = np.nan + 1j * np.nan
    block[3, ..., 1] = np.inf
    v[0:4] = block


def _all_flagged(f):
    f["Data"]["flags"][...] = True


def _snapshot(folder):
    out = {}
    for p in sorted(Path(folder).iterdir()):
        if p.is_symlink():
            out[p.name] = ("link", os.readlink(p))
        else:
            out[p.name] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        "sim.nobs": 12, "image.max_imsize": 256, "image.niter": 50,
        "discover.settle_s": 30.0, "discover.unreadable_retries": 1,
        "discover.incomplete_wait_s": 600.0, "mosaic.size": 20})
    obs, _, _ = simulate.simulate_run(cfg, base / "scratch")
    inc = base / "incoming"
    inc.mkdir()
    for files in obs:
        for p in files:
            shutil.copy(p, inc)
    o = [[inc / p.name for p in files] for files in obs]
    bad = {}
    # 0: good, plus a second copy of its sb02 under a later filename time
    dup = inc / ("2030-01-01T00:00:00" + _sb(o[0], 2).name[19:])
    shutil.copy(_sb(o[0], 2), dup)
    bad["duplicate"] = dup
    # 1: truncated HDF5
    p = _sb(o[1], 3)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    bad["truncated"] = p
    # 2: zero-byte file
    p = _sb(o[2], 5)
    p.write_bytes(b"")
    bad["zero"] = p
    # 3: still being written (recent mtime set below)
    p = _sb(o[3], 7)
    full = p.read_bytes()
    p.write_bytes(full[:4096])
    bad["writing"] = p
    # 4: missing subband
    _sb(o[4], 9).unlink()
    # 5: mismatched baselines in one file
    _edit(_sb(o[5], 4), _other_antenna)
    bad["baselines"] = _sb(o[5], 4)
    # 6: one channel fewer in one file
    _edit(_sb(o[6], 6), _drop_last_channel)
    bad["channels"] = _sb(o[6], 6)
    # 7: times shifted by one second in one file
    _edit(_sb(o[7], 8), lambda f: f["Header"]["time_array"].__setitem__(
        Ellipsis, f["Header"]["time_array"][()] + 1 / 86400))
    bad["times"] = _sb(o[7], 8)
    # 8: another pointing declination in one file
    _edit(_sb(o[8], 10), lambda f: f["Header"]["extra_keywords"]["phase_center_dec"].write_direct(
        np.array(f["Header"]["extra_keywords"]["phase_center_dec"][()] + np.deg2rad(1.0))))
    bad["dec"] = _sb(o[8], 10)
    # 9: extra keywords missing
    _edit(_sb(o[9], 11), lambda f: f["Header"].__delitem__("extra_keywords"))
    bad["keywords"] = _sb(o[9], 11)
    # 10: NaN and Inf visibilities
    _edit(_sb(o[10], 12), _nan_inf)
    bad["nan"] = _sb(o[10], 12)
    # 11: an all-flagged subband
    _edit(_sb(o[11], 13), _all_flagged)
    bad["flagged"] = _sb(o[11], 13)
    # files that belong to no observation
    bad["not_hdf5"] = inc / "2025-10-02T06:00:00_sb01.hdf5"
    bad["not_hdf5"].write_text("this is not HDF5")
    bad["out_of_range"] = inc / "2025-10-02T06:00:00_sb16.hdf5"
    shutil.copy(_sb(obs[0], 0), bad["out_of_range"])
    bad["bad_name"] = inc / "garbage_sb01.hdf5"
    shutil.copy(_sb(obs[0], 0), bad["bad_name"])
    bad["loop"] = inc / "2025-10-02T07:00:00_sb00.hdf5"
    os.symlink(bad["loop"].name, bad["loop"])
    os.symlink(".", inc / "loop_dir")  # a directory loop: must not be walked into
    for p in inc.iterdir():
        if not p.is_symlink():
            os.utime(p, (OLD, OLD))
    os.utime(bad["writing"], None)  # the correlator is still writing this one
    before = _snapshot(inc)
    writer_done = threading.Event()

    def writer():  # the correlator keeps writing: the file's mtime keeps moving
        while not writer_done.wait(0.5):
            os.utime(bad["writing"], None)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        summary = scheduler.run(cfg, base)
    finally:
        writer_done.set()
        th.join()
    reg = Registry(base / "registry.sqlite")
    rows = sorted(reg.db["observations"].rows, key=lambda r: r["start_jd"])
    yield {"base": base, "cfg": cfg, "inc": inc, "bad": bad, "summary": summary, "reg": reg,
           "obs": rows, "before": before, "full_writing": full}
    reg.close()
    if ray.is_initialized():
        ray.shutdown()


def _file(c, key):
    return c["reg"].get("files", str(c["bad"][key]))


def test_every_observation_is_registered_once(corpus):
    assert len(corpus["obs"]) == 12


@pytest.mark.parametrize("key,phrase", [
    ("truncated", "not a readable HDF5 file"),
    ("zero", "zero-byte file"),
    ("not_hdf5", "not a readable HDF5 file"),
    ("out_of_range", "subband index 16 outside 0..15"),
    ("bad_name", "malformed filename"),
    ("loop", "cannot follow path"),
    ("channels", "Nfreqs=1 differs from the rest"),
    ("dec", "pointing dec"),
    ("keywords", "extra_keywords lack phase_center_dec"),
])
def test_bad_file_is_quarantined_with_its_name_and_problem(corpus, key, phrase):
    row = _file(corpus, key)
    assert row["status"] == "quarantined"
    assert str(corpus["bad"][key]) in row["error"] and phrase in row["error"]


def test_duplicate_subband_is_a_conflict_and_never_replaces_the_first(corpus):
    row = _file(corpus, "duplicate")
    assert row["status"] == "conflict" and "duplicate of subband 02" in row["error"]
    assert corpus["obs"][0]["state"] == "imaged"


@pytest.mark.parametrize("i", [1, 2, 4, 6, 8, 9])
def test_observations_short_of_a_good_file_are_incomplete(corpus, i):
    row = corpus["obs"][i]
    assert row["state"] == "incomplete" and "15/16 subbands" in row["error"]


@pytest.mark.parametrize("i,key,phrase", [
    (5, "baselines", "baselines or times differ"),
    (7, "times", "baselines or times differ"),
])
def test_inconsistent_files_quarantine_their_observation_naming_the_file(corpus, i, key,
                                                                         phrase):
    row = corpus["obs"][i]
    assert row["state"] == "quarantined"
    assert str(corpus["bad"][key]) in row["error"] and phrase in row["error"]
    assert row["obs_id"] in corpus["summary"].failed


@pytest.mark.parametrize("i,key,phrase", [
    (10, "nan", "rows hold NaN/Inf visibilities (flagged)"),
    (11, "flagged", "every visibility is flagged in the file"),
])
def test_flagged_problems_are_recorded_and_the_observation_is_published(corpus, i, key,
                                                                        phrase):
    row = corpus["obs"][i]
    assert row["state"] == "imaged"
    warnings = json.loads(row["manifest"])["warnings"]
    assert any(str(corpus["bad"][key]) in w and phrase in w for w in warnings)
    prod = corpus["reg"].get("products", f"image:{row['obs_id']}")
    assert prod["state"] == "published"


def test_good_observations_finish_and_only_bad_input_fails(corpus):
    s = corpus["summary"]
    ids = [r["obs_id"] for r in corpus["obs"]]
    assert sorted(s.failed) == sorted([ids[5], ids[7]])
    assert sorted(p.split(":", 1)[1] for p in s.published) == sorted([ids[0], ids[10], ids[11]])


def test_nothing_in_incoming_is_deleted_or_changed(corpus):
    assert _snapshot(corpus["inc"]) == corpus["before"]


def test_file_still_being_written_is_waited_for_then_processed(corpus):
    c = corpus
    assert _file(c, "writing")["status"] == "pending"
    # its 15 finished siblings are older than the wait: incomplete, which still takes late files
    assert c["obs"][3]["state"] == "incomplete"
    p = c["bad"]["writing"]
    p.write_bytes(c["full_writing"])  # the correlator finished a minute ago
    os.utime(p, (time.time() - 60, time.time() - 60))
    # following the folder: the first look sees the size changed, the next one registers it
    summary = scheduler.run(c["cfg"], c["base"], once=False, poll_s=0.5, max_wall_s=5.0)
    obs_id = c["obs"][3]["obs_id"]
    assert summary.order == [obs_id] and f"image:{obs_id}" in summary.published
    assert c["reg"].get("observations", obs_id)["state"] == "imaged"
    # quarantined input is never retried automatically
    for i in (5, 7):
        assert c["reg"].get("observations", c["obs"][i]["obs_id"])["state"] == "quarantined"


SCAN_AS_OPERATOR = """
import json, sys
from engine import config, discover
from engine.registry import Registry
cfg = config.load(config.CONFIG_DIR / "ci.toml", {"discover.settle_s": 0.0})
reg = Registry(sys.argv[2])
discover.scan(cfg, reg, sys.argv[1])
print(json.dumps({r["path"]: [r["status"], r["error"]] for r in reg.db["files"].rows}))
"""


def test_unreadable_file_is_quarantined_with_its_name(one_obs, tmp_path):
    """Permission bits do not stop root: as root, the scan runs without the capabilities
    that override them (setpriv), so it meets the file as any operator account would."""
    inc = tmp_path / "incoming"
    inc.mkdir()
    for p in one_obs[0]:
        shutil.copy(p, inc)
    victim = inc / Path(one_obs[0][6]).name
    os.chmod(victim, 0o000)
    cmd = [sys.executable, "-c", SCAN_AS_OPERATOR, str(inc), str(tmp_path / "r.sqlite")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("running as root needs util-linux's setpriv to drop DAC override")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    status = json.loads(out.stdout.strip().splitlines()[-1])
    st, err = status[str(victim)]
    assert st == "quarantined" and str(victim) in err and "permission denied" in err
    assert sum(s == "ok" for s, _ in status.values()) == 15
    assert victim.exists() and victim.stat().st_mode & 0o777 == 0


def test_observation_with_every_visibility_flagged_is_refused(copy_obs, ci_cfg, tmp_path):
    from engine.convert import convert_local
    from engine.errors import ObservationError

    files = sorted(copy_obs.glob("*.hdf5"))
    for p in files:
        _edit(p, _all_flagged)
    with pytest.raises(ObservationError, match="every visibility of every subband is flagged"):
        convert_local(files, str(tmp_path / "x.ms"), ci_cfg, workdir=tmp_path)
    assert not (tmp_path / "x.ms").exists() and not (tmp_path / "x.ms.tmp").exists()


@pytest.mark.parametrize("key,phrase", [("truncated", "not a readable HDF5 file"),
                                        ("zero", "zero-byte file"),
                                        ("not_hdf5", "not a readable HDF5 file")])
def test_the_run_names_every_unfinished_observation_and_why(corpus, key, phrase, capsys):
    """The run's summary and `status` name each observation the run did not finish, with
    its subbands and its bad file: '15/16 subbands; sb05 quarantined: <problem>'."""
    from engine.cli import main
    from engine.uvh5io import parse_filename

    summary = corpus["summary"]
    capsys.readouterr()
    assert main(["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir",
                 str(corpus["base"]), "status", "--json"]) == 0
    # status now: what the run left, less what other tests here have finished since
    in_status = json.loads(capsys.readouterr().out)["unfinished"]
    assert in_status and all(u in summary.unfinished for u in in_status)
    unfinished = {u["obs_id"]: u for u in summary.unfinished if u["obs_id"]}
    assert set(unfinished) == {r["obs_id"] for r in corpus["obs"]
                               if r["state"] not in ("imaged", "mosaicked")}
    report = summary.report()
    path = corpus["bad"][key]
    if key == "not_hdf5":  # a bad file near no observation is named on its own
        (u,) = [u for u in summary.unfinished if u.get("file") == str(path)]
        assert phrase in u["reason"] and f"NOT USED {path}" in report
        return
    _, sb = parse_filename(path)
    hits = [u for u in unfinished.values() if f"sb{sb:02d} quarantined: " in u["reason"]
            and phrase in u["reason"]]
    assert len(hits) == 1 and "15/16 subbands" in hits[0]["reason"], unfinished
    assert f"NOT FINISHED {hits[0]['obs_id']}" in report
    assert hits[0] in in_status
