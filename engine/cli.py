"""Command line: ``dsa110-engine [--config F] [--set k=v ...] COMMAND``.

The only place that configures logging handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engine import config as config_mod
from engine.errors import EngineError

log = logging.getLogger("engine")

SCALE_CONFIGS = {"tiny": "ci.toml", "small": "default.toml", "full": "dsa110.toml"}


def _setup_logging(level: str):
    logging.basicConfig(level=getattr(logging, level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _status(cfg, base: Path, as_json: bool) -> int:
    from engine.registry import Registry

    path = cfg.resolve_path("registry", base)
    if not path.exists():
        print(f"no registry at {path}")
        return 1
    reg = Registry(path)
    out = {t: reg.counts(t) for t in ("observations", "products", "mosaics")}
    out["files"] = {s: n for s, n in reg.db.execute(
        "SELECT status, count(*) FROM files GROUP BY status").fetchall()}
    out["caltables"] = reg.db["caltables"].count
    out["images"] = reg.db["images"].count
    if as_json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k:13s} {v}")
    return 0


def _reconcile(cfg, base: Path, repair: bool) -> int:
    """Compare registry and disk: missing MS/images, stale stage paths, unregistered products."""
    from engine.registry import Registry

    reg = Registry(cfg.resolve_path("registry", base))
    problems = []
    for obs in reg.db["observations"].rows_where("ms_path IS NOT NULL"):
        if not Path(obs["ms_path"]).exists() and obs["state"] in ("converted", "imaging"):
            problems.append(f"{obs['obs_id']}: MS {obs['ms_path']} missing on disk")
            if repair:
                reg.transition("observations", obs["obs_id"], "failed",
                               error="MS missing on disk (reconcile)")
    for p in reg.db["products"].rows:
        path = p["published_path"] if p["state"] == "published" else p["stage_path"]
        if path and not Path(path).exists():
            problems.append(f"{p['data_id']}: {path} missing on disk")
    for f in reg.db["files"].rows_where("status = 'ok'"):
        if not Path(f["path"]).exists():
            problems.append(f"{f['path']}: registered file missing on disk")
    known = {Path(p["published_path"]).name for p in reg.db["products"].rows
             if p["published_path"]}
    products = cfg.resolve_path("products", base)
    if products.exists():
        for d in products.iterdir():
            if d.name not in known:
                problems.append(f"{d}: on disk in products but not in the registry")
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _demo(cfg, workdir: Path) -> int:
    from engine import scheduler, simulate

    workdir.mkdir(parents=True, exist_ok=True)
    incoming = cfg.resolve_path("incoming", workdir)
    if not any(incoming.glob("*.hdf5")):
        t0 = time.time()
        paths, sky, gains = simulate.simulate_run(cfg, incoming,
                                                  truth_path=workdir / "truth.json")
        print(f"simulated {len(paths)} observations x {cfg.band.nsubbands} subbands "
              f"({cfg.sim.nants} antennas, {cfg.sim.ntimes} integrations, "
              f"{cfg.sim.nchan_per_subband} channels per subband) in {time.time() - t0:.1f} s "
              f"into {incoming}")
    catalog = workdir / simulate.REFERENCE_CATALOG
    if not cfg.sky.reference_catalog and catalog.exists():
        # the demo's reference catalogue is its simulated sky, as a survey would list it
        cfg = config_mod.load(None, {**cfg.as_flat(), "sky.reference_catalog": str(catalog)})
        print(f"reference catalogue: {catalog}")
    t0 = time.time()
    summary = scheduler.run(cfg, workdir)
    wall = time.time() - t0
    rtf = summary.real_time_factor()
    print(f"\nengine run finished in {wall:.1f} s (local Ray); real-time factor "
          + (f"{rtf:.3f}" if rtf is not None else "n/a")
          + " (wall time per observation / 309 s)")
    print(f"  taken in observation-time order: {summary.order}")
    print(f"  converted to Measurement Sets: {len(summary.converted)}")
    print(f"  calibrator transits solved:    {summary.calibrated}")
    print(f"  imaged with CASA tclean:       {len(summary.imaged)}")
    print(f"  mosaics published:             {summary.mosaics}")
    print(f"  published products:            {len(summary.published)}")
    if summary.waiting:
        print(f"  waiting for calibration valid at their observation time: {summary.waiting}")
    if summary.failed:
        print(f"  FAILED: {json.dumps(summary.failed, indent=1)}")
    products = cfg.resolve_path("products", workdir)
    n_img = len(list(products.glob("*/*.image.fits")))
    print(f"\nproducts are in {products}: {n_img} images (FITS image, FITS primary beam, "
          "PNG each)")
    for m in sorted((products / "mosaics").glob("*/*.fits")):
        print(f"  mosaic: {m}")
    for m in sorted((products / "mosaics").glob("*/*.png")):
        print(f"  mosaic quick-look: {m}")
    _status(cfg, workdir, False)
    return 1 if summary.failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="dsa110-engine", description=__doc__)
    ap.add_argument("--config", help="TOML configuration file (see configs/)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one configuration value (repeatable)")
    ap.add_argument("--workdir", default=".", help="base for relative paths in [paths]")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="configuration")
    c.add_argument("action", choices=["show"])
    d = sub.add_parser("demo", help="simulate a short run and process it")
    d.add_argument("--workdir", dest="demo_workdir", default="demo-run")
    r = sub.add_parser("run", help="process the incoming folder")
    r.add_argument("--address", help="Ray address (overrides ray.address)")
    for area in ("incoming", "stage", "products", "registry"):
        r.add_argument(f"--{area}", help=f"overrides paths.{area}")
    r.add_argument("--follow", "--watch", dest="follow", action="store_true",
                   help="keep watching for new files until SIGINT/SIGTERM, then drain and exit")
    r.add_argument("--max-wall-s", type=float, default=None)
    s = sub.add_parser("simulate", help="write simulated observations into paths.incoming")
    s.add_argument("--out", default=None)
    s.add_argument("--observations", type=int, help="number of observations (sim.nobs)")
    s.add_argument("--start", help="UTC start, ISO (sim.start)")
    s.add_argument("--dec", type=float, help="pointing declination, deg (sim.dec_deg)")
    s.add_argument("--scale", choices=sorted(SCALE_CONFIGS),
                   help="tiny (tests), small (demo) or full (the real telescope)")
    s.add_argument("--seed", type=int, help="random seed (sim.seed)")
    s.add_argument("--calibrator", help="catalog calibrator transiting in the run (sim.calibrator)")
    v = sub.add_parser("convert", help="convert one observation outside the driver")
    v.add_argument("inputs", nargs="+", help="16 subband files or one folder")
    v.add_argument("--out", required=True, help="output Measurement Set")
    st = sub.add_parser("status", help="registry summary")
    st.add_argument("--json", action="store_true")
    rc = sub.add_parser("reconcile", help="compare registry and disk")
    rc.add_argument("--repair", action="store_true")
    sub.add_parser("scan", help="one discovery pass")
    args = ap.parse_args(argv)
    try:
        overrides = config_mod.parse_overrides(args.set)
        if args.cmd == "simulate":
            if args.scale and not args.config:
                args.config = str(config_mod.CONFIG_DIR / SCALE_CONFIGS[args.scale])
            for opt, key in (("observations", "sim.nobs"), ("start", "sim.start"),
                             ("dec", "sim.dec_deg"), ("seed", "sim.seed"),
                             ("calibrator", "sim.calibrator")):
                if getattr(args, opt) is not None:
                    overrides[key] = getattr(args, opt)
        if getattr(args, "address", None):
            overrides["ray.address"] = args.address
        for area in ("incoming", "stage", "products", "registry"):
            if getattr(args, area, None):
                overrides[f"paths.{area}"] = str(Path(getattr(args, area)).resolve())
        cfg = config_mod.load(args.config, overrides)
        _setup_logging(cfg.log.level)
        log.info("configuration %s (digest %s)", args.config or "defaults", cfg.digest())
        log.debug("resolved configuration:\n%s", config_mod.describe(cfg))
        base = Path(args.workdir).resolve()
        if args.cmd == "config":
            print(config_mod.describe(cfg))
            return 0
        if args.cmd == "demo":
            return _demo(cfg, Path(args.demo_workdir).resolve())
        if args.cmd == "run":
            from engine import scheduler

            summary = scheduler.run(cfg, base, once=not args.follow,
                                    max_wall_s=args.max_wall_s, handle_signals=True)
            print(summary.report())
            return 1 if summary.failed else 0
        if args.cmd == "simulate":
            from engine import simulate

            out = Path(args.out) if args.out else cfg.resolve_path("incoming", base)
            simulate.simulate_run(cfg, out, truth_path=out / "truth.json")
            print(f"wrote {cfg.sim.nobs * cfg.band.nsubbands} files into {out}; "
                  f"truth in {out / 'truth.json'}, reference catalogue in "
                  f"{out / simulate.REFERENCE_CATALOG}")
            return 0
        if args.cmd == "convert":
            from engine.convert import convert_local

            ins = [Path(p) for p in args.inputs]
            files = sorted(ins[0].glob("*.hdf5")) if len(ins) == 1 and ins[0].is_dir() else ins
            print(json.dumps(convert_local([str(f) for f in files], args.out, cfg), indent=1))
            return 0
        if args.cmd == "status":
            return _status(cfg, base, args.json)
        if args.cmd == "reconcile":
            return _reconcile(cfg, base, args.repair)
        if args.cmd == "scan":
            from engine import discover
            from engine.registry import Registry

            reg = Registry(cfg.resolve_path("registry", base))
            rep = discover.scan(cfg, reg, cfg.resolve_path("incoming", base))
            print(json.dumps(rep.__dict__, indent=1, default=str))
            return 0
    except EngineError as exc:
        print(f"dsa110-engine: error: {exc}", file=sys.stderr)
        return 2
    return 0
