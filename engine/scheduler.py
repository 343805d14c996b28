"""The driver: discovery, oldest-first leasing, Ray conversion and imaging, publishing.

Only this process writes the registry. Tasks return manifests; a step is recorded as done
only after its manifest has been checked against the disk. Observations are taken in
OBSERVATION-time order (:meth:`Registry.acquire_next`), never in scan or arrival order.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray

from engine import discover, raytasks
from engine.config import Config
from engine.convert import plan_observation, prepare_store
from engine.errors import EngineError, IllegalTransition
from engine.paths import confine, verify
from engine.publish import register_image, validate_and_publish
from engine.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Areas:
    incoming: Path
    stage: Path
    products: Path
    registry: Path

    @classmethod
    def from_config(cls, cfg: Config, base: Path) -> "Areas":
        keys = ("incoming", "stage", "products", "registry")
        a = cls(*(cfg.resolve_path(k, base) for k in keys))
        for p in (a.incoming, a.stage, a.products):
            p.mkdir(parents=True, exist_ok=True)
        return a


@dataclass
class RunSummary:
    converted: list = field(default_factory=list)
    imaged: list = field(default_factory=list)
    published: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    order: list = field(default_factory=list)  # obs_ids in the order they were taken


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def recover(reg: Registry, areas: Areas):
    """After a driver crash: hand back work whose lease expired, keep verified outputs."""
    now = time.time()
    for obs in reg.db["observations"].rows_where(
            "state IN ('converting', 'imaging') AND (lease_expires_at IS NULL OR "
            "lease_expires_at < ?)", [now]):
        if obs["state"] == "converting":
            reg.transition("observations", obs["obs_id"], "complete", lease_owner=None,
                           error="driver restarted during conversion")
        else:
            reg.transition("observations", obs["obs_id"], "converted", lease_owner=None)


def _fail(reg: Registry, obs_id: str, err: str, summary: RunSummary):
    log.error("observation %s failed: %s", obs_id, err)
    try:
        row = reg.get("observations", obs_id)
        reg.transition("observations", obs_id, "failed", error=err[:2000],
                       attempts=(row["attempts"] or 0) + 1, lease_owner=None)
    except IllegalTransition as exc:
        log.error("%s", exc)
    summary.failed[obs_id] = err


def run(cfg: Config, base: Path, *, once: bool = True, poll_s: float = 2.0,
        max_wall_s: float | None = None) -> RunSummary:
    """Process everything in the incoming folder.

    With ``once`` the driver returns when no work is left; otherwise it keeps polling
    (``poll_s``) for new files until ``max_wall_s``.
    """
    areas = Areas.from_config(cfg, base)
    reg = Registry(areas.registry)
    owner = _owner()
    resources = raytasks.init(cfg)
    log.info("Ray resources: %s", resources)
    recover(reg, areas)
    summary = RunSummary()
    inflight: dict = {}  # ref -> (obs_id, step)
    t_start = time.time()
    try:
        while True:
            discover.scan(cfg, reg, areas.incoming)
            _fill_pipeline(cfg, reg, areas, owner, inflight, summary)
            if not inflight:
                if once:
                    break
                if max_wall_s is not None and time.time() - t_start > max_wall_s:
                    break
                time.sleep(poll_s)
                continue
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=poll_s)
            for ref in done:
                obs_id, step = inflight.pop(ref)
                _complete(cfg, reg, areas, owner, ref, obs_id, step, inflight, summary)
    finally:
        reg.close()
    return summary


def _fill_pipeline(cfg, reg, areas, owner, inflight, summary):
    """Lease observations, oldest first, while fewer than max_obs_in_flight are active."""
    while len({o for o, _ in inflight.values()}) < cfg.ray.max_obs_in_flight:
        # observations whose MS exists wait for imaging first (finish before starting new)
        obs = reg.acquire_next(owner, states=("converted",)) or reg.acquire_next(owner)
        if obs is None:
            return
        obs_id = obs["obs_id"]
        if obs["state"] == "converted":
            try:
                _submit_image(cfg, reg, areas, obs, inflight)
            except EngineError as exc:  # e.g. the MS vanished: recorded, the run goes on
                _fail(reg, obs_id, f"image: {exc}", summary)
            continue
        summary.order.append(obs_id)
        try:
            reg.transition("observations", obs_id, "converting", expect="complete",
                           lease_owner=owner)
            files = [r["path"] for r in reg.db["files"].rows_where(
                "obs_id = ? AND status = 'ok'", [obs_id], order_by="subband")]
            for f in files:
                confine(f, areas.incoming)
                if not Path(f).exists():
                    raise EngineError(f"{f}: registered file is missing on disk")
            plan = plan_observation(obs_id, files, cfg)
            store = confine(f"{obs_id}/{obs_id}.zarr", areas.stage)
            store.parent.mkdir(parents=True, exist_ok=True)
            todo = prepare_store(store, plan, cfg)
            ms = confine(f"{obs_id}/{obs_id}.ms", areas.stage)
            ref = raytasks.submit_conversion(obs_id, plan, todo, str(store), str(ms), cfg)
            inflight[ref] = (obs_id, "convert")
        except EngineError as exc:
            _fail(reg, obs_id, str(exc), summary)


def _submit_image(cfg, reg, areas, obs, inflight):
    obs_id = obs["obs_id"]
    manifest = json.loads(obs["manifest"])
    # never trust a stored path: check it against the disk before use
    ms = verify(manifest["ms_path"], sha256=manifest["sha256"], size=manifest["size"],
                root=areas.stage)
    reg.transition("observations", obs_id, "imaging", expect="converted")
    out_dir = confine(f"{obs_id}/image", areas.stage)
    ref = raytasks.submit_image(obs_id, str(ms), str(out_dir), cfg)
    inflight[ref] = (obs_id, "image")


def _complete(cfg, reg, areas, owner, ref, obs_id, step, inflight, summary):
    try:
        manifest = ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as exc:
        cause = getattr(exc, "cause", None) or exc
        _fail(reg, obs_id, f"{step}: {cause}", summary)
        return
    try:
        if step == "convert":
            verify(manifest["ms_path"], sha256=manifest["sha256"], size=manifest["size"],
                   root=areas.stage)
            lean = {k: v for k, v in manifest.items() if k != "subbands"}
            reg.transition("observations", obs_id, "converted", expect="converting",
                           ms_path=manifest["ms_path"], manifest=json.dumps(lean))
            store = Path(manifest["ms_path"]).with_suffix(".zarr")
            if store.exists():
                import shutil

                shutil.rmtree(store)
            summary.converted.append(obs_id)
            if cfg.image.require_calibration:
                reg.transition("observations", obs_id, "awaiting_calibration")
                reg.release(obs_id, owner)
                return
            _submit_image(cfg, reg, areas, reg.get("observations", obs_id), inflight)
        elif step == "image":
            data_id = register_image(reg, manifest, areas.stage)
            reg.transition("observations", obs_id, "imaged", expect="imaging",
                           image_path=manifest["files"]["image"]["path"])
            summary.imaged.append(obs_id)
            reg.release(obs_id, owner)
            try:
                row = validate_and_publish(reg, cfg, data_id, manifest["qa"],
                                           stage_root=areas.stage, products_root=areas.products)
            except EngineError as exc:  # the image is safe in stage; the reason is recorded
                log.error("%s", exc)
                summary.failed[data_id] = str(exc)
                return
            if row["state"] == "published":
                summary.published.append(data_id)
    except EngineError as exc:
        _fail(reg, obs_id, f"{step}: {exc}", summary)
