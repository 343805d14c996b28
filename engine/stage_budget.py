"""The stage area against its budget (``driver.stage_budget_gb``): how full it is, whether
the driver may take another observation (backpressure), and retention of Measurement Sets
no longer needed.

What lives in stage: each observation's folder (its MS, subband blocks while converting,
calibration tables of a calibrator transit, image work while imaging) and mosaic work.
Observations waiting for a calibrator hold their MSs there, so they count against the
budget like everything else.

Retention (only with a budget, and only when the next observation does not fit): MSs kept
by ``publish.keep_ms`` are removed once their image is published, oldest first, those no
open mosaic window (:func:`engine.windows.open_windows`) holds before those it holds (a
mosaic needs its members' images, not their MSs); each removal is recorded after it
happened. If the stage is still too full for the next observation, the
driver takes none until it is not (backpressure), and ``status`` says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from engine.config import Config
from engine.errors import StorageError
from engine.paths import confine
from engine.registry import Registry
from engine.states import ObsState, ProductState

log = logging.getLogger(__name__)

MS_PER_INPUT_BYTE = 4.0  # stage bytes per input byte before any is measured: the MS's DATA,
# MODEL and CORRECTED columns, and image work
# a mosaic's work in stage per output pixel: float32 mosaic and weight maps, and residual
# and thermal maps when every member has a residual and a thermal estimate; plus its
# catalogue and PNG (under 10 %)
MOSAIC_BYTES_PER_PIXEL = 8.8
MOSAIC_NOISE_BYTES_PER_PIXEL = 8.8


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 if it is gone); races with a task that
    removes files meanwhile are ignored."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


# an observation in these states may still convert from its subband blocks in stage
CONVERTS_AGAIN = (ObsState.DISCOVERED, ObsState.INCOMPLETE, ObsState.COMPLETE,
                  ObsState.CONVERTING, ObsState.FAILED)


def sweep_subband_stores(reg: Registry, stage: Path) -> list[str]:
    """Remove ``<obs>/<obs>.zarr`` subband stores of observations past conversion (left by
    a conversion that ended in quarantine, or by a driver killed before the store's
    removal) and of observations the registry does not know; returns the obs_ids swept.
    Run at a driver's start, when no conversion is in flight. Scratch, not a product:
    logged, not recorded."""
    swept = []
    for store in sorted(Path(stage).glob("*/*.zarr")):
        obs_id = store.parent.name
        row = reg.get("observations", obs_id)
        if store.name != f"{obs_id}.zarr" or (row and row["state"] in CONVERTS_AGAIN):
            continue
        shutil.rmtree(store, ignore_errors=True)
        swept.append(obs_id)
    if swept:
        log.info("removed the subband blocks of %d observation(s) past conversion: %s",
                 len(swept), ", ".join(swept))
    return swept


class StageBudget:
    """The stage area's usage, measured on disk.

    Each top-level folder's largest size is sampled by a background thread every
    ``sample_s`` seconds while the driver runs (``start``), so the short-lived peaks of a
    conversion (subband blocks beside the MS) and of imaging (CASA's work images) are seen;
    an observation in flight is counted at that peak (``committed``)."""

    def __init__(self, reg: Registry, cfg: Config, stage: Path, *, sample_s: float = 0.5):
        self.reg, self.cfg, self.stage = reg, cfg, Path(stage)
        self.budget = int(cfg.driver.stage_budget_gb * 1e9)
        self.sample_s = sample_s
        self._by_dir, self._peak = {}, {}
        self._lock = threading.Lock()
        self._gen = self._applied = 0  # a sample started earlier never overwrites a later one
        self._tracked = set()  # conversions this driver started: their peaks are whole
        self._ratio = (-1e18, None)  # (when computed, value)
        self._stop = threading.Event()
        self._thread = None
        self.blocked_since: float | None = None
        self.mosaics_in_flight: dict[str, int] = {}  # mosaic_id -> estimated bytes
        self.mosaic_waiting: tuple[str, int, float] | None = None  # id, bytes, when asked
        self._mosaic_logged: str | None = None

    # --- measuring ---------------------------------------------------------------------
    def sample(self) -> dict[str, int]:
        """Measure every top-level folder of stage now (an observation's folder is its
        obs_id) and keep each one's largest size."""
        with self._lock:
            self._gen += 1
            gen = self._gen
        by_dir = ({p.name: tree_bytes(p) for p in self.stage.iterdir()}
                  if self.stage.is_dir() else {})
        with self._lock:
            for name, b in by_dir.items():
                self._peak[name] = max(b, self._peak.get(name, 0))
            if gen > self._applied:
                self._by_dir, self._applied = by_dir, gen
        return by_dir

    def start(self):
        """Sample in a daemon thread until ``stop`` (only with a budget)."""
        if self.budget <= 0 or self._thread is not None:
            return

        def loop():
            while not self._stop.wait(self.sample_s):
                try:
                    self.sample()
                except OSError as exc:  # stage unmounted or unreadable: the driver sees it
                    log.debug("stage sample: %s", exc)

        self._thread = threading.Thread(target=loop, name="stage-sampler", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def usage(self, *, fresh: bool = False) -> dict[str, int]:
        """``{top-level folder of stage: bytes}``: the last sample (a new one if ``fresh``
        or none was taken)."""
        return self.sample() if fresh or not self._by_dir else self._by_dir

    def used(self, *, fresh: bool = False) -> int:
        """Bytes in stage."""
        return sum(self.usage(fresh=fresh).values())

    def track(self, obs_id: str):
        """This driver starts the observation's conversion: its folder's peak, once it is
        imaged, covers conversion (subband blocks beside the MS) and imaging alike. An
        observation taken up after a restart from its MS shows only the imaging part and
        would make the ratio too small."""
        self._tracked.add(obs_id)

    def ratio(self) -> float | None:
        """Stage bytes per input byte at an observation's peak: the largest seen over the
        observations this driver converted and imaged (``track``; None before any: a
        restarted driver measures again). Recomputed at most every 10 s."""
        if time.monotonic() - self._ratio[0] > 10.0:
            seen = []
            for o in list(self._tracked):
                b = self._peak.get(o, 0)
                row = self.reg.get("observations", o)
                if row and row["state"] in (ObsState.IMAGED, ObsState.MOSAICKED):
                    i = self.reg.input_bytes(o)
                    seen += [b / i] if i > 0 else []
            self._ratio = (time.monotonic(), max(seen) if seen else None)
        return self._ratio[1]

    def estimate(self, obs_id: str) -> int:
        """Stage bytes the observation will take at its peak: input bytes x ``ratio``
        (MS_PER_INPUT_BYTE before any is measured)."""
        return int((self.ratio() or MS_PER_INPUT_BYTE) * self.reg.input_bytes(obs_id))

    def committed(self, active=()) -> int:
        """Bytes in stage plus what the observations in flight (``active``) and the mosaics
        in flight (``mosaics_in_flight``) may still write: each observation counts its
        estimated peak until its folder is larger; the mosaics their estimates until the
        ``mosaics`` folder is larger."""
        by_dir = self.usage()
        total = sum(by_dir.values())
        for o in active:
            total += max(0, self.estimate(o) - by_dir.get(o, 0))
        total += max(0, sum(self.mosaics_in_flight.values()) - by_dir.get("mosaics", 0))
        return total

    @staticmethod
    def mosaic_estimate(inputs: list[dict]) -> int:
        """Stage bytes a mosaic's work takes: its output grid (the members' image headers
        through :func:`engine.mosaic.output_grid`) x ``MOSAIC_BYTES_PER_PIXEL``, plus
        ``MOSAIC_NOISE_BYTES_PER_PIXEL`` when it will have residual and thermal maps."""
        from engine.mosaic import grid_for

        nx, ny = grid_for([m["image"] for m in inputs]).pixel_shape
        noise = all(m.get("residual") and m.get("thermal_jy") for m in inputs)
        return int(nx * ny * (MOSAIC_BYTES_PER_PIXEL
                              + (MOSAIC_NOISE_BYTES_PER_PIXEL if noise else 0.0)))

    def room_for_mosaic(self, mosaic_id: str, need: int, held_open, active=()) -> bool:
        """Whether a mosaic needing ``need`` bytes may start: retention first
        (``make_room``), then the budget. While work is in flight (observations or other
        mosaics, which will free or settle room), a mosaic that must wait reserves its
        bytes: no new observation is taken unless it fits beside them (``reserved``), so a
        stream of observations cannot starve it. With nothing in flight it reserves nothing
        (observations go on, and their MSs become removable as they publish). A mosaic
        larger than the whole budget raises :class:`StorageError` (it fails with that
        reason; observations go on). A refusal is logged once per mosaic."""
        if self.budget <= 0:
            return True
        if need > self.budget:
            self.mosaic_waiting = None
            raise StorageError(
                f"mosaic {mosaic_id} needs {need / 1e9:.3f} GB of stage, more than the "
                f"whole {self.budget / 1e9:.3f} GB budget: raise driver.stage_budget_gb")
        self.make_room(None, held_open, active, extra=need)
        used = self.committed(active)
        if used + need <= self.budget:
            self.mosaic_waiting = None
            return True
        if self._mosaic_logged != mosaic_id:
            self._mosaic_logged = mosaic_id
            log.warning("mosaic %s needs %.3f GB of stage, %.3f GB committed of %.3f GB: it "
                        "waits for room", mosaic_id, need / 1e9, used / 1e9,
                        self.budget / 1e9)
        busy = bool(active) or bool(self.mosaics_in_flight)
        self.mosaic_waiting = (mosaic_id, need, time.monotonic()) if busy else None
        return False

    def reserved(self) -> int:
        """Bytes held for a mosaic waiting for room (asked within the last minute; a window
        that stopped asking, e.g. a mosaic that failed, reserves nothing)."""
        w = self.mosaic_waiting
        return w[1] if w is not None and time.monotonic() - w[2] < 60.0 else 0

    # --- deciding ----------------------------------------------------------------------
    def fits(self, obs_id: str, active=()) -> tuple[bool, int, int]:
        """(whether the observation fits under the budget, bytes committed: in stage, still
        to come from ``active`` and reserved for a waiting mosaic, bytes it needs); always
        fits without a budget."""
        if self.budget <= 0:
            return True, 0, 0
        used, need = self.committed(active) + self.reserved(), self.estimate(obs_id)
        return used + need <= self.budget, used, need

    def room_for(self, obs_id: str, active=()) -> bool:
        """``fits``, logged: the first refusal with the numbers (``blocked_since`` says
        since when), and the return under the budget. Until one observation's peak has
        been measured (``ratio``), one observation at a time."""
        if self.budget > 0 and active and self.ratio() is None:
            if self.blocked_since is None:
                self.blocked_since = time.time()
                log.info("stage budget: one observation at a time until one observation's "
                         "peak stage use has been measured")
            return False
        ok, used, need = self.fits(obs_id, active)
        if ok:
            if self.blocked_since is not None:
                log.info("stage has room again (%.3f GB committed of %.3f GB): taking "
                         "observations again", used / 1e9, self.budget / 1e9)
            self.blocked_since = None
            return True
        if self.blocked_since is None:
            self.blocked_since = time.time()
            log.warning("stage %.3f GB committed + %.3f GB for %s would exceed its budget of "
                        "%.3f GB: no new observation until there is room", used / 1e9,
                        need / 1e9, obs_id, self.budget / 1e9)
        return False

    def removable(self, held_open: set) -> list[dict]:
        """Observations whose kept MS may go, oldest first within each group: (1) image
        published and no window that is not yet published holds it (``held_open``:
        obs_ids); (2) final gaps (quarantined, failed ``driver.max_attempts`` times, or
        their image rejected by QA: no image will be made from them again); (3) image
        published, held by such a window. A
        mosaic is made from its members' images, not their MSs, so a held MS goes too when
        nothing else can: otherwise a budget smaller than a window's MSs would stop the run
        short of the observations that complete the window."""
        free, gaps, held = [], [], []
        for obs in self.reg.rows("observations", ObsState.IMAGED, ObsState.MOSAICKED,
                                 ObsState.QUARANTINED, ObsState.FAILED, order_by="start_jd"):
            if not obs["ms_path"]:
                continue
            if obs["state"] == ObsState.QUARANTINED or (
                    obs["state"] == ObsState.FAILED
                    and (obs["attempts"] or 0) >= self.cfg.driver.max_attempts):
                gaps.append(obs)
                continue
            if obs["state"] == ObsState.FAILED:
                continue  # to be retried, from its MS
            prod = self.reg.get("products", f"image:{obs['obs_id']}")
            if prod and prod["state"] == ProductState.PUBLISHED:
                (held if obs["obs_id"] in held_open else free).append(obs)
            elif prod and prod["state"] == ProductState.REJECTED:
                gaps.append(obs)  # QA rejected its image: final (its files are in incoming)
        return free + gaps + held

    def make_room(self, next_obs: str | None, held_open, active=(), *,
                  extra: int = 0) -> list[str]:
        """Retention: while the stage cannot take ``next_obs`` (the oldest observation
        waiting for conversion; None: keep the stage under its budget), remove kept MSs
        (``removable``), oldest first. Returns the obs_ids whose MS was removed, each
        recorded after the removal. ``held_open``: a callable giving the obs_ids that open
        mosaic windows hold (asked only when space is needed); ``active``: observations
        in flight (``committed``); ``extra``: bytes wanted besides (a mosaic's)."""
        if self.budget <= 0:
            return []
        need = (self.estimate(next_obs) if next_obs else 0) + extra
        if self.committed(active) + need <= self.budget:
            return []
        removed = []
        if not self.removable(set()):  # nothing could go: spare the window planning
            return []
        for obs in self.removable(set(held_open())):
            if self.committed(active) + need <= self.budget:
                break
            if self.remove_ms(obs, f"by retention: stage over its budget of "
                                   f"{self.budget / 1e9:.3f} GB"):
                continue  # still there (logged); retention tries again next pass
            removed.append(obs["obs_id"])
            self.usage(fresh=True)
        if removed:
            log.info("retention removed %d MS(s) from stage: %s", len(removed),
                     ", ".join(removed))
        return removed

    def remove_ms(self, obs: dict, why: str) -> str | None:
        """Remove the observation's MS from stage and record it after it happened ("MS
        removed <why>", or that it was already gone). A removal that fails is logged and
        leaves the record's path (the MS is still there); returns its error, else None."""
        try:
            shutil.rmtree(confine(obs["ms_path"], self.stage))
            self.reg.forget_ms(obs["obs_id"], f"MS removed {why}")
        except FileNotFoundError:
            self.reg.forget_ms(obs["obs_id"], f"MS was already gone when removed {why}")
        except OSError as exc:
            log.warning("%s: MS removal %s failed: %s", obs["obs_id"], why, exc)
            return str(exc)
        return None

    def settle(self, obs_id: str):
        """After an image's publication its MS is kept (``publish.keep_ms``; retention may
        remove it later) or removed; what happened is recorded after it happened."""
        obs = self.reg.get("observations", obs_id)
        keep = self.cfg.publish.keep_ms
        if keep or not obs["ms_path"]:
            self.reg.note("observations", obs_id, obs["state"],
                          {"stage": f"MS kept (publish.keep_ms = {str(keep).lower()})"})
            return
        err = self.remove_ms(obs, "after publication (publish.keep_ms = false)")
        if err:  # recorded too: the MS stays in stage until retention or an operator
            self.reg.note("observations", obs_id, obs["state"],
                          {"stage": f"MS removal failed: {err}"})

    def report(self, next_obs: str | None = None) -> dict:
        """What ``status`` shows: usage against the budget, whether the next observation
        (``next_obs``) is held back, and the observations waiting for a calibrator (how
        many, their bytes, since when they wait)."""
        waiting = self.reg.rows("observations", ObsState.AWAITING_CALIBRATION,
                                order_by="start_jd")
        by_dir = self.usage(fresh=True)
        held_back = next_obs is not None and not self.fits(next_obs)[0]  # nothing in flight
        since = min((o["updated_at"] or 0 for o in waiting), default=None)
        return {
            "used_bytes": sum(by_dir.values()),
            "budget_bytes": self.budget or None,
            "backpressure": bool(held_back),
            "next_observation": next_obs,
            "waiting_for_calibrator": len(waiting),
            "waiting_bytes": sum(by_dir.get(o["obs_id"], 0) for o in waiting),
            "waiting_since": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
                              if since else None),
            "oldest_waiting": waiting[0]["obs_id"] if waiting else None,
        }
