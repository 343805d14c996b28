"""Where, when and at which frequency: the cards every published FITS product carries.

An image's header says where the telescope was (``OBSGEO-X/Y/Z``: ITRF geocentric
metres, FITS WCS Paper III), when it observed (``DATE-OBS``/``DATE-END``: ISO 8601 UTC,
first integration's start and last integration's end; ``MJD-OBS``/``MJD-END`` the same as
MJD; ``DATE-AVG``/``MJD-AVG`` the middle; ``TIMESYS = 'UTC'``; WCS Paper VII) and at which
frequency. The engine writes them itself rather than trusting the imagers': CASA's
``exportfits`` wrote the observatory ``OVRO_MMA``'s longitude, latitude and height (1188 m)
as the spherical coordinates of a geocentric vector (OBSGEO 1188 m from the Earth's
centre), and WSClean writes no OBSGEO.

A mosaic takes its members': it starts with the first member's start and ends with the
last member's end.
"""

from __future__ import annotations

import numpy as np
from astropy.time import Time

from engine.telescope import Telescope


BAND_CENTRE_HZ = 1.405e9  # DSA-110's band centre, for an image that names no frequency
OBSGEO = ("OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z")
# the cards a product derived from an image (its source catalogue) carries over
WHERE_AND_WHEN = OBSGEO + ("DATE-OBS", "DATE-END", "DATE-AVG", "MJD-OBS", "MJD-END",
                           "MJD-AVG", "TIMESYS", "TELESCOP")
# what an imager may have written about the site that the OBSGEO-X/Y/Z cards replace
_OTHER_SITE_CARDS = ("OBSGEO-L", "OBSGEO-B", "OBSGEO-H")


def site_cards(cfg) -> dict:
    """OBSGEO-X/Y/Z (m, ITRF geocentric) of ``site.*`` (WGS84 longitude, latitude, height):
    the array reference position the engine phases and computes LST with."""
    return dict(zip(OBSGEO, map(float, Telescope(cfg).site_ecef)))


def time_cards(start_mjd: float, end_mjd: float, avg_mjd: float | None = None) -> dict:
    """DATE-OBS/DATE-END/DATE-AVG (ISO 8601, UTC), MJD-OBS/MJD-END/MJD-AVG (d) and TIMESYS
    of a span; its average time is its middle unless ``avg_mjd`` says otherwise (a drift
    scan sees its sky at the middle of the span: the time a light curve point carries)."""
    avg = (start_mjd + end_mjd) / 2 if avg_mjd is None else avg_mjd
    iso = {k: Time(v, format="mjd", scale="utc").isot
           for k, v in (("OBS", start_mjd), ("END", end_mjd), ("AVG", avg))}
    return {"DATE-OBS": iso["OBS"], "DATE-END": iso["END"], "DATE-AVG": iso["AVG"],
            "MJD-OBS": float(start_mjd), "MJD-END": float(end_mjd), "MJD-AVG": float(avg),
            "TIMESYS": "UTC"}


def frequency_hz(hdr) -> float:
    """The image's frequency (Hz) from a FREQ axis or RESTFRQ; the band centre if neither."""
    for i in range(1, int(hdr.get("NAXIS", 0)) + 1):
        if str(hdr.get(f"CTYPE{i}", "")).startswith("FREQ"):
            return float(hdr[f"CRVAL{i}"])
    return float(hdr.get("RESTFRQ", hdr.get("RESTFREQ", BAND_CENTRE_HZ)))


def _mjd(hdr, key: str) -> float | None:
    """MJD of the header's ``MJD-<key>`` card, or of its ``DATE-<key>`` (UTC); None when
    it has neither or they do not parse (an old product's header)."""
    try:
        if f"MJD-{key}" in hdr:
            return float(hdr[f"MJD-{key}"])
        if f"DATE-{key}" in hdr:
            return float(Time(hdr[f"DATE-{key}"], format="isot", scale="utc").mjd)
    except (TypeError, ValueError):
        pass
    return None


def mosaic_cards(member_headers: list, cfg) -> dict:
    """The cards of a mosaic of images with these headers: the site; the span from the
    earliest member's start to the latest member's end, its average time the mean of the
    members' middles (DATE-END and DATE-AVG only when every member has an end); TELESCOP
    when the members agree; RESTFRQ (Hz), the members' mean frequency (the engine's
    convention for a plane without a FREQ axis, read by :func:`frequency_hz`)."""
    cards = site_cards(cfg)
    starts = [_mjd(h, "OBS") for h in member_headers]
    ends = [_mjd(h, "END") for h in member_headers]
    if starts and all(s is not None for s in starts):
        t0 = min(starts)
        if all(e is not None for e in ends):
            mid = float(np.mean([(s + e) / 2 for s, e in zip(starts, ends)]))
            cards.update(time_cards(t0, max(ends), mid))
        else:
            cards.update({"DATE-OBS": Time(t0, format="mjd", scale="utc").isot,
                          "MJD-OBS": t0, "TIMESYS": "UTC"})
    scopes = {h.get("TELESCOP") for h in member_headers}
    if len(scopes) == 1 and None not in scopes:
        cards["TELESCOP"] = scopes.pop()
    if member_headers:
        cards["RESTFRQ"] = float(np.mean([frequency_hz(h) for h in member_headers]))
    return cards


def stamp(header, cards: dict) -> None:
    """Set ``cards`` in ``header`` (an astropy Header), dropping the imager's other
    geodetic site cards when OBSGEO-X/Y/Z are set (they would disagree)."""
    if OBSGEO[0] in cards:
        for k in _OTHER_SITE_CARDS:
            header.remove(k, ignore_missing=True, remove_all=True)
    for k, v in cards.items():
        header[k] = v
