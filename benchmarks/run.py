"""Benchmark suite: figures go to benchmarks/results.json with the machine's description.

    python -m benchmarks.run --scale small|full [--only CASE ...]

Cases: ``simulate`` (one observation written in the correlator format), ``kernels``
(visibilities rephased per second per core: numba kernel vs numpy on the same data),
``convert`` (engine conversion of one observation, in-process, with peak memory).
Timings are wall-clock seconds on this machine, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from engine import config

RESULTS = Path(__file__).resolve().parent / "results.json"
SCALES = {
    "small": {"sim.nants": 20, "sim.nchan_per_subband": 8, "sim.ntimes": 6, "sim.nsources": 10},
    "full": {"sim.nants": 96, "sim.nchan_per_subband": 48, "sim.ntimes": 24, "sim.nsources": 10},
}


def machine() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return {"cpus": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor()}


def bench_simulate(cfg, work: Path) -> dict:
    from engine import simulate

    t0 = time.perf_counter()
    paths, _, _ = simulate.simulate_run(cfg, work / "incoming")
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in paths[0])
    return {"seconds": dt, "bytes": size, "files": len(paths[0])}


def bench_kernels(cfg, work: Path) -> dict:
    from kernels.visibility import C_M_S, rephase

    rng = np.random.default_rng(0)
    nrow = 4656 * (4 if cfg.sim.ntimes < 24 else 24)
    vis = (rng.standard_normal((nrow, 48, 2)) + 1j * rng.standard_normal((nrow, 48, 2))
           ).astype(np.complex64)
    dw = rng.uniform(-2000, 2000, nrow)
    f = np.linspace(1.31e9, 1.5e9, 48)
    rephase(vis[:10].copy(), dw[:10], f)  # compile
    t0 = time.perf_counter()
    rephase(vis, dw, f)
    t_numba = time.perf_counter() - t0
    t0 = time.perf_counter()
    vis *= np.exp(-2j * np.pi * dw[:, None, None] * f[None, :, None] / C_M_S).astype(np.complex64)
    t_numpy = time.perf_counter() - t0
    n = vis.size
    return {"visibilities": n, "numba_vis_per_s": n / t_numba, "numpy_vis_per_s": n / t_numpy,
            "speedup_vs_numpy": t_numpy / t_numba}


def bench_convert(cfg, work: Path) -> dict:
    from engine.convert import convert_local

    files = sorted((work / "incoming").glob("*.hdf5"))[: cfg.band.nsubbands]
    t0 = time.perf_counter()
    m = convert_local([str(p) for p in files], str(work / "obs.ms"), cfg, workdir=work)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "ms_bytes": m["size"], "rows": m["rows"],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def bench_discovery(cfg, work: Path) -> dict:
    """A full day of observations (280 x 16 tiny files): scan + register, then leasing."""
    from engine import config as cmod
    from engine import discover, simulate
    from engine.registry import Registry
    from engine.telescope import Telescope

    day = cmod.load(None, {"sim.nants": 2, "sim.nchan_per_subband": 1, "sim.ntimes": 1,
                           "sim.nobs": 280, "sim.nsources": 1, "discover.settle_s": 0})
    tel = Telescope(day)
    inc = work / "day"
    inc.mkdir(parents=True, exist_ok=True)
    sky = simulate.make_sky(day, tel)
    t0 = time.perf_counter()
    for i, start in enumerate(simulate.obs_start_times_jd(day)):
        simulate.simulate_observation(day, tel, start, inc, sky=sky, obs_index=i)
    t_sim = time.perf_counter() - t0
    reg = Registry(work / "day.sqlite")
    t0 = time.perf_counter()
    rep = discover.scan(day, reg, inc)
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep2 = discover.scan(day, reg, inc)
    t_rescan = time.perf_counter() - t0
    lat = []
    while True:
        t0 = time.perf_counter()
        row = reg.acquire_next("bench")
        lat.append(time.perf_counter() - t0)
        if row is None:
            break
        reg.transition("observations", row["obs_id"], "converting")
    return {"files": len(rep.registered), "observations_complete": len(rep.completed),
            "simulate_s": t_sim, "scan_register_s": t_scan, "rescan_s": t_rescan,
            "rescan_new": len(rep2.registered), "acquire_next_median_ms":
            1e3 * float(np.median(lat)), "acquire_next_max_ms": 1e3 * float(np.max(lat))}


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
        for rep in range(2):  # the first run also warms numba caches and the page cache
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
    best = min(out["engine_run0"]["seconds"], out["engine_run1"]["seconds"])
    out["speedup_vs_pyuvdata"] = out["pyuvdata"]["seconds"] / best
    out["engine_over_io_floor"] = best / out["io"]["floor_s"]
    out["ms_bytes"] = m["size"]
    return out


CAL_IMAGE = r"""
import json, sys, time
from engine import config, calibrators
from engine.calibrate import solve
from engine.image import image_observation
ms, work, flat, transit_jd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
cfg = config.load(None, flat)
cal = calibrators.get("3C286")
out = {}
t0 = time.perf_counter()
m = solve(ms, work + "/cal", cfg, obs_id="bench", cal={
    "name": cal.name, "ra_rad": cal.ra_rad, "dec_rad": cal.dec_rad, "flux_jy": cal.flux_jy,
    "spectral_index": cal.spectral_index, "transit_jd": transit_jd})
out["calibrate_s"] = time.perf_counter() - t0
out["calibration_qa"] = m["qa"]
tables = [t["path"] for t in m["tables"].values()]
for backend in sys.argv[5].split(","):
    c = config.load(None, {**flat, "image.backend": backend})
    t0 = time.perf_counter()
    r = image_observation(ms, work + "/img_" + backend, c, obs_id="bench", caltables=tables)
    out[backend + "_s"] = time.perf_counter() - t0
    out[backend + "_qa"] = r["qa"]
print("RESULT" + json.dumps(out))
"""


def bench_calibrate_image(cfg, work: Path) -> dict:
    """Calibration (bandpass + gains) and imaging time per observation; tclean vs WSClean.

    One observation holding the transit of 3C286, converted with the calibrator at the
    phase centre; imaging at a fixed 2048 x 2048 (full) or 512 x 512 (small) grid with the
    same parameters for both imagers; each run applies the calibration (applycal) first
    and images CORRECTED_DATA, so both times include applycal.
    """
    import subprocess
    import sys

    from engine import simulate
    from engine.calibrators import get, next_transit_jd
    from engine.convert import convert_local
    from engine.telescope import Telescope

    full = cfg.sim.nants == 96
    flat = {**cfg.as_flat(), "sim.calibrator": "3C286", "sim.transit_obs": 0,
            "sim.gain_amp_rms": 0.1, "sim.gain_phase_rms_deg": 30.0, "sim.noise_jy": 0.05,
            "convert.phasing": "single", "image.imsize": 2048 if full else 512,
            "image.cell_arcsec": 3.0 if full else 8.0, "image.niter": 1000,
            "image.nterms": 1, "image.gridder": "wproject", "image.threshold_sigma": 5.0}
    ccfg = config.load(None, flat)
    cal_dir = work / "cal_in"
    paths, _, _ = simulate.simulate_run(ccfg, cal_dir)
    tel = Telescope(ccfg)
    t_in = simulate.Time(simulate.calibrator_run(ccfg, tel)[0].sim.start, format="isot").jd
    transit = next_transit_jd(get("3C286"), t_in, tel.location)
    c286 = get("3C286")
    sc = config.load(None, {**flat, "convert.single_ra_deg": float(np.rad2deg(c286.ra_rad)),
                            "convert.single_dec_deg": float(np.rad2deg(c286.dec_rad))})
    ms = str(work / "cal.ms")
    t0 = time.perf_counter()
    convert_local([str(p) for p in paths[0]], ms, sc, workdir=work)
    out = {"convert_s": time.perf_counter() - t0}
    backends = "tclean,wsclean" if shutil.which("wsclean") else "tclean"
    p = subprocess.run([sys.executable, "-c", CAL_IMAGE, ms, str(work),
                        json.dumps(sc.as_flat()), repr(float(transit)), backends],
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    res = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1]
    out.update(json.loads(res[len("RESULT"):]))
    out["imsize"] = flat["image.imsize"]
    return out


CASES = {"simulate": bench_simulate, "calibrate_image": bench_calibrate_image,
         "kernels": bench_kernels, "convert": bench_convert,
         "convert_vs_pyuvdata": bench_convert_vs_pyuvdata, "discovery": bench_discovery}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--only", nargs="*", default=list(CASES))
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    cfg = config.load(None, {**SCALES[args.scale], "sim.nobs": 1})
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dsa110-bench-"))
    results = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "scale": args.scale,
               "machine": machine(), "cases": {}}
    try:
        for name in args.only:
            results["cases"][name] = CASES[name](cfg, work)
            print(name, json.dumps(results["cases"][name]))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    history.append(results)
    RESULTS.write_text(json.dumps(history, indent=1) + "\n")
    print(f"results appended to {RESULTS}")


if __name__ == "__main__":
    main()
