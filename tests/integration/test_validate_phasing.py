"""The phase-centre validator: drift phasing is information, inconsistency is an error."""

import shutil

import numpy as np
import pytest
from casacore import tables

from engine import config
from engine.convert import convert_local
from engine.errors import ObservationError
from engine.msio import read_geometry
from engine.telescope import Telescope
from engine.validate import validate_phasing


@pytest.fixture(scope="module")
def meridian_ms(one_obs, tmp_path_factory):
    paths, _, cfg = one_obs
    cfg = config.load(None, {**cfg.as_flat(), "convert.phasing": "meridian"})
    d = tmp_path_factory.mktemp("val")
    m = convert_local(paths, str(d / "m.ms"), cfg)
    return m, cfg


def test_drift_fields_are_reported_not_rejected(meridian_ms):
    m, cfg = meridian_ms
    rep = m["phasing_report"]
    assert rep["nfields"] == cfg.sim.ntimes
    # the meridian moves 15 arcsec per second of time times cos(dec): one integration
    step = 12.884902 * 15.041 * np.cos(np.deg2rad(cfg.sim.dec_deg))
    assert abs(rep["field_step_arcsec_median"] - step) < 0.02 * step
    assert rep["uvw_max_error_m"] < 1e-6


def _copy(m, tmp_path):
    dst = tmp_path / "copy.ms"
    shutil.copytree(m["ms_path"], dst)
    return str(dst)


def test_corrupt_uvw_is_an_error(meridian_ms, tmp_path):
    m, cfg = meridian_ms
    ms = _copy(m, tmp_path)
    with tables.table(ms, readonly=False, ack=False) as t:
        uvw = t.getcol("UVW")
        uvw[5, 0] += 0.5
        t.putcol("UVW", uvw)
    with pytest.raises(ObservationError, match="UVW disagree"):
        validate_phasing(read_geometry(ms), Telescope(cfg).location)


def test_phase_dir_off_the_meridian_is_an_error(meridian_ms, tmp_path):
    m, cfg = meridian_ms
    ms = _copy(m, tmp_path)
    with tables.table(ms + "/FIELD", readonly=False, ack=False) as t:
        d = t.getcol("PHASE_DIR")
        d[:, 0, 1] += np.deg2rad(10 / 3600)
        t.putcol("PHASE_DIR", d)
    geo = read_geometry(ms)
    # a loose UVW tolerance isolates the PHASE_DIR check
    with pytest.raises(ObservationError, match="from the meridian"):
        validate_phasing(geo, Telescope(cfg).location, uvw_tol_m=10.0,
                         dec_app_rad=np.deg2rad(cfg.sim.dec_deg))
