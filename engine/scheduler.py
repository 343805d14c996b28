"""The driver: discovery, oldest-first leasing, Ray conversion, calibration and imaging.

Only this process writes the registry. Tasks return manifests; a step is recorded as done
only after its manifest has been checked against the disk. Observations are taken in
OBSERVATION-time order (:meth:`Registry.acquire_next`), never in scan or arrival order.

Calibration comes first: an observation that holds a calibrator transit is converted with
the calibrator at its phase centre and solved; any observation without valid tables waits
in ``awaiting_calibration`` (unless ``image.require_calibration`` is false) and is imaged
as soon as a set valid at its mid-time (observation MJD) is registered.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import ray

from engine import discover, raytasks, windows
from engine.calibrate import find_transit
from engine.config import Config, load
from engine.convert import input_warnings, plan_observation, prepare_store
from engine.errors import (BAD_INPUT, EngineError, IllegalTransition, RegistryError,
                           StaleProductError)
from engine.mosaic_release import MosaicRelease
from engine.paths import confine, verify
from engine.publish import register_image, register_mosaic, validate_and_publish
from engine.registry import OBS_STATES, Registry
from engine.run_state import Areas, RunSummary, lease_abandoned
from engine.telescope import Telescope

log = logging.getLogger(__name__)

JD_TO_MJD = 2400000.5


class Driver:
    """One driver process over one registry."""

    def __init__(self, cfg: Config, base: Path):
        self.cfg = cfg
        self.areas = Areas.from_config(cfg, base)
        self.reg = Registry(self.areas.registry, timeout_s=cfg.driver.registry_timeout_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.tel = Telescope(cfg)
        self.inflight: dict = {}  # ObjectRef -> (obs_id or mosaic_id, step)
        self.summary = RunSummary()
        self._cap = None
        self.stopping = False
        self._last_counts = None
        self._metrics = None
        self._bytes_converted = 0
        self._verified_tables: set = set()
        self.mosaics = MosaicRelease(self.reg, cfg, self.areas)

    # --- bookkeeping ----------------------------------------------------------------------
    def recover(self):
        """After a driver crash: take back work whose driver is gone, keep verified outputs.

        A lease is abandoned when it expired, or when its owner ran on this host and that
        process no longer exists (a killed driver). Conversion restarts from the verified
        subband blocks in stage; calibration and imaging restart from the converted MS.
        """
        now = time.time()
        back = {"converting": "complete", "calibrating": "converted", "imaging": "converted"}
        for obs in self.reg.db["observations"].rows_where(
                "state IN ('converting', 'calibrating', 'imaging')"):
            if not lease_abandoned(obs, now):
                continue
            self.reg.transition("observations", obs["obs_id"], back[obs["state"]],
                                lease_owner=None,
                                error=f"driver restarted during {obs['state']}")
        # a lease left on a row at rest (e.g. 'converted', when the driver stopped between
        # recording a conversion and submitting its imaging) would block it until it expires
        for obs in self.reg.db["observations"].rows_where(
                "lease_owner IS NOT NULL AND state NOT IN "
                "('converting', 'calibrating', 'imaging')"):
            if lease_abandoned(obs, now):
                self.reg.release(obs["obs_id"], obs["lease_owner"])
        for mos in self.reg.db["mosaics"].rows_where("state = 'mosaicking'"):
            self.reg.transition("mosaics", mos["mosaic_id"], "planned",
                                error="driver restarted during mosaicking")
        self.retry_failed()
        self.republish()

    def retry_failed(self):
        """Take up failed observations again (at most ``driver.max_attempts`` runs each).

        'failed' means the input was fine and a step broke (full disk, CASA error, lost
        worker); bad input is 'quarantined' instead and never retried automatically. An
        observation whose MS still checks out resumes from it; otherwise it is converted
        again (from any subband blocks still verified in stage).
        """
        limit = self.cfg.driver.max_attempts
        for obs in self.reg.db["observations"].rows_where(
                "state = 'failed' AND coalesce(attempts, 0) < ?", [limit]):
            target = "complete"
            if obs["manifest"]:
                try:
                    self.verified_ms(obs)
                    target = "converted"
                except EngineError:
                    pass
            log.warning("retrying %s (attempt %d of %d) from %s; it failed with: %s",
                        obs["obs_id"], (obs["attempts"] or 0) + 1, limit, target, obs["error"])
            self.reg.transition("observations", obs["obs_id"], target, lease_owner=None)
        for mos in self.reg.db["mosaics"].rows_where("state = 'failed'"):
            self.reg.transition("mosaics", mos["mosaic_id"], "planned")

    def republish(self):
        """Publish products a previous run made but could not move (products not writable)."""
        for row in self.reg.db["products"].rows_where(
                "state IN ('staging', 'validated')", order_by="data_id"):
            if row["kind"] == "image":
                qa = json.loads(self.reg.get("images", row["data_id"].split(":", 1)[1])["qa"])
            else:
                qa = json.loads(self.reg.get("mosaics", row["data_id"])["manifest"])["qa"]
            self.publish(row["data_id"], qa)

    def fail(self, obs_id: str, err: str, *, bad_input: bool = False):
        """Record a failed step: 'quarantined' for bad input, else 'failed' (retried later)."""
        row = self.reg.get("observations", obs_id)
        new = "quarantined" if bad_input and "quarantined" in \
            OBS_STATES[row["state"]] else "failed"
        log.error("observation %s %s: %s", obs_id, new, err)
        try:
            self.reg.transition("observations", obs_id, new, error=err[:2000],
                                attempts=(row["attempts"] or 0) + 1, lease_owner=None)
        except IllegalTransition as exc:
            log.error("%s", exc)
        self.summary.failed[obs_id] = err

    def active(self) -> set:
        """Observations with a task in flight (mosaic tasks do not count)."""
        return {o for o, step in self.inflight.values() if step != "mosaic"}

    # --- the loop -------------------------------------------------------------------------
    def request_stop(self, signum=None, frame=None):
        """Stop taking new work; in-flight tasks finish and are recorded, then run returns."""
        log.warning("stop requested (signal %s): draining %d tasks in flight", signum,
                    len(self.inflight))
        self.stopping = True

    def metrics(self):
        """Ray metrics (Prometheus, shown by the dashboard): created once Ray is up."""
        if self._metrics is None:
            from ray.util import metrics

            self._metrics = {
                "obs": metrics.Gauge("dsa110_observations", "observations by state",
                                     tag_keys=("state",)),
                "rtf": metrics.Gauge("dsa110_real_time_factor",
                                     "wall time per imaged observation / 309 s"),
                # a gauge refreshed every loop, like the others: Ray's agent evicts a gauge
                # not refreshed within two export intervals (a few seconds), so the metrics
                # are live while a driver runs and gone about 30 s after it stops (measured)
                "bytes": metrics.Gauge("dsa110_bytes_converted",
                                       "UVH5 bytes converted to Measurement Sets"),
            }
        return self._metrics

    def progress(self, t_start: float):
        counts = self.reg.counts("observations")
        m = self.metrics()
        for state in self.reg.MACHINE_STATES:
            m["obs"].set(counts.get(state, 0), tags={"state": state})
        m["bytes"].set(self._bytes_converted)
        n = len(self.summary.imaged)
        if n:
            m["rtf"].set((time.time() - t_start) / (n * windows.CADENCE_S))
        if counts != self._last_counts:
            self._last_counts = counts
            n = len(self.summary.imaged)
            rate = n / max(time.time() - t_start, 1e-9) * 60
            log.info("observations by state %s; %d imaged (%.2f per minute), %d tasks in flight",
                     counts, n, rate, len(self.inflight))

    def run(self, *, once: bool = True, poll_s: float = 2.0, max_wall_s: float | None = None,
            handle_signals: bool = False) -> RunSummary:
        log.info("Ray resources: %s", raytasks.init(self.cfg))
        if handle_signals:
            import signal

            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGTERM, self.request_stop)
        self.recover()
        t_start = time.time()
        try:
            while True:
                if not self.stopping:
                    discover.scan(self.cfg, self.reg, self.areas.incoming)
                    self.release_waiting()
                    self.fill()
                    self.release_mosaics()
                self.progress(t_start)
                if not self.inflight:
                    if once or self.stopping or (
                            max_wall_s is not None and time.time() - t_start > max_wall_s):
                        break
                    time.sleep(poll_s)
                    continue
                done, _ = ray.wait(list(self.inflight), num_returns=1, timeout=poll_s)
                for ref in done:
                    obs_id, step = self.inflight.pop(ref)
                    self.complete(ref, obs_id, step)
        finally:
            self.summary.wall_s = time.time() - t_start
            self.summary.waiting = [r["obs_id"] for r in self.reg.db["observations"].rows_where(
                "state = 'awaiting_calibration'", order_by="start_jd")]
            self.reg.close()
        return self.summary

    def obs_cap(self) -> int:
        """Observations in flight: the configured cap, lowered to what memory allows.

        One observation in flight holds its subband tasks' buffers and one assembly block
        (``ray.task_memory_gb`` per CPU plus ``ray.assembly_memory_gb``); the cap keeps
        that within the memory Ray reports for the cluster.
        """
        if self._cap is None:
            total = ray.cluster_resources().get("memory", 0) / 1024 ** 3
            cpus = ray.cluster_resources().get("CPU", 1)
            per_obs = self.cfg.ray.task_memory_gb * cpus + self.cfg.ray.assembly_memory_gb
            fit = int(total // per_obs) if per_obs > 0 and total > 0 else 1
            self._cap = max(1, min(self.cfg.ray.max_obs_in_flight, fit))
            log.info("observations in flight: at most %d (%.1f GB memory, %.1f GB each)",
                     self._cap, total, per_obs)
        return self._cap

    def fill(self):
        """Lease observations, oldest first, while fewer than the cap are active."""
        while len(self.active()) < self.obs_cap():
            obs = (self.reg.acquire_next(self.owner, states=("converted",))
                   or self.reg.acquire_next(self.owner))
            if obs is None:
                return
            obs_id = obs["obs_id"]
            try:
                if obs["state"] == "converted":
                    self.after_conversion(obs)
                else:
                    self.summary.order.append(obs_id)
                    self.start_conversion(obs)
            except EngineError as exc:
                self.fail(obs_id, str(exc), bad_input=isinstance(exc, BAD_INPUT))
            except OSError as exc:  # stage full or not writable while preparing the store
                self.fail(obs_id, f"stage: {exc}")

    # --- steps ----------------------------------------------------------------------------
    def start_conversion(self, obs: dict):
        cfg, obs_id = self.cfg, obs["obs_id"]
        self.reg.transition("observations", obs_id, "converting", expect="complete",
                            lease_owner=self.owner)
        files = [r["path"] for r in self.reg.db["files"].rows_where(
            "obs_id = ? AND status = 'ok'", [obs_id], order_by="subband")]
        for f in files:  # never trust a stored path: it must still be there, in incoming
            confine(f, self.areas.incoming)
            if not Path(f).exists():
                raise StaleProductError(f"{f}: registered file is missing on disk")
        plan = plan_observation(obs_id, files, cfg)
        ocfg = cfg
        if cfg.calibrate.enabled:
            hit = find_transit(obs["start_jd"], obs["end_jd"], obs["dec_rad"],
                               self.tel.location, cfg)
            if hit is not None:
                cal, t_jd = hit
                log.info("%s holds the transit of %s at MJD %.5f", obs_id, cal.name,
                         t_jd - JD_TO_MJD)
                with self.reg.write():
                    self.reg.db["observations"].update(obs_id, {
                        "calibrator": cal.name, "transit_mjd": t_jd - JD_TO_MJD})
                ocfg = load(None, {**cfg.as_flat(), "convert.phasing": "single",
                                   "convert.single_ra_deg": float(np.rad2deg(cal.ra_rad)),
                                   "convert.single_dec_deg": float(np.rad2deg(cal.dec_rad))})
        store = confine(f"{obs_id}/{obs_id}.zarr", self.areas.stage)
        store.parent.mkdir(parents=True, exist_ok=True)
        todo = prepare_store(store, plan, ocfg)
        ms = confine(f"{obs_id}/{obs_id}.ms", self.areas.stage)
        ref = raytasks.submit_conversion(obs_id, plan, todo, str(store), str(ms), ocfg)
        self.inflight[ref] = (obs_id, "convert")

    def verified_ms(self, obs: dict) -> Path:
        """The observation's MS, checked against its conversion manifest before use.

        CASA writes MODEL_DATA/CORRECTED_DATA into the MS in place; once that has been
        recorded (``in_place``), the check is that the MS is still there, in stage.
        """
        m = json.loads(obs["manifest"])
        if m.get("in_place"):
            p = confine(m["ms_path"], self.areas.stage)
            if not (p / "table.dat").exists():
                raise StaleProductError(f"{p}: recorded MS is missing on disk")
            return p
        return verify(m["ms_path"], sha256=m["sha256"], size=m["size"], root=self.areas.stage)

    def mark_in_place(self, obs: dict, why: str):
        m = json.loads(obs["manifest"])
        m["in_place"] = why
        with self.reg.write():
            self.reg.db["observations"].update(obs["obs_id"], {"manifest": json.dumps(m)})

    def after_conversion(self, obs: dict):
        """Calibrate if the observation holds a transit; else image or wait for tables."""
        obs_id = obs["obs_id"]
        if self.cfg.calibrate.enabled and obs["calibrator"]:
            from engine import calibrators

            ms = self.verified_ms(obs)
            cal = calibrators.get(obs["calibrator"])
            self.mark_in_place(obs, "MODEL_DATA/CORRECTED_DATA written by CASA")
            self.reg.transition("observations", obs_id, "calibrating", expect="converted",
                                lease_owner=self.owner)
            out = confine(f"{obs_id}/caltables", self.areas.stage)
            ref = raytasks.submit_calibration(obs_id, str(ms), str(out), self.cfg, {
                "name": cal.name, "ra_rad": cal.ra_rad, "dec_rad": cal.dec_rad,
                "flux_jy": cal.flux_jy, "spectral_index": cal.spectral_index,
                "transit_jd": obs["transit_mjd"] + JD_TO_MJD})
            self.inflight[ref] = (obs_id, "calibrate")
            return
        self.route_to_imaging(obs, from_state="converted")

    def caltables_for(self, obs: dict) -> list | None:
        if not self.cfg.calibrate.enabled:
            return []
        mid = 0.5 * (obs["start_jd"] + obs["end_jd"]) - JD_TO_MJD
        sets = self.reg.valid_caltables(mid, obs["dec_rad"])
        if sets is None:
            return None if self.cfg.image.require_calibration else []
        paths = []
        for kind in ("bandpass", "gains"):
            t = sets[kind]
            # checked against its manifest once per run (waiting observations ask every
            # loop); the CASA task checks again that it exists and opens before applycal
            if (t["path"], t["sha256"]) not in self._verified_tables:
                verify(t["path"], sha256=t["sha256"], size=t["size"], root=self.areas.stage)
                self._verified_tables.add((t["path"], t["sha256"]))
            paths.append(t["path"])
        return paths

    def route_to_imaging(self, obs: dict, *, from_state: str):
        obs_id = obs["obs_id"]
        tables = self.caltables_for(obs)
        if tables is None:
            if from_state != "awaiting_calibration":
                self.reg.transition("observations", obs_id, "awaiting_calibration",
                                    expect=from_state)
                self.reg.release(obs_id, self.owner)
                log.info("%s waits for calibration valid at its observation time", obs_id)
            return
        ms = self.verified_ms(obs)
        if tables:
            self.mark_in_place(obs, "CORRECTED_DATA written by applycal")
        self.reg.transition("observations", obs_id, "imaging", expect=from_state,
                            calibration_applied=json.dumps(tables), lease_owner=self.owner)
        out_dir = confine(f"{obs_id}/image", self.areas.stage)
        ref = raytasks.submit_image(obs_id, str(ms), str(out_dir), self.cfg, tables)
        self.inflight[ref] = (obs_id, "image")

    def release_waiting(self):
        """Image waiting observations for which valid tables now exist (oldest first)."""
        for obs in self.reg.db["observations"].rows_where(
                "state = 'awaiting_calibration'", order_by="start_jd"):
            if obs["obs_id"] in self.active():
                continue
            try:
                if self.caltables_for(obs) is not None:
                    self.route_to_imaging(obs, from_state="awaiting_calibration")
            except EngineError as exc:
                self.fail(obs["obs_id"], f"image: {exc}")

    # --- mosaics ---------------------------------------------------------------------------
    def release_mosaics(self):
        """Hand each ready, verified window to a mosaic task (:mod:`engine.mosaic_release`)."""
        busy = {k for k, step in self.inflight.values() if step == "mosaic"}
        released, failed = self.mosaics.ready(busy)
        self.summary.failed.update(failed)
        for win, inputs in released:
            self.reg.transition("mosaics", win.mosaic_id, "mosaicking")
            out = confine(f"mosaics/{win.mosaic_id}", self.areas.stage)
            ref = raytasks.submit_mosaic(win.mosaic_id, inputs, str(out), self.cfg)
            self.inflight[ref] = (win.mosaic_id, "mosaic")

    def done_mosaic(self, mosaic_id: str, manifest: dict):
        data_id = register_mosaic(self.reg, manifest, self.areas.stage)
        self.reg.transition("mosaics", mosaic_id, "mosaicked", expect="mosaicking")
        for obs_id in manifest["members"]:
            if self.reg.get("observations", obs_id)["state"] == "imaged":
                self.reg.transition("observations", obs_id, "mosaicked")
        self.publish(data_id, manifest["qa"])

    def publish(self, data_id: str, qa: dict) -> bool:
        """QA, validate and move one product to products/. A product that cannot be moved
        stays in stage with the reason recorded; the next run tries again."""
        try:
            row = validate_and_publish(self.reg, self.cfg, data_id, qa,
                                       stage_root=self.areas.stage,
                                       products_root=self.areas.products)
        except EngineError as exc:
            log.error("%s", exc)
            self.summary.failed[data_id] = str(exc)
            return False
        if row["state"] != "published":
            return False
        self.summary.published.append(data_id)
        if row["kind"] == "mosaic":
            if self.reg.get("mosaics", data_id)["state"] == "mosaicked":
                self.reg.transition("mosaics", data_id, "published")
            self.summary.mosaics.append(data_id)
        else:
            self.settle_stage(data_id.split(":", 1)[1])
        return True

    def complete(self, ref, obs_id: str, step: str):
        try:
            manifest = ray.get(ref)
            getattr(self, f"done_{step}")(obs_id, manifest)
        except RegistryError:
            raise  # the registry cannot record anything: stop; the next run recovers
        except (ray.exceptions.RayError, EngineError) as exc:
            cause = getattr(exc, "cause", None) or exc
            if step == "mosaic":
                self.reg.transition("mosaics", obs_id, "failed", error=str(cause)[:2000])
                self.summary.failed[obs_id] = str(cause)
            else:
                if step == "convert":  # a worker that died mid-write leaves its temporary MS
                    tmp = confine(f"{obs_id}/{obs_id}.ms.tmp", self.areas.stage)
                    shutil.rmtree(tmp, ignore_errors=True)
                self.fail(obs_id, f"{step}: {cause}", bad_input=isinstance(cause, BAD_INPUT))

    def done_convert(self, obs_id: str, manifest: dict):
        verify(manifest["ms_path"], sha256=manifest["sha256"], size=manifest["size"],
               root=self.areas.stage)
        lean = {k: v for k, v in manifest.items() if k != "subbands"}
        lean["warnings"] = input_warnings(manifest.get("subbands", []))
        self.reg.transition("observations", obs_id, "converted", expect="converting",
                            ms_path=manifest["ms_path"], manifest=json.dumps(lean),
                            error=None)
        if lean["warnings"]:
            with self.reg.write():
                self.reg.event("observations", obs_id, "converted", "converted",
                               {"warnings": lean["warnings"]})
            for w in lean["warnings"]:
                log.warning("%s: %s", obs_id, w)
        store = Path(manifest["ms_path"]).with_suffix(".zarr")
        shutil.rmtree(store, ignore_errors=True)
        nbytes = self.reg.db.execute("SELECT sum(size) FROM files WHERE obs_id = ? AND "
                                     "status = 'ok'", [obs_id]).fetchone()[0] or 0
        self._bytes_converted += nbytes
        self.metrics()["bytes"].set(self._bytes_converted)
        self.summary.converted.append(obs_id)
        self.after_conversion(self.reg.get("observations", obs_id))

    def done_calibrate(self, obs_id: str, manifest: dict):
        for t in manifest["tables"].values():
            verify(t["path"], sha256=t["sha256"], size=t["size"], root=self.areas.stage)
        obs = self.reg.get("observations", obs_id)
        self.reg.register_caltables(manifest, obs["dec_rad"])
        self.summary.calibrated.append(obs_id)
        log.info("%s: calibration registered (%s, QA %s)", obs_id, manifest["calibrator"],
                 manifest["qa"])
        self.route_to_imaging(obs, from_state="calibrating")
        self.release_waiting()

    def done_image(self, obs_id: str, manifest: dict):
        data_id = register_image(self.reg, manifest, self.areas.stage)
        self.reg.transition("observations", obs_id, "imaged", expect="imaging",
                            image_path=manifest["files"]["image"]["path"])
        self.summary.imaged.append(obs_id)
        self.reg.release(obs_id, self.owner)
        self.publish(data_id, manifest["qa"])

    def settle_stage(self, obs_id: str):
        """After publication the MS is kept (reason recorded) or removed from stage."""
        obs = self.reg.get("observations", obs_id)
        keep = self.cfg.publish.keep_ms
        with self.reg.write():
            self.reg.event("observations", obs_id, obs["state"], obs["state"],
                           {"stage": f"MS {'kept' if keep else 'removed'} "
                                     f"(publish.keep_ms = {str(keep).lower()})"})
        if not keep and obs["ms_path"]:
            shutil.rmtree(confine(obs["ms_path"], self.areas.stage), ignore_errors=True)


def run(cfg: Config, base: Path, *, once: bool = True, poll_s: float = 2.0,
        max_wall_s: float | None = None, handle_signals: bool = False) -> RunSummary:
    """Process everything in the incoming folder (see :class:`Driver`)."""
    return Driver(cfg, base).run(once=once, poll_s=poll_s, max_wall_s=max_wall_s,
                                 handle_signals=handle_signals)
