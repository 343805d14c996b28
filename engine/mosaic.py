"""Primary-beam-weighted mosaics of consecutive observations (no CASA; astropy + numba).

The output grid is a SIN projection centred on the members' mean position (right
ascension averaged as a unit vector, so a window through 0 h is handled), with the
smallest member cell and an extent covering every member image. Each image and its
primary beam are resampled bilinearly and combined as
``sum(w_i B_i I_i) / sum(w_i B_i^2)`` with ``w_i = 1 / sigma_i^2`` (sigma_i the image rms);
pixels that no member sees with a primary-beam response of at least ``mosaic.min_pb`` are
blanked (NaN). The weight map written beside the mosaic is ``sum(w_i B_i^2)``. Before
combination every member is convolved to one common restoring beam (:mod:`engine.beams`).
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from engine import __version__, faults
from engine.config import Config
from engine.errors import StaleProductError
from engine.fits_headers import mosaic_cards, stamp
from engine.beams import common_beam, convolve_all
from engine.image import INNER_PB, _mad_rms, find_catalogue
from engine.quicklook import catalogue_marks, render
from engine.paths import commit_dir, work_folder
from engine.sinproject import footprint, frames
from kernels.mosaic import accumulate, accumulate_sin

# images are resampled with Lanczos-3: bilinear lost 11 % of the peak flux of point sources
# in the science tests' mosaics (beams of 2.3 pixels' minor axis)
LANCZOS = 3


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            with fits.open(path) as h:
                # float32 in native byte order (FITS is big-endian): what the kernels read;
                # their sums are float64
                data = np.squeeze(h[0].data).astype(np.float32)
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
    for v in wcss:
        v.wcs.set()  # RADESYS and EQUINOX defaulted as wcslib reads them
    systems = {(v.wcs.radesys, v.wcs.equinox if v.wcs.radesys in ("FK4", "FK5") else None)
               for v in wcss}
    if len(systems) == 1:  # the members' frame, so they map onto it without a frame change
        w.wcs.radesys, equinox = systems.pop()
        if equinox is not None:
            w.wcs.equinox = equinox
    x, y = w.world_to_pixel(allc)
    nx = int(np.ceil(x.max() - x.min())) + 2 * pad
    ny = int(np.ceil(y.max() - y.min())) + 2 * pad
    w.wcs.crpix = [1.0 - x.min() + pad, 1.0 - y.min() + pad]
    w.pixel_shape = (nx, ny)
    return w


def grid_for(image_paths) -> WCS:
    """The output grid a mosaic of these member images gets (their headers only)."""
    wcss, shapes, cells = [], [], []
    for p in image_paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            hdr = fits.getheader(p)
            wcss.append(WCS(hdr).celestial)
        shapes.append((hdr["NAXIS2"], hdr["NAXIS1"]))
        cells.append(abs(hdr["CDELT2"]))
    return output_grid(wcss, shapes, min(cells))


def _add_member(grid: WCS, sums, img, pb, w: WCS, weight: float, noise: dict):
    """Add one member to the output grid's sums (2-D, in place), visiting only the output
    pixels its image can cover. SIN members in the grid's frame are mapped in the numba
    kernel (:func:`kernels.mosaic.accumulate_sin`); any other projection through astropy's
    WCS on arrays, then :func:`kernels.mosaic.accumulate`."""
    num, den, cov = sums
    box = footprint(w, img.shape, grid, num.shape)
    if box is None:
        return
    fr = frames(grid, w)
    if fr is not None:
        accumulate_sin(num, den, cov, img, pb, weight, fr, box, lanczos=LANCZOS, **noise)
        return
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    with np.errstate(invalid="ignore"):
        xin, yin = w.all_world2pix(*grid.all_pix2world(xx.ravel(), yy.ravel(), 0), 0)
    sub = [a[y0:y1, x0:x1].ravel() for a in (num, den, cov)]
    accumulate(*sub, img, pb, weight, xin, yin, lanczos=LANCZOS)
    if noise:
        rsub, vsub = (noise[k][y0:y1, x0:x1].ravel() for k in ("rnum", "var"))
        scratch = np.zeros_like(rsub), np.zeros_like(rsub)
        accumulate(rsub, *scratch, noise["resid"], pb, weight, xin, yin, lanczos=LANCZOS)
        # sampling the beam as the "image" adds vweight B^2
        accumulate(vsub, *scratch, pb, pb, noise["vweight"], xin, yin)
        sub += [rsub, vsub]
    for a, part in zip((num, den, cov, noise.get("rnum"), noise.get("var")), sub):
        a[y0:y1, x0:x1] = part.reshape(y1 - y0, x1 - x0)


def _common_beam_members(loaded):
    """Convolve every member (image and residual) to one common beam, in place.

    Returns the common beam (deg) and, per member, the factor by which the convolution
    changed its noise (measured on its residual, or its image when it has none).
    """
    beams = [(h["BMAJ"], h["BMIN"], h.get("BPA", 0.0)) for _, _, _, h, *_ in loaded]
    target = common_beam(beams)
    factors = []
    for m, beam in zip(loaded, beams):
        img, _, _, hdr, resid = m[:5]
        cdelt = (hdr["CDELT1"], hdr["CDELT2"])
        ref = resid if resid is not None else img
        # every 16th pixel: 2.6e5 samples of a 2048^2 member, the rms to ~0.3 %, the same
        # pixels before and after
        before = _mad_rms(ref[::4, ::4])
        if resid is not None:
            m[0], m[4] = convolve_all([img, resid], beam, target, cdelt)
        else:
            m[0], = convolve_all([img], beam, target, cdelt)
        after = _mad_rms((m[4] if resid is not None else m[0])[::4, ::4])
        factors.append(after / before if before > 0 else 1.0)
    return target, factors


class _Clock:
    """Wall-clock laps (s) of the mosaic's steps, for its QA and the benchmark."""

    def __init__(self):
        self.t, self.laps = time.perf_counter(), {}

    def lap(self, name: str):
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


def _write_mosaic(work: Path, members: list, cfg: Config, mosaic_id: str):
    """Write the mosaic, weight map, residual and thermal maps and PNG into ``work``;
    returns (file names by kind, QA so far, the mosaic array, common beam, cell in deg)."""
    clock = _Clock()
    loaded = []
    for m in members:
        img, hdr, w = _load(m["image"])
        pb, _, _ = _load(m["pb"])
        if pb.shape != img.shape:
            raise StaleProductError(f"{m['pb']}: beam shape {pb.shape} != image {img.shape}")
        resid = _load(m["residual"])[0] if m.get("residual") else None
        if resid is not None and resid.shape != img.shape:
            raise StaleProductError(f"{m['residual']}: shape {resid.shape} != image {img.shape}")
        loaded.append([img, pb, w, hdr, resid, m])
    clock.lap("load_s")
    have_beams = all("BMAJ" in h and "BMIN" in h for _, _, _, h, *_ in loaded)
    beam, factors = (_common_beam_members(loaded) if have_beams
                     else (None, [1.0] * len(loaded)))
    with_noise = all(x[4] is not None and x[5].get("thermal_jy") for x in loaded)
    cell = min(abs(x[3]["CDELT2"]) for x in loaded)
    grid = output_grid([x[2] for x in loaded], [x[0].shape for x in loaded], cell)
    nx, ny = grid.pixel_shape
    num, den, cov, rnum, var = (np.zeros((ny, nx)) for _ in range(5))
    clock.lap("beam_and_grid_s")
    for (img, pb, w, _, resid, m), factor in zip(loaded, factors):
        sigma = (m.get("rms") or _mad_rms(resid if resid is not None else img)) * factor
        weight = 1.0 / sigma ** 2
        noise = (dict(resid=resid, rnum=rnum, var=var,
                      vweight=(weight * m["thermal_jy"] * factor) ** 2) if with_noise else {})
        _add_member(grid, (num, den, cov), img, pb, w, weight, noise)
    clock.lap("reproject_s")
    num, den, cov, rnum, var = (a.ravel() for a in (num, den, cov, rnum, var))
    keep = (cov >= cfg.mosaic.min_pb) & (den > 0)

    blank = ~keep

    def finish(a):  # float32 from the start: these are 24 Mpixel maps at full scale
        out = a.astype(np.float32)
        out[blank] = np.nan
        return out.reshape(ny, nx)

    safe = np.where(den > 0, den, 1.0)
    mosaic = finish(num / safe)
    weight_map = den.reshape(ny, nx).astype(np.float32)
    hdr = grid.to_header()
    stamp(hdr, mosaic_cards([x[3] for x in loaded], cfg))  # where, when, frequency
    if beam is not None:
        hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = beam
    hdr["BUNIT"] = "Jy/beam"
    hdr["MOSAICID"] = mosaic_id
    hdr["NMEMBER"] = len(members)
    for i, m in enumerate(members, 1):
        hdr[f"MEMBER{i:02d}"] = m["obs_id"]
    hdr["ENGVER"] = __version__
    hdr["CFGHASH"] = cfg.digest()
    hdr["COMMENT"] = "members convolved to one common beam (BMAJ, BMIN, BPA)"
    hdr["COMMENT"] = "sum(w B I) / sum(w B^2), w = 1/rms^2; blank where weight is low"
    names = {"mosaic": f"{mosaic_id}.fits", "weight": f"{mosaic_id}.weight.fits",
             "png": f"{mosaic_id}.png"}
    whdr = hdr.copy()
    whdr["BUNIT"] = "1/(Jy/beam)^2"
    maps = [("mosaic", mosaic, hdr), ("weight", weight_map, whdr)]
    qa = {"noise_factors": factors, "timing": clock.laps}
    if with_noise:
        resid_mosaic = finish(rnum / safe)
        thermal = finish(np.sqrt(var) / safe)
        names["residual"] = f"{mosaic_id}.residual.fits"
        names["thermal"] = f"{mosaic_id}.thermal.fits"
        maps += [("residual", resid_mosaic, hdr), ("thermal", thermal, hdr)]
    # the FITS files are written by a thread (I/O, from copies: _write_maps) while the QA
    # statistics and the PNG are computed here from the same arrays; all are done before
    # the catalogue reads the mosaic back
    with ThreadPoolExecutor(max_workers=1) as io:
        written = io.submit(_write_maps, work, names, maps)
        if with_noise:  # statistics from every 4th pixel (~6e6 of a full-scale mosaic)
            r, t = resid_mosaic[::2, ::2], thermal[::2, ::2]
            inner = ((cov.reshape(ny, nx)[::2, ::2] >= INNER_PB) & np.isfinite(r)
                     & np.isfinite(t) & (t > 0))
            if inner.any():
                qa.update(residual_rms_jy=_mad_rms(r[inner]),
                          thermal_jy=float(np.median(t[inner])),
                          thermal_ratio=_mad_rms(r[inner] / t[inner]))
        clock.lap("qa_s")
        render(mosaic, hdr, work / names["png"], title=mosaic_id,
               sources=catalogue_marks(cfg))
        clock.lap("png_s")
        written.result()
        clock.lap("write_s")  # what the writes took beyond the QA and the PNG
    # the mosaic is primary-beam corrected already: no response to divide by
    sources = find_catalogue(work / names["mosaic"], None, work / f"{mosaic_id}.sources.fits",
                             product_id=mosaic_id, cfg=cfg)
    clock.lap("catalogue_s")
    if sources:
        qa["sources"] = sources
    if "n" in sources:
        names["catalogue"] = f"{mosaic_id}.sources.fits"
    return names, qa, mosaic, beam, cell


def _write_maps(work: Path, names: dict, maps: list):
    """Each (kind, float32 array, header) as ``work/names[kind]``, from a big-endian copy:
    astropy writes a little-endian array by byte-swapping it IN PLACE and back, and this
    runs in a thread while the caller reads the same arrays for the QA and the PNG (which
    then saw swapped bytes: a residual/thermal ratio of 70 instead of 1.0)."""
    for kind, data, hdr in maps:
        fits.PrimaryHDU(data.astype(">f4"), hdr).writeto(work / names[kind])


def make_mosaic(members: list[dict], out_dir: str, cfg: Config, *, mosaic_id: str) -> dict:
    """Combine member images into one mosaic; write FITS, weight map, residual and PNG.

    ``members``: dicts with obs_id, image path, pb path, rms (Jy/beam) and, when the image
    has them, residual path and thermal_jy, in time order. Every member is first convolved
    to one common restoring beam (recorded as BMAJ/BMIN/BPA), so the mosaic's Jy/beam means
    one thing. With residuals and thermal estimates, the same weights give a residual mosaic
    and a thermal-noise map ``sqrt(sum w^2 B^2 sigma_th^2) / sum w B^2``; QA compares them
    inside the region some member sees at primary beam >= 0.5.
    """
    t0 = time.perf_counter()
    faults.check("mosaic.start", mosaic_id)
    with work_folder(out_dir) as work:  # nothing partial is left in stage
        names, qa, mosaic, beam, cell = _write_mosaic(work, members, cfg, mosaic_id)
        files = commit_dir(work, out_dir, names)
    ny, nx = mosaic.shape
    rms = _mad_rms(mosaic[np.isfinite(mosaic)])
    peak = float(np.nanmax(mosaic))
    noise = qa.get("residual_rms_jy") or rms
    qa.update({"rms_jy": rms, "peak_jy": peak,
               "dynamic_range": peak / noise if noise > 0 else None,
               "shape": [ny, nx], "cell_arcsec": cell * 3600, "mosaic_s": time.perf_counter() - t0,
               "beam_deg": list(beam) if beam else None})
    return {"mosaic_id": mosaic_id, "dir": str(out_dir), "files": files, "qa": qa,
            "members": [m["obs_id"] for m in members]}
