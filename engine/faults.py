"""Named fault-injection points, so tests can break a real run where it hurts.

``DSA110_FAULTS`` holds comma-separated ``point@pattern=action`` entries; ``pattern`` is an
fnmatch pattern on the key the code passes (an observation ID or a path), ``action`` is
``raise`` (a RuntimeError, as a failing library call would raise), ``sleep:<seconds>``, or
``transient:<folder>``: an :class:`~engine.errors.TransientError` (as an I/O error on a
shared file system becomes) the first time for each key, nothing after; the folder keeps
one marker file per key, so the second attempt, in whatever process, succeeds; or ``kill``:
SIGKILL to the caller's whole process group when the caller leads it (a driver started in
its own session dies with the Ray it started, as a killed job does), else to the caller
alone.
Unset (the normal case) every check is a dictionary lookup that does nothing. The driver
passes the variable on to its Ray workers (:mod:`engine.raytasks`).

Points: ``casa.tclean`` (inside the guarded tclean call, key = MS path),
``convert.subband`` (start of a subband task, key = file path), ``convert.assemble``
(start of an assembly task, key = MS path), ``calibrate.start`` and ``image.start``
(start of a calibration or image task, key = observation ID), ``mosaic.start`` (key =
mosaic ID), ``driver.measured`` (in the driver, after an image's forced photometry is
recorded and before the image is, key = observation ID).
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from pathlib import Path

from engine.config import env
from engine.errors import TransientError

VAR = "DSA110_FAULTS"


def _parse(text: str) -> list[tuple[str, str, str]]:
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        target, _, action = item.partition("=")
        point, _, pattern = target.partition("@")
        out.append((point, pattern or "*", action or "raise"))
    return out


def check(point: str, key: str):
    """Act on ``point`` if the environment asks for a fault there for ``key``."""
    text = env(VAR, "")
    if not text:
        return
    for p, pattern, action in _parse(text):
        if p != point or not fnmatch.fnmatch(str(key), pattern):
            continue
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
        elif action.startswith("transient:"):
            marks = Path(action.split(":", 1)[1])
            marks.mkdir(parents=True, exist_ok=True)
            mark = marks / hashlib.sha256(f"{point}|{key}".encode()).hexdigest()[:16]
            try:
                mark.touch(exist_ok=False)
            except FileExistsError:
                continue  # failed once already: this attempt goes through
            raise TransientError(f"injected transient fault at {point} for {key}")
        elif action == "kill":
            import os
            import signal

            if os.getpgid(0) == os.getpid():  # a process group of its own: take it all
                os.killpg(0, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)  # else only this process
        elif action == "raise":
            raise RuntimeError(f"injected fault at {point} for {key}")
