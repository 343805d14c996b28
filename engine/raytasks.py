"""Ray set-up and the engine's remote tasks.

Two worker kinds never share a process: conversion workers (h5py, zarr, python-casacore)
and CASA workers (casatools/casatasks). Ray keeps one worker pool per runtime environment,
so each kind carries its own ``DSA110_WORKER_KIND`` variable. Tasks take paths and the
configuration and return manifests; arrays never travel between observation-level tasks.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import tempfile

import ray

from engine import faults
from engine.casaenv import casa_env_vars
from engine.config import Config, env
from engine.errors import ConfigError, TransientError
from engine.states import Step

log = logging.getLogger(__name__)


def _passed_on() -> dict:
    """Variables the driver hands to its workers (fault injection, for tests).

    Always set, even empty: workers otherwise inherit whatever the Ray node was started with.
    """
    return {faults.VAR: env(faults.VAR) or ""}


def convert_runtime_env() -> dict:
    return {"env_vars": {"DSA110_WORKER_KIND": "convert", **_passed_on()}}


def casa_runtime_env() -> dict:
    return {"env_vars": {"DSA110_WORKER_KIND": "casa", **casa_env_vars(), **_passed_on()}}


def init(cfg: Config) -> dict:
    """Connect to (or start) Ray as configured; returns the cluster resources."""
    if ray.is_initialized():
        return ray.cluster_resources()
    kwargs = {"log_to_driver": True, "configure_logging": False}
    if cfg.ray.address == "local":
        # short per-run temp dir: Ray's socket paths have a length limit, and runs must not
        # share /tmp/ray
        tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        ncpu = cfg.ray.num_cpus or os.cpu_count()
        kwargs.update(address="local", _temp_dir=tmp,
                      include_dashboard=cfg.ray.include_dashboard, num_cpus=ncpu)
        if cfg.ray.idle_workers_per_cpu > 0:
            kwargs["_system_config"] = {
                "num_workers_soft_limit": cfg.ray.idle_workers_per_cpu * ncpu}
    else:
        kwargs["address"] = cfg.ray.address
    ray.init(**kwargs)
    res = ray.cluster_resources()
    if res.get("CPU", 0) < cfg.image.threads:
        ray.shutdown()  # an image task that reserves more CPUs than exist would never start
        raise ConfigError(f"image.threads = {cfg.image.threads} but the Ray cluster has "
                          f"{res.get('CPU', 0):g} CPUs: no imaging task could be scheduled")
    return res


def obs_cap(cfg: Config) -> int:
    """Observations in flight: ``ray.max_obs_in_flight``, lowered to what memory allows.

    One observation in flight holds its subband tasks' buffers and one assembly block
    (``ray.task_memory_gb`` per CPU plus ``ray.assembly_memory_gb``); the cap keeps that
    within the memory Ray reports for the cluster. Ray must be up.
    """
    total = ray.cluster_resources().get("memory", 0) / 1024 ** 3
    cpus = ray.cluster_resources().get("CPU", 1)
    per_obs = cfg.ray.task_memory_gb * cpus + cfg.ray.assembly_memory_gb
    fit = int(total // per_obs) if per_obs > 0 and total > 0 else 1
    cap = max(1, min(cfg.ray.max_obs_in_flight, fit))
    log.info("observations in flight: at most %d (%.1f GB memory, %.1f GB each)",
             cap, total, per_obs)
    return cap


def _gb(x: float) -> int:
    return int(x * 1024 ** 3)


# I/O errors worth one more try as they are: a shared file system that hiccuped
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ESTALE,
                              errno.ETIMEDOUT, errno.EINTR, errno.ECONNRESET,
                              errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH})


def transient_io(fn):
    """Raise I/O errors that a retry may cure as :class:`TransientError` (Ray retries
    those, ``ray.retries_<step>`` times); every other error fails the task at once."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise TransientError(f"{fn.__name__}: {exc}") from exc
            raise
    return wrapper


def retries(cfg: Config, step: Step) -> int:
    """The configured retries of one kind of task (``ray.retries_<step>``)."""
    return getattr(cfg.ray, f"retries_{step}")


@transient_io
def _convert_subband(path, store, plan_json):
    from engine.convert import convert_subband

    return convert_subband(path, store, plan_json)


@transient_io
def _assemble(store, out_ms, cfg, *subband_manifests):
    from engine.convert import assemble_ms

    manifest = assemble_ms(store, out_ms, cfg)
    manifest["subbands"] = list(subband_manifests)
    return manifest


@transient_io
def _image(ms, out_dir, cfg, obs_id, caltables, extra_sources):
    from engine.image import image_observation

    return image_observation(ms, out_dir, cfg, obs_id=obs_id, caltables=caltables,
                             extra_sources=extra_sources)


@transient_io
def _calibrate(ms, out_dir, cfg, obs_id, cal):
    from engine.calibrate import solve

    return solve(ms, out_dir, cfg, obs_id=obs_id, cal=cal)


@transient_io
def _mosaic(members, out_dir, cfg, mosaic_id):
    from engine.mosaic import make_mosaic

    return make_mosaic(members, out_dir, cfg, mosaic_id=mosaic_id)


# subband conversions per observation-level task (ray.worker_max_tasks)
SUBBAND_CALLS = 16


@functools.lru_cache(maxsize=None)
def _remote(fn, max_calls: int):
    """``fn`` as a Ray task of one CPU that a worker runs at most ``max_calls`` times
    before it exits (0: no limit). Ray takes max_calls only in ``ray.remote``, not in
    ``.options``, hence one remote function per function and limit."""
    return ray.remote(num_cpus=1, retry_exceptions=[TransientError],
                      max_calls=max_calls)(fn)


def task(fn, cfg: Config, step: Step, name: str, *, kind: str, memory_gb: float,
         calls_per_task: int = 1, num_cpus: int = 1):
    """One engine task, ready for ``.remote``: ``fn`` with its dashboard name, its worker
    kind's runtime environment (``convert`` or ``casa``), its memory and CPUs, its retries
    (``ray.retries_<step>``), and how many such tasks one worker runs before it exits
    (``ray.worker_max_tasks`` x ``calls_per_task``)."""
    env = {"convert": convert_runtime_env, "casa": casa_runtime_env}[kind]()
    return _remote(fn, cfg.ray.worker_max_tasks * calls_per_task).options(
        name=name, runtime_env=env, memory=_gb(memory_gb), num_cpus=num_cpus,
        max_retries=retries(cfg, step))


def submit_mosaic(mosaic_id: str, members: list, out_dir: str, cfg: Config):
    return task(_mosaic, cfg, Step.MOSAIC, f"mosaic[{mosaic_id}]", kind="convert",
                memory_gb=cfg.ray.assembly_memory_gb).remote(members, out_dir, cfg, mosaic_id)


def submit_calibration(obs_id: str, ms: str, out_dir: str, cfg: Config, cal: dict):
    return task(_calibrate, cfg, Step.CALIBRATE, f"calibrate[{obs_id} {cal['name']}]",
                kind="casa", memory_gb=cfg.ray.assembly_memory_gb,
                ).remote(ms, out_dir, cfg, obs_id, cal)


def submit_conversion(obs_id: str, plan, todo, store: str, out_ms: str, cfg: Config):
    """Submit one task per subband still to do, then the assembly; returns its ref."""
    refs = []
    for s in plan.slots:
        if s.subband not in todo:
            continue
        refs.append(task(_convert_subband, cfg, Step.CONVERT,
                         f"convert[{obs_id} sb{s.subband:02d}]", kind="convert",
                         memory_gb=cfg.ray.task_memory_gb, calls_per_task=SUBBAND_CALLS,
                         ).remote(s.path, store, plan.to_json()))
    return task(_assemble, cfg, Step.CONVERT, f"assemble[{obs_id}]", kind="convert",
                memory_gb=cfg.ray.assembly_memory_gb).remote(store, out_ms, cfg, *refs)


def submit_image(obs_id: str, ms: str, out_dir: str, cfg: Config, caltables=(),
                 extra_sources=()):
    """extra_sources: dicts with name, ra_deg, dec_deg measured beside the catalogue."""
    return task(_image, cfg, Step.IMAGE, f"image[{obs_id}]", kind="casa",
                memory_gb=cfg.ray.assembly_memory_gb, num_cpus=cfg.image.threads,
                ).remote(ms, out_dir, cfg, obs_id, list(caltables), list(extra_sources))
