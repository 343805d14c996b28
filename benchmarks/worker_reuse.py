"""Ray's idle worker processes kept or killed: the same small run with
``ray.idle_workers_per_cpu`` at 0 (Ray's own soft limit: one idle worker per free CPU) and
at the engine's default, alternating, on the same files.

Conversion and CASA tasks run in different worker pools (their runtime environments
differ). With Ray's limit, while one kind fills the CPUs the idle workers of the other are
killed after a second, and the next task of that kind starts a cold process that imports
casatools, PyBDSF and numba's cached kernels again. The case counts the worker processes
each run started (one log file per process in Ray's session folder) beside the wall time
per observation. The run is tiny on purpose: its cost is the fixed cost per observation.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine import config

NOBS = 6
SETTINGS = {"sim.nobs": NOBS, "sim.nants": 8, "image.max_imsize": 128, "image.niter": 20,
            "image.gridder": "standard", "ray.max_obs_in_flight": 1,
            "image.require_calibration": False, "image.max_thermal_ratio": 1e9,
            "publish.min_dynamic_range": 0.0, "mosaic.size": 3, "mosaic.overlap": 1}


def _one(cfg, inputs: Path, base: Path) -> dict:
    import ray

    from engine import scheduler

    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(inputs, base / "incoming")
    if ray.is_initialized():
        ray.shutdown()
    t0 = time.perf_counter()
    summary = scheduler.run(cfg, base)
    wall = time.perf_counter() - t0
    from ray._private import worker as ray_worker  # where this run's session logs are

    logs = Path(ray_worker._global_node.get_session_dir_path()) / "logs"
    workers = len(list(logs.glob("python-core-worker-*.log")))
    ray.shutdown()
    return {"wall_s": wall, "s_per_obs": wall / NOBS, "imaged": len(summary.imaged),
            "worker_processes": workers}


def bench_worker_reuse(cfg, work: Path, repeats: int = 2) -> dict:
    from engine import simulate

    base_cfg = config.load(config.CONFIG_DIR / "ci.toml", SETTINGS)
    inputs = work / "worker_reuse_incoming"
    if not inputs.exists():
        simulate.simulate_run(base_cfg, inputs)
    out: dict = {"observations": NOBS, "runs": []}
    for _ in range(repeats):  # alternating, so the machine's drift hits both alike
        for n in (0, base_cfg.ray.idle_workers_per_cpu):
            c = config.load(None, {**base_cfg.as_flat(), "ray.idle_workers_per_cpu": n})
            r = _one(c, inputs, work / f"worker_reuse_{n}")
            out["runs"].append({"idle_workers_per_cpu": n, **r})
    for n in sorted({r["idle_workers_per_cpu"] for r in out["runs"]}):
        runs = [r for r in out["runs"] if r["idle_workers_per_cpu"] == n]
        out[f"s_per_obs_{n}"] = min(r["s_per_obs"] for r in runs)
        out[f"worker_processes_{n}"] = max(r["worker_processes"] for r in runs)
    return out
