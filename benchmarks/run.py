"""Benchmark suite: one command, a chosen scale, results under ``benchmarks/results/``.

    python -m benchmarks.run --scale small|full [--only CASE ...] [--workdir DIR]

Each run writes ``<time>_<scale>.json``, ``.md`` (a table) and ``.png`` (a plot) stamped with
the machine, the package versions and the git commit, and appends to ``history.json``.

Cases (in this order; ``mosaic`` reuses the ``e2e`` run's images, so give both):
``simulate``        one observation written in the correlator format
``kernels``         visibilities rephased per second per core: numba, numpy, pyuvdata
``convert``         engine conversion in one process, with peak memory
``convert_vs_pyuvdata``  engine on Ray vs pyuvdata's read/concat/phase/write_ms, and the
                    I/O floor measured in the same run
``uvw_references``  the engine's UVW against pyuvdata, casacore's touvw and CASA's simulator
``calibrate_image`` bandpass + gains, then tclean and WSClean on the same MS and grid, by the
                    engine before issue 13 and by this one (off-axis calibrator)
``imaging``         one observation as recorded and averaged, calibrated, then WSClean and
                    tclean at two minor-cycle depths: times, major cycles, fluxes and
                    residual over thermal (benchmarks/imaging.py)
``discovery``       a day of files (4480) scanned and leased
``registry``        a year of observations (100,000) in the registry
``e2e``             12 observations through the real driver with 1 and 2 worker CPUs
                    (with ``--address``: once, on all the cluster's CPUs)
``mosaic``          the 10-observation mosaic step on the e2e run's images
``mosaic_full``     the mosaic of 10 full-scale synthetic members, step by step, and its
                    reprojection beside the SkyCoord route it replaced (the scale option
                    does not apply)
``reconcile``       ``reconcile --deep`` against ``sha256sum`` on the same files (the e2e
                    run's products when it ran in the same --workdir)
``flagging``        conversion with flagging off and on (alternating) and with AOFlagger, on
                    one observation with every kind of interference; flags against the
                    truth and against AOFlagger's
``sourcefind``      source finding and forced photometry on a full-scale image and mosaic
                    (synthetic skies; the same grids at either scale)
``smearing``        the peak kept at the full-scale image's edge and corner after averaging
                    channels and integrations (no timing)
``worker_reuse``    six tiny observations with Ray's idle-worker limit and the engine's,
                    alternating: seconds per observation and worker processes started
``soak``            160 observations streamed into ``run --follow`` (tiny scale, every 4 s)
                    while the driver is killed and restarted (benchmarks/soak.py); only
                    with ``--only soak`` (about 40 minutes)
Timings are wall-clock seconds on this machine, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.bookkeeping import bench_discovery, bench_registry
from benchmarks.conversion import bench_convert, bench_convert_vs_pyuvdata, bench_simulate
from benchmarks.flagging import bench_flagging
from benchmarks.imaging import bench_imaging
from benchmarks.kernels import bench_kernels
from benchmarks.mosaic import bench_mosaic_full
from benchmarks.reconcile import bench_reconcile
from benchmarks.science import bench_calibrate_image
from benchmarks.smearing import bench_smearing
from benchmarks.soak import bench_soak
from benchmarks.sourcefind import bench_sourcefind
from benchmarks.throughput import bench_e2e, bench_mosaic
from benchmarks.uvw_references import bench_uvw_references
from benchmarks.worker_reuse import bench_worker_reuse
from engine import config

# noise at the telescope's level for the channel width (6.5 Jy in 244 kHz x 12.9 s): the
# engine flags interference relative to it, and a noiseless sky is all structure
SCALES = {
    "small": {"sim.nants": 20, "sim.nchan_per_subband": 8, "sim.ntimes": 6, "sim.nsources": 10,
              "sim.noise_jy": 2.65},
    "full": {"sim.nants": 96, "sim.nchan_per_subband": 48, "sim.ntimes": 24, "sim.nsources": 10,
             "sim.noise_jy": 6.5},
}
CASES = {"simulate": bench_simulate, "kernels": bench_kernels, "convert": bench_convert,
         "convert_vs_pyuvdata": bench_convert_vs_pyuvdata, "uvw_references": bench_uvw_references,
         "calibrate_image": bench_calibrate_image, "imaging": bench_imaging,
         "discovery": bench_discovery,
         "registry": bench_registry, "e2e": bench_e2e, "mosaic": bench_mosaic,
         "mosaic_full": bench_mosaic_full,
         "reconcile": bench_reconcile, "flagging": bench_flagging,
         "sourcefind": bench_sourcefind, "smearing": bench_smearing,
         "worker_reuse": bench_worker_reuse, "soak": bench_soak}
DEFAULT = [c for c in CASES if c != "soak"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--only", nargs="*", default=DEFAULT, choices=list(CASES))
    ap.add_argument("--workdir", default=None, help="keep inputs and outputs here")
    ap.add_argument("--address", default="local",
                    help="Ray cluster to run the Ray cases on (default: a local one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a configuration setting over the scale's (repeatable), e.g. "
                         "image.threads=2")
    ap.add_argument("--e2e-cpus", nargs="+", type=int, default=None,
                    help="the e2e case's local worker CPUs (default: 1 and 2 at small "
                         "scale, 2 at full scale)")
    args = ap.parse_args(argv)
    # full scale is the telescope's own configuration (configs/dsa110.toml: its imager,
    # phasing and cluster settings), at the scale's simulated sizes
    base = config.CONFIG_DIR / "dsa110.toml" if args.scale == "full" else None
    sets = dict(kv.split("=", 1) for kv in args.set)
    cfg = config.load(base, {**SCALES[args.scale], "sim.nobs": 1, "ray.address": args.address,
                             **sets})
    cases = dict(CASES)
    if args.e2e_cpus:
        cases["e2e"] = functools.partial(bench_e2e, cpus=tuple(args.e2e_cpus))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dsa110-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "scale": args.scale,
               "stamp": report.stamp(), "settings": sets, "cases": {}, "case_wall_s": {}}
    try:
        for name in args.only:
            t0 = time.perf_counter()
            results["cases"][name] = cases[name](cfg, work)
            results["case_wall_s"][name] = time.perf_counter() - t0
            print(name, json.dumps(results["cases"][name]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        if results["cases"]:
            for kind, path in report.write(results).items():
                print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
