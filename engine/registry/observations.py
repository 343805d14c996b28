"""Observation rows: leases, the driver's questions, and what it records between steps."""

from __future__ import annotations

import json
import time

from engine.states import IN_FLIGHT, FileStatus, ObsState


class ObservationRecords:
    """Mixed into :class:`engine.registry.Registry` (uses its connection and transactions)."""

    def acquire_next(self, owner: str, *, lease_s: float = 3600.0,
                     states=(ObsState.COMPLETE,)) -> dict | None:
        """Lease the complete observation with the OLDEST observation time.

        Order is by ``start_jd`` (header time), never by discovery or registration order.
        The select and the update run in one IMMEDIATE transaction, so two drivers on one
        registry never take the same observation.
        """
        now = time.time()
        marks = ",".join("?" for _ in states)
        with self.write():
            row = self.db.execute(
                f"SELECT obs_id, state FROM observations WHERE state IN ({marks}) AND "
                "(lease_owner IS NULL OR lease_expires_at < ?) ORDER BY start_jd, obs_id "
                "LIMIT 1", [*map(str, states), now]).fetchone()
            if row is None:
                return None
            obs_id, state = row
            self.db["observations"].update(obs_id, {"lease_owner": owner,
                                                    "lease_expires_at": now + lease_s,
                                                    "updated_at": now})
            self.event("observations", obs_id, state, state, {"lease_owner": owner})
        return self.get("observations", obs_id)

    def release(self, obs_id: str, owner: str):
        with self.write():
            self.db.execute("UPDATE observations SET lease_owner = NULL, lease_expires_at = NULL "
                            "WHERE obs_id = ? AND lease_owner = ?", [obs_id, owner])

    def abandoned_candidates(self) -> list[dict]:
        """Observations with a task in flight, or a lease on a row at rest."""
        marks = ",".join("?" for _ in IN_FLIGHT)
        return list(self.db["observations"].rows_where(
            f"state IN ({marks}) OR lease_owner IS NOT NULL", [str(s) for s in IN_FLIGHT]))

    def retryable(self, max_attempts: int) -> list[dict]:
        """Failed observations with fewer than ``max_attempts`` attempts."""
        return list(self.db["observations"].rows_where(
            "state = ? AND coalesce(attempts, 0) < ?", [str(ObsState.FAILED), max_attempts],
            order_by="start_jd"))

    def subband_files(self, obs_id: str) -> list[str]:
        """The observation's registered (status ok) file paths, in subband order."""
        return [r["path"] for r in self.db["files"].rows_where(
            "obs_id = ? AND status = ?", [obs_id, str(FileStatus.OK)], order_by="subband")]

    def input_bytes(self, obs_id: str) -> int:
        """Bytes of the observation's registered subband files."""
        return self.db.execute("SELECT sum(size) FROM files WHERE obs_id = ? AND status = ?",
                               [obs_id, str(FileStatus.OK)]).fetchone()[0] or 0

    def set_transit(self, obs_id: str, calibrator: str, transit_mjd: float):
        """Record that the observation holds ``calibrator``'s transit (observation MJD)."""
        with self.write():
            self.db["observations"].update(obs_id, {"calibrator": calibrator,
                                                    "transit_mjd": transit_mjd})

    def set_flags(self, obs_id: str, stats: dict):
        """The observation's flag statistics (:func:`engine.flagging.summarise`)."""
        with self.write():
            self.db["observations"].update(obs_id, {"flag_fraction": stats["fraction"],
                                                    "flag_stats": json.dumps(stats)})

    def flag_summary(self) -> dict:
        """Flagged fraction over the observations that have one: n, mean, max (and which)."""
        row = self.db.execute(
            "SELECT count(flag_fraction), avg(flag_fraction), max(flag_fraction) "
            "FROM observations WHERE flag_fraction IS NOT NULL").fetchone()
        worst = self.db.execute(
            "SELECT obs_id FROM observations WHERE flag_fraction IS NOT NULL "
            "ORDER BY flag_fraction DESC LIMIT 1").fetchone()
        return {"observations": row[0], "mean": row[1], "max": row[2],
                "worst": worst[0] if worst else None}

    def set_manifest(self, obs_id: str, manifest: dict):
        with self.write():
            self.db["observations"].update(obs_id, {"manifest": json.dumps(manifest)})

    def note(self, table: str, key: str, state: str, detail: dict):
        """An event that changes no state (warnings, what happened to stage files)."""
        with self.write():
            self.event(table, key, state, state, detail)

    def change_marker(self) -> tuple:
        """Changes whenever an observation or mosaic row is added or updated."""
        return (self.db.execute("SELECT count(*), max(updated_at) FROM observations"
                                ).fetchone(),
                self.db.execute("SELECT count(*), max(updated_at) FROM mosaics").fetchone())

    def observation_summaries(self) -> list[dict]:
        """obs_id, start_jd, end_jd, dec_rad, state of every observation (mosaic planning)."""
        return list(self.db["observations"].rows_where(
            select="obs_id, start_jd, end_jd, dec_rad, state"))

    def manifest(self, obs_id: str) -> dict | None:
        """The observation's conversion manifest (ms_path, sha256, size, in_place, ...)."""
        row = self.get("observations", obs_id)
        return json.loads(row["manifest"]) if row and row["manifest"] else None

    def forget_ms(self, obs_id: str, why: str):
        """The observation's MS is gone from stage (removed after publication, or lost):
        ``ms_path`` is cleared, with an event saying why, after the fact."""
        with self.write():
            row = self.get("observations", obs_id)
            self.db["observations"].update(obs_id, {"ms_path": None})
            self.event("observations", obs_id, row["state"], row["state"],
                       {"stage": why, "ms_path": row["ms_path"]})

    def with_ms(self) -> list[dict]:
        return list(self.db["observations"].rows_where("ms_path IS NOT NULL"))
