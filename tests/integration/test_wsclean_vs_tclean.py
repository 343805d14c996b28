"""Optional: the same MS imaged by tclean and WSClean gives the same source fluxes."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from engine import config, simulate
from engine.convert import convert_local
from engine.telescope import Telescope
from tests.conftest import interpolated_peak

pytestmark = pytest.mark.skipif(shutil.which("wsclean") is None,
                                reason="wsclean is not installed (apt-get install wsclean)")

IMAGE = r"""
import json, sys
from engine import config
from engine.image import image_observation
cfg = config.load(None, json.loads(sys.argv[3]))
m = image_observation(sys.argv[1], sys.argv[2], cfg, obs_id="cmp")
print("RESULT" + json.dumps(m))
"""


def _peak(img, wcs, ra, dec):
    x, y = (float(v) for v in wcs.world_to_pixel(SkyCoord(ra * u.rad, dec * u.rad)))
    return interpolated_peak(img, x, y)[0]


def test_tclean_and_wsclean_agree(tmp_path):
    cfg = config.load(None, {"sim.nants": 24, "sim.nchan_per_subband": 2, "sim.ntimes": 6,
                             "sim.nobs": 1, "sim.nsources": 6, "sim.flux_range_jy": "1,4",
                             "sim.field_radius_deg": 0.4, "sim.noise_jy": 0.01,
                             "convert.phasing": "single"})
    tel = Telescope(cfg)
    sky = simulate.make_sky(cfg, tel)
    paths = simulate.simulate_observation(cfg, tel, simulate.obs_start_times_jd(cfg)[0],
                                          tmp_path, sky=sky)
    ms = str(tmp_path / "obs.ms")
    convert_local([str(p) for p in paths], ms, cfg)
    images, headers = {}, {}
    # WSClean also with a spectrum per component (nterms 2: -join-channels, 4 sub-bands)
    for label, backend, nterms in (("tclean", "tclean", 1), ("wsclean", "wsclean", 1),
                                   ("wsclean_spectral", "wsclean", 2)):
        # one restoring beam for both, so peaks (Jy/beam) compare flux densities directly
        flat = {**cfg.as_flat(), "image.backend": backend, "image.cell_arcsec": 6.0,
                "image.imsize": 1024, "image.restoring_beam_arcsec": 30.0, "image.niter": 3000,
                "image.threshold_jy": 0.01,
                "image.nterms": nterms, "image.weighting": "briggs", "image.robust": 0.0,
                "image.gridder": "wproject"}
        p = subprocess.run([sys.executable, "-c", IMAGE, ms, str(tmp_path / label),
                            json.dumps(flat)], capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-2000:]
        m = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
        assert m["qa"]["backend"] == backend
        # each imager's own count of its clean (WSClean's from its FITS keywords)
        clean = m["qa"]["clean"]
        assert 0 < clean["iterations"] <= 3000 and clean["major_cycles"] >= 1, (label, clean)
        with fits.open(m["files"]["image"]["path"]) as h:
            images[label] = (np.squeeze(h[0].data), WCS(h[0].header).celestial)
            headers[label] = h[0].header.copy()
    # both imagers' products say where the telescope is (WSClean writes no site; CASA's
    # exportfits wrote one 1188 m from the Earth's centre) and when it observed
    site = EarthLocation.from_geodetic(cfg.site.longitude_deg * u.deg,
                                       cfg.site.latitude_deg * u.deg, cfg.site.height_m * u.m)
    for label, h in headers.items():
        assert [h[f"OBSGEO-{k}"] for k in "XYZ"] == pytest.approx(
            [site.x.to_value(u.m), site.y.to_value(u.m), site.z.to_value(u.m)], abs=1.0), label
        assert (h["DATE-OBS"], h["DATE-END"]) == (headers["tclean"]["DATE-OBS"],
                                                  headers["tclean"]["DATE-END"]), label
    # WSClean's reordered copies of the data went into its work folder and are gone
    assert sorted(p.name for p in tmp_path.glob("obs.ms*")) == ["obs.ms"]
    for label in ("wsclean", "wsclean_spectral"):
        ratios = []
        for ra, dec in zip(sky.ra, sky.dec):
            a = _peak(*images["tclean"], ra, dec)
            b = _peak(*images[label], ra, dec)
            if a > 0.5:
                ratios.append(b / a)
        assert len(ratios) >= 3
        assert np.all(np.abs(np.array(ratios) - 1) < 0.05), (label, ratios)
