"""The registry's core: one SQLite connection, short transactions, the state machine.

Only the driver process writes it. WAL mode, a busy timeout and short transactions; every
state change goes through :meth:`RegistryCore.transition`, which checks the state machine
(:mod:`engine.states`) and appends an event. Times in rows are observation times (JD/MJD
from the data); the ``*_at`` columns record when the engine did something (wall clock, for
the log only).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from engine.errors import IllegalTransition, RegistryLocked, RegistryError
from engine.registry.schema import KEYS, MIGRATIONS, SCHEMA_VERSION
from engine.states import MACHINES, ObsState


class RegistryCore:
    """The connection, transactions, generic rows, events and the state machine."""

    MACHINE_STATES = tuple(ObsState)

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
        :class:`RegistryLocked` naming the file (nothing was written). The busy timeout is
        the wait; beyond it the driver stops and the next run (or its supervisor) resumes.
        """
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RegistryLocked(f"{self.path}: locked by another process for more than "
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

    def counts(self, table: str) -> dict:
        """``{state: rows}`` of one state-machine table."""
        if table not in MACHINES:
            raise RegistryError(f"{table}: not a table with states")
        return {s: n for s, n in self.db.execute(
            f"SELECT state, count(*) FROM {table} GROUP BY state ORDER BY state").fetchall()}

    def count(self, table: str) -> int:
        return self.db[table].count

    def rows(self, table: str, *states, order_by: str | None = None) -> list[dict]:
        """Every row of ``table`` (in one of ``states`` if given), ``order_by`` a column."""
        if not states:
            return list(self.db[table].rows_where(order_by=order_by))
        marks = ",".join("?" for _ in states)
        return list(self.db[table].rows_where(f"state IN ({marks})", [str(s) for s in states],
                                              order_by=order_by))
