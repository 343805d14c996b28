"""The SQLite registry (sqlite-utils): files, observations, products, events.

Only the driver process writes it. WAL mode, a busy timeout and short transactions; every
state change goes through :meth:`Registry.transition`, which checks the state machine and
appends an event. Times in rows are observation times (JD/MJD from the data); the
``*_at`` columns record when the engine did something (wall clock, for the log only).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from engine.errors import IllegalTransition, RegistryError

SCHEMA_VERSION = 6

# state machines: state -> states it may move to
OBS_STATES = {
    "discovered": {"complete", "incomplete", "quarantined"},
    "incomplete": {"complete", "quarantined"},
    "complete": {"converting", "quarantined"},
    "converting": {"converted", "failed", "complete", "quarantined"},
    "converted": {"calibrating", "awaiting_calibration", "imaging", "failed", "quarantined"},
    "calibrating": {"imaging", "awaiting_calibration", "failed", "converted"},
    "awaiting_calibration": {"imaging", "failed"},
    "imaging": {"imaged", "failed", "converted"},
    "imaged": {"mosaicked"},
    "mosaicked": set(),
    "failed": {"complete", "converted"},  # taken up again by a later run
    "quarantined": set(),  # bad input: final; a person fixes the files (see docs/RELIABILITY.md)
}
PRODUCT_STATES = {
    "staging": {"validated", "rejected"},
    "validated": {"published", "rejected"},
    "published": set(),
    "rejected": {"staging"},
}
MOSAIC_STATES = {
    "planned": {"mosaicking", "failed"},
    "mosaicking": {"mosaicked", "failed", "planned"},
    "mosaicked": {"published", "failed"},
    "published": set(),
    "failed": {"planned"},
}
MACHINES = {"observations": OBS_STATES, "products": PRODUCT_STATES, "mosaics": MOSAIC_STATES}
KEYS = {"observations": "obs_id", "products": "data_id", "mosaics": "mosaic_id",
        "images": "obs_id", "caltables": "caltable_id", "files": "path"}


def _v1(db: sqlite_utils.Database):
    db["files"].create({
        "path": str, "obs_id": str, "subband": int, "header_start_jd": float,
        "filename_jd": float, "dec_rad": float, "nfreqs": int, "nblts": int, "size": int,
        "mtime": float, "status": str, "error": str, "unreadable_scans": int,
        "first_seen_at": float}, pk="path")
    db["files"].create_index(["obs_id"])
    db["observations"].create({
        "obs_id": str, "start_jd": float, "end_jd": float, "dec_rad": float,
        "n_subbands": int, "state": str, "lease_owner": str, "lease_expires_at": float,
        "ms_path": str, "image_path": str, "manifest": str, "error": str, "attempts": int,
        "newest_file_mtime": float, "updated_at": float}, pk="obs_id")
    db["observations"].create_index(["state", "start_jd"])
    db["caltables"].create({
        "caltable_id": str, "obs_id": str, "kind": str, "path": str, "calibrator": str,
        "transit_mjd": float, "valid_from_mjd": float, "valid_to_mjd": float,
        "dec_rad": float, "qa": str, "sha256": str}, pk="caltable_id")
    db["images"].create({
        "obs_id": str, "path": str, "pb_path": str, "png_path": str, "sha256": str,
        "size": int, "qa": str, "caltables": str}, pk="obs_id")
    db["mosaics"].create({
        "mosaic_id": str, "members": str, "dec_rad": float, "start_jd": float,
        "end_jd": float, "state": str, "path": str, "error": str, "updated_at": float},
        pk="mosaic_id")
    db["products"].create({
        "data_id": str, "kind": str, "stage_path": str, "published_path": str,
        "qa_status": str, "validation_status": str, "publication_status": str,
        "state": str, "attempts": int, "last_error": str, "sha256": str, "size": int,
        "updated_at": float}, pk="data_id")
    db["events"].create({"id": int, "at": float, "table_name": str, "key": str,
                         "old": str, "new": str, "detail": str}, pk="id")
    db["events"].create_index(["table_name", "key"])


def _v2(db: sqlite_utils.Database):
    db["observations"].add_column("calibration_applied", str)


def _v3(db: sqlite_utils.Database):
    db["observations"].add_column("calibrator", str)
    db["observations"].add_column("transit_mjd", float)
    db["caltables"].add_column("size", int)
    db["caltables"].create_index(["valid_from_mjd", "valid_to_mjd"])


def _v4(db: sqlite_utils.Database):
    db["images"].add_column("pb_sha256", str)
    db["images"].add_column("pb_size", int)
    db["mosaics"].add_column("manifest", str)


def _v5(db: sqlite_utils.Database):
    """Indexes for a registry holding years of rows. (No index on files.status alone: SQLite
    would pick it for per-observation questions and scan millions of 'ok' rows.)"""
    db["files"].create_index(["obs_id", "status"])
    db["products"].create_index(["state"])
    db["mosaics"].create_index(["state"])
    db["observations"].create_index(["start_jd"])


def _v6(db: sqlite_utils.Database):
    """Each image's residual (the QA's residual rms and the mosaic's residual come from it)."""
    db["images"].add_column("residual_path", str)
    db["images"].add_column("residual_sha256", str)
    db["images"].add_column("residual_size", int)


MIGRATIONS = {1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6}


class Registry:
    """The engine's record. Open one per process; the driver is the only writer."""

    MACHINE_STATES = tuple(OBS_STATES)

    def __init__(self, path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                               check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self):
        self.db.conn.close()

    # --- schema -------------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self):
        with self.write():
            have = self.schema_version()
            for v in range(have + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](self.db)
                self.db.execute(f"PRAGMA user_version={v}")

    # --- transactions -------------------------------------------------------------------
    @contextmanager
    def write(self):
        """A short IMMEDIATE transaction: takes the write lock up front, so two writers
        serialize instead of failing half-way.

        Another process holding the lock longer than the busy timeout raises
        :class:`RegistryError` naming the file (nothing was written).
        """
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RegistryError(f"{self.path}: locked by another process for more than "
                                    f"{self.timeout_s:g} s ({exc})") from None
            raise
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # --- generic rows and the state machine ---------------------------------------------
    def get(self, table: str, key: str) -> dict | None:
        rows = list(self.db[table].rows_where(f"{KEYS.get(table, 'path')} = ?", [key]))
        return rows[0] if rows else None

    def event(self, table: str, key: str, old, new, detail=None):
        self.db["events"].insert({"at": time.time(), "table_name": table, "key": key,
                                  "old": old, "new": new,
                                  "detail": json.dumps(detail) if detail is not None else None})

    def transition(self, table: str, key: str, new: str, *, expect=None, **fields) -> dict:
        """Move one row to ``new``; raises IllegalTransition if the machine forbids it.

        ``expect`` (a state or set of states) guards against acting on a row that another
        step moved meanwhile. Extra ``fields`` are written in the same transaction.
        """
        machine = MACHINES[table]
        keycol = KEYS[table]
        with self.write():
            row = self.get(table, key)
            if row is None:
                raise RegistryError(f"{table}: no row {key!r}")
            old = row["state"]
            if expect is not None:
                allowed = {expect} if isinstance(expect, str) else set(expect)
                if old not in allowed:
                    raise IllegalTransition(f"{table} {key}: is {old!r}, expected {allowed}")
            if new not in machine.get(old, set()):
                raise IllegalTransition(f"{table} {key}: {old!r} -> {new!r} is not allowed")
            fields = {**fields, "state": new, "updated_at": time.time()}
            self.db[table].update(key, fields)
            self.event(table, key, old, new, {k: v for k, v in fields.items()
                                              if k in ("error", "lease_owner")} or None)
        row.update(fields)
        row[keycol] = key
        return row

    def events(self, table: str | None = None, key: str | None = None) -> list[dict]:
        where, args = [], []
        if table:
            where.append("table_name = ?")
            args.append(table)
        if key:
            where.append("key = ?")
            args.append(key)
        return list(self.db["events"].rows_where(" and ".join(where) or None, args,
                                                 order_by="id"))

    # --- observations -------------------------------------------------------------------
    def acquire_next(self, owner: str, *, lease_s: float = 3600.0,
                     states=("complete",)) -> dict | None:
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
                "LIMIT 1", [*states, now]).fetchone()
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

    # --- calibration tables ---------------------------------------------------------------
    def register_caltables(self, manifest: dict, dec_rad: float):
        """Record a calibration set (bandpass + gains) with its validity windows (MJD)."""
        with self.write():
            for kind, t in manifest["tables"].items():
                cid = f"{manifest['obs_id']}:{kind}"
                self.db["caltables"].upsert({
                    "caltable_id": cid, "obs_id": manifest["obs_id"], "kind": kind,
                    "path": t["path"], "calibrator": manifest["calibrator"],
                    "transit_mjd": manifest["transit_mjd"],
                    "valid_from_mjd": t["valid_from_mjd"], "valid_to_mjd": t["valid_to_mjd"],
                    "dec_rad": dec_rad, "qa": json.dumps(manifest["qa"]),
                    "sha256": t["sha256"], "size": t["size"]}, pk="caltable_id")
                self.event("caltables", cid, None, "registered")

    def valid_caltables(self, mjd: float, dec_rad: float, *, dec_tol_rad: float = 0.02
                        ) -> dict | None:
        """Bandpass and gain tables valid at observation time ``mjd`` (nearest transit).

        Validity is decided by observation time only: ``valid_from_mjd <= mjd <=
        valid_to_mjd`` at the same pointing declination. Returns ``{kind: row}`` with both
        kinds, or None.
        """
        out = {}
        for kind in ("bandpass", "gains"):
            rows = list(self.db["caltables"].rows_where(
                "kind = ? AND valid_from_mjd <= ? AND valid_to_mjd >= ? AND "
                "abs(dec_rad - ?) < ?", [kind, mjd, mjd, dec_rad, dec_tol_rad]))
            if not rows:
                return None
            out[kind] = min(rows, key=lambda r: abs(r["transit_mjd"] - mjd))
        return out

    def counts(self, table: str) -> dict:
        return {s: n for s, n in self.db.execute(
            f"SELECT state, count(*) FROM {table} GROUP BY state ORDER BY state").fetchall()}
