"""File rows: incoming subband files and the observations they are grouped into."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from engine.states import FileStatus, ObsState


@dataclass
class Attached:
    """What :meth:`FileRecords.attach_file` decided for one file."""

    status: FileStatus
    problem: str | None
    obs_id: str | None
    n_subbands: int = 0  # the observation's distinct registered subbands after this file
    obs_state: ObsState | None = None


class FileRecords:
    """Mixed into :class:`engine.registry.Registry` (uses its connection and transactions)."""

    def quarantine_file(self, path: str, problem: str, **extra) -> bool:
        """Record ``path`` as quarantined with ``problem``; False if it already was, for
        the same problem (nothing written)."""
        error = f"{path}: {problem}"
        row = self.get("files", path)
        if row is not None and row["status"] == FileStatus.QUARANTINED and \
                row["error"] == error:
            return False
        with self.write():
            self.db["files"].upsert({"path": path, "status": FileStatus.QUARANTINED,
                                     "error": error, "first_seen_at": time.time(), **extra},
                                    pk="path")
            self.event("files", path, row["status"] if row else None, FileStatus.QUARANTINED,
                       problem)
        return True

    def file_pending(self, path: str, error: str, size: int, mtime: float, scans: int,
                     first_seen_at: float):
        """A file still being written: looked at again at the next scan."""
        with self.write():
            self.db["files"].upsert({
                "path": path, "status": FileStatus.PENDING, "error": error, "size": size,
                "mtime": mtime, "unreadable_scans": scans, "first_seen_at": first_seen_at},
                pk="path")

    def _find_observation(self, start_jd: float, dec_rad: float, tol_jd: float,
                          dec_tol_rad: float) -> str | None:
        rows = self.db.execute(
            "SELECT obs_id, start_jd FROM observations WHERE start_jd BETWEEN ? AND ? "
            "AND abs(dec_rad - ?) < ?",
            [start_jd - tol_jd, start_jd + tol_jd, dec_rad, dec_tol_rad]).fetchall()
        if not rows:
            return None
        return min(rows, key=lambda r: abs(r[1] - start_jd))[0]

    def _same_time_other_dec(self, start_jd: float, dec_rad: float, tol_jd: float,
                             dec_tol_rad: float):
        row = self.db.execute(
            "SELECT obs_id, dec_rad FROM observations WHERE start_jd BETWEEN ? AND ? AND "
            "abs(dec_rad - ?) >= ? ORDER BY abs(start_jd - ?) LIMIT 1",
            [start_jd - tol_jd, start_jd + tol_jd, dec_rad, dec_tol_rad,
             start_jd]).fetchone()
        return tuple(row) if row else None

    def attach_file(self, rec: dict, *, new_obs_id: str, tol_s: float,
                    dec_tol_rad: float) -> Attached:
        """Attach one readable file to its observation, in one transaction.

        ``rec``: the file's row (path, subband, header_start_jd, end_jd, filename_jd,
        dec_rad, nfreqs, nblts, size, mtime). The file joins the observation whose header
        start time lies within ``tol_s`` at the same declination (``dec_tol_rad``), or a
        new one with ID ``new_obs_id``. A file at that time but another declination, or
        whose shape differs from its siblings', is quarantined; a second file for a
        subband already registered is a conflict (never overwrites the first).
        """
        path, sb = rec["path"], rec["subband"]
        start, dec, tol = rec["header_start_jd"], rec["dec_rad"], tol_s / 86400.0
        end_jd = rec.pop("end_jd")
        with self.write():
            old = self.get("files", path)
            first_seen = old["first_seen_at"] if old else time.time()
            obs_id = self._find_observation(start, dec, tol, dec_tol_rad)
            other = self._same_time_other_dec(start, dec, tol, dec_tol_rad) \
                if obs_id is None else None
            if other is not None:
                problem = (f"pointing dec {math.degrees(dec):.4f} deg differs from observation "
                           f"{other[0]} at the same time ({math.degrees(other[1]):.4f} deg)")
                self.db["files"].upsert({**rec, "obs_id": None,
                                         "status": FileStatus.QUARANTINED,
                                         "error": f"{path}: {problem}",
                                         "first_seen_at": first_seen}, pk="path")
                self.event("files", path, old["status"] if old else None,
                           FileStatus.QUARANTINED, problem)
                return Attached(FileStatus.QUARANTINED, problem, None)
            if obs_id is None:
                obs_id = new_obs_id
                self.db["observations"].insert({
                    "obs_id": obs_id, "start_jd": start, "end_jd": end_jd, "dec_rad": dec,
                    "n_subbands": 0, "state": ObsState.DISCOVERED, "attempts": 0,
                    "newest_file_mtime": rec["mtime"], "updated_at": time.time()})
                self.event("observations", obs_id, None, ObsState.DISCOVERED)
            siblings = [s for s in self.db["files"].rows_where(
                "obs_id = ? AND status = ?", [obs_id, str(FileStatus.OK)]) if s["path"] != path]
            status, problem = FileStatus.OK, None
            same_sb = [s for s in siblings if s["subband"] == sb]
            if same_sb:
                status = FileStatus.CONFLICT
                problem = f"duplicate of subband {sb:02d}: {same_sb[0]['path']}"
            elif siblings and (siblings[0]["nblts"] != rec["nblts"]
                               or siblings[0]["nfreqs"] != rec["nfreqs"]):
                status = FileStatus.QUARANTINED
                problem = (f"shape Nblts={rec['nblts']} Nfreqs={rec['nfreqs']} differs from "
                           f"the rest of observation {obs_id} (Nblts={siblings[0]['nblts']} "
                           f"Nfreqs={siblings[0]['nfreqs']})")
            self.db["files"].upsert({
                **rec, "obs_id": obs_id, "status": status,
                "error": f"{path}: {problem}" if problem else None, "unreadable_scans": 0,
                "first_seen_at": first_seen}, pk="path")
            self.event("files", path, old["status"] if old else None, status, problem)
            n = self.db.execute("SELECT count(DISTINCT subband) FROM files WHERE obs_id = ? "
                                "AND status = ?", [obs_id, str(FileStatus.OK)]).fetchone()[0]
            obs = self.get("observations", obs_id)
            self.db["observations"].update(obs_id, {
                "n_subbands": n,
                "newest_file_mtime": max(obs["newest_file_mtime"] or 0, rec["mtime"]),
                "end_jd": max(obs["end_jd"], end_jd)})
        return Attached(status, problem, obs_id, n, ObsState(obs["state"]))

    def discovered_quiet_since(self, t: float) -> list[dict]:
        """Observations still 'discovered' whose newest file is older than ``t`` (epoch s)."""
        return list(self.db["observations"].rows_where(
            "state = ? AND newest_file_mtime < ?", [str(ObsState.DISCOVERED), t]))

    def files_with(self, status: FileStatus) -> list[dict]:
        return list(self.db["files"].rows_where("status = ?", [str(status)]))

    def file_counts(self) -> dict:
        """``{status: files}``."""
        return {s: n for s, n in self.db.execute(
            "SELECT status, count(*) FROM files GROUP BY status").fetchall()}
