"""Flagging case: what flagging adds to the engine's conversion, AOFlagger beside it.

One observation at this scale with noise at the telescope's level for its channel width and
every kind of interference at 5 x that noise (placed at random, truth written beside it) is
converted by the engine's Ray tasks with flagging off and on, alternating, then with
AOFlagger as the interference search (flag.backend = aoflagger). Flags are read back from
the Measurement Sets with python-casacore and compared with the truth and with each other.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from benchmarks.conversion import ray_convert
from engine import config

ROUNDS = 2  # off/on pairs, after one warm-up conversion that is not counted


def _flag_seconds(manifest: dict) -> float:
    """CPU seconds spent flagging, summed over the subband tasks."""
    return sum(m.get("flag_s", 0.0) for m in manifest["subbands"])


def bench_flagging(cfg, work: Path) -> dict:
    import numpy as np
    import ray

    from engine import raytasks, simulate
    from engine.flagging_aoflagger import available
    from engine.interference import KINDS
    from tests.integration.test_flagging import _read, _truth_masks

    noise = 6.5 * math.sqrt(cfg.sim.nchan_per_subband / 48)  # 6.5 Jy in 244 kHz x 12.9 s
    base = {**cfg.as_flat(), "sim.noise_jy": noise, "sim.rfi": ",".join(KINDS),
            "sim.rfi_sigma": 5.0, "sim.seed": 31, "sim.nobs": 1,
            "ray.num_cpus": os.cpu_count(), "convert.phasing": "single"}
    scfg = config.load(None, base)
    inc = work / "flag_incoming"
    shutil.rmtree(inc, ignore_errors=True)
    simulate.simulate_run(scfg, inc, truth_path=work / "flag_truth.json")
    truth = json.loads((work / "flag_truth.json").read_text())
    files = sorted(str(p) for p in inc.glob("*.hdf5"))
    cfgs = {"off": config.load(None, {**base, "flag.enabled": False}),
            "on": scfg,
            "aoflagger": config.load(None, {**base, "flag.backend": "aoflagger"})}
    out = {"noise_jy": noise, "rounds": ROUNDS, "runs": {}}
    order = ["on"] + ["off", "on"] * ROUNDS  # the first one warms workers and caches
    if available():
        order.append("aoflagger")
    raytasks.init(scfg)
    try:
        for i, name in enumerate(order):
            ms = work / f"flag_{name}.ms"
            shutil.rmtree(ms, ignore_errors=True)
            os.sync()
            dt, m = ray_convert(files, cfgs[name], work, ms)
            if i == 0:
                continue
            out["runs"].setdefault(name, []).append(
                {"seconds": dt, "flag_cpu_s": _flag_seconds(m),
                 "subband_task_cpu_s": sum(x["total_s"] for x in m["subbands"])})
    finally:
        ray.shutdown()
    best = {k: min(r["seconds"] for r in v) for k, v in out["runs"].items()}
    out["convert_off_s"] = best["off"]
    out["convert_on_s"] = best["on"]
    out["flagging_adds"] = best["on"] / best["off"] - 1  # the issue's goal: <= 0.25
    out["flag_cpu_s_engine"] = min(r["flag_cpu_s"] for r in out["runs"]["on"])
    flag, s1, s2, tindex, freqs = _read(work / "flag_on.ms")
    cross = s1 != s2
    masks = _truth_masks(scfg, truth, s1, s2, tindex, freqs, flag.shape)
    outside = cross[:, None, None] & ~np.logical_or.reduce(list(masks.values()))
    out["engine_found"] = {k: float(flag[m].mean()) for k, m in masks.items()}
    out["engine_flagged_outside"] = float(flag[outside].mean())
    out["engine_flagged"] = float(flag[cross].mean())
    if "aoflagger" in best:
        out["convert_aoflagger_s"] = best["aoflagger"]
        out["flag_cpu_s_aoflagger"] = out["runs"]["aoflagger"][0]["flag_cpu_s"]
        ao = _read(work / "flag_aoflagger.ms")[0]
        out["aoflagger_found"] = {k: float(ao[m].mean()) for k, m in masks.items()}
        out["aoflagger_flagged_outside"] = float(ao[outside].mean())
        out["agreement_all_cells"] = float((flag[cross] == ao[cross]).mean())
        either = outside & (flag | ao)
        out["agreement_outside_where_either_flagged"] = (
            float((flag[either] == ao[either]).mean()) if either.any() else 1.0)
    for name in ("off", "on", "aoflagger"):
        shutil.rmtree(work / f"flag_{name}.ms", ignore_errors=True)
    return out
