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
import os
import shutil
import time
from pathlib import Path

import numpy as np

from engine import __version__
from engine.casaenv import import_casatools
from engine.config import Config
from engine import faults
from engine.errors import CasaTaskError
from engine.paths import commit_dir
from engine.telescope import C_M_S, airy_beam

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
    return {"freqs": freqs, "bmax": bmax, "fields": dirs, "pointing": pointing}


def image_size(cfg: Config, geo: dict, dish_m: float) -> tuple[float, int]:
    """(cell arcsec, imsize) derived from the longest baseline and the primary beam."""
    if cfg.image.cell_arcsec > 0:
        cell = cfg.image.cell_arcsec
    else:
        lam_min = C_M_S / geo["freqs"].max()
        cell = np.rad2deg(lam_min / max(geo["bmax"], 1.0)) * 3600 / cfg.image.cell_per_beam
    if cfg.image.imsize > 0:
        return cell, cfg.image.imsize
    # radius where the Airy beam reaches pb_level at the lowest frequency
    theta = np.linspace(0, np.deg2rad(10), 20000)
    pb = airy_beam(np.sin(theta), geo["freqs"].min(), dish_m)
    below = np.flatnonzero(pb < max(cfg.image.pb_level, 1e-3))
    radius = theta[below[0]] if below.size else theta[-1]
    # the drift adds the track length in RA
    ra = np.unwrap(geo["pointing"][:, 0])
    track = (ra.max() - ra.min()) * np.cos(geo["pointing"][:, 1].mean())
    n = (2 * radius + track) / np.deg2rad(cell / 3600)
    return cell, min(good_fft_size(n), cfg.image.max_imsize)


def drift_beam(ra_grid, dec_grid, fields, freq_hz, dish_m):
    """Mean Airy power beam over the pointing track, on a grid of ICRS positions (rad).

    ``fields`` (Ntimes, 2) are the pointing centres (the meridian positions) of the
    integrations; the beam of each integration is centred on its own pointing.
    """
    out = np.zeros_like(ra_grid)
    sd, cd = np.sin(dec_grid), np.cos(dec_grid)
    for ra0, dec0 in fields:
        cos_t = np.clip(sd * np.sin(dec0) + cd * np.cos(dec0) * np.cos(ra_grid - ra0), -1, 1)
        out += airy_beam(np.sqrt(1 - cos_t ** 2), freq_hz, dish_m)
    return out / len(fields)


def _mad_rms(a) -> float:
    a = a[np.isfinite(a)]
    return float(1.4826 * np.median(np.abs(a - np.median(a)))) if a.size else float("nan")


def _tclean(ct, casatasks, ms, work: Path, fits_path: Path, resid_path: Path, cfg, cell,
            imsize, geo, datacolumn):
    """CASA tclean cleaned to the noise -> image and residual FITS.

    Stopping is set by the RESIDUAL: ``nsigma`` x its robust rms, re-measured at every major
    cycle (and never below ``image.threshold_jy``). With ``image.mask = two-stage`` the
    first run cleans without a mask to ``mask_sigma``; its model, grown by one beam, becomes
    the mask inside which a second run (restarting from the first) cleans to ``nsigma``:
    noise peaks away from real emission are never cleaned.
    """
    im = cfg.image
    mid = geo["fields"][len(geo["fields"]) // 2]
    base = str(work / "img")
    args = dict(vis=ms, imagename=base, imsize=imsize, cell=f"{cell}arcsec",
                phasecenter=f"J2000 {mid[0]}rad {mid[1]}rad", specmode="mfs",
                gridder=im.gridder, wprojplanes=im.wprojplanes,
                # negative: the primary beam does not blank the image, and the residual
                # statistics (nsigma, masking) cover all of it down to 1 % of the beam
                weighting=im.weighting, robust=im.robust, pblimit=-0.01,
                datacolumn=datacolumn,
                deconvolver="mtmfs" if im.nterms > 1 else "hogbom", nterms=im.nterms,
                niter=im.niter, nsigma=im.nsigma, threshold=f"{im.threshold_jy}Jy",
                nmajor=im.max_major_cycles, cyclefactor=im.cycle_factor, gain=0.1,
                interactive=False)
    if im.mask == "auto-multithresh" and im.niter > 0:
        args.update(usemask="auto-multithresh", noisethreshold=im.mask_sigma,
                    sidelobethreshold=im.mask_sidelobe_threshold, lownoisethreshold=1.5,
                    minbeamfrac=im.mask_min_beam_frac, negativethreshold=0.0,
                    fastnoise=False)
    if im.restoring_beam_arcsec > 0:
        args["restoringbeam"] = [f"{im.restoring_beam_arcsec}arcsec"]
    tt = ".tt0" if im.nterms > 1 else ""
    two_stage = im.mask == "two-stage" and im.niter > 0 and im.mask_sigma > im.nsigma
    cwd = os.getcwd()
    os.chdir(work)  # CASA drops helper files in the working directory
    try:
        faults.check("casa.tclean", ms)
        if two_stage:
            first = casatasks.tclean(**{**args, "nsigma": im.mask_sigma})
            npix = _model_mask(ct, base, tt, cell)
            summary = casatasks.tclean(**args, usemask="user", mask="", restart=True,
                                       calcpsf=False, calcres=False)
            summary = {**_merge_summaries(first, summary), "mask_pixels": npix}
        else:
            summary = _merge_summaries(casatasks.tclean(**args))
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:  # what CASA tasks raise
        raise CasaTaskError(f"tclean on {ms}: {exc.__class__.__name__}: {exc}") from None
    finally:
        os.chdir(cwd)
    for kind in ("image", "residual"):
        if not Path(base + f".{kind}" + tt).exists():
            raise CasaTaskError(f"tclean on {ms} wrote no {kind}")
    casatasks.exportfits(imagename=base + ".image" + tt, fitsimage=str(fits_path),
                         overwrite=True)
    casatasks.exportfits(imagename=base + ".residual" + tt, fitsimage=str(resid_path),
                         overwrite=True)
    for casa_image in work.glob("img.*"):
        shutil.rmtree(casa_image, ignore_errors=True)
    return summary


def _merge_summaries(*summaries) -> dict:
    """Iterations and major cycles of consecutive tclean runs; the last run's stop code."""
    out = {"iterations": 0, "major_cycles": 0, "stop_code": -1}
    for s in summaries:
        s = s if isinstance(s, dict) else {}
        out["iterations"] += int(s.get("iterdone", 0))
        out["major_cycles"] += int(s.get("nmajordone", 0))
        out["stop_code"] = int(s.get("stopcode", -1))
    return out


def _model_mask(ct, base: str, tt: str, cell_arcsec: float) -> int:
    """Write ``<base>.mask``: pixels within one restoring beam (FWHM) of a clean component.

    Returns the number of mask pixels."""
    from scipy.ndimage import binary_dilation

    ia = ct.image()
    ia.open(base + ".image" + tt)
    try:
        beam = ia.restoringbeam()
        fwhm = float(beam["major"]["value"]) if "major" in beam else 3 * cell_arcsec
        if beam.get("major", {}).get("unit", "arcsec") == "deg":
            fwhm *= 3600
    finally:
        ia.close()
    ia.open(base + ".model" + tt)
    try:
        model = ia.getchunk()
    finally:
        ia.close()
    r = max(1, int(np.ceil(fwhm / cell_arcsec)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx ** 2 + yy ** 2 <= r * r)[:, :, None, None]
    mask = binary_dilation(model != 0, structure=disk).astype(np.float32)
    # the first run left its (all-open) mask as <base>.mask; the second run reuses it
    path = base + ".mask"
    if not Path(path).exists():
        ia.fromimage(path, base + ".model" + tt, overwrite=True)
        ia.close()
    ia.open(path)
    try:
        ia.putchunk(mask)
    finally:
        ia.close()
    return int(mask.sum())


def _wsclean(ms, work: Path, fits_path: Path, resid_path: Path, cfg, cell, imsize, geo,
             datacolumn):
    """WSClean (a separate process with its own casacore) cleaned to the noise -> FITS.

    ``-auto-threshold`` stops at nsigma x the residual's rms re-measured every major cycle;
    ``-auto-mask`` cleans down to it inside the mask grown at ``image.mask_sigma``.
    WSClean grids every field as if phased to one centre, so it needs a single-phase-centre
    MS (``convert.phasing = single``); a drift-scan MS with one field per integration is
    refused rather than imaged wrongly.
    """
    import subprocess

    im = cfg.image
    if len(geo["fields"]) > 1:
        raise CasaTaskError(f"{ms}: wsclean needs one phase centre, the MS has "
                            f"{len(geo['fields'])} fields (use convert.phasing = single)")
    base = str(work / "wsc")
    weight = (["-weight", "briggs", str(im.robust)] if im.weighting == "briggs"
              else ["-weight", im.weighting])
    stop = ["-auto-threshold", str(im.nsigma)]
    if im.threshold_jy:
        stop += ["-threshold", str(im.threshold_jy)]
    if im.mask != "none" and im.niter > 0:
        stop += ["-auto-mask", str(im.mask_sigma)]
    if im.max_major_cycles > 0:
        stop += ["-nmiter", str(im.max_major_cycles)]
    if im.restoring_beam_arcsec > 0:
        stop += ["-beam-size", str(im.restoring_beam_arcsec)]
    cmd = ["wsclean", "-quiet", "-name", base, "-size", str(imsize), str(imsize),
           "-scale", f"{cell}asec", *weight, "-niter", str(im.niter), *stop,
           "-mgain", str(im.cycle_gain), "-pol", "I", "-data-column",
           "CORRECTED_DATA" if datacolumn == "corrected" else "DATA", "-use-wgridder", ms]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if p.returncode != 0 or not Path(base + "-image.fits").exists():
        raise CasaTaskError(f"wsclean on {ms} failed: {(p.stderr or p.stdout)[-500:]}")
    os.replace(base + "-image.fits", fits_path)
    os.replace(base + "-residual.fits", resid_path)
    for f in work.glob("wsc-*"):
        f.unlink()
    return {}


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

    from engine.noise import thermal_estimate

    subtracted = []
    if caltables:
        from engine.calibrate import apply
        from engine.subtract import subtract_bright

        apply(ct, casatasks, ms, caltables)
        subtracted = subtract_bright(ct, casatasks, ms, cfg)
    geo = _ms_geometry(ct, ms)
    cell, imsize = image_size(cfg, geo, cfg.array.dish_diameter_m)
    fits_path = work / f"{obs_id}.image.fits"
    resid_path = work / f"{obs_id}.residual.fits"
    backend = cfg.image.backend
    if backend == "wsclean" and shutil.which("wsclean") is None:
        log.warning("image.backend = wsclean but no wsclean binary: using tclean")
        backend = "tclean"
    datacolumn = "corrected" if caltables else "data"
    t_img = time.perf_counter()
    if backend == "wsclean":
        clean = _wsclean(ms, work, fits_path, resid_path, cfg, cell, imsize, geo, datacolumn)
    else:
        clean = _tclean(ct, casatasks, ms, work, fits_path, resid_path, cfg, cell, imsize, geo,
                        datacolumn)
    t_img = time.perf_counter() - t_img
    if subtracted:
        from engine.subtract import restore_sources

        restore_sources(fits_path, subtracted)
    with fits.open(fits_path, mode="update") as hdul:
        h = hdul[0].header
        data = np.squeeze(hdul[0].data)
        rms = _mad_rms(data)
        peak = float(np.nanmax(data))
        h["OBS_ID"] = obs_id
        h["CALTABS"] = ",".join(Path(c).name for c in (caltables or [])) or "none"
        h["ENGVER"] = __version__
        h["CFGHASH"] = cfg.digest()
        h["BUNIT"] = "Jy/beam"
        beam = (h.get("BMAJ", np.nan) * 3600, h.get("BMIN", np.nan) * 3600, h.get("BPA", np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(h).celestial
    yy, xx = np.mgrid[0:imsize, 0:imsize]
    sky = wcs.pixel_to_world(xx, yy)
    pb = drift_beam(sky.ra.rad, sky.dec.rad, geo["pointing"], float(np.mean(geo["freqs"])),
                    cfg.array.dish_diameter_m)
    pb_path = work / f"{obs_id}.pb.fits"
    hdr = wcs.to_header()
    hdr["BUNIT"] = ""
    hdr["OBS_ID"] = obs_id
    hdr["COMMENT"] = "Airy primary beam averaged over the drift-scan pointing track"
    fits.PrimaryHDU(pb.astype(np.float32), hdr).writeto(pb_path)
    with fits.open(resid_path, mode="update") as hdul:
        resid = np.squeeze(hdul[0].data)
        hdul[0].header["OBS_ID"] = obs_id
        hdul[0].header["BUNIT"] = "Jy/beam"
    inner = pb >= INNER_PB
    resid_rms = _mad_rms(resid[inner] if inner.any() else resid)
    noise = thermal_estimate(ct, ms, "CORRECTED_DATA" if caltables else "DATA",
                             cell_arcsec=cell, imsize=imsize, weighting=cfg.image.weighting,
                             robust=cfg.image.robust)
    png_path = work / f"{obs_id}.png"
    quicklook(data, png_path, title=obs_id, beam_arcsec=beam, cell_arcsec=cell)
    thermal = noise["thermal_jy"]
    qa = {"backend": backend, "rms_jy": rms, "peak_jy": peak,
          "dynamic_range": peak / resid_rms if resid_rms > 0 else None,
          "residual_rms_jy": resid_rms, "thermal_jy": thermal,
          "thermal_ratio": resid_rms / thermal if thermal > 0 else None,
          "vis_sigma_jy": noise["vis_sigma_jy"], "clean": clean,
          "subtracted": [{k: x[k] for k in ("name", "apparent_jy")} for x in subtracted],
          "bmaj_arcsec": beam[0], "bmin_arcsec": beam[1], "bpa_deg": beam[2],
          "cell_arcsec": cell, "imsize": imsize, "imager_s": t_img,
          "image_s": time.perf_counter() - t0}
    return qa, {"image": fits_path.name, "residual": resid_path.name, "pb": pb_path.name,
                "png": png_path.name}


def image_observation(ms: str, out_dir: str, cfg: Config, *, obs_id: str,
                      caltables: list | None = None) -> dict:
    """tclean one MS; write FITS image, FITS primary beam, PNG and QA into ``out_dir``."""
    ct = import_casatools()
    import casatasks

    t0 = time.perf_counter()
    faults.check("image.start", obs_id)
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".tmp")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        qa, names = _image_into(work, ms, cfg, obs_id, caltables, ct, casatasks, t0)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # no partial image is left in stage
        raise
    files = commit_dir(work, out_dir, names)
    return {"obs_id": obs_id, "dir": str(out_dir), "files": files, "qa": qa,
            "caltables": list(caltables or [])}


def quicklook(data, png_path, *, title, beam_arcsec, cell_arcsec):
    """PNG with a colour bar (Jy/beam) and the restoring beam drawn to scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    rms = _mad_rms(data)
    ny, nx = data.shape
    width = 7.0 if nx <= ny else min(14.0, 4.0 + 7.0 * nx / ny)
    fig, ax = plt.subplots(figsize=(width, 6.0))
    # stretch to the faint sky: a bright calibrator must not hide everything else
    top = float(np.nanmax(data)) if np.isfinite(np.nanmax(data)) else 1.0
    vmax = min(top, max(30 * rms, float(np.nanpercentile(data, 99.9))))
    cmap = matplotlib.colormaps["inferno"].copy()
    cmap.set_bad("0.3")
    im = ax.imshow(data, origin="lower", cmap=cmap, vmin=-3 * rms, vmax=vmax)
    fig.colorbar(im, ax=ax, label="Jy/beam")
    bmaj, bmin, bpa = beam_arcsec
    if np.isfinite(bmaj):
        n = data.shape[0]
        ax.add_patch(Ellipse((0.08 * n, 0.08 * n), bmin / cell_arcsec, bmaj / cell_arcsec,
                             angle=bpa, fc="none", ec="cyan"))
    ax.set_title(title)
    ax.set_xlabel("pixel (RA)")
    ax.set_ylabel("pixel (Dec)")
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
