"""The driver on a real local Ray cluster, real files, real MS, real CASA, real SQLite."""

import json
import shutil
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from astropy.io import fits

from engine import config, scheduler, simulate
from engine.registry import Registry


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("drive")
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {"sim.nobs": 4, "image.max_imsize": 256, "image.niter": 50,
                       "ray.include_dashboard": True})
    paths, sky, _ = simulate.simulate_run(cfg, base / "scratch")
    # files arrive newest observation first: the driver must still take the oldest first
    inc = base / "incoming"
    inc.mkdir()
    for obs in reversed(paths):
        for p in obs:
            shutil.copy(p, inc)
    # one observation is incomplete: a subband is missing
    missing = [p for p in paths[1] if p.name.endswith("_sb09.hdf5")][0]
    (inc / missing.name).unlink()
    # one observation fails at conversion: its sb04 file holds sb03's channels
    sb03 = [p for p in paths[3] if p.name.endswith("_sb03.hdf5")][0]
    sb04 = [p for p in paths[3] if p.name.endswith("_sb04.hdf5")][0]
    shutil.copy(sb03, inc / sb04.name)
    yield base, cfg, paths
    if ray.is_initialized():
        ray.shutdown()


METRICS = ("dsa110_observations{", "dsa110_bytes_converted", "dsa110_real_time_factor")


def _sample_metrics(out: Path, stop: threading.Event):
    """Append the driver's lines from Ray's metrics endpoint to ``out`` until ``stop``.

    Ray exports a value some seconds after it is set and evicts a gauge about 20 s after
    its last refresh, so sampling starts with Ray and goes on briefly after the run.
    """
    while not stop.wait(1.0):
        if not ray.is_initialized():
            continue
        try:
            node = ray._private.worker.global_worker.node
            url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except Exception:  # Ray still starting, or shutting down
            continue
        with out.open("a") as f:
            f.writelines(line + "\n" for line in text.splitlines() if "dsa110_" in line)


def test_run_publishes_images_in_observation_order(run_dir):
    base, cfg, paths = run_dir
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_metrics, args=(base / "metrics_seen.txt", stop))
    sampler.start()
    try:
        summary = scheduler.run(cfg, base)
        seen = base / "metrics_seen.txt"
        for _ in range(45):  # until every metric was exported once
            if seen.exists() and all(m in seen.read_text() for m in METRICS):
                break
            time.sleep(1)
    finally:
        stop.set()
        sampler.join()
    reg = Registry(base / "registry.sqlite")
    obs = {r["obs_id"]: r for r in reg.db["observations"].rows}
    starts = sorted(obs.values(), key=lambda r: r["start_jd"])
    expect = [r["obs_id"] for r in starts if r["n_subbands"] == 16]
    assert summary.order == expect  # oldest observation time first, not arrival order
    # the broken observation is quarantined with a reason; the others finished normally
    assert list(summary.failed) == [starts[3]["obs_id"]]
    assert "do not tile one contiguous band" in starts[3]["error"]
    assert starts[3]["state"] == "quarantined"
    assert len(summary.published) == 2
    # the incomplete observation waits (never converted)
    assert starts[1]["state"] == "discovered" and starts[1]["n_subbands"] == 15
    for r in reg.db["products"].rows:
        assert r["state"] == "published"
        assert base.joinpath("products") in __import__("pathlib").Path(
            r["published_path"]).parents
    imgs = list(reg.db["images"].rows)
    assert all(__import__("pathlib").Path(i["path"]).exists() for i in imgs)
    # every transition left an event
    ev = reg.events("observations", expect[0])
    assert [e["new"] for e in ev if e["old"] != e["new"]] == [
        "discovered", "complete", "converting", "converted", "imaging", "imaged"]
    assert any("MS kept (publish.keep_ms = true)" in (e["detail"] or "") for e in ev)


def test_task_names_readable_in_ray_state_api(run_dir):
    from ray.util.state import list_tasks

    # ask this run's cluster, even if other Ray clusters run on the machine
    names = {t.name for t in list_tasks(address=ray.get_runtime_context().gcs_address,
                                        limit=1000)}
    assert any(n.startswith("convert[") and " sb05]" in n for n in names)
    assert any(n.startswith("image[") for n in names)


def test_driver_exports_ray_metrics(run_dir):
    """The running driver's metrics reached Ray's Prometheus endpoint (what the dashboard
    reads), sampled during the first test's run: Ray evicts gauges that stop being
    refreshed, so they are live while a driver runs and gone soon after it stops."""
    base, _, _ = run_dir
    text = (base / "metrics_seen.txt").read_text()
    assert all(m in text for m in METRICS)
    assert 'State="imaged"' in text.replace("state", "State")


def test_rerun_changes_nothing(run_dir):
    base, cfg, _ = run_dir
    before = sqlite3.connect(base / "registry.sqlite").execute(
        "SELECT obs_id, state FROM observations ORDER BY obs_id").fetchall()
    summary = scheduler.run(cfg, base)
    after = sqlite3.connect(base / "registry.sqlite").execute(
        "SELECT obs_id, state FROM observations ORDER BY obs_id").fetchall()
    assert before == after and not summary.order


def test_status_json(run_dir, capsys):
    from engine.cli import main

    base, cfg, _ = run_dir
    assert main(["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(base),
                 "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["observations"]["imaged"] == 2 and out["products"]["published"] == 2
    reg = Registry(base / "registry.sqlite")
    starts = sorted(reg.db["observations"].rows, key=lambda r: r["start_jd"])
    # the operator's questions: the last error of each step, how far behind, the stage
    err = out["last_errors"]["observations converting"]
    assert err["key"] == starts[3]["obs_id"] and "contiguous band" in err["error"]
    lag = out["lag"]
    # the newest file is the quarantined observation's; the newest image is obs 2's
    assert lag["behind_s"] == pytest.approx(
        (starts[3]["start_jd"] - starts[2]["start_jd"]) * 86400, abs=1.0)
    assert lag["publication_s"]["n"] == 2
    assert out["stage"]["budget_bytes"] is None and out["stage"]["used_bytes"] > 0
    reg.close()


@pytest.fixture(scope="module")
def cal_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("calflow")
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        "sim.nobs": 3, "sim.nants": 12, "sim.calibrator": "3C286", "sim.transit_obs": 1,
        "image.require_calibration": True, "image.max_imsize": 256, "image.niter": 50,
        "image.nterms": 1, "image.gridder": "standard"})
    simulate.simulate_run(cfg, base / "incoming")
    if ray.is_initialized():
        ray.shutdown()
    summary = scheduler.run(cfg, base)
    ray.shutdown()
    return base, summary


def test_calibration_comes_first(cal_run):
    base, summary = cal_run
    reg = Registry(base / "registry.sqlite")
    obs = sorted(reg.db["observations"].rows, key=lambda r: r["start_jd"])
    assert [o["calibrator"] for o in obs] == [None, "3C286", None]
    assert summary.calibrated == [obs[1]["obs_id"]] and not summary.failed
    # the observation before the transit waited for the tables instead of being imaged raw
    states = [e["new"] for e in reg.events("observations", obs[0]["obs_id"])]
    assert "awaiting_calibration" in states and states[-1] == "imaged"
    tables = {r["kind"]: r["path"] for r in reg.db["caltables"].rows}
    for o in obs:
        assert o["state"] == "imaged"
        assert json.loads(o["calibration_applied"]) == [tables["bandpass"], tables["gains"]]
    with fits.open(reg.get("images", obs[0]["obs_id"])["path"]) as h:
        assert obs[1]["obs_id"] in h[0].header["CALTABS"]
        assert h[0].header["BUNIT"] == "Jy/beam" and h[0].header["BMAJ"] > 0


def test_run_follow_drains_on_sigterm(tmp_path):
    """`run --follow` with explicit areas: SIGTERM stops new work, drains, exits cleanly."""
    import os
    import signal
    import subprocess
    import sys

    cfg = config.load(config.CONFIG_DIR / "ci.toml", {"sim.nobs": 2})
    simulate.simulate_run(cfg, tmp_path / "in")
    reg_path = tmp_path / "db" / "reg.sqlite"
    p = subprocess.Popen(
        [sys.executable, "-m", "engine", "--config", str(config.CONFIG_DIR / "ci.toml"),
         "--set", "image.max_imsize=128", "--set", "image.niter=10", "run", "--follow",
         "--incoming", str(tmp_path / "in"), "--stage", str(tmp_path / "st"),
         "--products", str(tmp_path / "pr"), "--registry", str(reg_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 300:
            try:  # read-only: the file may not exist yet, or exist a moment before its tables
                n = sqlite3.connect(f"file:{reg_path}?mode=ro", uri=True).execute(
                    "SELECT count(*) FROM observations WHERE state = 'imaged'").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n == 2:
                break
            time.sleep(0.5)
        os.kill(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:  # never leave a driver (and its Ray cluster) behind
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, err[-2000:]
    assert "real-time factor" in out and "imaged: 2" in out
    db = sqlite3.connect(reg_path)
    busy = db.execute("SELECT count(*) FROM observations WHERE state IN "
                      "('converting', 'calibrating', 'imaging')").fetchone()[0]
    assert busy == 0
    assert len(list((tmp_path / "pr").glob("*/*.image.fits"))) == 2


@pytest.mark.slow  # two driver processes, ~75 s: in make test-slow
def test_a_following_driver_over_its_memory_limit_drains_and_exits_for_a_restart(tmp_path):
    """driver.max_rss_mb below any Python process: the following driver takes its first
    observation, stops taking work, finishes what it started, exits with RECYCLE_EXIT
    (75, restarted by systemd's Restart=on-failure), and a driver started again (with room)
    takes the rest; nothing is left half-done in between."""
    import subprocess
    import sys

    cfg = config.load(config.CONFIG_DIR / "ci.toml", {"sim.nobs": 3})
    simulate.simulate_run(cfg, tmp_path / "incoming")
    cmd = [sys.executable, "-m", "engine", "--config", str(config.CONFIG_DIR / "ci.toml"),
           "--set", "image.max_imsize=128", "--set", "image.niter=10",
           "--set", "ray.max_obs_in_flight=1", "--workdir", str(tmp_path)]
    r = subprocess.run([*cmd, "--set", "driver.max_rss_mb=1", "run", "--follow"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == scheduler.RECYCLE_EXIT, r.stderr[-2000:]
    assert "STOPPED TO BE RESTARTED: driver RSS" in r.stdout
    assert "over driver.max_rss_mb" in r.stderr
    db = sqlite3.connect(tmp_path / "registry.sqlite")
    states = dict(db.execute("SELECT state, count(*) FROM observations GROUP BY state"))
    assert not set(states) & {"converting", "calibrating", "imaging"}, states
    assert states.get("complete", 0) == 2  # only the first observation was taken
    db.close()
    r = subprocess.run([*cmd, "run"], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)  # a batch run never recycles
    assert r.returncode == 0, r.stderr[-2000:]
    db = sqlite3.connect(tmp_path / "registry.sqlite")
    assert dict(db.execute("SELECT state, count(*) FROM observations GROUP BY state")) == {
        "imaged": 3}
