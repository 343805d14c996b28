"""Observation rows: leases, the driver's questions, and what it records between steps."""

from __future__ import annotations

import json
import time

from engine.states import IN_FLIGHT, FileStatus, ObsState, ProductState


def _iso(jd: float | None) -> str | None:
    """UTC ISO time of a Julian date (to the second), None for None."""
    if jd is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((jd - 2440587.5) * 86400))


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

    def oldest(self, state: str) -> str | None:
        """The obs_id with the oldest observation time in ``state`` (None if none)."""
        row = self.db.execute("SELECT obs_id FROM observations WHERE state = ? "
                              "ORDER BY start_jd, obs_id LIMIT 1", [str(state)]).fetchone()
        return row[0] if row else None

    def release(self, obs_id: str, owner: str):
        with self.write():
            self.db.execute("UPDATE observations SET lease_owner = NULL, lease_expires_at = NULL "
                            "WHERE obs_id = ? AND lease_owner = ?", [obs_id, owner])

    def abandoned_candidates(self) -> list[dict]:
        """Observations with a task in flight, or a lease on a row at rest."""
        marks = ",".join("?" for _ in IN_FLIGHT)
        return list(self.db["observations"].rows_where(
            f"state IN ({marks}) OR lease_owner IS NOT NULL", [str(s) for s in IN_FLIGHT]))

    def retryable(self, max_attempts: int, failed_before: float | None = None) -> list[dict]:
        """Failed observations with fewer than ``max_attempts`` attempts (that failed
        before the Unix time ``failed_before``, if given)."""
        where = "state = ? AND coalesce(attempts, 0) < ?"
        args = [str(ObsState.FAILED), max_attempts]
        if failed_before is not None:
            where, args = where + " AND coalesce(updated_at, 0) < ?", args + [failed_before]
        return list(self.db["observations"].rows_where(where, args, order_by="start_jd"))

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

    def lag(self) -> dict:
        """How far behind the engine is. ``behind_s``: observation time of the newest file
        that arrived minus that of the newest published image (s). ``publication_s``: per
        published image, the wall time from its observation's newest file (mtime) to its
        publication: n, median, p95."""
        newest_file = self.db.execute(
            "SELECT max(header_start_jd) FROM files WHERE status = ?",
            [str(FileStatus.OK)]).fetchone()[0]
        rows = self.db.execute(
            "SELECT o.start_jd, o.newest_file_mtime, p.updated_at FROM observations o "
            "JOIN products p ON p.data_id = 'image:' || o.obs_id WHERE p.state = ?",
            [str(ProductState.PUBLISHED)]).fetchall()
        newest_pub = max((r[0] for r in rows), default=None)
        waits = sorted(r[2] - r[1] for r in rows if r[1] is not None and r[2] is not None)

        def q(f):
            return float(waits[min(len(waits) - 1, int(round(f * (len(waits) - 1))))])

        return {"newest_file_obs": _iso(newest_file), "newest_published_obs": _iso(newest_pub),
                "behind_s": (None if newest_file is None else
                             max(0.0, (newest_file - (newest_pub or newest_file)) * 86400)
                             if newest_pub is not None else None),
                "publication_s": {"n": len(waits), "median": q(0.5) if waits else None,
                                  "p95": q(0.95) if waits else None}}

    def last_errors(self) -> dict:
        """The newest error per step: ``{"<table> <state it failed in>": {"key", "at",
        "error"}}`` from the events of rows that moved to failed, quarantined or rejected."""
        out = {}
        ends = [str(ObsState.FAILED), str(ObsState.QUARANTINED), str(ProductState.REJECTED)]
        for r in self.db.execute(
                "SELECT table_name, old, key, at, detail FROM events WHERE new IN (?, ?, ?) "
                "AND detail IS NOT NULL ORDER BY id", ends):
            detail = json.loads(r[4])
            error = detail.get("error") if isinstance(detail, dict) else None
            if error:
                out[f"{r[0]} {r[1]}"] = {"key": r[2], "error": error[:300], "at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(r[3]))}
        return out

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
        """obs_id, start_jd, end_jd, dec_rad, state, attempts, updated_at and first_seen_at
        (Unix time its first file was seen) of every observation (mosaic planning)."""
        return list(self.db.query(
            "SELECT o.obs_id, o.start_jd, o.end_jd, o.dec_rad, o.state, o.attempts, "
            "o.updated_at, "
            "(SELECT min(f.first_seen_at) FROM files f WHERE f.obs_id = o.obs_id) "
            "AS first_seen_at FROM observations o"))

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
