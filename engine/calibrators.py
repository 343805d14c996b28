"""Calibrator catalog and transit geometry.

The catalog (``configs/calibrators.csv``) holds J2000 positions and approximate 1.4 GHz
flux densities with spectral indices (S ~ nu^alpha). Transit means the calibrator's
apparent hour angle is 0, i.e. its RA equals the meridian RA of the pointing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time

from engine import iers_cache
from engine.config import config_file
from engine.errors import ConfigError

iers_cache.install()  # the Earth-orientation table from the per-machine cache

SIDEREAL_DAY_S = 86164.0905


@dataclass(frozen=True)
class Calibrator:
    name: str
    ra_rad: float  # J2000
    dec_rad: float
    flux_jy: float  # at 1.4 GHz
    spectral_index: float

    def flux_at(self, freq_hz):
        return self.flux_jy * (np.asarray(freq_hz) / 1.4e9) ** self.spectral_index


def load_catalog(name: str = "calibrators.csv") -> dict[str, Calibrator]:
    """Point sources from a catalogue CSV (lines starting with ``#`` are comments).

    Columns: ``name``; the J2000 position either as ``ra_deg,dec_deg`` or as
    ``ra_hms,dec_dms`` (sexagesimal); the 1.4 GHz flux density as ``flux_jy`` or
    ``flux_jy_1400mhz`` (Jy); ``spectral_index`` (alpha, S ~ nu^alpha). The calibrator
    catalogue and a reference catalogue of field sources share this format.
    """
    path = config_file(name)
    try:
        with open(path) as fh:
            rows = list(csv.DictReader(ln for ln in fh if not ln.startswith("#")))
    except OSError as exc:
        raise ConfigError(f"catalogue {path}: {exc.strerror}") from None
    out = {}
    for i, r in enumerate(rows, 1):
        try:
            if r.get("ra_deg") not in (None, ""):
                ra, dec = np.deg2rad(float(r["ra_deg"])), np.deg2rad(float(r["dec_deg"]))
            else:
                c = SkyCoord(r["ra_hms"], r["dec_dms"], unit=(u.hourangle, u.deg), frame="icrs")
                ra, dec = c.ra.rad, c.dec.rad
            flux = float(r["flux_jy"] if r.get("flux_jy") not in (None, "")
                         else r["flux_jy_1400mhz"])
            out[r["name"]] = Calibrator(r["name"], float(ra), float(dec), flux,
                                        float(r["spectral_index"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"catalogue {path}, row {i}: {exc!r} (columns: name, ra_deg, "
                              "dec_deg or ra_hms, dec_dms, flux_jy, spectral_index)") from None
    return out


def write_catalog(path, sources, *, comment: str = "") -> None:
    """Write point sources (objects with name, ra_rad, dec_rad, flux_jy, spectral_index)
    in the catalogue format :func:`load_catalog` reads (degrees, 1.4 GHz Jy)."""
    lines = [f"# {comment}\n" if comment else "",
             "# J2000 positions (deg), flux density at 1.4 GHz (Jy), S ~ nu^alpha\n",
             "name,ra_deg,dec_deg,flux_jy,spectral_index\n"]
    for s in sources:
        lines.append(f"{s.name},{np.rad2deg(s.ra_rad):.8f},{np.rad2deg(s.dec_rad):.8f},"
                     f"{s.flux_jy:.6g},{s.spectral_index:.4f}\n")
    Path(path).write_text("".join(lines))


def get(name: str) -> Calibrator:
    cat = load_catalog()
    if name not in cat:
        raise ConfigError(f"calibrator {name!r} is not in the catalog ({', '.join(cat)})")
    return cat[name]


def hour_angle_dec(cal: Calibrator, times_jd, location):
    """Apparent topocentric hour angle (rad, wrapped to [-pi, pi)) and declination (rad)."""
    t = Time(np.atleast_1d(times_jd), format="jd", scale="utc")
    hd = SkyCoord(cal.ra_rad * u.rad, cal.dec_rad * u.rad).transform_to(
        HADec(obstime=t, location=location))
    ha = (hd.ha.rad + np.pi) % (2 * np.pi) - np.pi
    return ha, hd.dec.rad


def next_transit_jd(cal: Calibrator, after_jd: float, location) -> float:
    """First time at or after ``after_jd`` when the calibrator's apparent HA is 0."""
    t = after_jd
    for _ in range(6):
        ha, _ = hour_angle_dec(cal, [t], location)
        dt = -ha[0] / (2 * np.pi) * SIDEREAL_DAY_S / 86400.0
        t += dt
    if t < after_jd - 1e-6:
        t += SIDEREAL_DAY_S / 86400.0
        return next_transit_jd(cal, t - 0.01, location)
    return t
