"""The architecture's rules, checked on the source: one owner for SQL, states only as enums.

These read the engine's own files (not its behaviour): a new module that writes SQL of its
own, or compares a state with a quoted string, fails here with the file and line.
"""

import ast
import re
from pathlib import Path

from engine.states import FileStatus, MosaicState, ObsState, ProductState

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("engine", "kernels") for p in (ROOT / d).rglob("*.py"))
REGISTRY = ROOT / "engine" / "registry"
STATES = {str(s) for enum in (ObsState, ProductState, MosaicState, FileStatus) for s in enum}

SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX)|PRAGMA)\b")
DB_ACCESS = re.compile(r"\.db\b(\[|\.|\))|\.execute\(|\brows_where\(|\bimport sqlite3\b|"
                       r"\bimport sqlite_utils\b")


def _strings(tree):
    """Every string constant that is not a docstring, with its line."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


def test_the_sources_are_found():
    assert len(SOURCES) > 30 and any(p.parent == REGISTRY for p in SOURCES)


def test_no_sql_outside_the_registry():
    found = []
    for path in SOURCES:
        if path.is_relative_to(REGISTRY):
            continue
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if DB_ACCESS.search(line.split("#")[0]):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
        for lineno, s in _strings(ast.parse(text)):
            if SQL.search(s):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: SQL {s[:60]!r}")
    assert not found, "SQL outside engine/registry/:\n" + "\n".join(found)


def test_no_bare_state_strings_outside_the_enums():
    """A state is named through engine.states, never spelled: a typo would be a new state.
    Quoted states inside strings (SQL literals such as ``state = 'failed'``) count too."""
    quoted = re.compile("'(" + "|".join(sorted(STATES)) + ")'")
    found = []
    for path in SOURCES:
        if path == ROOT / "engine" / "states.py":
            continue
        for lineno, s in _strings(ast.parse(path.read_text())):
            if s in STATES or quoted.search(s):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {s[:60]!r}")
    assert not found, "state spelled as a string:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The two scanners flag a planted offender (a check that cannot fail is no check)."""
    bad = ("def f(reg):\n"
           "    '''docstring mentioning 'failed' is fine'''\n"
           "    reg.db.execute(\"SELECT obs_id FROM observations WHERE state = 'failed'\")\n"
           "    return reg.transition('observations', 'x', 'imaged')\n")
    strings = [s for _, s in _strings(ast.parse(bad))]
    assert any(SQL.search(s) for s in strings)
    assert any(DB_ACCESS.search(line) for line in bad.splitlines())
    assert "imaged" in strings and "docstring mentioning 'failed' is fine" not in strings


def test_kernels_are_pure():
    """Kernels import numpy, numba, the standard math and the constants; nothing that does
    I/O, reads the configuration or touches the registry."""
    allowed = {"__future__", "math", "numpy", "numba", "engine.constants", "kernels"}
    found = []
    for path in (ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name not in allowed and name.split(".")[0] not in {"kernels"} | (
                        allowed - {"engine.constants"}):
                    found.append(f"{path.name}: imports {name}")
    assert not found, found


def test_every_package_is_installed():
    """setup.cfg lists its packages (configs/ installs as engine.configs): a new subpackage
    that is not listed would work in the checkout and be missing from an install."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(ROOT).parts) for d in ("engine", "kernels")
             for p in (ROOT / d).rglob("__init__.py")}
    assert found | {"engine.configs"} == listed
    assert (ROOT / "configs" / "__init__.py").exists()
