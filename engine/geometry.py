"""Per-integration sky geometry with astropy/erfa (the per-baseline work is in kernels/).

All directions are unit vectors in the Earth-fixed ITRF frame, topocentric at the array
reference position, so baselines (ITRF metre differences) project onto them directly.
Times are Julian Dates (UTC), angles radians unless a name says otherwise.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import HADec, ITRS, SkyCoord
from astropy.time import Time

from engine import iers_cache

# the Earth-orientation table from the per-machine cache, before any transform needs it
iers_cache.install()

# A small offset to find the local direction of celestial north (rad, 1 arcsec: the
# position angle error it introduces is below 1e-10 rad).
_NORTH_STEP = 4.8e-6


def _itrs_unit(coord: SkyCoord, times: Time, location) -> np.ndarray:
    itrs = coord.transform_to(ITRS(obstime=times, location=location))
    xyz = np.moveaxis(itrs.cartesian.xyz.value, 0, -1)
    return xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)


def meridian_icrs(times_jd, dec_app_rad, location):
    """ICRS (J2000) position of the apparent meridian point (HA = 0, dec) at each time.

    Parameters
    ----------
    times_jd : (Ntimes,) float, JD UTC
    dec_app_rad : float
        Apparent topocentric declination of the pointing (the file's ``phase_center_dec``).
    location : astropy EarthLocation

    Returns
    -------
    ra, dec : (Ntimes,) float, radians (ICRS)
    """
    t = Time(np.atleast_1d(times_jd), format="jd", scale="utc")
    hd = SkyCoord(HADec(ha=np.zeros(t.size) * u.rad, dec=np.full(t.size, dec_app_rad) * u.rad,
                        obstime=t, location=location))
    icrs = hd.icrs
    return icrs.ra.rad, icrs.dec.rad


def meridian_itrs(times_jd, dec_app_rad, location) -> np.ndarray:
    """ITRF unit vectors of the apparent meridian point (HA = 0, dec): (Ntimes, 3)."""
    t = Time(np.atleast_1d(times_jd), format="jd", scale="utc")
    hd = SkyCoord(HADec(ha=np.zeros(t.size) * u.rad, dec=np.full(t.size, dec_app_rad) * u.rad,
                        obstime=t, location=location))
    return _itrs_unit(hd, t, location)


def icrs_itrs(ra_rad, dec_rad, times_jd, location) -> np.ndarray:
    """ITRF unit vectors of ICRS positions as seen at each time.

    ``ra_rad``/``dec_rad`` broadcast against ``times_jd``; result shape (..., 3). Includes
    precession, nutation, Earth rotation, polar motion and aberration (astropy's ICRS ->
    topocentric ITRS), i.e. the direction the correlator's delays point at.
    """
    ra, dec, jd = np.broadcast_arrays(np.asarray(ra_rad, float), np.asarray(dec_rad, float),
                                      np.asarray(times_jd, float))
    t = Time(jd, format="jd", scale="utc")
    c = SkyCoord(ra=ra * u.rad, dec=dec * u.rad, frame="icrs")
    return _itrs_unit(c, t, location)


def uvw_frames(ra_rad, dec_rad, times_jd, location) -> np.ndarray:
    """Rotation matrices from ITRF baselines to (u, v, w) of a J2000 phase centre.

    Parameters
    ----------
    ra_rad, dec_rad : float or (Ntimes,) float
        ICRS phase centre (one per integration in meridian phasing).
    times_jd : (Ntimes,) float, JD UTC

    Returns
    -------
    (Ntimes, 3, 3) float64
        Rows are u (east), v (north, towards the J2000 pole), w (towards the apparent
        phase centre), in ITRF. ``uvw = R @ baseline_itrf``.
    """
    times = np.atleast_1d(np.asarray(times_jd, dtype=float))
    ra = np.broadcast_to(np.asarray(ra_rad, float), times.shape)
    dec = np.broadcast_to(np.asarray(dec_rad, float), times.shape)
    both_t = np.concatenate([times, times])
    both = icrs_itrs(np.concatenate([ra, ra]), np.concatenate([dec, dec + _NORTH_STEP]),
                     both_t, location)
    w, north = both[: times.size], both[times.size:]
    v = north - np.sum(north * w, axis=1, keepdims=True) * w
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    uu = np.cross(v, w)
    return np.stack([uu, v, w], axis=1)


def lst_rad(times_jd, location) -> np.ndarray:
    """Apparent local sidereal time at each JD (radians)."""
    t = Time(np.atleast_1d(times_jd), format="jd", scale="utc", location=location)
    return t.sidereal_time("apparent").rad
