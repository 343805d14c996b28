"""The 10-observation mosaic at full scale on synthetic members (issue 18).

Ten member images on the full-scale image task's grid (2048 x 2048 pixels of 3 arcsec, SIN,
centred one observation's meridian drift apart at declination 54.6 deg), each the same sky of
point sources seen through its own primary beam (Airy, 4.65 m) with beam-correlated noise,
a residual (the same noise) and a primary-beam map; restoring beams differing by up to 2 %
so the common-beam convolution works as on real members. Timed in one process:

* ``engine``: :func:`engine.mosaic.make_mosaic` as the driver's mosaic task runs it, with its
  own step timings (load, beam and grid, reprojection, write, PNG, catalogue);
* the reprojection alone, image, residual and noise sums, on the same members without the
  common-beam step, two ways: ``skycoord`` as the engine did before issue 18 (every output
  pixel through astropy ``SkyCoord``: ``pixel_to_world`` once, ``world_to_pixel`` per
  member, then the flat accumulation over the whole grid) and ``kernel`` as it does now
  (:func:`engine.mosaic._add_member`: each member's footprint only, the SIN-to-SIN mapping
  in the numba kernel); their ratio, and the largest difference between the two mosaics.

* ``before`` / ``after``: the mosaic alone (no catalogue), by the engine at
  ``BEFORE_REF`` (main before the float32 members, the batched single-precision
  common-beam FFT and the leaner Lanczos kernel) and by this one, each in its own process
  (numba compiled first on two members), alternated twice; the faster of each pair is
  reported, with their ratio and the largest difference between the two mosaics.

The mosaic's fluxes are checked against the truth (median peak ratio of sources the mosaic
sees at a primary-beam response of at least 0.5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from engine import config, skyimage
from engine.mosaic import LANCZOS, _load, make_mosaic, output_grid
from benchmarks.sourcefind import BEAM, CELL, RMS, _pb
from kernels.mosaic import accumulate

BEFORE_REF = "96e775a"  # main before the mosaic's speed-ups of 2026-12-01
# one timed mosaic in a fresh process, by whichever engine PYTHONPATH puts first
_RUNNER = """
import json, shutil, sys, time
from pathlib import Path
from engine import config
from engine.mosaic import make_mosaic
members, out = json.loads(sys.argv[1]), Path(sys.argv[2])
cfg = config.load(None, {"sources.enabled": False})
make_mosaic(members[:2], str(out / "warm"), cfg, mosaic_id="warm")  # numba compiles
shutil.rmtree(out / "warm")
t0 = time.perf_counter()
m = make_mosaic(members, str(out / "run"), cfg, mosaic_id="bench")
print(json.dumps({"s": time.perf_counter() - t0, "steps": m["qa"]["timing"],
                  "path": m["files"]["mosaic"]["path"]}))
"""
N = 2048
DEC = 54.6
RA_STEP = 309.0 / 86400 * 360  # deg of RA the meridian moves in one observation


def synthetic_members(work: Path, cfg, n_members: int, seed: int, *, n: int = N,
                      cell: float = CELL, n_sources: int = 1500):
    """``n_members`` synthetic members of ``n`` x ``n`` pixels of ``cell`` arcsec (module
    docstring) written into ``work``: (member dicts as the mosaic task takes them, the sky
    as (ra_deg, dec_deg, peak_jy))."""
    rng = np.random.default_rng(seed)
    centres = [(150.0 + (k - (n_members - 1) / 2) * RA_STEP, DEC) for k in range(n_members)]
    # one sky across the strip: sources on the mosaic's own grid
    strip_shape = (n, int(6 * n))
    strip = skyimage.sky_wcs(strip_shape, cell, 150.0, DEC)
    sky = skyimage.random_sources(rng, n_sources, strip, strip_shape, snr_min=10,
                                  snr_max=500, rms=RMS, min_sep_px=8 * BEAM[0] / cell,
                                  margin_px=4 * BEAM[0] / cell)
    members = []
    for k, (ra, dec) in enumerate(centres):
        wcs = skyimage.sky_wcs(n, cell, ra, dec)
        pb = _pb(wcs, (n, n), [(ra, dec)], cfg.array.dish_diameter_m)
        xs, ys = wcs.all_world2pix([s[0] for s in sky], [s[1] for s in sky], 0)
        inside = (xs > -50) & (xs < n + 50) & (ys > -50) & (ys < n + 50)
        ix = np.clip(np.round(xs), 0, n - 1).astype(int)
        iy = np.clip(np.round(ys), 0, n - 1).astype(int)
        apparent = [(s[0], s[1], s[2] * pb[y, x]) for s, x, y, ok in
                    zip(sky, ix, iy, inside) if ok]
        beam = (BEAM[0] * (1 + 0.002 * k), BEAM[1] * (1 + 0.001 * k), BEAM[2] + 0.5 * k)
        paths = {kind: work / f"m{k:02d}.{kind}.fits" for kind in ("image", "residual", "pb")}
        skyimage.write_image(paths["image"], wcs, n, beam, RMS, apparent,
                             np.random.default_rng(seed + k))
        skyimage.write_image(paths["residual"], wcs, n, beam, RMS, [],
                             np.random.default_rng(seed + k))
        fits.PrimaryHDU(pb, fits.getheader(paths["image"])).writeto(paths["pb"],
                                                                    overwrite=True)
        members.append({"obs_id": f"m{k:02d}", "image": str(paths["image"]),
                        "pb": str(paths["pb"]), "residual": str(paths["residual"]),
                        "rms": RMS, "thermal_jy": RMS})
    return members, sky


def _reproject(members, route: str) -> tuple[float, np.ndarray]:
    """Seconds, and the image mosaic num / den, of the reprojection alone by one route."""
    from engine.mosaic import _add_member

    loaded = [(_load(m["image"]), _load(m["pb"])[0], _load(m["residual"])[0]) for m in members]
    weight = 1.0 / RMS ** 2
    t0 = time.perf_counter()
    grid = output_grid([x[0][2] for x in loaded], [x[0][0].shape for x in loaded],
                       CELL / 3600)
    nx, ny = grid.pixel_shape
    num, den, cov, rnum, var = (np.zeros(nx * ny) for _ in range(5))
    if route == "skycoord":
        yy, xx = np.mgrid[0:ny, 0:nx]
        world = grid.pixel_to_world(xx.ravel(), yy.ravel())
        del yy, xx
        scratch = np.zeros(nx * ny), np.zeros(nx * ny)
        for (img, _, w), pb, resid in loaded:
            xin, yin = (np.asarray(a) for a in w.world_to_pixel(world))
            accumulate(num, den, cov, img, pb, weight, xin, yin, lanczos=LANCZOS)
            accumulate(rnum, *scratch, resid, pb, weight, xin, yin, lanczos=LANCZOS)
            accumulate(var, *scratch, pb, pb, (weight * RMS) ** 2, xin, yin)
    else:
        num, den, cov, rnum, var = (a.reshape(ny, nx) for a in (num, den, cov, rnum, var))
        for (img, _, w), pb, resid in loaded:
            _add_member(grid, (num, den, cov), img, pb, w, weight,
                        dict(resid=resid, rnum=rnum, var=var, vweight=(weight * RMS) ** 2))
    dt = time.perf_counter() - t0
    with np.errstate(invalid="ignore", divide="ignore"):
        return dt, np.where(den > 0, num / den, np.nan).reshape(ny, nx)


def _side_by_side(members, work: Path) -> dict:
    """The mosaic alone by the engine at BEFORE_REF and by this one (module docstring)."""
    import shutil

    from benchmarks.science import _unpack

    root = Path(__file__).resolve().parent.parent
    trees = {"before": _unpack(BEFORE_REF, work / "before_src"), "after": root}
    runs = {"before": [], "after": []}
    for rep in range(2):
        for label, tree in trees.items():
            out = work / f"{label}{rep}"
            shutil.rmtree(out, ignore_errors=True)
            env = {**os.environ, "PYTHONPATH": str(tree)}
            p = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(members), str(out)],
                               capture_output=True, text=True, env=env, cwd=tree, check=True)
            runs[label].append(json.loads(p.stdout.strip().splitlines()[-1]))
    best = {k: min(v, key=lambda r: r["s"]) for k, v in runs.items()}
    a, b = (fits.getdata(best[k]["path"]).astype(np.float64) for k in ("before", "after"))
    both = np.isfinite(a) & np.isfinite(b)
    return {"before_ref": BEFORE_REF,
            "before_s": [r["s"] for r in runs["before"]],
            "after_s": [r["s"] for r in runs["after"]],
            "before_steps_s": best["before"]["steps"], "after_steps_s": best["after"]["steps"],
            "speedup": best["before"]["s"] / best["after"]["s"],
            "before_after_max_difference_jy": float(np.abs(a[both] - b[both]).max()),
            "before_after_peak_jy": float(np.nanmax(a)),
            "before_after_same_coverage": bool((np.isfinite(a) == np.isfinite(b)).all())}


def bench_mosaic_full(cfg, work: Path) -> dict:
    """Module docstring; the scale option does not apply (the grids are the full-scale
    ones)."""
    out = work / "mosaic_full"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    members, sky = synthetic_members(out, cfg, 10, seed=18)
    inputs_s = time.perf_counter() - t0
    mcfg = config.load(None, {**cfg.as_flat(), "sources.finder": "pybdsf"})
    t0 = time.perf_counter()
    m = make_mosaic(members, str(out / "engine"), mcfg, mosaic_id="bench")
    engine_s = time.perf_counter() - t0
    mosaic = fits.getdata(m["files"]["mosaic"]["path"]).astype(np.float64)
    hdr = fits.getheader(m["files"]["mosaic"]["path"])
    from astropy.wcs import WCS

    grid = WCS(hdr)
    xs, ys = grid.all_world2pix([s[0] for s in sky], [s[1] for s in sky], 0)
    cov = fits.getdata(m["files"]["weight"]["path"])  # sum w B^2: where it is high, B is
    ratios = []
    ny, nx = mosaic.shape
    for (ra, dec, peak), x, y in zip(sky, xs, ys):
        ix, iy = int(round(x)), int(round(y))
        if 2 <= ix < nx - 2 and 2 <= iy < ny - 2 and np.isfinite(mosaic[iy, ix]) \
                and cov[iy, ix] >= 0.25 / RMS ** 2 and peak >= 30 * RMS:
            ratios.append(np.nanmax(mosaic[iy - 1:iy + 2, ix - 1:ix + 2]) / peak)
    side = _side_by_side(members, out)
    new_s, new = _reproject(members, "kernel")
    old_s, old = _reproject(members, "skycoord")
    both = np.isfinite(new) & np.isfinite(old)
    qa = m["qa"]
    return {"members": len(members), "member_shape": [N, N], "mosaic_shape": [ny, nx],
            "mosaic_pixels": nx * ny, "inputs_s": inputs_s, "engine_s": engine_s,
            "engine_steps_s": qa.get("timing"),
            "engine_without_catalogue_s": engine_s - (qa.get("timing") or {}).get(
                "catalogue_s", 0.0),
            "reproject_skycoord_s": old_s, "reproject_kernel_s": new_s,
            "reproject_speedup": old_s / new_s,
            "reproject_max_difference_jy": float(np.abs(new[both] - old[both]).max()),
            "reproject_same_coverage": bool((np.isfinite(new) == np.isfinite(old)).all()),
            "sources_checked": len(ratios),
            "peak_ratio_median": float(np.median(ratios)) if ratios else None,
            "peak_ratio_p5_p95": ([float(np.percentile(ratios, 5)),
                                   float(np.percentile(ratios, 95))] if ratios else None),
            "mosaic_rms_jy": qa.get("rms_jy"), "thermal_ratio": qa.get("thermal_ratio"),
            "catalogue_sources": (qa.get("sources") or {}).get("n"), **side}
