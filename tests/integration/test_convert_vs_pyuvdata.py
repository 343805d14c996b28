"""The engine's MS against pyuvdata's own phase-and-write_ms of the same files."""

import subprocess
import sys

import numpy as np
import pytest
from casacore import tables

from engine import config
from engine.convert import convert_local
from tests.conftest import ROOT, point_source_obs


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    d = tmp_path_factory.mktemp("vs_pyuvdata")
    paths, cfg, src, mid = point_source_obs(d / "in", overrides={"sim.ntimes": 4})
    c = config.load(None, {"convert.phasing": "single"})
    eng = convert_local(paths, str(d / "engine.ms"), c)
    with tables.table(eng["ms_path"] + "/FIELD", ack=False) as t:
        ra, dec = t.getcol("PHASE_DIR")[0, 0]
    p = subprocess.run([sys.executable, "-m", "tests.reference.pyuvdata_convert",
                        str(d / "ref.ms"), repr(float(ra)), repr(float(dec)), *paths], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return eng["ms_path"], str(d / "ref.ms")


def _cols(ms, names):
    with tables.table(ms, ack=False) as t:
        return {n: t.getcol(n) for n in names}


def _sorted(ms):
    """Rows sorted by (time, antenna names): the two writers number antennas differently."""
    c = _cols(ms, ["TIME", "ANTENNA1", "ANTENNA2", "UVW", "DATA", "FLAG"])
    with tables.table(ms + "/ANTENNA", ack=False) as t:
        names = np.array(t.getcol("NAME"))
    c["NAME1"], c["NAME2"] = names[c["ANTENNA1"]], names[c["ANTENNA2"]]
    order = np.lexsort((c["NAME2"], c["NAME1"], c["TIME"]))
    return {k: v[order] for k, v in c.items()}


def test_rows_times_antennas_and_channels(both):
    eng, ref = both
    a, b = _sorted(eng), _sorted(ref)
    assert np.array_equal(a["NAME1"], b["NAME1"])
    assert np.array_equal(a["NAME2"], b["NAME2"])
    assert np.allclose(a["TIME"], b["TIME"], atol=1e-3)
    with tables.table(eng + "/SPECTRAL_WINDOW", ack=False) as t:
        fa = t.getcol("CHAN_FREQ")
    with tables.table(ref + "/SPECTRAL_WINDOW", ack=False) as t:
        fb = t.getcol("CHAN_FREQ")
    assert np.allclose(fa, fb, rtol=0, atol=1e-3)


def test_uvw_agree(both):
    """w and baseline length agree to 1 mm; the uv plane is turned by pyuvdata's frame_pa.

    Measured: w agrees to 1e-10 m, but pyuvdata's u,v are rotated by ~4.6e-5 rad (9.5
    arcsec) from the engine's, whose orientation matches casacore's touvw to 0.4 arcsec
    (tests/integration/test_convert_casa.py). The rotation is bounded here, not hidden.
    """
    eng, ref = both
    a, b = _sorted(eng), _sorted(ref)
    cross = a["ANTENNA1"] != a["ANTENNA2"]
    ua, ub = a["UVW"][cross], b["UVW"][cross]
    assert np.abs(ua[:, 2] - ub[:, 2]).max() < 1e-3
    assert np.abs(np.linalg.norm(ua, axis=1) - np.linalg.norm(ub, axis=1)).max() < 1e-3
    rot = np.angle((ua[:, 0] + 1j * ua[:, 1]) * np.conj(ub[:, 0] + 1j * ub[:, 1]))
    long = np.hypot(ua[:, 0], ua[:, 1]) > 100
    assert np.abs(rot[long]).max() < 1e-4


def test_data_agree(both):
    eng, ref = both
    a, b = _sorted(eng), _sorted(ref)
    cross = (a["ANTENNA1"] != a["ANTENNA2"])
    da, db = a["DATA"][cross], b["DATA"][cross]
    # same complex values: amplitude and phase (phase error < 0.01 rad on every sample)
    assert np.allclose(np.abs(da), np.abs(db), rtol=1e-4, atol=1e-5)
    dphi = np.angle(da * np.conj(db))
    assert np.max(np.abs(dphi)) < 0.01
