"""docs/RELIABILITY.md names the test behind every case: each named test must exist."""

import re

from tests.conftest import ROOT


def test_every_test_named_in_the_reliability_table_exists():
    doc = (ROOT / "docs" / "RELIABILITY.md").read_text()
    named = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)", doc))
    defined = set()
    for f in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", f.read_text(), flags=re.M))
    assert len(named) >= 30
    assert named <= defined, f"named in the doc but not defined: {sorted(named - defined)}"
