"""A mosaic's QA and quick-look against its own written files: the statistics the task
reports are the ones an astronomer recomputes from the FITS maps (numpy), and the maps in
memory are not disturbed while they are written (astropy byte-swaps little-endian arrays
in place while it writes them)."""

import numpy as np
import pytest
from astropy.io import fits

from benchmarks.mosaic import synthetic_members
from engine import config
from engine.image import INNER_PB
from engine.mosaic import make_mosaic


def _robust_rms(a):
    a = a[np.isfinite(a)]
    return 1.4826 * np.median(np.abs(a - np.median(a)))


@pytest.mark.parametrize("seed", [3, 4, 5])  # the race it guards against hit 1 in 2
def test_mosaic_qa_is_what_its_files_say(tmp_path, seed):
    cfg = config.load(None, {"sources.enabled": False})
    members, _ = synthetic_members(tmp_path, cfg, 4, seed, n=1024, cell=4.0, n_sources=150)
    m = make_mosaic(members, str(tmp_path / "out"), cfg, mosaic_id="qa")
    files = {k: v["path"] for k, v in m["files"].items()}
    resid, thermal, weight = (fits.getdata(files[k]).astype(np.float64)
                              for k in ("residual", "thermal", "weight"))
    # the beam response the QA's "inner" region uses is not a file: take it from the
    # members' beams sampled like the mosaic (the weight map is sum w B^2, w = 1/rms^2)
    w = 1.0 / members[0]["rms"] ** 2  # every member has the same rms here
    r, t = resid[::2, ::2], thermal[::2, ::2]
    inner = (weight[::2, ::2] >= w * INNER_PB ** 2) & np.isfinite(r) & (t > 0)
    qa = m["qa"]
    # sum w B^2 >= w INNER_PB^2 holds wherever one member has B >= INNER_PB (the QA's
    # region) and a little more; the ratio of residual to thermal noise is ~1 on both
    ratio = _robust_rms(r[inner] / t[inner])
    assert 0.95 < ratio < 1.05
    assert qa["thermal_ratio"] == pytest.approx(ratio, rel=0.03)
    assert qa["residual_rms_jy"] == pytest.approx(_robust_rms(r[inner]), rel=0.03)
    mosaic = fits.getdata(files["mosaic"]).astype(np.float64)
    assert qa["peak_jy"] == pytest.approx(np.nanmax(mosaic), rel=1e-6)
