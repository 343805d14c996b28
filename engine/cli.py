"""Command line: ``dsa110-engine [--config F] [--set k=v ...] COMMAND``.

The only place that configures logging handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


AREAS = ("incoming", "stage", "products", "registry")


def _path_options(parser):
    """The same path options on every command that reads or writes the areas."""
    for area in AREAS:
        parser.add_argument(f"--{area}", help=f"overrides paths.{area}")


def _status(cfg, base: Path, as_json: bool) -> int:
    from engine.registry import Registry

    path = cfg.resolve_path("registry", base)
    if not path.exists():
        print(f"no registry at {path}")
        return 1
    reg = Registry(path)
    out = {t: reg.counts(t) for t in ("observations", "products", "mosaics")}
    out["files"] = reg.file_counts()
    out["caltables"] = reg.count("caltables")
    out["images"] = reg.count("images")
    out["flagging"] = reg.flag_summary()
    out["science"] = reg.science_summary()
    from engine.discover import unfinished

    out["unfinished"] = unfinished(reg, cfg)
    out["lag"] = reg.lag()
    from engine.mosaic_release import MosaicRelease
    from engine.run_state import Areas
    from engine.stage_budget import StageBudget
    from engine.states import ObsState

    areas = Areas.from_config(cfg, base)
    out["stage"] = StageBudget(reg, cfg, areas.stage).report(reg.oldest(ObsState.COMPLETE))
    out["last_errors"] = reg.last_errors()
    windows = MosaicRelease(reg, cfg, areas)
    windows.following = True  # as a following driver sees them: holes still settling
    out["windows"] = windows.open()
    last = reg.last_reconcile()
    out["reconcile"] = None if last is None else {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last["at"])),
        "deep": bool(last["deep"]), "files": last["files"], "problems": last["problems"],
        "found": [p["what"] + " " + p["path"] for p in json.loads(last["report"])["problems"]][:20],
        "repaired": json.loads(last["report"])["repaired"]}
    if as_json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            if k not in ("reconcile", "unfinished", "lag", "stage", "last_errors", "windows"):
                print(f"{k:13s} {v}")
        _print_operations(out)
        print(f"unfinished    {len(out['unfinished'])} observation(s)")
        for u in out["unfinished"]:
            print(f"              {u['obs_id'] or u['file']} ({u['state']}): {u['reason']}")
        r = out["reconcile"]
        print("reconcile     " + ("never run" if r is None else
                                  f"last at {r['at']} ({'deep, ' if r['deep'] else ''}"
                                  f"{r['files']} files): {r['problems']} problem(s)"))
        for line in (r or {}).get("found", []):
            print(f"              {line}")
    return 0


def _print_operations(out: dict):
    """The operator's lines of ``status``: lag, stage, last errors, open windows."""
    lag, st = out["lag"], out["stage"]
    pub = lag["publication_s"]
    print(f"lag          newest file {lag['newest_file_obs']}, newest published image "
          f"{lag['newest_published_obs']}: "
          + ("n/a" if lag["behind_s"] is None else f"{lag['behind_s']:.0f} s behind")
          + (f"; last file to publication median {pub['median']:.0f} s, "
             f"p95 {pub['p95']:.0f} s over {pub['n']}" if pub["n"] else ""))
    budget = st["budget_bytes"]
    print(f"stage        {st['used_bytes'] / 1e9:.3f} GB used"
          + (f" of {budget / 1e9:.3f} GB" if budget else " (no budget)")
          + (f"; FULL: {st['next_observation']} waits for room" if st["backpressure"] else "")
          + (f"; {st['waiting_for_calibrator']} observation(s) wait for a calibrator "
             f"({st['waiting_bytes'] / 1e9:.3f} GB, since "
             f"{st['waiting_since']}, oldest {st['oldest_waiting']})"
             if st["waiting_for_calibrator"] else ""))
    print(f"last errors  {len(out['last_errors'])} step(s)")
    for step, e in out["last_errors"].items():
        print(f"              {step}: {e['key']} at {e['at']}: {e['error']}")
    print(f"windows      {len(out['windows'])} not published")
    for w in out["windows"]:
        print(f"              {w['first']} .. {w['last']} ({w['state']})"
              + (": waits for " + ", ".join(w["waiting_for"]) if w["waiting_for"] else "")
              + (f": {w['error']}" if w.get("error") else ""))


def light_curves(reg, cfg, source: str | None = None) -> dict:
    """The ``lightcurves --json`` document: every source measured in a published image
    (or the one named), its measurements in time order, eta, V and whether it is a
    variable candidate (engine.variability with the configured thresholds)."""
    from engine.variability import light_curve_stats

    out = []
    for name, rows in sorted(reg.light_curves([source] if source else None).items()):
        st = light_curve_stats(rows, cfg)
        out.append({"name": name, "ra_deg": st["ra_deg"], "dec_deg": st["dec_deg"],
                    "n": st["n"],
                    "measurements": [{k: r[k] for k in ("obs_id", "mjd", "flux_jy", "err_jy")}
                                     for r in rows],
                    "eta": st["eta"], "v": st["v"], "variable": st["variable"]})
    return {"sources": out}


def _lightcurves(cfg, base: Path, args) -> int:
    from engine.registry import Registry

    path = cfg.resolve_path("registry", base)
    if not path.exists():
        print(f"no registry at {path}")
        return 1
    doc = light_curves(Registry(path), cfg, args.source)
    if args.source and not doc["sources"]:
        print(f"no measurements of {args.source} in a published image")
        return 1
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(f"{'source':14s} {'ra_deg':>9s} {'dec_deg':>8s} {'n':>3s} {'mean_Jy':>8s} "
          f"{'eta':>8s} {'V':>6s}  variable")
    for s in doc["sources"]:
        mean = sum(m["flux_jy"] for m in s["measurements"]) / s["n"]
        eta = "-" if s["eta"] is None else f"{s['eta']:.2f}"
        v = "-" if s["v"] is None else f"{s['v']:.3f}"
        print(f"{s['name']:14s} {s['ra_deg']:9.4f} {s['dec_deg']:8.4f} {s['n']:3d} "
              f"{mean:8.4f} {eta:>8s} {v:>6s}  {'yes' if s['variable'] else ''}")
        if args.source:
            for m in s["measurements"]:
                print(f"    {m['obs_id']}  MJD {m['mjd']:.5f}  {m['flux_jy']:.4f} +- "
                      f"{m['err_jy']:.4f} Jy")
    return 0


def _reconcile(cfg, base: Path, args) -> int:
    """Every file the registry names against the disk, and orphans (engine.reconcile)."""
    from engine import reconcile
    from engine.registry import Registry
    from engine.run_state import Areas

    areas = Areas.from_config(cfg, base)
    reg = Registry(areas.registry)
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.deep else None
    report = reconcile.check(reg, areas, deep=args.deep, progress=progress)
    if args.repair or args.delete_orphans:
        report.repaired = reconcile.repair(reg, areas, report, registered=args.repair,
                                           delete_orphans=args.delete_orphans)
    reg.record_reconcile(report.as_dict())
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        reconcile.print_report(report)
    return 1 if report.problems else 0


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
    print(f"\nproducts are in {products}: {n_img} images (FITS image, residual and primary "
          "beam, source catalogue, PNG each)")
    for m in sorted((products / "mosaics").glob("*/mosaic_*[0-9a-f].fits")):
        print(f"  mosaic: {m}")
    for m in sorted((products / "mosaics").glob("*/*.sources.fits")):
        print(f"  mosaic source catalogue: {m}")
    for m in sorted((products / "lightcurves").glob("*.png")):
        print(f"  light curve of a variable candidate: {m}")
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
    d.add_argument("--scale", choices=sorted(SCALE_CONFIGS), default="small",
                   help="without --config: the shipped configuration of this scale "
                        "(small: the demo, %(default)s)")
    r = sub.add_parser("run", help="process the incoming folder")
    r.add_argument("--address", help="Ray address (overrides ray.address)")
    _path_options(r)
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
    v.add_argument("--workers", type=int, default=0,
                   help="processes converting subbands (0: ray.num_cpus, else every CPU)")
    st = sub.add_parser("status", help="registry summary")
    st.add_argument("--json", action="store_true")
    _path_options(st)
    rc = sub.add_parser("reconcile", help="every registered file against the disk, and "
                        "files no registry row names")
    rc.add_argument("--deep", action="store_true", help="also compare sha256 (reads all)")
    rc.add_argument("--json", action="store_true")
    _path_options(rc)
    rc.add_argument("--repair", action="store_true",
                    help="products with missing or changed files are made again by the next "
                         "run (their folders moved aside, never deleted)")
    rc.add_argument("--delete-orphans", action="store_true",
                    help="delete files and folders no registry row names (asked for only)")
    lc = sub.add_parser("lightcurves", help="forced-photometry light curves, eta and V of "
                        "every reference source (docs/SCIENCE.md)")
    lc.add_argument("--source", help="one source, with its measurements")
    lc.add_argument("--json", action="store_true")
    _path_options(lc)
    _path_options(sub.add_parser("scan", help="one discovery pass"))
    args = ap.parse_args(argv)
    try:
        overrides = config_mod.parse_overrides(args.set)
        if args.cmd == "demo" and not args.config:
            args.config = str(config_mod.CONFIG_DIR / SCALE_CONFIGS[args.scale])
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
        for area in AREAS:
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
            if summary.recycle:
                return scheduler.RECYCLE_EXIT
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
            workers = args.workers or cfg.ray.num_cpus or os.cpu_count()
            print(json.dumps(convert_local([str(f) for f in files], args.out, cfg,
                                           workers=workers), indent=1))
            return 0
        if args.cmd == "status":
            return _status(cfg, base, args.json)
        if args.cmd == "reconcile":
            return _reconcile(cfg, base, args)
        if args.cmd == "lightcurves":
            return _lightcurves(cfg, base, args)
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
