"""Source catalogues of images and mosaics: the FITS product, and QA against the reference
catalogue (matched fraction, flux ratio, astrometric offset) that decides publication.

A reference source counts for QA when its predicted apparent peak (catalogue flux at the
image's frequency, S = S_1.4 (nu / 1.4 GHz)^alpha, times the primary-beam response) is at
least ``sources.qa_min_snr`` times the image's noise; it is matched by the nearest detection
within ``sources.match_radius_beams`` restoring-beam major axes. The flux ratio is the
detection's integrated flux density (primary-beam corrected) over the predicted one.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from engine import __version__
from engine.config import Config
from engine.errors import EngineError
from engine.fits_headers import WHERE_AND_WHEN, frequency_hz
from engine.sourcefind import find_sources

COLUMNS = (  # name, unit, description
    ("ra_deg", "deg", "J2000 right ascension"),
    ("dec_deg", "deg", "J2000 declination"),
    ("err_ra_arcsec", "arcsec", "1-sigma error of RA (on the sky)"),
    ("err_dec_arcsec", "arcsec", "1-sigma error of Dec"),
    ("peak_jy", "Jy/beam", "peak, primary-beam corrected"),
    ("err_peak_jy", "Jy/beam", "1-sigma error of peak"),
    ("int_jy", "Jy", "integrated flux density, primary-beam corrected"),
    ("err_int_jy", "Jy", "1-sigma error of int_jy"),
    ("a_arcsec", "arcsec", "fitted major axis FWHM"),
    ("b_arcsec", "arcsec", "fitted minor axis FWHM"),
    ("pa_deg", "deg", "fitted position angle, east of north"),
    ("rms_jy", "Jy/beam", "local noise of the apparent image"),
    ("snr", "", "apparent peak / local noise"),
    ("pb", "", "primary-beam response used"),
)


def write_catalogue(rows: list[dict], path: Path, *, image_hdr, product_id: str,
                    image_name: str, finder: str, cfg: Config) -> Path:
    """A FITS binary table of ``rows`` (COLUMNS), with the image's restoring beam, site
    and observing span (:data:`engine.fits_headers.WHERE_AND_WHEN`), the finder and the
    provenance in its header."""
    cols = [fits.Column(name=n, format="D", unit=u or None,
                        array=np.array([r.get(n, np.nan) for r in rows], dtype=float))
            for n, u, _ in COLUMNS]
    hdu = fits.BinTableHDU.from_columns(cols)
    h = hdu.header
    for i, (_, _, desc) in enumerate(COLUMNS, 1):
        h[f"TCOMM{i}"] = desc
    for k in ("BMAJ", "BMIN", "BPA") + WHERE_AND_WHEN:
        if k in image_hdr:
            h[k] = image_hdr[k]
    h["PRODUCT"] = product_id
    h["IMAGE"] = image_name
    h["FINDER"] = finder
    h["FREQ"] = (frequency_hz(image_hdr), "Hz")
    h["NSOURCE"] = len(rows)
    h["ENGVER"] = __version__
    h["CFGHASH"] = cfg.digest()
    hdu.writeto(path)
    return Path(path)


def read_catalogue(path: Path) -> list[dict]:
    """The rows of a catalogue written by ``write_catalogue``."""
    with fits.open(path) as h:
        t = h[1].data
        return [{n: float(r[n]) for n, _, _ in COLUMNS} for r in t]


def _sep_deg(ra1, dec1, ra2, dec2):
    """Great-circle separation (deg) between arrays of positions (deg), broadcasting."""
    r1, d1, r2, d2 = (np.deg2rad(np.asarray(x, float)) for x in (ra1, dec1, ra2, dec2))
    s = (np.sin((d2 - d1) / 2) ** 2
         + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2)
    return np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1))))


def reference_qa(rows: list[dict], image: Path, pb: Path | None, reference,
                 cfg: Config) -> dict:
    """QA of a catalogue against ``reference`` (objects with name, ra_rad, dec_rad,
    flux_at(freq_hz)). ``image``: the FITS the catalogue came from (noise, beam, frequency,
    footprint); ``pb``: its primary-beam response (None: already corrected, response 1).

    Returns {"n_found", "n_expected", "n_matched", "matched_fraction", "flux_ratio",
    "flux_ratio_scatter" (1.4826 MAD), "offset_arcsec", "offset_beams" (medians), "judged"
    (enough matches to decide), "passes", "reason"}."""
    sc = cfg.sources
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdr = fits.getheader(image)
        wcs = WCS(hdr).celestial
    data = np.squeeze(fits.getdata(image)).astype(float)
    resp = np.squeeze(fits.getdata(pb)).astype(float) if pb is not None else None
    finite = data[np.isfinite(data)]
    rms = float(1.4826 * np.median(np.abs(finite - np.median(finite)))) if finite.size else 0.
    bmaj = float(hdr.get("BMAJ", np.nan))
    freq = frequency_hz(hdr)
    ref = list(reference)
    out = {"n_found": len(rows), "n_expected": 0, "n_matched": 0, "matched_fraction": None,
           "flux_ratio": None, "flux_ratio_scatter": None, "offset_arcsec": None,
           "offset_beams": None, "rms_jy": rms, "judged": False, "passes": True,
           "reason": ""}
    if not ref or not np.isfinite(bmaj) or rms <= 0:
        out["reason"] = "no reference sources, beam or noise to compare with"
        return out
    ra = np.rad2deg([s.ra_rad for s in ref])
    dec = np.rad2deg([s.dec_rad for s in ref])
    x, y = wcs.all_world2pix(ra, dec, 0)
    ny, nx = data.shape
    expected = []
    for k, (xi, yi) in enumerate(zip(x, y)):
        if not (np.isfinite(xi) and np.isfinite(yi)):
            continue
        i, j = int(round(yi)), int(round(xi))
        if not (0 <= i < ny and 0 <= j < nx) or not np.isfinite(data[i, j]):
            continue
        r = 1.0 if resp is None else float(resp[i, j])
        if not np.isfinite(r) or r < sc.min_pb:
            continue
        s = float(ref[k].flux_at(freq))
        if s * r >= sc.qa_min_snr * rms:
            expected.append((k, s))
    out["n_expected"] = len(expected)
    if not expected:
        out["reason"] = f"no reference source predicted above {sc.qa_min_snr} sigma"
        return out
    radius = sc.match_radius_beams * bmaj
    used = set()
    ratios, offsets = [], []
    for k, s in sorted(expected, key=lambda e: -e[1]):  # brightest claims first
        if not rows:
            break
        sep = _sep_deg(ra[k], dec[k], [r["ra_deg"] for r in rows], [r["dec_deg"] for r in rows])
        for j in np.argsort(sep):
            if sep[j] > radius:
                break
            if j not in used:
                used.add(j)
                ratios.append(rows[j]["int_jy"] / s)
                offsets.append(sep[j] * 3600)
                break
    n = len(ratios)
    out["n_matched"] = n
    out["matched_fraction"] = n / len(expected)
    if n:
        rr = np.asarray(ratios)
        out["flux_ratio"] = float(np.median(rr))
        out["flux_ratio_scatter"] = float(1.4826 * np.median(np.abs(rr - np.median(rr))))
        out["offset_arcsec"] = float(np.median(offsets))
        out["offset_beams"] = out["offset_arcsec"] / (bmaj * 3600)
    if n < sc.qa_min_matches:
        out["reason"] = f"{n} matched reference sources (< {sc.qa_min_matches}): not judged"
        return out
    out["judged"] = True
    fr, off = out["flux_ratio"], out["offset_beams"]
    if not sc.qa_flux_ratio_min <= fr <= sc.qa_flux_ratio_max:
        out["passes"] = False
        out["reason"] = (f"median flux ratio {fr:.3f} against the reference catalogue outside "
                         f"[{sc.qa_flux_ratio_min}, {sc.qa_flux_ratio_max}] ({n} sources)")
    elif off > sc.qa_max_offset_beams:
        out["passes"] = False
        out["reason"] = (f"median offset from the reference catalogue {off:.2f} beams > "
                         f"{sc.qa_max_offset_beams} ({n} sources)")
    else:
        out["reason"] = (f"flux ratio {fr:.3f}, offset {off:.3f} beams, {n}/{len(expected)} "
                         "reference sources matched")
    return out


def catalogue_product(image: Path, pb: Path | None, work: Path, out_path: Path, *,
                      product_id: str, cfg: Config) -> dict:
    """Find sources in ``image``, write the catalogue to ``out_path`` and QA it against the
    reference catalogue (``engine.photometry.catalogue``). Returns {"n", "n_narrow",
    "finder", "seconds", "qa"}; raises SourceFindingError (the image stands, the caller records it).
    """
    from engine.photometry import catalogue

    t0 = time.perf_counter()
    sc = cfg.sources
    found = find_sources(image, pb, work, finder=sc.finder, innerclip=sc.innerclip,
                         outerclip=sc.outerclip, min_pb=sc.min_pb if pb is not None else 0.0,
                         min_size_beam=sc.min_size_beam,
                         max_island_beams=sc.max_island_beams)
    write_catalogue(found["rows"], out_path, image_hdr=fits.getheader(image),
                    product_id=product_id, image_name=Path(image).name, finder=sc.finder,
                    cfg=cfg)
    try:
        qa = reference_qa(found["rows"], image, pb, catalogue(cfg), cfg)
    except EngineError as exc:  # an unreadable reference catalogue: recorded, not judged
        qa = {"n_found": len(found["rows"]), "judged": False, "passes": True,
              "reason": f"no reference QA: {exc}"}
    return {"n": len(found["rows"]), "n_narrow": found["n_narrow"], "finder": sc.finder,
            "qa": qa, "seconds": time.perf_counter() - t0}


def iau_name(ra_deg: float, dec_deg: float) -> str:
    """'DSA Jhhmmss.s+ddmmss' (J2000, truncated as IAU names are)."""
    ra = (ra_deg % 360.0) / 15.0
    h = int(ra)
    m = int((ra - h) * 60)
    s = int(((ra - h) * 60 - m) * 600) / 10
    sign = "+" if dec_deg >= 0 else "-"
    d = abs(dec_deg)
    dd = int(d)
    dm = int((d - dd) * 60)
    ds = int(((d - dd) * 60 - dm) * 60)
    return f"DSA J{h:02d}{m:02d}{s:04.1f}{sign}{dd:02d}{dm:02d}{ds:02d}"


def new_detections(rows: list[dict], known: list[tuple[float, float]], *, radius_deg: float,
                   min_snr: float, min_pb: float, obs_id: str) -> list[dict]:
    """Detections of one image that no known source (reference catalogue or found before;
    (ra_deg, dec_deg)) explains within ``radius_deg``: S/N >= min_snr, primary-beam
    response >= min_pb, each at most once (the brightest of a group within radius_deg).
    Returns new-source rows: name (``iau_name``), ra_deg, dec_deg, first_obs_id,
    first_snr, first_flux_jy."""
    pos = [tuple(k) for k in known]
    out = []
    for r in sorted(rows, key=lambda r: -r["snr"]):
        if not (r["snr"] >= min_snr and r.get("pb", 1.0) >= min_pb):
            continue
        if pos and _sep_deg(r["ra_deg"], r["dec_deg"], *np.array(pos).T).min() <= radius_deg:
            continue
        pos.append((r["ra_deg"], r["dec_deg"]))
        out.append({"name": iau_name(r["ra_deg"], r["dec_deg"]), "ra_deg": r["ra_deg"],
                    "dec_deg": r["dec_deg"], "first_obs_id": obs_id, "first_snr": r["snr"],
                    "first_flux_jy": r["int_jy"]})
    return out
