"""Which calibration tables an observation gets, decided by its observation time.

Validity is by observation time only (the observation's mid-time MJD against each table's
``valid_from_mjd``/``valid_to_mjd``), never the wall clock, at the same pointing
declination (``calibrate.same_dec_tol_deg``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from engine.config import Config
from engine.constants import JD_TO_MJD
from engine.paths import verify
from engine.registry import Registry


@dataclass(frozen=True)
class Calibration:
    """The answer for one observation.

    ``wait``: no valid set exists and ``image.require_calibration`` is on: the observation
    waits (AWAITING_CALIBRATION). Otherwise ``tables`` are the paths to apply, in order
    (bandpass, gains); empty means image without calibration (``reason`` says why).
    """

    tables: tuple[str, ...] = ()
    wait: bool = False
    reason: str = ""


class CalibrationLookup:
    """Registry lookups with each table verified against its manifest once per run."""

    def __init__(self, reg: Registry, cfg: Config, stage: Path):
        self.reg, self.cfg, self.stage = reg, cfg, stage
        self._verified: set = set()

    def for_observation(self, obs: dict) -> Calibration:
        if not self.cfg.calibrate.enabled:
            return Calibration(reason="calibrate.enabled is false")
        mid = 0.5 * (obs["start_jd"] + obs["end_jd"]) - JD_TO_MJD
        sets = self.reg.valid_caltables(
            mid, obs["dec_rad"], dec_tol_rad=math.radians(self.cfg.calibrate.same_dec_tol_deg))
        if sets is None:
            if self.cfg.image.require_calibration:
                return Calibration(wait=True, reason=f"no tables valid at MJD {mid:.5f}")
            return Calibration(reason=f"no tables valid at MJD {mid:.5f}; "
                                      "image.require_calibration is false")
        paths = []
        for kind in ("bandpass", "gains"):
            t = sets[kind]
            # checked against its manifest once per run (waiting observations ask every
            # loop); the CASA task checks again that it exists and opens before applycal
            if (t["path"], t["sha256"]) not in self._verified:
                verify(t["path"], sha256=t["sha256"], size=t["size"], root=self.stage)
                self._verified.add((t["path"], t["sha256"]))
            paths.append(t["path"])
        return Calibration(tables=tuple(paths), reason=f"valid at MJD {mid:.5f}")
