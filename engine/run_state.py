"""What a driver run owns besides the registry: its areas, its summary, its leases."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from engine.constants import CADENCE_S
from engine.config import Config
from engine.errors import ConfigError


@dataclass
class Areas:
    incoming: Path
    stage: Path
    products: Path
    registry: Path

    @classmethod
    def from_config(cls, cfg: Config, base: Path) -> "Areas":
        """The run's areas; a ``..`` in a configured path, or two areas inside each other,
        is a :class:`ConfigError` (cleaning stage must never touch incoming or products)."""
        keys = ("incoming", "stage", "products", "registry")
        for k in keys:
            if ".." in Path(getattr(cfg.paths, k)).parts:
                raise ConfigError(f"paths.{k} = {getattr(cfg.paths, k)!r}: '..' is not "
                                  "allowed; give an absolute path instead")
        a = cls(*(cfg.resolve_path(k, base) for k in keys))
        dirs = {"incoming": a.incoming, "stage": a.stage, "products": a.products}
        for k1, p1 in dirs.items():
            for k2, p2 in dirs.items():
                r1, r2 = p1.resolve(), p2.resolve()
                if k1 != k2 and (r1 == r2 or r1.is_relative_to(r2)):
                    raise ConfigError(f"paths.{k1} ({r1}) lies inside paths.{k2} ({r2}); the "
                                      "areas must be separate folders")
        for p in dirs.values():
            p.mkdir(parents=True, exist_ok=True)
        return a


@dataclass
class RunSummary:
    converted: list = field(default_factory=list)
    calibrated: list = field(default_factory=list)
    imaged: list = field(default_factory=list)
    published: list = field(default_factory=list)
    mosaics: list = field(default_factory=list)
    waiting: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    order: list = field(default_factory=list)  # obs_ids in the order they were taken
    unfinished: list = field(default_factory=list)  # discover.unfinished() at the end
    wall_s: float = 0.0
    recycle: str | None = None  # why a following driver stopped to be started again

    def real_time_factor(self) -> float | None:
        """Wall time per observation over the 309 s an observation lasts."""
        n = len(self.imaged) or len(self.converted)
        return self.wall_s / (n * CADENCE_S) if n else None

    def report(self) -> str:
        rtf = self.real_time_factor()
        lines = [f"observations taken: {len(self.order)} (oldest observation time first)",
                 f"converted: {len(self.converted)}  calibrated: {len(self.calibrated)}  "
                 f"imaged: {len(self.imaged)}  mosaics: {len(self.mosaics)}  "
                 f"published: {len(self.published)}",
                 f"waiting for calibration: {self.waiting}",
                 f"wall time: {self.wall_s:.1f} s; real-time factor: "
                 + (f"{rtf:.3f}" if rtf is not None else "n/a")]
        lines += [f"FAILED {k}: {v}" for k, v in self.failed.items()]
        lines += [f"STOPPED TO BE RESTARTED: {self.recycle}"] if self.recycle else []
        lines += [f"NOT FINISHED {u['obs_id']} ({u['state']}): {u['reason']}"
                  if u["obs_id"] else f"NOT USED {u['file']} ({u['state']}): {u['reason']}"
                  for u in self.unfinished]
        return "\n".join(lines)


def lease_abandoned(obs: dict, now: float) -> bool:
    """True when a lease expired or its owner (a process on this host) is gone."""
    owner = obs["lease_owner"]
    if owner is None or (obs["lease_expires_at"] or 0) < now:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
