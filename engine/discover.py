"""Discovery: scan the incoming folder, register files, group subbands into observations.

Grouping uses the header start time (``time_array[0]``, identical across the 16 subbands
of one observation), never the filename time, which jitters by up to ~30 s. Header times
within ``discover.time_tolerance_s`` at the same pointing declination are one observation.

File outcomes (``files.status``, :class:`engine.states.FileStatus`):
``OK`` registered; ``PENDING`` still being written (size changed or HDF5 not openable,
looked at again next scan); ``QUARANTINED`` unusable (error names the problem);
``CONFLICT`` a second file for a subband that already has one (never overwritten).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from astropy.time import Time

from engine.config import Config
from engine.errors import FileNotReadyError, InputFileError
from engine.registry import Registry
from engine.states import FileStatus, ObsState
from engine.uvh5io import parse_filename, read_header
from engine.windows import incomplete_closed

log = logging.getLogger(__name__)

# files whose row is final unless the file itself changes (size or mtime)
SETTLED = (FileStatus.OK, FileStatus.CONFLICT, FileStatus.QUARANTINED)


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
        if not os.path.lexists(p):
            continue  # removed since the listing (an archiver): nothing to judge
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
    if reg.quarantine_file(str(path), problem, **extra):
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
            if not os.path.lexists(path):
                # removed since the listing (an archiver taking converted inputs away): a
                # file that is gone is not a bad file; its row, if any, stays as it was
                log.info("%s: removed while the scan looked at it", path)
                continue
            _quarantine_file(reg, path, f"cannot stat ({exc})", report)
            continue
        if row and row["status"] in SETTLED and \
                row["size"] == st.st_size and row["mtime"] == st.st_mtime:
            continue
        if row and row["status"] == FileStatus.QUARANTINED and row["size"] is None:
            continue  # quarantined before it could be sized (bad name, bad path)
        settling = (now - st.st_mtime) < d.settle_s or (
            row is not None and row["status"] == FileStatus.PENDING and row["size"] != st.st_size)
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
            if scans >= d.unreadable_retries and not settling:
                _quarantine_file(reg, path, f"{exc.problem}, still after {scans} scans", report,
                                 size=st.st_size, mtime=st.st_mtime, unreadable_scans=scans)
                continue
            reg.file_pending(str(path), str(exc), st.st_size, st.st_mtime, scans,
                             row["first_seen_at"] if row else now)
            report.pending.append(str(path))
            continue
        except InputFileError as exc:
            _quarantine_file(reg, path, exc.problem, report, size=st.st_size, mtime=st.st_mtime)
            continue
        _register(cfg, reg, path, st, fn_jd, sb, hdr, report, row)
    _mark_incomplete(cfg, reg, now, report)
    return report


def _register(cfg, reg, path, st, fn_jd, sb, hdr, report, old_row):
    """Attach one readable file to its observation (:meth:`Registry.attach_file`)."""
    got = reg.attach_file({
        "path": str(path), "subband": sb, "header_start_jd": hdr.start_jd,
        "end_jd": hdr.end_jd, "filename_jd": fn_jd, "dec_rad": hdr.dec_rad,
        "nfreqs": hdr.nfreqs, "nblts": hdr.nblts, "size": st.st_size, "mtime": st.st_mtime},
        new_obs_id=obs_id_for(hdr.start_jd, hdr.dec_rad),
        tol_s=cfg.discover.time_tolerance_s,
        dec_tol_rad=math.radians(cfg.discover.same_dec_tol_arcsec / 3600))
    if got.status == FileStatus.OK:
        report.registered.append(str(path))
    elif got.status == FileStatus.CONFLICT:
        report.conflicts.append((str(path), got.problem))
        log.warning("%s: %s", path, got.problem)
    else:
        report.quarantined.append((str(path), got.problem))
        log.warning("quarantined %s: %s", path, got.problem)
    if got.n_subbands >= cfg.band.nsubbands and got.obs_state == ObsState.INCOMPLETE:
        obs = reg.get("observations", got.obs_id)
        if incomplete_closed(obs, time.time(), cfg.discover.incomplete_wait_s):
            # closed: mosaic windows may have been planned around it as a gap
            reg.note("observations", got.obs_id, obs["state"], {
                "late_file": f"{path}: arrived after the observation was closed as incomplete "
                             "(discover.incomplete_wait_s after it was marked); not used"})
            log.warning("%s: late file for observation %s, closed as incomplete: not used",
                        path, got.obs_id)
            return
    if got.n_subbands >= cfg.band.nsubbands and got.obs_state in (ObsState.DISCOVERED,
                                                                  ObsState.INCOMPLETE):
        reg.transition("observations", got.obs_id, ObsState.COMPLETE)
        report.completed.append(got.obs_id)
        log.info("observation %s complete (%d/%d subbands)", got.obs_id, got.n_subbands,
                 cfg.band.nsubbands)


def _mark_incomplete(cfg, reg, now, report):
    """Observations still short of subbands after the configured wait become incomplete."""
    wait = cfg.discover.incomplete_wait_s
    for obs in reg.discovered_quiet_since(now - wait):
        reg.transition("observations", obs["obs_id"], ObsState.INCOMPLETE,
                       error=f"only {obs['n_subbands']}/{cfg.band.nsubbands} subbands after "
                             f"waiting {wait:.0f} s")
        report.incomplete.append(obs["obs_id"])
        log.warning("observation %s incomplete: %d/%d subbands", obs["obs_id"],
                    obs["n_subbands"], cfg.band.nsubbands)


FINISHED = (ObsState.IMAGED, ObsState.MOSAICKED)


def unfinished(reg: Registry, cfg: Config) -> list[dict]:
    """Every observation not (yet) imaged, oldest first, with why in words: its subbands
    (``15/16 subbands``), each of its files that is pending, quarantined or in conflict and
    the problem (``sb05 quarantined: truncated HDF5 ...``), its error, or what it waits for.
    A file that could not be read has no observation: it is placed by the time and
    subband in its name; a bad file near no observation is listed on its own (obs_id None,
    "file"). Returns [{"obs_id", "state", "reason"}, ...]."""
    nsub = cfg.band.nsubbands
    loose = []
    for status in (FileStatus.PENDING, FileStatus.QUARANTINED, FileStatus.CONFLICT):
        for f in reg.files_with(status):
            try:
                jd, sb = parse_filename(Path(f["path"]))
            except (InputFileError, ValueError):
                jd, sb = None, f.get("subband")
            problem = str(f.get("error") or status)
            if problem.startswith(f"{f['path']}: "):
                problem = problem[len(f["path"]) + 2:]
            loose.append((f, jd, sb, str(status), problem))
    tol = 60.0 / 86400  # a file's name time and its header time differ by seconds
    out = []
    placed = set()
    for obs in reg.rows("observations", order_by="start_jd"):
        state = ObsState(obs["state"])
        mine = [x for x in loose if x[0].get("obs_id") == obs["obs_id"] or (
            x[0].get("obs_id") is None and x[1] is not None
            and obs["start_jd"] - tol <= x[1] <= obs["end_jd"] + tol)]
        placed.update(x[0]["path"] for x in mine)
        if state in FINISHED:
            continue
        why = []
        if state == ObsState.DISCOVERED or (state == ObsState.INCOMPLETE
                                            and not obs.get("error")):
            why.append(f"{obs['n_subbands']}/{nsub} subbands")
        for f, jd, sb, status, problem in mine:
            name = f"sb{sb:02d}" if sb is not None else Path(f["path"]).name
            why.append(f"{name} {status}: {problem}")
        if state == ObsState.AWAITING_CALIBRATION:
            why.append("no calibration valid at its observation time")
        if obs.get("error") and state in (ObsState.FAILED, ObsState.QUARANTINED,
                                          ObsState.INCOMPLETE):
            why.append(obs["error"])
        out.append({"obs_id": obs["obs_id"], "state": str(state),
                    "reason": "; ".join(why) or f"in progress ({state})"})
    for f, jd, sb, status, problem in loose:  # no observation to hold them
        if f["path"] not in placed:
            out.append({"obs_id": None, "file": f["path"], "state": status,
                        "reason": problem})
    return out
