"""Primary-beam-weighted mosaics of consecutive observations (no CASA; astropy + numba).

The output grid is a SIN projection centred on the members' mean position (right
ascension averaged as a unit vector, so a window through 0 h is handled), with the
smallest member cell and an extent covering every member image. Each image and its
primary beam are resampled bilinearly and combined as
``sum(w_i B_i I_i) / sum(w_i B_i^2)`` with ``w_i = 1 / sigma_i^2`` (sigma_i the image rms);
pixels that no member sees with a primary-beam response of at least ``mosaic.min_pb`` are
blanked (NaN). The weight map written beside the mosaic is ``sum(w_i B_i^2)``.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from engine import __version__
from engine.config import Config
from engine.errors import StaleProductError
from engine.image import _mad_rms, quicklook
from engine.paths import commit_dir
from kernels.mosaic import accumulate


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            with fits.open(path) as h:
                data = np.squeeze(h[0].data).astype(np.float64)
                hdr = h[0].header.copy()
        except (OSError, ValueError) as exc:
            raise StaleProductError(f"{path}: FITS does not open ({exc})") from None
        return data, hdr, WCS(hdr).celestial


def output_grid(wcss, shapes, cell_deg: float, pad: int = 4) -> WCS:
    """A SIN grid centred on the members (unit-vector mean, so RA wraps through 0 h)."""
    corners = []
    for w, (ny, nx) in zip(wcss, shapes):
        xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2])
        ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
        corners.append(w.pixel_to_world(xs, ys))
    allc = SkyCoord(np.concatenate([c.ra.deg for c in corners]) * u.deg,
                    np.concatenate([c.dec.deg for c in corners]) * u.deg)
    vec = allc.cartesian.xyz.value.mean(axis=1)
    centre = SkyCoord(x=vec[0], y=vec[1], z=vec[2], representation_type="cartesian")
    centre = SkyCoord(centre.spherical.lon, centre.spherical.lat)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [centre.ra.deg, centre.dec.deg]
    w.wcs.cdelt = [-cell_deg, cell_deg]
    w.wcs.crpix = [1.0, 1.0]
    x, y = w.world_to_pixel(allc)
    nx = int(np.ceil(x.max() - x.min())) + 2 * pad
    ny = int(np.ceil(y.max() - y.min())) + 2 * pad
    w.wcs.crpix = [1.0 - x.min() + pad, 1.0 - y.min() + pad]
    w.pixel_shape = (nx, ny)
    return w


def make_mosaic(members: list[dict], out_dir: str, cfg: Config, *, mosaic_id: str) -> dict:
    """Combine member images into one mosaic; write FITS, weight map and PNG.

    ``members``: dicts with obs_id, image path, pb path and rms (Jy/beam), in time order.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    loaded = []
    for m in members:
        img, hdr, w = _load(m["image"])
        pb, _, _ = _load(m["pb"])
        if pb.shape != img.shape:
            raise StaleProductError(f"{m['pb']}: beam shape {pb.shape} != image {img.shape}")
        sigma = m.get("rms") or _mad_rms(img)
        loaded.append((img, pb, w, hdr, 1.0 / sigma ** 2))
    cell = min(abs(h["CDELT2"]) for _, _, _, h, _ in loaded)
    grid = output_grid([w for _, _, w, _, _ in loaded], [i.shape for i, *_ in loaded], cell)
    nx, ny = grid.pixel_shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    world = grid.pixel_to_world(xx.ravel(), yy.ravel())
    num, den, cov = np.zeros(nx * ny), np.zeros(nx * ny), np.zeros(nx * ny)
    for img, pb, w, _, weight in loaded:
        xin, yin = w.world_to_pixel(world)
        accumulate(num, den, cov, img, pb, weight, np.asarray(xin), np.asarray(yin))
    keep = (cov >= cfg.mosaic.min_pb) & (den > 0)
    mosaic = np.full(nx * ny, np.nan)
    mosaic[keep] = num[keep] / den[keep]
    mosaic = mosaic.reshape(ny, nx).astype(np.float32)
    weight_map = den.reshape(ny, nx).astype(np.float32)
    hdr = grid.to_header()
    ref = loaded[0][3]
    for k in ("BMAJ", "BMIN", "BPA"):
        if k in ref:
            hdr[k] = max(h[k] for *_, h, _ in loaded) if k != "BPA" else ref[k]
    hdr["BUNIT"] = "Jy/beam"
    hdr["MOSAICID"] = mosaic_id
    hdr["NMEMBER"] = len(members)
    for i, m in enumerate(members, 1):
        hdr[f"MEMBER{i:02d}"] = m["obs_id"]
    hdr["ENGVER"] = __version__
    hdr["CFGHASH"] = cfg.digest()
    hdr["COMMENT"] = "sum(w B I) / sum(w B^2), w = 1/rms^2; blank where weight is low"
    mpath = work / f"{mosaic_id}.fits"
    wpath = work / f"{mosaic_id}.weight.fits"
    fits.PrimaryHDU(mosaic, hdr).writeto(mpath)
    whdr = hdr.copy()
    whdr["BUNIT"] = "1/(Jy/beam)^2"
    fits.PrimaryHDU(weight_map, whdr).writeto(wpath)
    ppath = work / f"{mosaic_id}.png"
    beam = (hdr.get("BMAJ", np.nan) * 3600, hdr.get("BMIN", np.nan) * 3600, hdr.get("BPA", 0))
    quicklook(np.nan_to_num(mosaic), ppath, title=mosaic_id, beam_arcsec=beam,
              cell_arcsec=cell * 3600)
    files = commit_dir(work, out_dir, {"mosaic": mpath.name, "weight": wpath.name,
                                       "png": ppath.name})
    rms = _mad_rms(mosaic[np.isfinite(mosaic)])
    peak = float(np.nanmax(mosaic))
    qa = {"rms_jy": rms, "peak_jy": peak, "dynamic_range": peak / rms if rms > 0 else None,
          "shape": [ny, nx], "cell_arcsec": cell * 3600, "mosaic_s": time.perf_counter() - t0}
    return {"mosaic_id": mosaic_id, "dir": str(out_dir), "files": files, "qa": qa,
            "members": [m["obs_id"] for m in members]}
