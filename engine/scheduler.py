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

from engine import discover, raytasks
from engine.calibrate import find_transit
from engine.caltables import CalibrationLookup
from engine.config import Config, load
from engine.constants import JD_TO_MJD
from engine.convert import input_warnings, prepare_store, subband_manifests
from engine.convert_plan import plan_observation
from engine.errors import (BAD_INPUT, EngineError, IllegalTransition, RegistryError,
                           StaleProductError)
from engine.flagging import summarise
from engine.memtrace import limit_arenas, private_bytes, rss_bytes
from engine.mosaic_release import MosaicRelease
from engine.paths import confine, verify
from engine.publish import (image_data_id, register_image, register_mosaic,
                            validate_and_publish)
from engine.recovery import retry_failed, take_back_abandoned
from engine.registry import Registry
from engine.run_progress import RunProgress
from engine.run_state import Areas, RunSummary
from engine.science import Science
from engine.stage_budget import StageBudget, sweep_subband_stores
from engine.states import OBS_MACHINE, MosaicState, ObsState, ProductState, Step
from engine.subtract import missing_catalogue_warning
from engine.telescope import Telescope

log = logging.getLogger(__name__)
# a following driver that stopped to be started again (driver.max_rss_mb): EX_TEMPFAIL,
# which systemd's Restart=on-failure restarts
RECYCLE_EXIT = 75


class Driver:
    """One driver process over one registry."""

    def __init__(self, cfg: Config, base: Path):
        self.cfg = cfg
        limit_arenas(cfg.driver.malloc_arenas)  # before Ray's and zarr's threads (memtrace)
        self.areas = Areas.from_config(cfg, base)
        self.reg = Registry(self.areas.registry, timeout_s=cfg.driver.registry_timeout_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.tel = Telescope(cfg)
        self.inflight: dict = {}  # ObjectRef -> (obs_id or mosaic_id, step)
        self.summary = RunSummary()
        self._cap = None
        self.stopping = False
        self.progress = RunProgress(self.reg, self.summary)
        self.calibration = CalibrationLookup(self.reg, cfg, self.areas.stage)
        self.mosaics = MosaicRelease(self.reg, cfg, self.areas)
        self.stage_budget = StageBudget(self.reg, cfg, self.areas.stage)
        self.science = Science(self.reg, cfg, self.areas.products)
        if (warning := missing_catalogue_warning(cfg)):
            log.warning("%s", warning)
        # what to do with each kind of task's manifest
        self.handlers = {Step.CONVERT: self.done_convert, Step.CALIBRATE: self.done_calibrate,
                         Step.IMAGE: self.done_image, Step.MOSAIC: self.done_mosaic}

    # --- bookkeeping ----------------------------------------------------------------------
    def recover(self):
        """After a driver crash: take back abandoned work (:mod:`engine.recovery`), retry
        failures, and publish what a previous run made but could not move."""
        take_back_abandoned(self.reg)
        retry_failed(self.reg, self.cfg.driver.max_attempts, self.ms_usable)
        self.republish()
        sweep_subband_stores(self.reg, self.areas.stage)

    def ms_usable(self, obs: dict) -> bool:
        try:
            self.verified_ms(obs)
            return True
        except EngineError:
            return False

    def republish(self):
        """Publish products a previous run made but could not move (products not writable)."""
        for row in self.reg.rows("products", ProductState.STAGING, ProductState.VALIDATED,
                                 order_by="data_id"):
            if row["kind"] == "image":
                qa = json.loads(self.reg.get("images", row["data_id"].split(":", 1)[1])["qa"])
            else:
                qa = json.loads(self.reg.get("mosaics", row["data_id"])["manifest"])["qa"]
            self.publish(row["data_id"], qa)

    def fail(self, obs_id: str, err: str, *, bad_input: bool = False):
        """Record a failed step: QUARANTINED for bad input, else FAILED (retried later)."""
        row = self.reg.get("observations", obs_id)
        new = ObsState.QUARANTINED if bad_input and ObsState.QUARANTINED in \
            OBS_MACHINE[row["state"]] else ObsState.FAILED
        log.error("observation %s %s: %s", obs_id, new, err)
        try:
            self.reg.transition("observations", obs_id, new, error=err[:2000],
                                attempts=(row["attempts"] or 0) + 1, lease_owner=None)
        except IllegalTransition as exc:
            log.error("%s", exc)
        self.summary.failed[obs_id] = err

    def active(self) -> set:
        """Observations with a task in flight (mosaic tasks do not count)."""
        return {o for o, step in self.inflight.values() if step != Step.MOSAIC}

    # --- the loop -------------------------------------------------------------------------
    def request_stop(self, signum=None, frame=None):
        """Stop taking new work; in-flight tasks finish and are recorded, then run returns."""
        log.warning("stop requested (signal %s): draining %d tasks in flight", signum,
                    len(self.inflight))
        self.stopping = True

    def check_memory(self):
        """A following driver over ``driver.max_rss_mb`` stops taking work and drains; the
        run returns with ``summary.recycle`` set and ``run`` exits with
        ``RECYCLE_EXIT`` for its supervisor to start a fresh one (docs/RELIABILITY.md)."""
        limit = self.cfg.driver.max_rss_mb
        # its own memory (RssAnon), not the shared object-store pages it touched
        rss = (private_bytes() or rss_bytes()) if limit > 0 else None
        if rss is not None and rss > limit * 1e6:
            self.summary.recycle = (f"driver RSS {rss / 1e6:.0f} MB (private) over "
                                    f"driver.max_rss_mb {limit:g} MB")
            log.warning("%s: taking no more work, draining %d tasks, then exiting for the "
                        "supervisor to restart the driver", self.summary.recycle,
                        len(self.inflight))
            self.stopping = True

    def run(self, *, once: bool = True, poll_s: float = 2.0, max_wall_s: float | None = None,
            handle_signals: bool = False) -> RunSummary:
        log.info("Ray resources: %s", raytasks.init(self.cfg))
        self.mosaics.following = not once
        if handle_signals:
            import signal

            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGTERM, self.request_stop)
        self.recover()
        self.stage_budget.start()
        # a run stopped between publication and these, or a product republished by recover
        self.science.scan_new_sources()
        self.science.update_variability()
        t_start = time.time()
        try:
            while True:
                if not self.stopping:
                    discover.scan(self.cfg, self.reg, self.areas.incoming)
                    if not once:  # a batch run retried at its start (recover)
                        retry_failed(self.reg, self.cfg.driver.max_attempts, self.ms_usable,
                                     failed_before=time.time() - self.cfg.driver.retry_after_s)
                    self.release_waiting()
                    if self.stage_budget.budget > 0:
                        self.stage_budget.make_room(self.reg.oldest(ObsState.COMPLETE),
                                                    self.mosaics.held_open, self.active())
                    self.fill()
                    self.release_mosaics()
                self.progress.tick(t_start, len(self.inflight))
                if not once and not self.stopping:
                    self.check_memory()
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
                    self.stage_budget.mosaics_in_flight.pop(obs_id, None)
        except BaseException:
            self.cancel_inflight()
            raise
        finally:
            self.stage_budget.stop()
            self.summary.wall_s = time.time() - t_start
            self.summary.waiting = [r["obs_id"] for r in self.reg.rows(
                "observations", ObsState.AWAITING_CALIBRATION, order_by="start_jd")]
            self.summary.unfinished = discover.unfinished(self.reg, self.cfg)
            self.reg.close()
        return self.summary

    def cancel_inflight(self):
        """A driver that stops on an error takes its tasks with it: left running (the Ray
        cluster outlives this run when it is shared), a task would race the next run's task
        for the same work folder. Their rows are taken back by the next run's recovery."""
        # what Ray raises once the cluster or the connection to it is gone (RaySystemError,
        # ConnectionError) or the driver was never connected (RuntimeError)
        gone = (ray.exceptions.RayError, ConnectionError, RuntimeError, ValueError)
        for ref, (key, step) in list(self.inflight.items()):
            try:
                ray.cancel(ref, force=True)
            except gone as exc:  # already finished, or the cluster is gone
                log.debug("cancel %s %s: %s", step, key, exc)
        try:  # cancelling is asynchronous: wait until the workers are really gone
            if self.inflight:
                ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=60)
        except gone as exc:
            log.debug("waiting for cancelled tasks: %s", exc)
        self.inflight.clear()

    def fill(self):
        """Lease observations, oldest first, while fewer than the cap are active; a new
        conversion only while the stage has room for it (``engine.stage_budget``)."""
        if self._cap is None:
            self._cap = raytasks.obs_cap(self.cfg)
        while len(self.active()) < self._cap:
            obs = self.reg.acquire_next(self.owner, states=(ObsState.CONVERTED,))
            if obs is None:
                nxt = self.reg.oldest(ObsState.COMPLETE)
                if nxt is None or not self.stage_budget.room_for(nxt, self.active()):
                    return
                obs = self.reg.acquire_next(self.owner)
            if obs is None:
                return
            obs_id = obs["obs_id"]
            try:
                if obs["state"] == ObsState.CONVERTED:
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
        self.reg.transition("observations", obs_id, ObsState.CONVERTING,
                            expect=ObsState.COMPLETE, lease_owner=self.owner)
        self.stage_budget.track(obs_id)
        files = self.reg.subband_files(obs_id)
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
                self.reg.set_transit(obs_id, cal.name, t_jd - JD_TO_MJD)
                ocfg = load(None, {**cfg.as_flat(), "convert.phasing": "single",
                                   "convert.single_ra_deg": float(np.rad2deg(cal.ra_rad)),
                                   "convert.single_dec_deg": float(np.rad2deg(cal.dec_rad))})
        store = confine(f"{obs_id}/{obs_id}.zarr", self.areas.stage)
        store.parent.mkdir(parents=True, exist_ok=True)
        todo = prepare_store(store, plan, ocfg)
        ms = confine(f"{obs_id}/{obs_id}.ms", self.areas.stage)
        ref = raytasks.submit_conversion(obs_id, plan, todo, str(store), str(ms), ocfg)
        self.inflight[ref] = (obs_id, Step.CONVERT)

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
        self.reg.set_manifest(obs["obs_id"], m)

    def after_conversion(self, obs: dict):
        """Calibrate if the observation holds a transit; else image or wait for tables."""
        obs_id = obs["obs_id"]
        if self.cfg.calibrate.enabled and obs["calibrator"]:
            from engine import calibrators

            ms = self.verified_ms(obs)
            cal = calibrators.get(obs["calibrator"])
            self.mark_in_place(obs, "MODEL_DATA/CORRECTED_DATA written by CASA")
            self.reg.transition("observations", obs_id, ObsState.CALIBRATING,
                                expect=ObsState.CONVERTED, lease_owner=self.owner)
            out = confine(f"{obs_id}/caltables", self.areas.stage)
            ref = raytasks.submit_calibration(obs_id, str(ms), str(out), self.cfg, {
                "name": cal.name, "ra_rad": cal.ra_rad, "dec_rad": cal.dec_rad,
                "flux_jy": cal.flux_jy, "spectral_index": cal.spectral_index,
                "transit_jd": obs["transit_mjd"] + JD_TO_MJD})
            self.inflight[ref] = (obs_id, Step.CALIBRATE)
            return
        self.route_to_imaging(obs, from_state=ObsState.CONVERTED)

    def route_to_imaging(self, obs: dict, *, from_state: ObsState):
        """Image with the tables valid at the observation's time, or wait for them."""
        obs_id = obs["obs_id"]
        cal = self.calibration.for_observation(obs)
        if cal.wait:
            if from_state != ObsState.AWAITING_CALIBRATION:
                self.reg.transition("observations", obs_id, ObsState.AWAITING_CALIBRATION,
                                    expect=from_state)
                self.reg.release(obs_id, self.owner)
                log.info("%s waits for calibration: %s", obs_id, cal.reason)
            return
        ms = self.verified_ms(obs)
        if cal.tables:
            self.mark_in_place(obs, "CORRECTED_DATA written by applycal")
        self.reg.transition("observations", obs_id, ObsState.IMAGING, expect=from_state,
                            calibration_applied=json.dumps(list(cal.tables)),
                            lease_owner=self.owner)
        out_dir = confine(f"{obs_id}/image", self.areas.stage)
        ref = raytasks.submit_image(obs_id, str(ms), str(out_dir), self.cfg, cal.tables,
                                    self.science.extra_sources())
        self.inflight[ref] = (obs_id, Step.IMAGE)

    def release_waiting(self):
        """Image waiting observations for which valid tables now exist (oldest first)."""
        for obs in self.reg.rows("observations", ObsState.AWAITING_CALIBRATION,
                                 order_by="start_jd"):
            if obs["obs_id"] in self.active():
                continue
            try:
                if not self.calibration.for_observation(obs).wait:
                    self.route_to_imaging(obs, from_state=ObsState.AWAITING_CALIBRATION)
            except EngineError as exc:
                self.fail(obs["obs_id"], f"image: {exc}")

    # --- mosaics ---------------------------------------------------------------------------
    def release_mosaics(self):
        """Hand each ready, verified window to a mosaic task (:mod:`engine.mosaic_release`)."""
        busy = {k for k, step in self.inflight.values() if step == Step.MOSAIC}
        released, failed = self.mosaics.ready(busy)
        self.summary.failed.update(failed)
        for win, inputs in released:
            need = 0
            if self.stage_budget.budget > 0:  # its work counts against the stage's budget
                need = self.stage_budget.mosaic_estimate(inputs)
                try:
                    room = self.stage_budget.room_for_mosaic(
                        win.mosaic_id, need, self.mosaics.held_open, self.active())
                except EngineError as exc:
                    log.error("%s", exc)
                    self.reg.fail_mosaic(win.mosaic_id, str(exc))
                    self.summary.failed[win.mosaic_id] = str(exc)
                    continue
                if not room:
                    self.mosaics.look_again()  # it stays planned; asked again next loop
                    continue
            self.reg.transition("mosaics", win.mosaic_id, MosaicState.MOSAICKING)
            out = confine(f"mosaics/{win.mosaic_id}", self.areas.stage)
            ref = raytasks.submit_mosaic(win.mosaic_id, inputs, str(out), self.cfg)
            self.inflight[ref] = (win.mosaic_id, Step.MOSAIC)
            self.stage_budget.mosaics_in_flight[win.mosaic_id] = need

    def done_mosaic(self, mosaic_id: str, manifest: dict):
        data_id = register_mosaic(self.reg, manifest, self.areas.stage)
        self.reg.transition("mosaics", mosaic_id, MosaicState.MOSAICKED,
                            expect=MosaicState.MOSAICKING)
        for obs_id in manifest["members"]:
            if self.reg.get("observations", obs_id)["state"] == ObsState.IMAGED:
                self.reg.transition("observations", obs_id, ObsState.MOSAICKED)
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
        if row["state"] != ProductState.PUBLISHED:
            return False
        self.summary.published.append(data_id)
        if row["kind"] == "mosaic":
            if self.reg.get("mosaics", data_id)["state"] == MosaicState.MOSAICKED:
                self.reg.transition("mosaics", data_id, MosaicState.PUBLISHED)
            self.summary.mosaics.append(data_id)
        else:
            self.stage_budget.settle(data_id.split(":", 1)[1])
        return True

    def complete(self, ref, obs_id: str, step: Step):
        """Record one finished task through its handler; a failed task fails its row."""
        try:
            manifest = ray.get(ref)
            self.handlers[step](obs_id, manifest)
        except RegistryError:
            raise  # the registry cannot record anything: stop; the next run recovers
        except (ray.exceptions.RayError, EngineError) as exc:
            cause = getattr(exc, "cause", None) or exc
            if step == Step.MOSAIC:
                self.reg.fail_mosaic(obs_id, str(cause))
                self.summary.failed[obs_id] = str(cause)
            else:
                if step == Step.CONVERT:  # a worker that died mid-write leaves its temporary MS
                    tmp = confine(f"{obs_id}/{obs_id}.ms.tmp", self.areas.stage)
                    shutil.rmtree(tmp, ignore_errors=True)
                self.fail(obs_id, f"{step}: {cause}", bad_input=isinstance(cause, BAD_INPUT))

    def done_convert(self, obs_id: str, manifest: dict):
        verify(manifest["ms_path"], sha256=manifest["sha256"], size=manifest["size"],
               root=self.areas.stage)
        store = Path(manifest["ms_path"]).with_suffix(".zarr")
        # every subband's manifest, also those converted by an earlier (interrupted) run
        subbands = subband_manifests(store) or manifest.get("subbands", [])
        lean = {k: v for k, v in manifest.items() if k != "subbands"}
        lean["warnings"] = input_warnings(subbands)
        # the subband blocks go before the row says CONVERTED: a driver killed in between
        # converts again (the cost of one conversion) rather than leaving them behind
        shutil.rmtree(store, ignore_errors=True)
        self.reg.transition("observations", obs_id, ObsState.CONVERTED,
                            expect=ObsState.CONVERTING, ms_path=manifest["ms_path"],
                            manifest=json.dumps(lean), error=None)
        if lean["warnings"]:
            self.reg.note("observations", obs_id, ObsState.CONVERTED,
                          {"warnings": lean["warnings"]})
            for w in lean["warnings"]:
                log.warning("%s: %s", obs_id, w)
        if self.flagged_too_much(obs_id, summarise(subbands)):
            return
        self.progress.converted(self.reg.input_bytes(obs_id))
        self.summary.converted.append(obs_id)
        self.after_conversion(self.reg.get("observations", obs_id))

    def flagged_too_much(self, obs_id: str, flags: dict) -> bool:
        """Record the observation's flag statistics; quarantine it (with the numbers in the
        reason) when more than ``flag.max_fraction`` of it is flagged."""
        if flags["fraction"] is None:
            return False
        self.reg.set_flags(obs_id, flags)
        limit = self.cfg.flag.max_fraction
        if flags["fraction"] <= limit:
            return False
        worst = sorted(flags["by_step"].items(), key=lambda kv: -kv[1])[:2]
        self.fail(obs_id, f"convert: {flags['fraction']:.1%} of the cross-correlations are "
                          f"flagged (flag.max_fraction {limit:.0%}); most by "
                          + ", ".join(f"{k} {v:.1%}" for k, v in worst)
                          + f"; dead antennas {flags['dead_antennas']}", bad_input=True)
        return True

    def done_calibrate(self, obs_id: str, manifest: dict):
        for t in manifest["tables"].values():
            verify(t["path"], sha256=t["sha256"], size=t["size"], root=self.areas.stage)
        obs = self.reg.get("observations", obs_id)
        self.reg.register_caltables(manifest, obs["dec_rad"])
        self.summary.calibrated.append(obs_id)
        log.info("%s: calibration registered (%s, QA %s)", obs_id, manifest["calibrator"],
                 manifest["qa"])
        self.route_to_imaging(obs, from_state=ObsState.CALIBRATING)
        self.release_waiting()

    def done_image(self, obs_id: str, manifest: dict):
        obs = self.reg.get("observations", obs_id)
        manifest["qa"]["flagged_fraction"] = obs["flag_fraction"]
        self.science.record_photometry(obs, image_data_id(obs_id), manifest)
        data_id = register_image(self.reg, manifest, self.areas.stage)
        self.reg.transition("observations", obs_id, ObsState.IMAGED, expect=ObsState.IMAGING,
                            image_path=manifest["files"]["image"]["path"])
        self.summary.imaged.append(obs_id)
        self.reg.release(obs_id, self.owner)
        if self.publish(data_id, manifest["qa"]):
            self.science.after_publication(manifest)


def run(cfg: Config, base: Path, *, once: bool = True, poll_s: float = 2.0,
        max_wall_s: float | None = None, handle_signals: bool = False) -> RunSummary:
    """Process everything in the incoming folder (see :class:`Driver`)."""
    return Driver(cfg, base).run(once=once, poll_s=poll_s, max_wall_s=max_wall_s,
                                 handle_signals=handle_signals)
