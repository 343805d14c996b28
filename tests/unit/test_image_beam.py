import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from scipy.special import j1

from engine import config
from engine.image import choose_imager, drift_beam, good_fft_size

CFG = config.load(None, {"array.dish_diameter_m": 4.65})


def test_drift_beam_is_the_track_average_of_the_airy_beam():
    dec0 = np.deg2rad(54.6)
    track = np.stack([np.deg2rad(200.0) + np.deg2rad(np.linspace(0, 1.29, 24)) / np.cos(dec0),
                      np.full(24, dec0)], axis=1)
    ra = np.array([track[12, 0], track[0, 0] - np.deg2rad(1.0)])
    dec = np.array([dec0, dec0 + np.deg2rad(0.5)])
    got = drift_beam(ra, dec, track, 1.4e9, CFG)
    # independent: astropy separations and the Airy formula
    sep = SkyCoord(track[:, 0] * u.rad, track[:, 1] * u.rad)[:, None].separation(
        SkyCoord(ra * u.rad, dec * u.rad)[None, :]).rad
    x = np.pi * 4.65 * np.sin(sep) * 1.4e9 / 299792458.0
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = np.where(x > 0, (2 * j1(x) / x) ** 2, 1.0)  # 1 on axis
    expect = airy.mean(axis=0)
    np.testing.assert_allclose(got, expect, rtol=1e-9)
    # the drift matters: a static beam at mid-track overestimates off-centre sources
    static = drift_beam(ra, dec, track[12:13], 1.4e9, CFG)
    assert static[0] > got[0] * 1.03


def test_good_fft_size():
    assert good_fft_size(1000) == 1000
    assert good_fft_size(1001) == 1024
    for n in (17, 333, 4097):
        m = good_fft_size(n)
        assert m >= n and m % 2 == 0
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1


def test_choose_imager():
    """auto: WSClean only when installed and the MS has one phase centre."""
    assert choose_imager("auto", 1, True) == "wsclean"
    assert choose_imager("auto", 24, True) == "tclean"  # meridian phasing: one field each
    assert choose_imager("auto", 1, False) == "tclean"
    assert choose_imager("wsclean", 1, False) == "tclean"  # with a warning
    assert choose_imager("wsclean", 1, True) == "wsclean"
    assert choose_imager("tclean", 1, True) == "tclean"
