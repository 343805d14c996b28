"""Conversion cases: the simulated input, the engine in-process, the engine on Ray against
pyuvdata's path with the I/O floor measured in the same run."""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from engine import config


def bench_simulate(cfg, work: Path) -> dict:
    from engine import simulate

    t0 = time.perf_counter()
    paths, _, _ = simulate.simulate_run(cfg, work / "incoming")
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in paths[0])
    return {"seconds": dt, "bytes": size, "files": len(paths[0])}


def bench_convert(cfg, work: Path) -> dict:
    from engine.convert import convert_local

    files = sorted((work / "incoming").glob("*.hdf5"))[: cfg.band.nsubbands]
    t0 = time.perf_counter()
    m = convert_local([str(p) for p in files], str(work / "obs.ms"), cfg, workdir=work)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "ms_bytes": m["size"], "rows": m["rows"],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants (Ray workers too)."""

    def __init__(self, interval_s=0.05):
        import threading

        import psutil

        self._psutil = psutil
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, dt):
        me = self._psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me] + me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except self._psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(dt)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _io_floor(files, out_bytes, work: Path) -> dict:
    """Time to read the inputs and to write as many bytes as the MS, on this disk, now."""
    t0 = time.perf_counter()
    nread = 0
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                nread += len(chunk)
    t_read = time.perf_counter() - t0
    buf = np.ones(1 << 24, dtype=np.uint8)
    t0 = time.perf_counter()
    with open(work / "iofloor.bin", "wb") as fh:
        for _ in range(int(np.ceil(out_bytes / buf.size))):
            fh.write(buf)
    t_write = time.perf_counter() - t0
    (work / "iofloor.bin").unlink()
    return {"read_s": t_read, "write_s": t_write, "floor_s": t_read + t_write,
            "read_gb_s": nread / t_read / 1e9, "write_gb_s": out_bytes / t_write / 1e9}


def bench_convert_vs_pyuvdata(cfg, work: Path) -> dict:
    """Ray conversion (engine) and pyuvdata's path, side by side on the same files."""
    import subprocess
    import sys

    import ray

    from engine import raytasks
    from engine.convert import plan_observation, prepare_store
    from engine.discover import obs_id_for
    from engine.uvh5io import read_header

    files = sorted(str(p) for p in (work / "incoming").glob("*.hdf5"))[: cfg.band.nsubbands]
    out = {}
    rcfg = config.load(None, {**cfg.as_flat(), "ray.num_cpus": os.cpu_count(),
                              "convert.phasing": "single"})
    raytasks.init(rcfg)
    try:
        for rep in range(3):  # run0 starts the workers, loads numba caches, warms the page cache
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                hdrs = [read_header(f) for f in files]
                oid = obs_id_for(hdrs[0].start_jd, hdrs[0].dec_rad)
                plan = plan_observation(oid, files, rcfg, headers=hdrs)
                store = work / f"{oid}.zarr"
                todo = prepare_store(store, plan, rcfg)
                m = ray.get(raytasks.submit_conversion(oid, plan, todo, str(store),
                                                       str(work / "engine.ms"), rcfg))
                dt = time.perf_counter() - t0
                shutil.rmtree(store)
            out[f"engine_run{rep}"] = {"seconds": dt, "peak_rss_gib": mem.peak / 2 ** 30}
    finally:
        ray.shutdown()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        import casacore.tables as ct

        with ct.table(str(work / "engine.ms") + "/FIELD", ack=False) as t:
            ra, dec = t.getcol("PHASE_DIR")[0, 0]
        p = subprocess.run([sys.executable, "-m", "tests.reference.pyuvdata_convert",
                            str(work / "pyuvdata.ms"), repr(float(ra)), repr(float(dec)), *files],
                           cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                           text=True)
        dt = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    out["pyuvdata"] = {"seconds": dt, "peak_rss_gib": mem.peak / 2 ** 30}
    out["io"] = _io_floor(files, m["size"], work)
    best = min(out[f"engine_run{k}"]["seconds"] for k in (1, 2))  # warm runs
    out["speedup_vs_pyuvdata"] = out["pyuvdata"]["seconds"] / best
    out["engine_over_io_floor"] = best / out["io"]["floor_s"]
    out["ms_bytes"] = m["size"]
    return out
