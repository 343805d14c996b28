"""Calibrator catalog and transit geometry.

The catalog (``configs/calibrators.csv``) holds J2000 positions and approximate 1.4 GHz
flux densities with spectral indices (S ~ nu^alpha). Transit means the calibrator's
apparent hour angle is 0, i.e. its RA equals the meridian RA of the pointing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time

from engine.config import config_file
from engine.errors import ConfigError

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
    path = config_file(name)
    with open(path) as fh:
        rows = list(csv.DictReader(ln for ln in fh if not ln.startswith("#")))
    out = {}
    for r in rows:
        c = SkyCoord(r["ra_hms"], r["dec_dms"], unit=(u.hourangle, u.deg), frame="icrs")
        out[r["name"]] = Calibrator(r["name"], c.ra.rad, c.dec.rad,
                                    float(r["flux_jy_1400mhz"]), float(r["spectral_index"]))
    return out


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
