"""A night of unattended streaming, accelerated (issue 17): ``run --follow`` fed by a stream
of simulated observations while a supervisor kills and restarts it.

The engine keys everything on observation time, so a 309 s observation may arrive every
few seconds. The harness (one call, :func:`soak`):

* simulates ``nobs`` observations at one pointing declination (tiny scale: 10 antennas),
  the stream crossing 00:00 UTC, with the transits of ``calibrators`` in it;
* delivers them into incoming at ``cadence_s``: each observation's 16 files in random
  order, some observations one or two places late, one never, one twice (the second time
  under filename times one second later: the correlator re-sent it), one with a truncated
  subband file;
* runs the driver as a child process (``python -m engine ... run --follow``) in its own
  process group, and kills that group with SIGKILL ``kills`` times at random moments
  (driver and the Ray it started, as a supervisor's control-group kill) and restarts it;
  kills a Ray worker that runs a task ``worker_kills`` times; holds the registry's write
  lock for a few seconds ``lock_holds`` times;
* samples the stage's bytes and the driver's RSS every second;
* when every observation has been delivered and the engine has finished what it can, stops
  the driver with SIGTERM (it drains) and checks the registry and the disk.

Checks (returned with the numbers, and asserted by the slow test): every good observation
imaged and published exactly once; the published mosaics equal the windows the rule
(:mod:`engine.windows`) predicts from the observation list alone; no product file lost or
duplicated (``reconcile``); the stage never above its budget; the driver's RSS over the
run; the lag from an observation's newest file to its published image (median, 95th
percentile; ``status``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from engine import calibrators, config, simulate, windows
from engine.memtrace import rss_parts
from engine.telescope import Telescope

CI = config.CONFIG_DIR / "ci.toml"


def _overrides(nobs: int, start_iso: str, dec_deg: float, budget_gb: float) -> dict:
    # 24 integrations: observations cover their whole 309 s, as at the telescope, so every
    # calibrator transit falls inside one (the tests' 3 integrations cover 39 s of it)
    return {"sim.nobs": nobs, "sim.start": start_iso, "sim.dec_deg": dec_deg,
            "sim.ntimes": 24, "sim.nsources": 3, "image.max_imsize": 256, "image.niter": 50,
            "image.nterms": 1, "image.require_calibration": True,
            "calibrate.gain_valid_h": 12.0,  # the transits here are hours apart
            "discover.settle_s": 1.0, "discover.incomplete_wait_s": 20.0,
            "driver.retry_after_s": 10.0, "driver.stage_budget_gb": budget_gb,
            "driver.registry_timeout_s": 30.0, "ray.max_obs_in_flight": 2}


def start_before(cal_name: str, after_iso: str, n_before: int) -> str:
    """UTC start (ISO) that puts ``cal_name``'s first transit after ``after_iso`` in the
    middle of observation ``n_before`` of the stream."""
    from astropy.time import Time

    tel = Telescope(config.load(CI))
    t_tr = calibrators.next_transit_jd(calibrators.get(cal_name),
                                       Time(after_iso, scale="utc").jd, tel.location)
    cadence = simulate.OBS_CADENCE_NTIMES * 12.884901888 / 86400
    return Time(t_tr - (n_before + 0.5) * cadence, format="jd").isot[:23]


def files_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``, by find(1) (independent of the engine's
    own measure); 0 if it does not exist."""
    if not Path(path).exists():
        return 0
    out = subprocess.run(["find", str(path), "-type", "f", "-printf", "%s\\n"],
                         capture_output=True, text=True)
    return sum(int(x) for x in out.stdout.split())


def _session_pids(sid: int) -> list[int]:
    """Every process in session ``sid`` (the driver and the Ray it started)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getsid(int(p.name)) == sid:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def workers_rss(sid: int) -> int:
    """Summed private resident memory (RssAnon) of the session's processes other than the
    driver (Ray's raylet, GCS and workers), bytes."""
    total = 0
    for pid in _session_pids(sid):
        if pid != sid:
            total += (rss_parts(pid) or {}).get("RssAnon", 0)
    return total


def _busy_workers(sid: int) -> list[int]:
    """PIDs of this session's Ray workers that run one of the engine's tasks (process
    title ``ray::<task>``, not ``ray::IDLE``)."""
    out = []
    for pid in _session_pids(sid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(
                errors="replace")
        except OSError:
            continue
        tasks = ("image", "convert", "assemble", "calibrate")
        if cmd.startswith("ray::") and any(k in cmd for k in tasks):
            out.append(pid)
    return out


class Soak:
    def __init__(self, work: Path, *, nobs: int, start_iso: str, dec_deg: float,
                 cadence_s: float, kills: int, worker_kills: int, lock_holds: int,
                 budget_obs: float = 10.0, seed: int = 0, calibrator_names=()):
        self.work, self.nobs, self.cadence_s = Path(work), nobs, cadence_s
        self.kills, self.worker_kills, self.lock_holds = kills, worker_kills, lock_holds
        self.rng = random.Random(seed)
        self.cals = [calibrators.get(c) for c in calibrator_names]
        self.scratch = self.work / "scratch"
        self.incoming = self.work / "incoming"
        self.events: list[tuple[float, str]] = []
        self.samples: list[tuple[float, int, int | None, int | None]] = []
        self.start_iso, self.dec_deg, self.budget_obs = start_iso, dec_deg, budget_obs
        self.proc: subprocess.Popen | None = None
        self.t0 = time.monotonic()

    # --- set-up --------------------------------------------------------------------------
    def simulate(self):
        cfg = config.load(CI, _overrides(self.nobs, self.start_iso, self.dec_deg, 0.0))
        paths, _, _ = simulate.simulate_run(cfg, self.scratch, calibrators=self.cals)
        self.paths = paths
        per_obs = sum(p.stat().st_size for p in paths[0])
        # ~budget_obs MSs and peaks at 4 x the input: at this scale 104 MB, room for one
        # mosaic's maps (~50 MB) beside a few observations
        self.budget_gb = self.budget_obs * per_obs / 1e9 * 4
        self.cfg = config.load(CI, _overrides(self.nobs, self.start_iso, self.dec_deg,
                                              self.budget_gb))
        n = self.nobs
        # the transits' observations (and their neighbours) are delivered whole and in time
        from astropy.time import Time

        t0 = Time(self.start_iso, scale="utc").jd
        cadence = simulate.OBS_CADENCE_NTIMES * cfg.band.integration_s / 86400
        tel = Telescope(cfg)
        self.transits = sorted(int((calibrators.next_transit_jd(c, t0, tel.location) - t0)
                                   // cadence) for c in self.cals)
        idx = [i for i in range(2, n - 2) if all(abs(i - k) > 1 for k in self.transits)]
        self.rng.shuffle(idx)
        self.missing, self.twice, self.bad = idx[0], idx[1], idx[2]
        self.late = {i: self.rng.choice((1, 2)) for i in idx[3:3 + max(2, n // 15)]}

    def plan_delivery(self) -> list[tuple[int, str]]:
        """(slot, kind) per observation: the slot is when it arrives (cadence units)."""
        order = []
        for i in range(self.nobs):
            if i == self.missing:
                continue
            order.append((i + self.late.get(i, 0) + 0.5 * (i in self.late), i, "obs"))
            if i == self.twice:
                order.append((i + 3.25, i, "again"))
        return sorted(order)

    # --- the stream and the supervisor ----------------------------------------------------
    def note(self, what: str):
        self.events.append((time.monotonic() - self.t0, what))

    def deliver(self, i: int, kind: str):
        files = list(self.paths[i])
        self.rng.shuffle(files)
        for p in files:
            name = p.name
            if kind == "again":  # re-sent: filename times one second later
                from engine.uvh5io import parse_filename
                from astropy.time import Time

                jd, sb = parse_filename(p)
                name = Time(jd + 1 / 86400, format="jd").isot[:19] + p.name[19:]
            tmp = self.incoming / (name + ".part")
            if i == self.bad and p.name.endswith("_sb05.hdf5") and kind == "obs":
                data = p.read_bytes()
                tmp.write_bytes(data[:len(data) // 2])  # truncated by the writer
            else:
                shutil.copyfile(p, tmp)
            os.replace(tmp, self.incoming / name)
        self.note(f"delivered {i} ({kind})")

    def start_driver(self):
        log = (self.work / "driver.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--config", str(CI), *self.sets(),
             "--workdir", str(self.work), "run", "--follow"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RAY_DEDUP_LOGS": "0"})
        self.note(f"driver started (pid {self.proc.pid})")

    def kill_driver(self):
        """SIGKILL to every process of the driver's session (the driver and the Ray it
        started), as a supervisor's control-group kill."""
        sid = self.proc.pid
        for pid in _session_pids(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.note("driver killed (SIGKILL, its session)")

    def kill_worker(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        busy = _busy_workers(self.proc.pid)
        if not busy:
            return False
        pid = self.rng.choice(busy)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.note(f"Ray worker {pid} killed")
        return True

    def hold_lock(self, seconds: float = 4.0):
        reg = self.cfg.resolve_path("registry", self.work)
        if not reg.exists():
            return
        con = sqlite3.connect(reg, timeout=60)
        con.execute("BEGIN IMMEDIATE")
        self.note(f"registry write lock held {seconds} s")
        time.sleep(seconds)
        con.rollback()
        con.close()

    def sampler(self, stop: threading.Event):
        stage = self.cfg.resolve_path("stage", self.work)
        while not stop.wait(1.0):
            pid = self.proc.pid if self.proc and self.proc.poll() is None else None
            parts = (rss_parts(pid) if pid else None) or {}
            self.samples.append((time.monotonic() - self.t0, files_bytes(stage),
                                 parts.get("VmRSS"), pid, parts.get("RssAnon"),
                                 parts.get("RssShmem"), workers_rss(pid) if pid else None))

    def sets(self) -> list[str]:
        return [f"--set={k}={v}" for k, v in _overrides(
            self.nobs, self.start_iso, self.dec_deg, self.budget_gb).items()]

    def status(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "engine", "--config", str(CI), *self.sets(),
             "--workdir", str(self.work), "status", "--json"],
            capture_output=True, text=True, timeout=300)
        return json.loads(out.stdout)

    def run(self, max_wait_s: float = 1800.0) -> dict:
        self.incoming.mkdir(parents=True, exist_ok=True)
        deliveries = self.plan_delivery()
        end_slot = deliveries[-1][0]
        kill_slots = sorted(self.rng.uniform(2, end_slot) for _ in range(self.kills))
        worker_slots = sorted(self.rng.uniform(2, end_slot) for _ in range(self.worker_kills))
        lock_slots = sorted(self.rng.uniform(2, end_slot) for _ in range(self.lock_holds))
        stop = threading.Event()
        self.t0 = time.monotonic()
        self.start_driver()
        th = threading.Thread(target=self.sampler, args=(stop,), daemon=True)
        th.start()
        try:
            for slot, i, kind in deliveries:
                while time.monotonic() - self.t0 < slot * self.cadence_s:
                    now_slot = (time.monotonic() - self.t0) / self.cadence_s
                    if kill_slots and now_slot >= kill_slots[0]:
                        kill_slots.pop(0)
                        self.kill_driver()
                        time.sleep(1.0)
                        self.start_driver()
                    if worker_slots and now_slot >= worker_slots[0] and self.kill_worker():
                        worker_slots.pop(0)
                    if lock_slots and now_slot >= lock_slots[0]:
                        lock_slots.pop(0)
                        self.hold_lock()
                    time.sleep(0.2)
                self.deliver(i, kind)
            # a kill or a worker kill not yet done (no busy worker at its moment)
            for _ in kill_slots:
                self.kill_driver()
                time.sleep(1.0)
                self.start_driver()
            deadline = time.monotonic() + max_wait_s
            while time.monotonic() < deadline:
                if worker_slots and self.kill_worker():
                    worker_slots.pop(0)
                time.sleep(5.0)
                if self.proc.poll() is not None:  # it stopped on its own: restart it
                    self.note(f"driver exited ({self.proc.returncode}): restarted")
                    self.start_driver()
                st = self.status()
                if self._settled(st):
                    break
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=600)
            self.note("driver stopped (SIGTERM, drained)")
        finally:
            stop.set()
            th.join()
            if self.proc and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.check()

    def _settled(self, st: dict) -> bool:
        """Every observation final, every mosaic window that can be made published."""
        obs = st["observations"]
        busy = {k: v for k, v in obs.items()
                if k not in ("imaged", "mosaicked", "quarantined", "incomplete")}
        open_w = [w for w in st["windows"] if w["state"] != "published"]
        return not busy and not open_w and sum(obs.values()) >= self.nobs - 1

    # --- the verdict -----------------------------------------------------------------------
    def check(self) -> dict:
        from engine.registry import Registry

        reg = Registry(self.cfg.resolve_path("registry", self.work))
        rows = list(reg.db["observations"].rows)
        by_start = sorted(rows, key=lambda r: r["start_jd"])
        good = [r for r in by_start if r["state"] in ("imaged", "mosaicked")]
        products = list(reg.db["products"].rows)
        images = [p for p in products if p["data_id"].startswith("image:")]
        published_imgs = [p for p in images if p["state"] == "published"]
        rejected = {p["data_id"][6:]: p["last_error"] for p in images if p["state"] == "rejected"}
        # published images of empty fields (no source above publish.min_dynamic_range x the
        # residual rms; publish.accept_empty_fields): counted apart, they carry upper limits
        floor = self.cfg.publish.min_dynamic_range
        pub_ids = {p["data_id"][6:] for p in published_imgs}
        empty = sorted(r["obs_id"] for r in reg.db["images"].rows
                       if r["obs_id"] in pub_ids
                       and (json.loads(r["qa"] or "{}").get("dynamic_range") or 0) < floor)
        pub_dirs = [d for d in self.cfg.resolve_path("products", self.work).iterdir()
                    if d.is_dir() and d.name not in ("mosaics", "lightcurves")]
        # the windows the rule gives from the observation list alone: every delivered
        # observation a member except the one with the bad file
        # independent of what the engine did: every delivered observation a member but the
        # one with the bad file (a gap); the one never delivered is a hole
        bad_id = self._obs_id(self.bad)
        truth_rows = [{**r, "state": "quarantined" if r["obs_id"] == bad_id else "imaged"}
                      for r in by_start]
        predicted = {w.mosaic_id for w, _ in windows.plan(
            truth_rows, **windows.config_rule(self.cfg))}
        mosaics = {r["mosaic_id"]: r["state"] for r in reg.db["mosaics"].rows}
        published_mos = {k for k, s in mosaics.items() if s == "published"}
        st = self.status()
        reg.close()
        rec = subprocess.run(
            [sys.executable, "-m", "engine", "--config", str(CI), "--workdir", str(self.work),
             "reconcile", "--json"], capture_output=True, text=True, timeout=600)
        stage = [x[1] for x in self.samples]
        memory = driver_memory(self.samples)
        return {
            "observations": self.nobs, "delivered": self.nobs - 1,
            "states": {s: sum(1 for r in rows if r["state"] == s)
                       for s in sorted({r["state"] for r in rows})},
            "bad_observation_state": next((r["state"] for r in by_start
                                           if r["obs_id"] == bad_id), None),
            "good_observations": self.nobs - 2,
            "imaged": len(good), "images_published": len(published_imgs),
            "images_rejected_by_qa": rejected, "images_published_empty_fields": empty,
            "image_rows": len(images),
            "image_product_dirs": len(pub_dirs),
            "mosaics_published": len(published_mos), "mosaics_predicted": len(predicted),
            "mosaics_equal_prediction": published_mos == predicted,
            "mosaics_not_published": {k: s for k, s in mosaics.items() if s != "published"},
            "reconcile_problems": (len(json.loads(rec.stdout)["problems"])
                                   if rec.stdout.strip().startswith("{") else rec.stderr[-500:]),
            "stage_budget_bytes": int(self.budget_gb * 1e9),
            "stage_max_bytes": max(stage) if stage else None,
            **memory,
            "rss_max_mb": max((x[2] for x in self.samples if x[2]), default=0) / 1e6,
            "workers_private_max_mb": max((x[6] for x in self.samples if x[6]),
                                          default=0) / 1e6,
            "lag_publication_s": st["lag"]["publication_s"],
            "calibrations": reg_count(self.cfg.resolve_path("registry", self.work)),
            "events": self.events,
            # every ~10 s: (s since start, stage bytes, driver RSS bytes, driver pid, its
            # private bytes, its shared bytes, the private bytes of its Ray's processes)
            "samples": [list(x) for x in self.samples[::10]],
            "wall_s": time.monotonic() - self.t0,
        }

    def _obs_id(self, i: int) -> str:
        from engine.discover import obs_id_for
        from engine.uvh5io import read_header

        hdr = read_header(self.paths[i][0])
        return obs_id_for(hdr.start_jd, hdr.dec_rad)


def driver_memory(samples) -> dict:
    """The longest-lived driver's memory over its life, from the sampler's rows: for its
    RSS, private (RssAnon) and shared (RssShmem, Ray's object-store pages) bytes, the
    median of the second quarter of its samples ("early", after start-up) and of the last
    quarter ("late"), MB, and the private bytes' least-squares slope over the second half,
    MB per hour."""
    by_pid: dict = {}
    for row in samples:
        t, pid = row[0], row[3]
        if row[2] and pid:
            by_pid.setdefault(pid, []).append((t, row[2], row[4], row[5]))
    longest = max(by_pid.values(), key=len, default=[])
    q = len(longest) // 4
    out = {"rss_longest_driver_s": (longest[-1][0] - longest[0][0]) if longest else None}
    for i, name in ((1, "rss"), (2, "private"), (3, "shared")):
        vals = [r[i] for r in longest]
        ok = q and all(v is not None for v in vals)
        out[f"{name}_early_mb"] = float(np.median(vals[q:2 * q])) / 1e6 if ok else None
        out[f"{name}_late_mb"] = float(np.median(vals[-q:])) / 1e6 if ok else None
    half = longest[len(longest) // 2:]
    if len(half) >= 10 and all(r[2] is not None for r in half):
        t = np.array([r[0] for r in half]) / 3600
        out["private_slope_mb_per_h"] = float(np.polyfit(t, [r[2] / 1e6 for r in half], 1)[0])
    return out


def reg_count(path: Path) -> dict:
    con = sqlite3.connect(path)
    try:
        return {"caltables": con.execute("SELECT count(*) FROM caltables").fetchone()[0],
                "calibrators": [r[0] for r in con.execute(
                    "SELECT DISTINCT calibrator FROM caltables")]}
    finally:
        con.close()


def bench_soak(cfg, work: Path) -> dict:
    """150+ observations (13.7 h of sky, three calibrator transits: 3C147, 3C196, 3C380)
    crossing 00:00 UTC, one every 4 s; five driver kills, two worker kills, two lock holds."""
    start = start_before("3C147", "2025-10-01T00:00:00", 8)
    s = Soak(work / "soak", nobs=160, start_iso=start, dec_deg=49.4, cadence_s=4.0,
             kills=5, worker_kills=2, lock_holds=2, seed=1,
             calibrator_names=("3C147", "3C196", "3C380"))
    if s.work.exists():
        shutil.rmtree(s.work)
    s.work.mkdir(parents=True)
    s.simulate()
    return s.run(max_wait_s=2400.0)
