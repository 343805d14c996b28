"""engine.subtract.outside_image against astropy's SIN projection of the image grid."""

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from engine.subtract import outside_image


def test_outside_image_agrees_with_the_sin_grid():
    rng = np.random.default_rng(3)
    for dec0_deg in (-30.0, 16.0, 55.6, 86.0):
        n, cell = 2048, 3.0 / 3600  # deg
        ra0, dec0 = 128.7, dec0_deg
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
        w.wcs.crval = [ra0, dec0]
        w.wcs.cdelt = [-cell, cell]
        w.wcs.crpix = [n / 2 + 1, n / 2 + 1]  # the imagers' centre pixel (0-based n / 2)
        ra = ra0 + rng.uniform(-2, 2, 4000) / np.cos(np.deg2rad(dec0))
        dec = np.clip(dec0 + rng.uniform(-2, 2, 4000), -89.9, 89.9)
        x, y = w.world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg))
        inside_px = (x > -0.5) & (x < n - 0.5) & (y > -0.5) & (y < n - 0.5)
        # the footprint is centred to half a pixel: judge points a pixel clear of the edge
        clear = np.minimum.reduce([np.abs(x + 0.5), np.abs(x - n + 0.5),
                                   np.abs(y + 0.5), np.abs(y - n + 0.5)]) > 1.0
        clear &= np.isfinite(x) & np.isfinite(y)
        got = outside_image(np.deg2rad(ra), np.deg2rad(dec), (np.deg2rad(ra0), np.deg2rad(dec0)),
                            np.deg2rad(n * cell) / 2)
        assert inside_px[clear].sum() > 200 and (~inside_px[clear]).sum() > 200
        assert np.array_equal(got[clear], ~inside_px[clear]), dec0_deg
    # the antipode of the centre projects into the image's pixels but is behind the plane
    assert outside_image(np.deg2rad(128.7 + 180), np.deg2rad(-55.6),
                         (np.deg2rad(128.7), np.deg2rad(55.6)), 0.5)


def test_a_run_without_a_reference_catalogue_is_told_nothing_will_be_subtracted(tmp_path):
    """Both subtraction rules need the reference catalogue; without one the driver warns
    (once, at its start) instead of imaging silently with the sidelobes left in."""
    from engine import config
    from engine.subtract import missing_catalogue_warning

    w = missing_catalogue_warning(config.load(None, {}))
    assert w and "sky.reference_catalog" in w and "subtract_outside_min_jy" in w
    cat = tmp_path / "sky.csv"
    cat.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index\n")
    assert missing_catalogue_warning(config.load(None, {"sky.reference_catalog": str(cat)})) \
        is None
    off = {"image.subtract_min_flux_jy": 0.0, "image.subtract_outside_min_jy": 0.0}
    assert missing_catalogue_warning(config.load(None, off)) is None
