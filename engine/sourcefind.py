"""Source finding on an image or mosaic: PyBDSF (the engine's default) or BANE + Aegean.

Detection runs on the apparent (not primary-beam corrected) image, whose noise is close to
uniform, with the finder's own background and noise maps (BANE's, or PyBDSF's); each
component's flux densities and their errors are then divided by the primary-beam response
at its position. That is the same as finding on the corrected image with the noise map
rms / pb, without the finder seeing the edge's amplified noise as structure. Components
where the response is below ``sources.min_pb`` are dropped.

Rows (one per component): ra_deg, dec_deg (J2000), err_ra_arcsec, err_dec_arcsec,
peak_jy (Jy/beam, corrected), err_peak_jy, int_jy (Jy, corrected), err_int_jy, a_arcsec,
b_arcsec (FWHM of the fitted component), pa_deg, rms_jy (local noise of the apparent
image, Jy/beam), snr (apparent peak / rms), pb (response used).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from engine.errors import SourceFindingError
from engine.fits_headers import frequency_hz

log = logging.getLogger(__name__)

FINDERS = ("aegean", "pybdsf")


def _celestial(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdr = fits.getheader(path)
        return hdr, WCS(hdr).celestial


def _aegean(image: Path, work: Path, innerclip: float, outerclip: float) -> list[dict]:
    from AegeanTools.BANE import filter_image
    from AegeanTools.source_finder import SourceFinder

    base = str(work / image.stem)
    quiet = logging.getLogger("AegeanTools")  # its INFO lines would fill every worker's log
    quiet.setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        filter_image(str(image), base, cores=1)
        found = SourceFinder(log=quiet).find_sources_in_image(
            str(image), innerclip=innerclip, outerclip=outerclip, cores=1,
            rmsin=f"{base}_rms.fits", bkgin=f"{base}_bkg.fits", progress=False)
    return [{"ra_deg": s.ra, "dec_deg": s.dec, "err_ra_arcsec": _err(s.err_ra) * 3600,
             "err_dec_arcsec": _err(s.err_dec) * 3600, "peak_jy": s.peak_flux,
             "err_peak_jy": _err(s.err_peak_flux), "int_jy": s.int_flux,
             "err_int_jy": _err(s.err_int_flux), "a_arcsec": s.a, "b_arcsec": s.b,
             "pa_deg": s.pa, "rms_jy": s.local_rms} for s in found]


def _err(x) -> float:
    """Aegean marks an error it could not compute as -1: NaN here."""
    return float(x) if x is not None and x >= 0 else float("nan")


@contextlib.contextmanager
def _without_python_casacore():
    """PyBDSF tries ``import casacore.images`` for every image it reads; in a process that
    runs casatools that would load a second casacore (engine.casaenv: one per process). A
    None in sys.modules makes the import fail cleanly, so PyBDSF reads FITS with astropy."""
    import sys

    blocked = [m for m in ("casacore", "casacore.images") if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None
    try:
        yield
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]


@contextlib.contextmanager
def _collections_of_new_objects_only():
    """PyBDSF runs ``gc.collect()`` after each of its 16 steps. A full collection walks
    every object the process holds: in a worker that has imported casatools, astropy and
    numba that took 0.2 s each, 3.5 of the 4 s PyBDSF spent on a 128-pixel image. Freezing
    the objects that exist before the call (``gc.freeze``) leaves those collections only
    PyBDSF's own objects to walk; they are unfrozen after."""
    import gc

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _pybdsf(image: Path, work: Path, innerclip: float, outerclip: float,
            max_island_px: int | None = None) -> list[dict]:
    cat = work / f"{image.stem}.srl.fits"
    freq = frequency_hz(fits.getheader(image))
    with _without_python_casacore(), _collections_of_new_objects_only(), \
            contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its fits' overflow and maxfev warnings, per image
        import bdsf

        img = bdsf.process_image(str(image), thresh_pix=innerclip, thresh_isl=outerclip,
                                 quiet=True, ncores=1, output_opts=False, frequency=freq,
                                 maxpix_isl=max_island_px,
                                 outfile=str(work / f"{image.stem}.pybdsf.log"))
        img.write_catalog(outfile=str(cat), format="fits", catalog_type="srl", clobber=True)
    if not cat.exists():  # PyBDSF writes nothing when it finds nothing
        return []
    t = fits.getdata(cat, 1)
    return [{"ra_deg": r["RA"], "dec_deg": r["DEC"], "err_ra_arcsec": r["E_RA"] * 3600,
             "err_dec_arcsec": r["E_DEC"] * 3600, "peak_jy": r["Peak_flux"],
             "err_peak_jy": r["E_Peak_flux"], "int_jy": r["Total_flux"],
             "err_int_jy": r["E_Total_flux"], "a_arcsec": r["Maj"] * 3600,
             "b_arcsec": r["Min"] * 3600, "pa_deg": r["PA"], "rms_jy": r["Isl_rms"]}
            for r in t]


def _flat_copy(image: Path, work: Path) -> Path:
    """The image as a 2-D FITS (celestial axes, beam, frequency as RESTFRQ) in ``work``:
    both finders read a plain plane, whatever axes the imager wrote."""
    try:
        hdr, wcs = _celestial(image)
        data = np.squeeze(fits.getdata(image)).astype(np.float32)
    except (OSError, ValueError, TypeError) as exc:
        raise SourceFindingError(f"{image}: not a readable FITS image: {exc}") from exc
    if data.ndim != 2:
        raise SourceFindingError(f"{image}: not one image plane (shape {data.shape})")
    out = wcs.to_header()
    for k in ("BMAJ", "BMIN", "BPA", "BUNIT"):
        if k in hdr:
            out[k] = hdr[k]
    if not all(k in out for k in ("BMAJ", "BMIN", "BPA")):
        raise SourceFindingError(f"{image}: no restoring beam (BMAJ, BMIN, BPA) in the header")
    out["RESTFRQ"] = frequency_hz(hdr)
    path = work / f"{image.stem}.plane.fits"
    fits.PrimaryHDU(data, out).writeto(path, overwrite=True)
    return path


def find_sources(image: Path, pb: Path | None, work: Path, *, finder: str = "pybdsf",
                 innerclip: float = 5.0, outerclip: float = 3.0, min_pb: float = 0.0,
                 min_size_beam: float = 0.5, max_island_beams: float = 0.0) -> dict:
    """Components in ``image`` (FITS, Jy/beam, with BMAJ/BMIN/BPA), corrected by ``pb``
    (FITS response on the same grid; None: none). work: a folder for the finder's maps.

    innerclip: a component's peak must be at least this many local sigmas (seed); outerclip:
    its island extends down to this many. A component fitted narrower than min_size_beam
    of the restoring beam (major or minor axis) is dropped and counted. PyBDSF leaves out
    islands larger than max_island_beams restoring-beam areas (0: no limit): an island that
    size is the sidelobe pattern of a bad image, whose Gaussian fitting kept PyBDSF busy for
    over 8 minutes (a diverged full-scale clean). Aegean takes no such limit. Returns {"rows",
    "finder", "seconds", "innerclip", "outerclip", "n_narrow"}; raises SourceFindingError
    naming the image on failure."""
    if finder not in FINDERS:
        raise SourceFindingError(f"sources.finder {finder!r}: not one of {FINDERS}")
    image, work = Path(image), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    flat = _flat_copy(image, work)
    hdr = fits.getheader(flat)
    beam_px = (np.pi / (4 * np.log(2)) * hdr["BMAJ"] * hdr["BMIN"]
               / abs(hdr["CDELT1"] * hdr["CDELT2"]))
    try:
        if finder == "aegean":
            rows = _aegean(flat, work, innerclip, outerclip)
        else:
            rows = _pybdsf(flat, work, innerclip, outerclip,
                           int(max_island_beams * beam_px) if max_island_beams > 0 else None)
    except (ArithmeticError, LookupError, ValueError, TypeError, AttributeError,
            RuntimeError, OSError) as exc:  # what numerical third-party code raises
        raise SourceFindingError(f"{image}: {finder} failed: {type(exc).__name__}: {exc}") \
            from exc
    rows = [{k: float(v) for k, v in r.items()} for r in rows]
    for r in rows:
        r["snr"] = r["peak_jy"] / r["rms_jy"] if r["rms_jy"] > 0 else float("nan")
    # the sky seen through the restoring beam is never narrower than the beam: a component
    # fitted narrower than min_size_beam of it (a clean artefact, a noise streak) is no source
    bmaj, bmin = hdr["BMAJ"] * 3600, hdr["BMIN"] * 3600
    n_all = len(rows)
    rows = [r for r in rows if r["a_arcsec"] >= min_size_beam * bmaj
            and r["b_arcsec"] >= min_size_beam * bmin]
    n_narrow = n_all - len(rows)
    if pb is not None and rows:
        pdata = np.squeeze(fits.getdata(pb)).astype(float)
        _, wcs = _celestial(Path(pb))
        x, y = wcs.all_world2pix([r["ra_deg"] for r in rows], [r["dec_deg"] for r in rows], 0)
        kept = []
        for r, xi, yi in zip(rows, x, y):
            i, j = int(round(yi)), int(round(xi))
            if not (0 <= i < pdata.shape[0] and 0 <= j < pdata.shape[1]):
                continue
            resp = pdata[i, j]
            if not np.isfinite(resp) or resp <= 0 or resp < min_pb:
                continue
            for k in ("peak_jy", "err_peak_jy", "int_jy", "err_int_jy"):
                r[k] /= resp
            r["pb"] = float(resp)
            kept.append(r)
        rows = kept
    else:
        for r in rows:
            r["pb"] = 1.0
    return {"rows": rows, "finder": finder, "innerclip": innerclip, "outerclip": outerclip,
            "n_narrow": n_narrow, "seconds": time.perf_counter() - t0}
