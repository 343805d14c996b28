"""Per-observation imaging with CASA tclean (runs in CASA worker processes only).

Cell and image size come from the data unless the configuration sets them: the cell is a
fraction (``image.cell_per_beam``) of lambda_min / B_max, the image reaches out to where
the primary beam falls to ``image.pb_level`` at the lowest frequency. The primary beam is
the engine's own Airy model averaged over the observation's pointing track (the sky drifts
~1.3 deg through the 2.7 deg beam in 309 s).

Everything is written into a temporary folder and renamed into place; the returned
manifest lists each file with its size and sha256.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from engine import __version__
from engine.casaenv import import_casatools
from engine.config import Config
from engine import faults, imagers
from engine.paths import commit_dir, work_folder
from engine.quicklook import catalogue_marks, render
from engine.constants import C_M_S
from engine.errors import EngineError
from engine.telescope import primary_beam

log = logging.getLogger(__name__)

# residual rms and thermal ratio are measured where the primary beam is at least this
INNER_PB = 0.5


def good_fft_size(n: int) -> int:
    """Smallest even integer >= n whose only prime factors are 2, 3 and 5."""
    n = max(16, int(np.ceil(n)))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1 and n % 2 == 0:
            return n
        n += 1


def _ms_geometry(ct, ms: str) -> dict:
    tb = ct.table()
    tb.open(ms)
    uvw = tb.getcol("UVW")
    flag_row = tb.getcol("FLAG_ROW")
    # TIME: mid-integration, MJD seconds (UTC); the span from the first start to the last end
    mid_s, dt_s = tb.getcol("TIME"), tb.getcol("INTERVAL")
    tb.close()
    tb.open(f"{ms}/SPECTRAL_WINDOW")
    freqs = tb.getcol("CHAN_FREQ")[:, 0]
    tb.close()
    tb.open(f"{ms}/FIELD")
    dirs = tb.getcol("PHASE_DIR")[:, 0, :].T  # (Nfields, 2)
    tb.close()
    tb.open(f"{ms}/POINTING")
    if tb.nrows():
        t = tb.getcol("TIME")
        d = tb.getcol("DIRECTION")[:, 0, :].T
        _, first = np.unique(t, return_index=True)
        pointing = d[np.sort(first)]
    else:  # an MS from elsewhere: the field centres are the best guess
        pointing = dirs
    tb.close()
    good = ~flag_row
    bmax = float(np.sqrt((uvw[:2, good] ** 2).sum(axis=0)).max())
    span = ((mid_s - dt_s / 2).min() / 86400.0, (mid_s + dt_s / 2).max() / 86400.0)
    return {"freqs": freqs, "bmax": bmax, "fields": dirs, "pointing": pointing,
            "span_mjd": span}


def image_size(cfg: Config, geo: dict) -> tuple[float, int]:
    """(cell arcsec, imsize) derived from the longest baseline and the primary beam."""
    if cfg.image.cell_arcsec > 0:
        cell = cfg.image.cell_arcsec
    else:
        lam_min = C_M_S / geo["freqs"].max()
        cell = np.rad2deg(lam_min / max(geo["bmax"], 1.0)) * 3600 / cfg.image.cell_per_beam
    if cfg.image.imsize > 0:
        return cell, cfg.image.imsize
    # radius where the primary beam reaches pb_level at the lowest frequency
    theta = np.linspace(0, np.deg2rad(10), 20000)
    pb = primary_beam(np.sin(theta), geo["freqs"].min(), cfg)
    below = np.flatnonzero(pb < max(cfg.image.pb_level, 1e-3))
    radius = theta[below[0]] if below.size else theta[-1]
    # the drift adds the track length in RA
    ra = np.unwrap(geo["pointing"][:, 0])
    track = (ra.max() - ra.min()) * np.cos(geo["pointing"][:, 1].mean())
    n = (2 * radius + track) / np.deg2rad(cell / 3600)
    return cell, min(good_fft_size(n), cfg.image.max_imsize)


def drift_beam(ra_grid, dec_grid, fields, freq_hz, cfg: Config):
    """Mean primary beam (:func:`engine.telescope.primary_beam`) over the pointing track, on
    a grid of ICRS positions (rad).

    ``fields`` (Ntimes, 2) are the pointing centres (the meridian positions) of the
    integrations; the beam of each integration is centred on its own pointing.
    """
    out = np.zeros_like(ra_grid)
    sd, cd = np.sin(dec_grid), np.cos(dec_grid)
    for ra0, dec0 in fields:
        cos_t = np.clip(sd * np.sin(dec0) + cd * np.cos(dec0) * np.cos(ra_grid - ra0), -1, 1)
        out += primary_beam(np.sqrt(1 - cos_t ** 2), freq_hz, cfg)
    return out / len(fields)


def choose_imager(backend: str, nfields: int, have_wsclean: bool) -> str:
    """The imager that runs: ``image.backend`` resolved for this MS and machine.

    auto: WSClean when installed and the MS has one phase centre (WSClean grids every field
    as if phased to one), else tclean; wsclean without its binary falls back to tclean
    with a warning (an MS with several fields is refused in :func:`imagers.wsclean`)."""
    if backend == "auto":
        return "wsclean" if have_wsclean and nfields == 1 else "tclean"
    if backend == "wsclean" and not have_wsclean:
        log.warning("image.backend = wsclean but no wsclean binary: using tclean")
        return "tclean"
    return backend


def _mad_rms(a) -> float:
    a = a[np.isfinite(a)]
    return float(1.4826 * np.median(np.abs(a - np.median(a)))) if a.size else float("nan")


def _image_into(work: Path, ms: str, cfg: Config, obs_id: str, caltables, ct, casatasks,
                t0: float) -> tuple[dict, dict]:
    """Apply calibration, image, and write image/residual/pb FITS and PNG into ``work``.

    Returns (QA dict, {kind: file name}). QA holds the residual's robust rms inside the
    primary beam's half-power region, the data's own thermal estimate for the same weights
    and grid (:mod:`engine.noise`), and their ratio.
    """
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    from engine.fits_headers import site_cards, stamp, time_cards
    from engine.noise import thermal_estimate

    geo = _ms_geometry(ct, ms)
    cell, imsize = image_size(cfg, geo)
    subtracted = []
    if caltables:
        from engine.calibrate import apply
        from engine.subtract import subtract_bright

        apply(ct, casatasks, ms, caltables)
        # the imagers' grid: centred on the middle field, imsize x cell on a side
        footprint = (tuple(geo["fields"][len(geo["fields"]) // 2]),
                     np.deg2rad(imsize * cell / 3600) / 2)
        subtracted = subtract_bright(ct, casatasks, ms, cfg, image=footprint)
    fits_path = work / f"{obs_id}.image.fits"
    resid_path = work / f"{obs_id}.residual.fits"
    backend = choose_imager(cfg.image.backend, len(geo["fields"]),
                            shutil.which("wsclean") is not None)
    datacolumn = "corrected" if caltables else "data"
    t_img = time.perf_counter()
    if backend == "wsclean":
        clean = imagers.wsclean(ms, work, fits_path, resid_path, cfg, cell, imsize, geo,
                                datacolumn)
    else:
        clean = imagers.tclean(ct, casatasks, ms, work, fits_path, resid_path, cfg, cell,
                               imsize, geo, datacolumn)
    t_img = time.perf_counter() - t_img
    if any(x["restore"] for x in subtracted):
        from engine.subtract import restore_sources

        restore_sources(fits_path, [x for x in subtracted if x["restore"]])
    # the imagers' site and time cards are not trusted (engine.fits_headers)
    where_and_when = {**site_cards(cfg), **time_cards(*geo["span_mjd"])}
    with fits.open(fits_path, mode="update") as hdul:
        h = hdul[0].header
        data = np.squeeze(hdul[0].data)
        rms = _mad_rms(data)
        peak = float(np.nanmax(data))
        stamp(h, where_and_when)
        h["OBS_ID"] = obs_id
        h["CALTABS"] = ",".join(Path(c).name for c in (caltables or [])) or "none"
        h["ENGVER"] = __version__
        h["CFGHASH"] = cfg.digest()
        h["BUNIT"] = "Jy/beam"
        beam = (h.get("BMAJ", np.nan) * 3600, h.get("BMIN", np.nan) * 3600, h.get("BPA", np.nan))
        img_hdr = h.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(h).celestial
    yy, xx = np.mgrid[0:imsize, 0:imsize]
    sky = wcs.pixel_to_world(xx, yy)
    pb = drift_beam(sky.ra.rad, sky.dec.rad, geo["pointing"], float(np.mean(geo["freqs"])),
                    cfg)
    pb_path = work / f"{obs_id}.pb.fits"
    hdr = wcs.to_header()
    hdr["BUNIT"] = ""
    hdr["OBS_ID"] = obs_id
    hdr["COMMENT"] = "primary beam averaged over the drift-scan pointing track"
    fits.PrimaryHDU(pb.astype(np.float32), hdr).writeto(pb_path)
    with fits.open(resid_path, mode="update") as hdul:
        resid = np.squeeze(hdul[0].data)
        stamp(hdul[0].header, where_and_when)
        hdul[0].header["OBS_ID"] = obs_id
        hdul[0].header["BUNIT"] = "Jy/beam"
    inner = pb >= INNER_PB
    resid_rms = _mad_rms(resid[inner] if inner.any() else resid)
    noise = thermal_estimate(ct, ms, "CORRECTED_DATA" if caltables else "DATA",
                             cell_arcsec=cell, imsize=imsize, weighting=cfg.image.weighting,
                             robust=cfg.image.robust)
    png_path = work / f"{obs_id}.png"
    render(data, img_hdr, png_path, title=obs_id, sources=catalogue_marks(cfg))
    names = {"image": fits_path.name, "residual": resid_path.name, "pb": pb_path.name,
             "png": png_path.name}
    sources = find_catalogue(fits_path, pb_path, work / f"{obs_id}.sources.fits",
                             product_id=f"image:{obs_id}", cfg=cfg)
    if "n" in sources:
        names["catalogue"] = f"{obs_id}.sources.fits"
    thermal = noise["thermal_jy"]
    qa = {"backend": backend, "rms_jy": rms, "peak_jy": peak,
          "dynamic_range": peak / resid_rms if resid_rms > 0 else None,
          "residual_rms_jy": resid_rms, "thermal_jy": thermal,
          "thermal_ratio": resid_rms / thermal if thermal > 0 else None,
          "vis_sigma_jy": noise["vis_sigma_jy"], "clean": clean,
          "subtracted": [{k: x[k] for k in ("name", "apparent_jy", "restore")}
                         for x in subtracted],
          "bmaj_arcsec": beam[0], "bmin_arcsec": beam[1], "bpa_deg": beam[2],
          "cell_arcsec": cell, "imsize": imsize, "imager_s": t_img,
          "image_s": time.perf_counter() - t0}
    if sources:
        qa["sources"] = sources
    return qa, names


def find_catalogue(image: Path, pb: Path | None, out_path: Path, *, product_id: str,
                   cfg: Config) -> dict:
    """The source catalogue of an image or mosaic (``engine.catalogue.catalogue_product``)
    written to ``out_path``, the finder's maps in a scratch folder that is removed. Returns
    its QA entry: {"n", "finder", "seconds", "qa"}; {"error": reason} when the finder failed
    (the image stands, the reason goes into its QA); {} when ``sources.enabled`` is off."""
    import tempfile

    from engine.catalogue import catalogue_product
    from engine.errors import SourceFindingError

    if not cfg.sources.enabled:
        return {}
    try:
        with tempfile.TemporaryDirectory(prefix="sourcefind.") as scratch:
            return catalogue_product(image, pb, Path(scratch), out_path,
                                     product_id=product_id, cfg=cfg)
    except SourceFindingError as exc:
        log.error("%s: source finding failed: %s", product_id, exc)
        out_path.unlink(missing_ok=True)
        return {"error": str(exc)}


def image_observation(ms: str, out_dir: str, cfg: Config, *, obs_id: str,
                      caltables: list | None = None, extra_sources=()) -> dict:
    """Image one MS; write FITS image, primary beam, residual, PNG, source catalogue and QA
    into ``out_dir``, then forced photometry of the reference catalogue and of
    ``extra_sources`` (dicts with name, ra_deg, dec_deg: new sources found before)."""
    ct = import_casatools()
    import casatasks

    t0 = time.perf_counter()
    faults.check("image.start", obs_id)
    out_dir = Path(out_dir)
    with work_folder(out_dir) as work:  # no partial image is left in stage
        qa, names = _image_into(work, ms, cfg, obs_id, caltables, ct, casatasks, t0)
    files = commit_dir(work, out_dir, names)
    out = {"obs_id": obs_id, "dir": str(out_dir), "files": files, "qa": qa,
           "caltables": list(caltables or [])}
    if cfg.photometry.enabled:
        from engine.photometry import measure_products

        try:
            out["photometry"] = measure_products(files, cfg, extra_sources)
        except (KeyError, ValueError, OSError, EngineError, np.linalg.LinAlgError) as exc:
            # a header without a beam, an unreadable catalogue, a singular beam: the image
            # stands, the reason goes into its QA
            log.exception("%s: forced photometry failed", obs_id)
            out["photometry_error"] = f"{type(exc).__name__}: {exc}"
    return out
