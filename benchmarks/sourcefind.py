"""Source finding and forced photometry per full-scale image and per mosaic (issue 16).

Inputs are synthetic sky images (``engine.skyimage``: point sources through an elliptical
restoring beam on beam-correlated noise), at the engine's full-scale grids:

* ``image``: one observation, 2048 x 2048 pixels of 3 arcsec (the full-scale image task's
  grid), a 14 x 10 arcsec beam, 300 sources;
* ``mosaic``: ten such observations combined, 2048 x 12288 pixels (25 Mpixel, the size of
  the full-scale mosaic's output grid), 1500 sources.

Each has a primary-beam map (the drift-averaged Airy response of one pointing; for the
mosaic, the best of ten pointings along the strip) and a residual (the same noise without
sources). Timed, one after the other in one process: the engine's catalogue product
(``engine.image.find_catalogue``: PyBDSF, primary-beam cut, catalogue FITS, QA against the
reference catalogue) and forced photometry of the reference catalogue
(``engine.photometry.measure_image``). Completeness and flux ratio against the truth are
reported beside the times, so a faster setting that loses sources shows.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from engine import config, skyimage
from engine.calibrators import Calibrator
from engine.image import find_catalogue
from engine.photometry import measure_image
from engine.telescope import airy_beam

CELL = 3.0  # arcsec
BEAM = (14.0, 10.0, 30.0)  # arcsec, arcsec, deg
RMS = 1.0e-3  # Jy/beam
FREQ = 1.4e9


def _pb(wcs, shape, centres_deg, dish_m: float) -> np.ndarray:
    """Primary-beam response on the grid: the best of the pointings (ra, dec) in degrees."""
    ny, nx = shape
    best = np.zeros(shape, dtype=np.float32)
    for row0 in range(0, ny, 512):  # in row blocks: a 25 Mpixel grid of float64s is 200 MB
        y, x = np.mgrid[row0:min(ny, row0 + 512), 0:nx]
        ra, dec = wcs.all_pix2world(x, y, 0)
        ra, dec = np.deg2rad(ra), np.deg2rad(dec)
        for ra0, dec0 in np.deg2rad(centres_deg):
            cosd = (np.sin(dec) * np.sin(dec0)
                    + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0))
            sin_t = np.sqrt(np.clip(1 - cosd ** 2, 0, None))
            best[row0:row0 + len(y)] = np.maximum(best[row0:row0 + len(y)],
                                                  airy_beam(sin_t, FREQ, dish_m))
    return best


def _case(work: Path, name: str, shape, n_src: int, centres, cfg, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ny, nx = shape
    wcs = skyimage.sky_wcs(shape, CELL, 150.0, 54.6)
    t0 = time.perf_counter()
    srcs = skyimage.random_sources(rng, n_src, wcs, shape, snr_min=5, snr_max=500,
                                   rms=RMS, min_sep_px=8 * BEAM[0] / CELL,
                                   margin_px=4 * BEAM[0] / CELL)
    pb = _pb(wcs, shape, centres, cfg.array.dish_diameter_m)
    xs, ys = wcs.all_world2pix([s[0] for s in srcs], [s[1] for s in srcs], 0)
    pbv = pb[np.round(ys).astype(int), np.round(xs).astype(int)]
    apparent = [(ra, dec, peak * p) for (ra, dec, peak), p in zip(srcs, pbv)]
    image, resid, pbf = (work / f"{name}.{k}.fits" for k in ("image", "residual", "pb"))
    skyimage.write_image(image, wcs, shape, BEAM, RMS, apparent, np.random.default_rng(seed))
    skyimage.write_image(resid, wcs, shape, BEAM, RMS, [], np.random.default_rng(seed))
    fits.PrimaryHDU(pb, fits.getheader(image)).writeto(pbf, overwrite=True)
    # the reference catalogue: the truth, as flux densities at 1.4 GHz (flat spectra)
    ref = work / f"{name}.reference.csv"
    ref.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index\n" + "".join(
        f"s{i:05d},{ra:.8f},{dec:.8f},{peak:.6g},0\n" for i, (ra, dec, peak) in
        enumerate(srcs)))
    cfg = config.load(None, {**cfg.as_flat(), "sky.reference_catalog": str(ref)})
    make_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    cat = find_catalogue(image, pbf, work / f"{name}.sources.fits", product_id=name, cfg=cfg)
    find_s = time.perf_counter() - t0
    truth = [Calibrator(f"s{i:05d}", np.deg2rad(ra), np.deg2rad(dec), peak, 0.0)
             for i, (ra, dec, peak) in enumerate(srcs)]
    t0 = time.perf_counter()
    rows = measure_image(image, pbf, resid, truth, cfg)
    phot_s = time.perf_counter() - t0
    by_name = {s.name: s.flux_jy for s in truth}
    ratios = [r["flux_jy"] / by_name[r["name"]] for r in rows
              if by_name[r["name"]] / RMS * r["pb"] >= 10]
    qa = cat.get("qa", {})
    return {"pixels": nx * ny, "shape": [ny, nx], "sources": n_src, "inputs_s": make_s,
            "find_s": find_s, "found": cat.get("n"), "finder": cat.get("finder"),
            "catalogue_matched_fraction": qa.get("matched_fraction"),
            "catalogue_flux_ratio": qa.get("flux_ratio"),
            "catalogue_offset_beams": qa.get("offset_beams"),
            "photometry_s": phot_s, "measured": len(rows),
            "photometry_flux_ratio_median": float(np.median(ratios)) if ratios else None,
            "error": cat.get("error")}


def bench_sourcefind(cfg, work: Path) -> dict:
    """Source finding (PyBDSF, the engine's default) and forced photometry on a full-scale
    image and a full-scale mosaic (module docstring); the scale option does not apply."""
    out = work / "sourcefind"
    out.mkdir(parents=True, exist_ok=True)
    cfg = config.load(None, {**cfg.as_flat(), "sources.finder": "pybdsf"})
    ra_step = 309.0 / 86400 * 360  # RA (deg) the meridian moves in one observation
    res = {"image": _case(out, "image", (2048, 2048), 300, [(150.0, 54.6)], cfg, 1)}
    centres = [(150.0 + (k - 4.5) * ra_step, 54.6) for k in range(10)]
    res["mosaic"] = _case(out, "mosaic", (2048, 12288), 1500, centres, cfg, 2)
    for k in res:
        res[k]["seconds_per_megapixel"] = (res[k]["find_s"] + res[k]["photometry_s"]) / (
            res[k]["pixels"] / 1e6)
    return res
