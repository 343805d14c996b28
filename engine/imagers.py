"""The two imagers, cleaning to the noise: CASA tclean (in this CASA worker) and WSClean
(a subprocess with its own casacore). Each writes the restored image and the residual as
FITS and returns a summary of its clean; the choices are explained in docs/IMAGING.md."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from engine import faults
from engine.errors import CasaTaskError


def cycle_factor(im) -> float:
    """tclean's cyclefactor for ``cfg.image``: its own, or (0) 1.0 for Hogbom and 2.0 for
    mtmfs (docs/IMAGING.md)."""
    if im.cycle_factor > 0:
        return im.cycle_factor
    return 2.0 if im.nterms > 1 else 1.0


def tclean(ct, casatasks, ms, work: Path, fits_path: Path, resid_path: Path, cfg, cell,
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
                nmajor=im.max_major_cycles, cyclefactor=cycle_factor(im), gain=0.1,
                maxpsffraction=im.max_psf_fraction,
                minpsffraction=min(0.05, im.max_psf_fraction),
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
    try:
        with contextlib.chdir(work):  # CASA drops helper files in the working directory
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


# sub-bands WSClean grids separately when it fits spectra (image.nterms > 1)
WSCLEAN_CHANNELS_OUT = 4


def wsclean(ms, work: Path, fits_path: Path, resid_path: Path, cfg, cell, imsize, geo,
            datacolumn):
    """WSClean (a separate process with its own casacore) cleaned to the noise -> FITS.

    ``-auto-threshold`` stops at nsigma x the residual's rms re-measured every major cycle;
    ``-auto-mask`` cleans down to it inside the mask grown at ``image.mask_sigma``. With
    ``image.nterms`` > 1 the band is gridded in ``WSCLEAN_CHANNELS_OUT`` parts cleaned
    jointly with a polynomial spectrum of nterms terms per component (tclean's mtmfs does
    the same with Taylor terms); the products are the full-band (MFS) image and residual.
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
    spectral = []
    nout = min(WSCLEAN_CHANNELS_OUT, len(geo["freqs"]))
    if im.nterms > 1 and nout > 1:  # as mtmfs: a polynomial spectrum per clean component
        spectral = ["-join-channels", "-channels-out", str(nout),
                    "-fit-spectral-pol", str(min(im.nterms, nout))]
    # -temp-dir: its reordered copies of the data go into the work folder (removed with it
    # on failure), not beside the MS; -no-update-model-required: WSClean would otherwise
    # predict its model into the MS's MODEL_DATA at the end (a degridding pass that changes
    # the MS behind its registered checksum)
    cmd = ["wsclean", "-quiet", "-j", str(im.threads), "-name", base, "-temp-dir", str(work),
           "-no-update-model-required",
           "-size", str(imsize), str(imsize),
           "-scale", f"{cell}asec", *weight, "-niter", str(im.niter), *stop,
           "-mgain", str(im.cycle_gain), "-pol", "I", *spectral, "-data-column",
           "CORRECTED_DATA" if datacolumn == "corrected" else "DATA", "-use-wgridder", ms]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    stem = base + ("-MFS" if spectral else "")
    if p.returncode != 0 or not Path(stem + "-image.fits").exists():
        raise CasaTaskError(f"wsclean on {ms} failed: {(p.stderr or p.stdout)[-500:]}")
    # the counts are in the images WSClean cleaned: the full band's, or each sub-band's
    # when it fitted spectra (its MFS image does not carry them)
    summary = wsclean_summary([stem + "-image.fits", base + "-0000-image.fits"])
    os.replace(stem + "-image.fits", fits_path)
    os.replace(stem + "-residual.fits", resid_path)
    for f in [*work.glob("wsc-*"), *work.glob(Path(ms).name + "-*")]:  # its temporaries
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    return summary


def wsclean_summary(fits_paths) -> dict:
    """Iterations and major cycles of a WSClean run, from the keywords WSClean writes into
    its images (WSCMINOR, WSCMAJOR; the first of ``fits_paths`` that has them), in the form
    of :func:`_merge_summaries` (stop code -1: WSClean reports none). Hitting
    ``image.max_major_cycles`` or ``image.niter`` shows as major_cycles or iterations equal
    to the cap; {iterations: 0, major_cycles: 0} when no image carries them."""
    from astropy.io import fits

    for path in fits_paths:
        if Path(path).exists():
            h = fits.getheader(path)
            if "WSCMINOR" in h:
                return {"iterations": int(h["WSCMINOR"]), "major_cycles": int(h["WSCMAJOR"]),
                        "stop_code": -1}
    return {"iterations": 0, "major_cycles": 0, "stop_code": -1}
