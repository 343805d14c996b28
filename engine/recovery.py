"""What a starting driver takes back: work whose driver died, and failures worth retrying.

Run once at the start of every driver run, before new work is taken. Nothing here deletes
anything: rows move back to the state from which their step can be done again, and the
next step re-checks every file it uses against its manifest.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from engine.registry import Registry
from engine.run_state import lease_abandoned
from engine.states import IN_FLIGHT, MosaicState, ObsState

log = logging.getLogger(__name__)


def take_back_abandoned(reg: Registry, *, now: float | None = None) -> list[str]:
    """Return abandoned work to where it can start again; the observation IDs moved.

    A lease is abandoned when it expired, or when its owner ran on this host and that
    process no longer exists (a killed driver). Conversion restarts from the verified
    subband blocks in stage; calibration and imaging restart from the converted MS. A lease
    left on a row at rest (e.g. converted, when the driver stopped between recording a
    conversion and submitting its imaging) is released. Mosaics in flight are planned again.
    """
    now = time.time() if now is None else now
    moved = []
    for obs in reg.abandoned_candidates():
        if not lease_abandoned(obs, now):
            continue
        state = ObsState(obs["state"])
        if state in IN_FLIGHT:
            reg.transition("observations", obs["obs_id"], IN_FLIGHT[state], lease_owner=None,
                           error=f"driver restarted during {state}")
            moved.append(obs["obs_id"])
        else:
            reg.release(obs["obs_id"], obs["lease_owner"])
    for mos in reg.rows("mosaics", MosaicState.MOSAICKING):
        reg.transition("mosaics", mos["mosaic_id"], MosaicState.PLANNED,
                       error="driver restarted during mosaicking")
    return moved


def retry_failed(reg: Registry, max_attempts: int, ms_usable: Callable[[dict], bool], *,
                 failed_before: float | None = None):
    """Take up failed observations again (at most ``max_attempts`` attempts each; with
    ``failed_before``, only those that failed before that Unix time: a following driver's
    back-off).

    FAILED means the input was fine and a step broke (full disk, CASA error, lost worker);
    bad input is QUARANTINED instead and never retried automatically. An observation whose
    MS still checks out (``ms_usable``) resumes from it; otherwise it is converted again
    (from any subband blocks still verified in stage). Failed mosaics are planned again,
    each until it has failed ``max_attempts`` times; then it stays FAILED with its error
    (``status`` lists it among the windows not published).
    """
    for obs in reg.retryable(max_attempts, failed_before):
        target = ObsState.CONVERTED if obs["manifest"] and ms_usable(obs) else ObsState.COMPLETE
        log.warning("retrying %s (attempt %d of %d) from %s; it failed with: %s",
                    obs["obs_id"], (obs["attempts"] or 0) + 1, max_attempts, target,
                    obs["error"])
        reg.transition("observations", obs["obs_id"], target, lease_owner=None)
    for mos in reg.rows("mosaics", MosaicState.FAILED):
        if (mos.get("attempts") or 0) >= max_attempts:
            continue
        if failed_before is None or (mos.get("updated_at") or 0) < failed_before:
            reg.transition("mosaics", mos["mosaic_id"], MosaicState.PLANNED)
