"""The DSA-110 model: site, stations, the antennas that carry data, band layout, primary beam.

Everything comes from the configuration, so one reference position is used for LST,
phasing and the Measurement Set's ANTENNA table alike.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation
from scipy.special import j1

from engine.config import Config, config_file
from engine.constants import C_M_S
from engine.errors import ConfigError


def parse_ranges(text: str) -> list[int]:
    """``"1-3,7"`` -> ``[1, 2, 3, 7]`` (station numbers, 1-based)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise ConfigError(f"array.data_stations: {part!r} is not a number or range") from None
    return out


@dataclass(frozen=True)
class Station:
    number: int  # 1-based, as in the station name DSA-NNN
    name: str
    lat_deg: float
    lon_deg: float
    height_m: float


class Telescope:
    """DSA-110 geometry and band from a :class:`~engine.config.Config`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.name = cfg.site.casa_name
        self.dish_diameter_m = cfg.array.dish_diameter_m

    @cached_property
    def location(self) -> EarthLocation:
        s = self.cfg.site
        return EarthLocation.from_geodetic(s.longitude_deg * u.deg, s.latitude_deg * u.deg,
                                           s.height_m * u.m)

    @cached_property
    def stations(self) -> list[Station]:
        path = config_file(self.cfg.array.stations_csv)
        rows = []
        with open(path) as fh:
            lines = [ln for ln in fh if not ln.startswith("#")]
        for rec in csv.DictReader(lines):
            name = rec["station"].strip()
            elev = rec["elevation_m"].strip()
            rows.append(Station(int(name.split("-")[-1]), name, float(rec["latitude_deg"]),
                                float(rec["longitude_deg"]),
                                float(elev) if elev else self.cfg.array.default_elevation_m))
        return rows

    @cached_property
    def station_ecef(self) -> np.ndarray:
        """Geocentric ITRF (x, y, z) of every station, shape (Nants_telescope, 3), metres."""
        st = self.stations
        loc = EarthLocation.from_geodetic([s.lon_deg for s in st] * u.deg,
                                          [s.lat_deg for s in st] * u.deg,
                                          [s.height_m for s in st] * u.m)
        return np.stack([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)], axis=1)

    @cached_property
    def site_ecef(self) -> np.ndarray:
        loc = self.location
        return np.array([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)])

    @cached_property
    def data_station_numbers(self) -> list[int]:
        nums = parse_ranges(self.cfg.array.data_stations)
        known = {s.number for s in self.stations}
        bad = [n for n in nums if n not in known]
        if bad or len(set(nums)) != len(nums):
            raise ConfigError(f"array.data_stations: unknown or repeated stations {bad or nums}")
        return nums

    def antenna_subset(self, nants: int) -> list[int]:
        """``nants`` data stations spread evenly over the data list (whole array extent)."""
        nums = self.data_station_numbers
        if nants > len(nums):
            raise ConfigError(f"sim.nants = {nants} exceeds the {len(nums)} data stations")
        idx = np.unique(np.round(np.linspace(0, len(nums) - 1, nants)).astype(int))
        return [nums[i] for i in idx]

    def subband_freqs_hz(self, sb: int, nchan: int | None = None) -> np.ndarray:
        """Channel centres of subband ``sb`` as the correlator writes them (descending), Hz.

        With ``nchan`` smaller than the configured channels per subband, the subband keeps
        its full bandwidth with wider channels (used by small simulations).
        """
        b = self.cfg.band
        full = b.nchan_per_subband
        nchan = nchan or full
        width = b.channel_width_hz * full / nchan
        first_edge = b.top_freq_hz - b.channel_width_hz / 2 + sb * full * b.channel_width_hz
        return first_edge + width * (np.arange(nchan) + 0.5)

    def channel_width_for(self, nchan: int) -> float:
        b = self.cfg.band
        return b.channel_width_hz * b.nchan_per_subband / nchan


def airy_beam(sin_theta, freq_hz, dish_diameter_m: float):
    """Airy power pattern (2 J1(x) / x)^2 with x = pi D sin(theta) / lambda.

    ``sin_theta`` and ``freq_hz`` broadcast against each other. Returns values in [0, 1],
    1 on axis. FWHM is about 1.03 lambda / D (2.7 deg for D = 4.65 m at 1.4 GHz).
    """
    x = np.pi * dish_diameter_m * np.asarray(sin_theta) * np.asarray(freq_hz) / C_M_S
    x = np.where(np.abs(x) < 1e-12, 1e-12, x)
    return (2.0 * j1(x) / x) ** 2


def primary_beam(sin_theta, freq_hz, cfg: Config):
    """The telescope's primary-beam power response, 1 on axis.

    The one beam model of the engine (calibrator models, primary-beam images, mosaics):
    today the Airy pattern of ``array.dish_diameter_m``; a measured beam replaces it here.
    ``sin_theta`` (sine of the angle from the pointing centre) and ``freq_hz`` broadcast.
    """
    return airy_beam(sin_theta, freq_hz, cfg.array.dish_diameter_m)
