"""Discovery: scan the incoming folder, register files, group subbands into observations.

Grouping uses the header start time (``time_array[0]``, identical across the 16 subbands
of one observation), never the filename time, which jitters by up to ~30 s. Header times
within ``discover.time_tolerance_s`` at the same pointing declination are one observation.

File outcomes (``files.status``):
``ok`` registered; ``pending`` still being written (size changed or HDF5 not openable,
looked at again next scan); ``quarantined`` unusable (error names the problem);
``conflict`` a second file for a subband that already has one (never overwritten).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.time import Time

from engine.config import Config
from engine.errors import FileNotReadyError, InputFileError
from engine.registry import Registry
from engine.uvh5io import parse_filename, read_header

log = logging.getLogger(__name__)

DEC_TOL_RAD = 1e-6


def obs_id_for(start_jd: float, dec_rad: float) -> str:
    """Deterministic, filesystem-safe observation ID from the data.

    ``YYYY-MM-DDTHH-MM-SS_xxxx``: the header start time to the second plus 4 hex digits of a
    hash of the exact start time and declination, so two different observations that share
    a start second still get different IDs, and a rerun gets the same ones.
    """
    iso = Time(start_jd, format="jd", scale="utc").isot[:19].replace(":", "-")
    h = hashlib.sha256(f"{start_jd:.9f}|{dec_rad:.7f}".encode()).hexdigest()[:4]
    return f"{iso}_{h}"


@dataclass
class ScanReport:
    registered: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    quarantined: list = field(default_factory=list)
    conflicts: list = field(default_factory=list)
    completed: list = field(default_factory=list)
    incomplete: list = field(default_factory=list)


def _list_candidates(incoming: Path, report: ScanReport, reg: Registry) -> list[Path]:
    out = []
    root = incoming.resolve()
    try:
        entries = list(os.scandir(incoming))
    except FileNotFoundError:
        return out
    for e in entries:
        if not e.name.endswith(".hdf5"):
            continue
        p = Path(e.path)
        try:
            if not e.is_file():  # follows symlinks; a loop or dangling link raises/false
                raise OSError("not a regular file")
            real = p.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            _quarantine_file(reg, p, f"cannot follow path ({exc})", report)
            continue
        if not real.is_relative_to(root):
            _quarantine_file(reg, p, f"symlink leads outside the incoming folder, to {real}",
                             report)
            continue
        out.append(p)
    return sorted(out)


def _quarantine_file(reg: Registry, path: Path, problem: str, report: ScanReport, **extra):
    row = reg.get("files", str(path))
    if row is not None and row["status"] == "quarantined" and row["error"] == problem:
        return
    with reg.write():
        reg.db["files"].upsert({"path": str(path), "status": "quarantined",
                                "error": f"{path}: {problem}", "first_seen_at": time.time(),
                                **extra}, pk="path")
        reg.event("files", str(path), row["status"] if row else None, "quarantined", problem)
    report.quarantined.append((str(path), problem))
    log.warning("quarantined %s: %s", path, problem)


def scan(cfg: Config, reg: Registry, incoming: Path, *, now: float | None = None) -> ScanReport:
    """One pass over ``incoming``. Safe to repeat: registered files are not read again."""
    report = ScanReport()
    now = time.time() if now is None else now
    d = cfg.discover
    for path in _list_candidates(Path(incoming), report, reg):
        row = reg.get("files", str(path))
        try:
            st = path.stat()
        except OSError as exc:
            _quarantine_file(reg, path, f"cannot stat ({exc})", report)
            continue
        if row and row["status"] in ("ok", "conflict", "quarantined") and \
                row["size"] == st.st_size and row["mtime"] == st.st_mtime:
            continue
        if row and row["status"] == "quarantined" and row["size"] is None:
            continue  # quarantined before it could be sized (bad name, bad path)
        settling = (now - st.st_mtime) < d.settle_s or (
            row is not None and row["status"] == "pending" and row["size"] != st.st_size)
        try:
            fn_jd, sb = parse_filename(path)
            if not 0 <= sb < cfg.band.nsubbands:
                raise InputFileError(
                    path, f"subband index {sb} outside 0..{cfg.band.nsubbands - 1}")
            if st.st_size == 0 and not settling:
                raise FileNotReadyError(path, "zero-byte file")
            if settling:
                raise FileNotReadyError(path, "size still changing")
            hdr = read_header(path)
        except FileNotReadyError as exc:
            scans = (row["unreadable_scans"] or 0) + 1 if row else 1
            rec = {"path": str(path), "status": "pending", "error": str(exc), "size": st.st_size,
                   "mtime": st.st_mtime, "unreadable_scans": scans}
            if scans >= d.unreadable_retries and not settling:
                _quarantine_file(reg, path, f"{exc.problem}, still after {scans} scans", report,
                                 size=st.st_size, mtime=st.st_mtime, unreadable_scans=scans)
                continue
            with reg.write():
                reg.db["files"].upsert({**rec, "first_seen_at": row["first_seen_at"] if row
                                        else now}, pk="path")
            report.pending.append(str(path))
            continue
        except InputFileError as exc:
            _quarantine_file(reg, path, exc.problem, report, size=st.st_size, mtime=st.st_mtime)
            continue
        _register(cfg, reg, path, st, fn_jd, sb, hdr, report, row)
    _mark_incomplete(cfg, reg, now, report)
    return report


def _find_observation(reg: Registry, start_jd: float, dec: float, tol_s: float):
    tol = tol_s / 86400.0
    rows = reg.db.execute(
        "SELECT obs_id, start_jd FROM observations WHERE start_jd BETWEEN ? AND ? "
        "AND abs(dec_rad - ?) < ?", [start_jd - tol, start_jd + tol, dec, DEC_TOL_RAD]).fetchall()
    if not rows:
        return None
    return min(rows, key=lambda r: abs(r[1] - start_jd))[0]


def _same_time_other_dec(reg: Registry, hdr, tol_s: float):
    """An observation at this file's start time but another pointing declination, if any.

    One correlator dump has one pointing: a file that disagrees is broken, not a second
    observation.
    """
    tol = tol_s / 86400.0
    row = reg.db.execute(
        "SELECT obs_id, dec_rad FROM observations WHERE start_jd BETWEEN ? AND ? AND "
        "abs(dec_rad - ?) >= ? ORDER BY abs(start_jd - ?) LIMIT 1",
        [hdr.start_jd - tol, hdr.start_jd + tol, hdr.dec_rad, DEC_TOL_RAD,
         hdr.start_jd]).fetchone()
    return tuple(row) if row else None


def _register(cfg, reg, path, st, fn_jd, sb, hdr, report, old_row):
    """Attach one readable file to its observation (in one transaction)."""
    with reg.write():
        obs_id = _find_observation(reg, hdr.start_jd, hdr.dec_rad, cfg.discover.time_tolerance_s)
        other = _same_time_other_dec(reg, hdr, cfg.discover.time_tolerance_s) \
            if obs_id is None else None
        if other is not None:
            problem = (f"pointing dec {np.rad2deg(hdr.dec_rad):.4f} deg differs from "
                       f"observation {other[0]} at the same time "
                       f"({np.rad2deg(other[1]):.4f} deg)")
            reg.db["files"].upsert({
                "path": str(path), "obs_id": None, "subband": sb, "status": "quarantined",
                "header_start_jd": hdr.start_jd, "filename_jd": fn_jd, "dec_rad": hdr.dec_rad,
                "size": st.st_size, "mtime": st.st_mtime, "error": f"{path}: {problem}",
                "first_seen_at": old_row["first_seen_at"] if old_row else time.time()},
                pk="path")
            reg.event("files", str(path), old_row["status"] if old_row else None,
                      "quarantined", problem)
            report.quarantined.append((str(path), problem))
            log.warning("quarantined %s: %s", path, problem)
            return  # leaving the block commits
        if obs_id is None:
            obs_id = obs_id_for(hdr.start_jd, hdr.dec_rad)
            reg.db["observations"].insert({
                "obs_id": obs_id, "start_jd": hdr.start_jd, "end_jd": hdr.end_jd,
                "dec_rad": hdr.dec_rad, "n_subbands": 0, "state": "discovered", "attempts": 0,
                "newest_file_mtime": st.st_mtime, "updated_at": time.time()})
            reg.event("observations", obs_id, None, "discovered")
        siblings = list(reg.db["files"].rows_where("obs_id = ? AND status = 'ok'", [obs_id]))
        status, problem = "ok", None
        same_sb = [s for s in siblings if s["subband"] == sb and s["path"] != str(path)]
        other = [s for s in siblings if s["path"] != str(path)]
        if same_sb:
            status, problem = "conflict", f"duplicate of subband {sb:02d}: {same_sb[0]['path']}"
        elif other and (other[0]["nblts"] != hdr.nblts or other[0]["nfreqs"] != hdr.nfreqs):
            status = "quarantined"
            problem = (f"shape Nblts={hdr.nblts} Nfreqs={hdr.nfreqs} differs from the rest of "
                       f"observation {obs_id} (Nblts={other[0]['nblts']} "
                       f"Nfreqs={other[0]['nfreqs']})")
        reg.db["files"].upsert({
            "path": str(path), "obs_id": obs_id, "subband": sb, "header_start_jd": hdr.start_jd,
            "filename_jd": fn_jd, "dec_rad": hdr.dec_rad, "nfreqs": hdr.nfreqs,
            "nblts": hdr.nblts, "size": st.st_size, "mtime": st.st_mtime, "status": status,
            "error": f"{path}: {problem}" if problem else None, "unreadable_scans": 0,
            "first_seen_at": old_row["first_seen_at"] if old_row else time.time()}, pk="path")
        reg.event("files", str(path), old_row["status"] if old_row else None, status, problem)
        n = reg.db.execute("SELECT count(DISTINCT subband) FROM files WHERE obs_id = ? AND "
                           "status = 'ok'", [obs_id]).fetchone()[0]
        obs = reg.get("observations", obs_id)
        reg.db["observations"].update(obs_id, {
            "n_subbands": n, "newest_file_mtime": max(obs["newest_file_mtime"] or 0, st.st_mtime),
            "end_jd": max(obs["end_jd"], hdr.end_jd)})
    if status == "ok":
        report.registered.append(str(path))
    elif status == "conflict":
        report.conflicts.append((str(path), problem))
        log.warning("%s: %s", path, problem)
    else:
        report.quarantined.append((str(path), problem))
        log.warning("quarantined %s: %s", path, problem)
    if n >= cfg.band.nsubbands and obs["state"] in ("discovered", "incomplete"):
        reg.transition("observations", obs_id, "complete")
        report.completed.append(obs_id)
        log.info("observation %s complete (%d/%d subbands)", obs_id, n, cfg.band.nsubbands)


def _mark_incomplete(cfg, reg, now, report):
    """Observations still short of subbands after the configured wait become incomplete."""
    wait = cfg.discover.incomplete_wait_s
    for obs in reg.db["observations"].rows_where(
            "state = 'discovered' AND newest_file_mtime < ?", [now - wait]):
        reg.transition("observations", obs["obs_id"], "incomplete",
                       error=f"only {obs['n_subbands']}/{cfg.band.nsubbands} subbands after "
                             f"waiting {wait:.0f} s")
        report.incomplete.append(obs["obs_id"])
        log.warning("observation %s incomplete: %d/%d subbands", obs["obs_id"],
                    obs["n_subbands"], cfg.band.nsubbands)
