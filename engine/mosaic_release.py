"""Which 10-observation windows may become a mosaic now, checked member by member on disk.

Windows are planned by the rule of :mod:`engine.windows` (only over final fates). A window
is released only once every member's image task has resolved and been recorded
(state imaged or mosaicked) AND each member's image and primary beam match their manifests
(exists, size, sha256) and open as FITS. A window with a member that fails the check is
recorded as failed with the reason instead (a later run plans it again).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from engine import windows
from engine.config import Config
from engine.errors import EngineError, StaleProductError
from engine.paths import verify
from engine.registry import Registry
from engine.run_state import Areas
from engine.states import MosaicState

log = logging.getLogger(__name__)


class MosaicRelease:
    """The driver's view of the mosaic windows; only the driver's registry is written."""

    def __init__(self, reg: Registry, cfg: Config, areas: Areas):
        self.reg, self.cfg, self.areas = reg, cfg, areas
        self._fingerprint = None
        # a following driver: a hole in time is a boundary only once the observation after
        # it has waited discover.incomplete_wait_s (a late observation may still fill it);
        # a batch run takes the folder as it is
        self.following = False

    def closed(self, now: float):
        """``closed(row)`` for :func:`engine.windows.plan` (None: incomplete is final)."""
        if not self.following:
            return None
        wait = self.cfg.discover.incomplete_wait_s
        return lambda row: windows.incomplete_closed(row, now, wait)

    def settled(self, now: float):
        """``settled(row)`` for :func:`engine.windows.plan` (None: every hole is settled)."""
        if not self.following:
            return None
        wait = self.cfg.discover.incomplete_wait_s
        return lambda row: now - (row.get("first_seen_at") or now) >= wait

    def ready(self, busy: set) -> tuple[list, dict]:
        """``([(window, member inputs)], {mosaic_id: reason not released})``.

        ``busy``: mosaic IDs with a task in flight. Planning reads every observation (0.3 s
        for a year's registry), so it runs only when an observation or mosaic row changed.
        """
        now = time.time()
        # a following driver also re-plans once a minute: holes settle with time alone
        fp = (self.reg.change_marker(), frozenset(busy), self.following and int(now // 60))
        if fp == self._fingerprint:
            return [], {}
        self._fingerprint = fp
        rows = self.reg.observation_summaries()
        released, failed = [], {}
        for win, members in windows.plan(rows, **self.rule(now)):
            row = self.reg.get("mosaics", win.mosaic_id)
            if win.mosaic_id in busy or (row and row["state"] != MosaicState.PLANNED) \
                    or not windows.ready(members):
                continue
            if row is None:
                self.reg.plan_mosaic(win)
            try:
                released.append((win, [self.verified_member(o) for o in win.members]))
            except EngineError as exc:
                self.reg.fail_mosaic(win.mosaic_id, f"not released: {exc}")
                failed[win.mosaic_id] = str(exc)
                log.error("mosaic %s not released: %s", win.mosaic_id, exc)
        return released, failed

    def look_again(self):
        """Plan again on the next call even if nothing changed (a window held back)."""
        self._fingerprint = None

    def rule(self, now: float | None = None) -> dict:
        """The keyword arguments of :func:`engine.windows.plan` from the configuration."""
        return dict(windows.config_rule(self.cfg),
                    max_attempts=self.cfg.driver.max_attempts,
                    settled=self.settled(time.time() if now is None else now),
                    closed=self.closed(time.time() if now is None else now))

    def open(self) -> list[dict]:
        """Windows not mosaicked and published yet: planned ones (their mosaic's state) and
        open ones (:func:`engine.windows.open_windows`: what each waits for)."""
        out = []
        for row in self.reg.rows("mosaics", MosaicState.PLANNED, MosaicState.MOSAICKING,
                                 MosaicState.MOSAICKED, MosaicState.FAILED,
                                 order_by="start_jd"):
            members = json.loads(row["members"])
            out.append({"mosaic_id": row["mosaic_id"], "first": members[0],
                        "last": members[-1], "state": row["state"],
                        "waiting_for": [], "error": row.get("error")})
        for win, waits in windows.open_windows(self.reg.observation_summaries(),
                                               **self.rule()):
            out.append({"mosaic_id": win.mosaic_id, "first": win.members[0],
                        "last": win.members[-1], "state": "open",
                        "waiting_for": [f"{o} ({s})" for o, s in waits]
                        or ["a hole in time to settle"]})
        return out

    def held_open(self) -> set:
        """obs_ids that windows not yet published hold (retention keeps their MSs)."""
        held = set()
        for row in self.reg.rows("mosaics", MosaicState.PLANNED, MosaicState.MOSAICKING,
                                 MosaicState.MOSAICKED, MosaicState.FAILED):
            held.update(json.loads(row["members"]))
        for win, _ in windows.open_windows(self.reg.observation_summaries(), **self.rule()):
            held.update(win.members)
        return held

    def verified_member(self, obs_id: str) -> dict:
        """One member's image and primary beam, checked against the registry and opened."""
        img = self.reg.get("images", obs_id)
        if img is None:
            raise StaleProductError(f"{obs_id}: no image recorded")
        root = (self.areas.products if Path(img["path"]).resolve().is_relative_to(
            self.areas.products.resolve()) else self.areas.stage)
        p = verify(img["path"], sha256=img["sha256"], size=img["size"], root=root)
        pb = verify(img["pb_path"], sha256=img["pb_sha256"], size=img["pb_size"], root=root)
        from astropy.io import fits

        res = None
        if img.get("residual_path"):
            res = verify(img["residual_path"], sha256=img["residual_sha256"],
                         size=img["residual_size"], root=root)
        for f in (p, pb) + ((res,) if res else ()):
            try:
                fits.getheader(f)
            except (OSError, ValueError) as exc:
                raise StaleProductError(f"{f}: FITS does not open ({exc})") from None
        qa = json.loads(img["qa"])
        return {"obs_id": obs_id, "image": str(p), "pb": str(pb),
                "residual": str(res) if res else None,
                "rms": qa.get("residual_rms_jy") or qa.get("rms_jy"),
                "thermal_jy": qa.get("thermal_jy")}
