"""An embedded cluster keeps its idle workers of one kind while the other kind fills the
CPUs (``ray.idle_workers_per_cpu``): the next conversion runs in the process that ran the
last one, instead of a cold one that imports everything again."""

import contextlib
import os
import time

import pytest
import ray

from engine import config, raytasks


@ray.remote(num_cpus=1)
def _pid(busy_s: float = 0.0) -> int:
    time.sleep(busy_s)
    return os.getpid()


def _pid_of_worker() -> int:
    return os.getpid()


@contextlib.contextmanager
def _cluster(**settings):
    """A fresh embedded Ray started by the engine with these ``ray.*`` settings over
    ci.toml; yields the configuration and shuts the cluster down afterwards."""
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {f"ray.{k}": v for k, v in settings.items()})
    if ray.is_initialized():
        ray.shutdown()
    raytasks.init(cfg)
    try:
        yield cfg
    finally:
        ray.shutdown()


def _same_process_after_the_other_kind(idle_workers_per_cpu: int) -> bool:
    with _cluster(num_cpus=2, idle_workers_per_cpu=idle_workers_per_cpu):
        convert = _pid.options(runtime_env=raytasks.convert_runtime_env())
        casa = _pid.options(runtime_env=raytasks.casa_runtime_env())
        before = ray.get(convert.remote())
        # both CPUs busy with CASA-kind tasks for 3 s: Ray kills idle workers beyond its
        # limit after 1 s
        ray.get([casa.remote(3.0) for _ in range(2)])
        after = ray.get(convert.remote())
    return before == after


@pytest.mark.parametrize("n, kept", [(0, False), (2, True)])
def test_idle_workers_of_one_kind_survive_the_other(n, kept):
    """With Ray's own limit (0) the idle conversion worker is killed while the CASA-kind
    tasks run; with the engine's default (2 per CPU) the same process runs the next one."""
    assert _same_process_after_the_other_kind(n) is kept


def test_a_worker_exits_after_its_task_limit():
    """``ray.worker_max_tasks`` = 2, made a task as the engine makes its image tasks
    (raytasks.task): two such tasks run in one worker process, the third in a
    fresh one, so what a library keeps per task cannot grow without bound in a worker
    that idle_workers_per_cpu keeps alive. With 0 the same process runs all three."""
    from engine.states import Step

    pids = {}
    for limit in (2, 0):
        with _cluster(num_cpus=1, worker_max_tasks=limit) as cfg:
            t = raytasks.task(_pid_of_worker, cfg, Step.IMAGE, "image[test]", kind="casa",
                              memory_gb=0.1)
            pids[limit] = [ray.get(t.remote()) for _ in range(3)]
    a, b, c = pids[2]
    assert a == b != c, pids
    assert len(set(pids[0])) == 1, pids


def _assigned_cpus() -> float:
    return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)


def test_an_image_task_holds_the_cpus_its_imager_threads_use():
    """``image.threads`` is both WSClean's -j and the image task's Ray reservation, so a
    node never runs more imager threads than it has CPUs; a reservation larger than the
    cluster would never be scheduled, and is refused at the start with the setting named."""
    from engine.errors import ConfigError
    from engine.states import Step

    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {"ray.num_cpus": 2, "image.threads": 2})
    if ray.is_initialized():
        ray.shutdown()
    raytasks.init(cfg)
    try:
        t = raytasks.task(_assigned_cpus, cfg, Step.IMAGE, "image[test]", kind="casa",
                          memory_gb=0.1, num_cpus=cfg.image.threads)
        assert ray.get(t.remote()) == 2.0
    finally:
        ray.shutdown()
    too_many = config.load(config.CONFIG_DIR / "ci.toml", {"ray.num_cpus": 1, "image.threads": 2})
    with pytest.raises(ConfigError, match="image.threads = 2 .* 1 CPUs"):
        raytasks.init(too_many)
    assert not ray.is_initialized()
