"""Registry against disk: every file the registry names, and every file it does not.

``check`` walks the registry, not the folders: each product's files (image, primary beam,
residual, PNG; mosaic, weight, residual, thermal maps, PNG), each calibration table, each
retained Measurement Set and each registered input file must exist with the recorded size;
with ``deep`` their sha256 must match too (streamed, in 4 MB reads). Then it walks stage and
products for what no registry row names (orphans), knowing the engine's own container
folders. ``repair`` does only what is safe and returns what it did: a product whose files are
missing or changed goes back to where the next run re-creates it (its folder, if any, is
moved aside, never deleted); orphans are only listed unless deleting them is asked for.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import EngineError
from engine.paths import digest
from engine.registry import Registry
from engine.run_state import Areas
from engine.states import FileStatus, ObsState, ProductState

log = logging.getLogger(__name__)

# observations whose MS the engine still expects in stage (see StageBudget.settle)
MS_EXPECTED = (ObsState.CONVERTED, ObsState.CALIBRATING, ObsState.AWAITING_CALIBRATION,
               ObsState.IMAGING, ObsState.IMAGED, ObsState.MOSAICKED)
# folders the engine makes to hold other things (never orphans themselves)
CONTAINERS = ("mosaics", "lightcurves")


@dataclass
class Problem:
    """One difference between registry and disk.

    ``what``: missing, folder-missing, size, sha256 or orphan. ``table``/``key``: the
    registry row (empty for orphans). ``detail``: what differs, in words.
    """

    what: str
    table: str
    key: str
    path: str
    detail: str

    def line(self) -> str:
        where = f"{self.table} {self.key}: " if self.key else ""
        return f"{self.what:14s} {where}{self.path}: {self.detail}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    files: int = 0  # files (or MS/table folders) checked
    bytes: int = 0  # bytes hashed (deep only)
    seconds: float = 0.0
    deep: bool = False
    repaired: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"problems": [asdict(p) for p in self.problems], "files": self.files,
                "bytes_hashed": self.bytes, "seconds": self.seconds, "deep": self.deep,
                "repaired": self.repaired}


def tree_size(p: Path) -> int:
    """Bytes of a file, or of the files in a folder tree (casacore's table.lock excluded,
    as in :func:`engine.paths.digest`)."""
    if p.is_file():
        return p.stat().st_size
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file() and q.name != "table.lock")


class _Checker:
    def __init__(self, deep: bool, progress):
        self.report = Report(deep=deep)
        self.progress = progress
        self._last = time.monotonic()

    def check(self, table: str, key: str, path: Path, size: int | None, sha256: str | None,
              *, opaque_size: bool = False):
        """One registered file or folder: exists, size, and with ``deep`` the sha256."""
        rep = self.report
        rep.files += 1
        if not path.exists():
            rep.problems.append(Problem("missing", table, key, str(path), "not on disk"))
            return
        if size is not None and not opaque_size:
            got = tree_size(path)
            if got != size:
                rep.problems.append(Problem("size", table, key, str(path),
                                            f"{got} bytes on disk, {size} recorded"))
                return
        if rep.deep and sha256:
            got_sha, got_size = digest(path)
            rep.bytes += got_size
            if got_sha != sha256:
                rep.problems.append(Problem("sha256", table, key, str(path),
                                            f"sha256 {got_sha[:12]} on disk, "
                                            f"{sha256[:12]} recorded"))
            now = time.monotonic()
            if self.progress and now - self._last > 2.0:
                self._last = now
                self.progress(f"reconcile --deep: {rep.files} files, "
                              f"{rep.bytes / 1e9:.2f} GB hashed")


def _product_dir(row: dict) -> Path | None:
    path = row["published_path"] if row["state"] == ProductState.PUBLISHED else \
        row["stage_path"]
    return Path(path) if path else None


def check(reg: Registry, areas: Areas, *, deep: bool = False, progress=None) -> Report:
    """Compare every file the registry names with the disk, then look for orphans."""
    t0 = time.perf_counter()
    c = _Checker(deep, progress)
    known_files, known_dirs = set(), set()
    for row in reg.rows("products", order_by="data_id"):
        d = _product_dir(row)
        if d is None:
            continue
        d = d.resolve()
        known_dirs.add(d)
        if row["state"] == ProductState.REJECTED and not d.is_dir():
            continue  # repaired (its folder moved aside): the next run makes it again
        if not d.is_dir():
            c.report.problems.append(Problem("folder-missing", "products", row["data_id"],
                                             str(d), "the product's folder is not on disk"))
            continue
        for f in reg.product_files(row["data_id"]):
            p = (d / f["name"]).resolve()
            known_files.add(p)
            c.check("products", row["data_id"], p, f["size"], f["sha256"])
    for t in reg.rows("caltables", order_by="caltable_id"):
        known_files.add(Path(t["path"]))
        c.check("caltables", t["caltable_id"], Path(t["path"]), t["size"], t["sha256"])
    for obs in reg.with_ms():
        ms = Path(obs["ms_path"])
        if obs["state"] not in MS_EXPECTED:
            known_files.add(ms)  # a leftover of a failed attempt is the engine's, not orphan
            known_files.add(ms.with_suffix(".zarr"))
            continue
        known_files.add(ms)
        m = reg.manifest(obs["obs_id"]) or {}
        in_place = bool(m.get("in_place"))  # CASA wrote into it: only its presence counts
        c.check("observations", obs["obs_id"], ms, None if in_place else m.get("size"),
                None if in_place else m.get("sha256"))
    for f in reg.files_with(FileStatus.OK):
        c.check("files", f["path"], Path(f["path"]), f["size"], None)
    for src in reg.sources():  # light-curve PNGs (drawn while a source was a candidate)
        if src.get("png_path"):
            known_files.add(Path(src["png_path"]).resolve())
            c.check("sources", src["name"], Path(src["png_path"]), None, src["png_sha256"])
    c.report.problems += _orphans(reg, areas, known_files, known_dirs)
    c.report.seconds = time.perf_counter() - t0
    return c.report


def _orphans(reg: Registry, areas: Areas, known_files: set, known_dirs: set) -> list[Problem]:
    """Entries under stage and products that no registry row names (each reported once:
    an orphan folder is not entered)."""
    obs_ids = {r["obs_id"]: r["state"] for r in reg.observation_summaries()}
    writing = (ObsState.COMPLETE, ObsState.CONVERTING, ObsState.CALIBRATING, ObsState.IMAGING)
    busy = {o for o, s in obs_ids.items() if s in writing}
    stage = areas.stage.resolve()
    # a conversion store is the engine's until its MS exists: a failed or waiting
    # conversion resumes from the subband blocks verified in it
    resumable = (ObsState.COMPLETE, ObsState.CONVERTING, ObsState.FAILED)
    known_files = known_files | {stage / o / f"{o}.zarr" for o, s in obs_ids.items()
                                 if s in resumable}
    containers = set(known_dirs)  # product folders: entered, extra files in them are orphans
    for p in known_files | known_dirs:
        containers.update(p.parents)
    products = areas.products.resolve()
    for root in (stage, products):
        containers.update(root / c for c in CONTAINERS)
    containers.update(stage / o for o in obs_ids)
    out = []

    def walk(d: Path):
        for e in sorted(d.iterdir()):
            if e in known_files:  # a file, or a folder the registry names whole (MS, table)
                continue
            if e.is_dir() and e in containers:
                walk(e)
                continue
            top = e.relative_to(stage).parts[0] if e.is_relative_to(stage) else ""
            if top in busy and (e.suffix in (".tmp", ".zarr") or e.name.endswith(".ms.tmp")):
                continue  # a task in flight writes there
            kind = "folder" if e.is_dir() else "file"
            out.append(Problem("orphan", "", "", str(e), f"{kind} that no registry row names"))

    for root in (areas.stage, areas.products):
        if root.is_dir():
            walk(root.resolve())
    return out


def repair(reg: Registry, areas: Areas, report: Report, *, registered: bool = True,
           delete_orphans: bool = False) -> list[str]:
    """Do what is safe about ``report``'s problems; returns one line per action taken.

    ``registered``: repair what the registry names (``--repair``); ``delete_orphans``:
    delete what it does not (``--delete-orphans``, only when asked)."""
    done = []
    broken = {(p.table, p.key) for p in report.problems if p.what != "orphan"} \
        if registered else set()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for table, key in sorted(broken):
        if table == "products":
            try:
                done.append(_repair_product(reg, areas, key, stamp))
            except EngineError as exc:
                done.append(f"{key}: not repaired: {exc}")
        elif table == "observations":
            obs = reg.get("observations", key)
            if obs["state"] in (ObsState.IMAGED, ObsState.MOSAICKED):
                reg.forget_ms(key, "retained MS missing or changed on disk (reconcile)")
                done.append(f"{key}: retained MS recorded as gone (its image is intact)")
            else:
                reg.transition("observations", key, ObsState.FAILED,
                               error="MS missing or changed on disk (reconcile)")
                done.append(f"{key}: {obs['state']} -> failed (the next run reconverts it "
                            "while it has attempts left, driver.max_attempts)")
        elif table == "caltables":
            done.append(f"{key}: not repaired: calibration tables are re-solved only by "
                        "reprocessing their calibrator observation")
        elif table == "files":
            done.append(f"{key}: not repaired: an input file is the telescope's, not ours")
        elif table == "sources":
            done.append(f"{key}: light-curve PNG redrawn by the next run (every run redraws "
                        "the candidates')")
    if delete_orphans:
        for p in report.problems:
            if p.what == "orphan":
                path = Path(p.path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                done.append(f"{path}: orphan deleted (--delete-orphans)")
    return done


def _repair_product(reg: Registry, areas: Areas, data_id: str, stamp: str) -> str:
    """Registry first (it refuses, changing nothing, while a task is in flight), then the
    damaged folder is moved aside (kept, out of the way of the product made again)."""
    row = reg.get("products", data_id)
    reason = "files missing or changed on disk (reconcile)"
    if row["kind"] == "mosaic":
        reg.repair_mosaic(data_id, reason)
        what = f"{data_id}: mosaic planned again (the next run re-makes it)"
    else:
        obs_id = data_id.split(":", 1)[1]
        obs = reg.get("observations", obs_id)
        ms = Path(obs["ms_path"]) if obs["ms_path"] else None
        if ms is not None and (ms / "table.dat").exists() and reg.manifest(obs_id):
            reg.repair_image(data_id, ObsState.CONVERTED, reason)
            what = f"{data_id}: observation -> converted (re-imaged from its MS)"
        else:
            reg.repair_image(data_id, ObsState.COMPLETE, reason)
            what = f"{data_id}: observation -> complete (reconverted and re-imaged)"
    d = _product_dir(row)
    if d is not None and d.exists():
        aside = d.with_name(f"{d.name}.broken-{stamp}")
        d.rename(aside)
        what += f"; its folder moved aside to {aside}"
    return what


def print_report(report: Report, out=None):
    out = out or sys.stdout  # looked up at the call: stdout may be redirected later
    for p in report.problems:
        print(p.line(), file=out)
    rate = f", {report.bytes / 1e9 / max(report.seconds, 1e-9):.2f} GB/s" if report.deep else ""
    print(f"{len(report.problems)} problem(s); {report.files} registered files checked"
          f"{' with sha256' if report.deep else ''} in {report.seconds:.1f} s{rate}", file=out)
    for line in report.repaired:
        print(f"repaired: {line}", file=out)
