"""``reconcile --deep`` against ``sha256sum`` on the same files (GB/s, side by side).

The products are those of the end-to-end case when it ran in the same ``--workdir``;
otherwise the driver makes them here: two observations at the benchmark's scale, converted
(their MSs retained, as ``publish.keep_ms`` does by default) and imaged on a small grid, so
that the bytes to hash are what a real run keeps: mostly Measurement Sets.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from engine import config


def _products(cfg, work: Path) -> Path:
    base = next((work / f"e2e_{c}cpu" for c in ("cluster", 2, 1)
                 if (work / f"e2e_{c}cpu" / "registry.sqlite").exists()), None)
    if base is not None:
        return base
    from engine import scheduler, simulate

    base = work / "reconcile_run"
    shutil.rmtree(base, ignore_errors=True)
    rcfg = config.load(None, {**cfg.as_flat(), "sim.nobs": 2, "calibrate.enabled": False,
                              "image.require_calibration": False, "image.imsize": 256,
                              "image.max_imsize": 256, "image.niter": 0,
                              "image.max_thermal_ratio": 1e9, "publish.min_dynamic_range": 0.0})
    simulate.simulate_run(rcfg, base / "incoming")
    scheduler.run(rcfg, base)
    import ray

    ray.shutdown()
    return base


def bench_reconcile(cfg, work: Path) -> dict:
    from engine import reconcile
    from engine.registry import Registry
    from engine.run_state import Areas

    base = _products(cfg, work)
    rcfg = config.load(None, cfg.as_flat())
    areas = Areas.from_config(rcfg, base)
    reg = Registry(areas.registry)
    files = []  # every regular file reconcile --deep hashes (MS folders: their files)
    for row in reg.rows("products"):
        d = Path(row["published_path"] or row["stage_path"])
        files += [d / f["name"] for f in reg.product_files(row["data_id"]) if f["sha256"]]
    for t in reg.rows("caltables"):
        files += [q for q in Path(t["path"]).rglob("*") if q.is_file()]
    for obs in reg.with_ms():
        m = reg.manifest(obs["obs_id"]) or {}
        if not m.get("in_place"):
            files += [q for q in Path(obs["ms_path"]).rglob("*")
                      if q.is_file() and q.name != "table.lock"]
    nbytes = sum(f.stat().st_size for f in files)
    out = {"files": len(files), "gb": nbytes / 1e9, "runs": []}
    for _ in range(2):  # the second pass of each is with a warm page cache, like the first's
        t0 = time.perf_counter()
        subprocess.run(["xargs", "-0", "sha256sum"], input=b"\0".join(
            str(f).encode() for f in files), check=True, stdout=subprocess.DEVNULL)
        t_sum = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = reconcile.check(reg, areas, deep=True)
        t_rec = time.perf_counter() - t0
        out["runs"].append({"sha256sum_s": t_sum, "reconcile_deep_s": t_rec,
                            "sha256sum_gb_s": nbytes / 1e9 / t_sum,
                            "reconcile_gb_s": rep.bytes / 1e9 / t_rec,
                            "reconcile_bytes": rep.bytes, "problems": len(rep.problems)})
    last = out["runs"][-1]
    out["reconcile_over_sha256sum"] = last["reconcile_gb_s"] / last["sha256sum_gb_s"]
    reg.close()
    return out
