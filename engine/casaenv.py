"""CASA that works offline, and the one-casacore-per-process rule.

casatools reads its measures data through casaconfig. The engine writes a site
configuration pointing at the ``casadata`` package's data with every auto-update off and
sets ``CASASITECONFIG`` before casatools is imported, in this process and (through Ray's
runtime environment) in every worker.

python-casacore and casatools each carry their own casacore; loading both in one process
crashes (pyuvdata issue 1625, dask-ms issue 378). :func:`import_casatools` and
:func:`import_casacore_tables` refuse to load one where the other is loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.config import env
from engine.errors import EngineError

SITE_CONFIG_NAME = "casasiteconfig.py"


def casa_data_path() -> str:
    import casadata

    return casadata.datapath


def site_config_path() -> Path:
    base = env("DSA110_CACHE") or str(Path(sys.prefix) / "share" / "dsa110-engine")
    return Path(base) / SITE_CONFIG_NAME


def write_site_config() -> Path:
    """Write (if needed) the CASA site config and return its path."""
    path = site_config_path()
    text = (
        "# written by dsa110-engine: offline CASA, measures from the casadata package\n"
        f"measurespath = {casa_data_path()!r}\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        "nologfile = True\n"
        "log2term = False\n"
        "nologger = True\n"
        "skipnetworkcheck = True\n"
    )
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def casa_env_vars() -> dict[str, str]:
    """Environment every CASA process needs (passed to Ray workers)."""
    return {"CASASITECONFIG": str(write_site_config())}


def import_casatools():
    """Import casatools offline; refuses in a process that loaded python-casacore."""
    if "casacore" in sys.modules or "casacore.tables" in sys.modules:
        raise EngineError("casatools requested in a process that already loaded "
                          "python-casacore: one casacore per process (see docs/ARCHITECTURE.md)")
    os.environ.update(casa_env_vars())
    import casatools

    return casatools


def import_casacore_tables():
    """Import python-casacore's tables; refuses in a process that loaded casatools."""
    if "casatools" in sys.modules:
        raise EngineError("python-casacore requested in a process that already loaded "
                          "casatools: one casacore per process (see docs/ARCHITECTURE.md)")
    from casacore import tables

    return tables
