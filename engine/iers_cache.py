"""astropy's Earth-orientation table, parsed once per machine instead of once per process.

Every process that converts a sky direction into the Earth-fixed frame (a conversion or
calibration worker, the simulator, the driver finding calibrator transits) needs the IERS
table (UT1 - UTC, polar motion). astropy builds it by parsing the bundled IERS-A and IERS-B
text files, 1.5-3 s in each new process: a large part of a cold worker's start. This module
keeps the parsed table as a pickle in astropy's cache folder, keyed by the astropy and
astropy-iers-data versions and the two source files' sizes and times, and hands it to
``IERS_Auto`` before anything asks for it. The table is the one ``IERS_Auto.open()`` reads
(tests/unit/test_iers_cache.py); astropy's own refresh of stale predictions is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def _key() -> str:
    import astropy
    from astropy.utils import iers

    from importlib.metadata import PackageNotFoundError, version

    try:
        data_version = version("astropy-iers-data")
    except PackageNotFoundError:  # the tables' files still key the cache
        data_version = "unknown"
    parts = [astropy.__version__, data_version]
    for f in (iers.IERS_A_FILE, iers.IERS_B_FILE):
        st = os.stat(f)
        parts += [str(f), str(st.st_size), str(st.st_mtime_ns)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_path() -> Path:
    from astropy.config import get_cache_dir_path

    return Path(get_cache_dir_path()) / "dsa110-engine" / f"iers-auto-{_key()}.pkl"


def install() -> None:
    """Give astropy's ``IERS_Auto`` its table from the cache (made on first use). Does
    nothing if the table is already loaded in this process; any problem with the cache
    (unreadable, unwritable, stale format) falls back to astropy's own parsing."""
    from astropy.utils import iers

    if iers.IERS_Auto.iers_table is not None:
        return
    try:
        path = cache_path()
    except OSError as exc:  # no cache folder, no IERS files: astropy decides
        log.debug("IERS cache unavailable: %s", exc)
        return
    try:
        with open(path, "rb") as f:
            table = pickle.load(f)
        if isinstance(table, iers.IERS_Auto):
            iers.IERS_Auto.iers_table = table
            return
    except FileNotFoundError:
        pass
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            TypeError, ValueError) as exc:
        log.debug("IERS cache %s not used: %s", path, exc)
    table = iers.IERS_Auto.open()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
            pickle.dump(table, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(f.name, path)  # atomic: a concurrent reader sees all of it or none
    except OSError as exc:
        log.debug("IERS cache %s not written: %s", path, exc)
