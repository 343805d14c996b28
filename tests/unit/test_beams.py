"""Common restoring beams and convolution to them, against analytic Gaussians."""

import numpy as np
import pytest

from engine.beams import (area, common_beam, contains, convolve_all, convolve_to, covariance,
                          from_covariance)


def _gaussian(shape, cx, cy, beam, cdelt, peak=1.0):
    """An elliptical Gaussian of FWHM beam (deg) on a pixel grid (x east = -cdelt1)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    east = (xx - cx) * cdelt[0]
    north = (yy - cy) * cdelt[1]
    inv = np.linalg.inv(covariance(*beam))
    q = inv[0, 0] * east ** 2 + 2 * inv[0, 1] * east * north + inv[1, 1] * north ** 2
    return peak * np.exp(-0.5 * q)


@pytest.mark.parametrize("beam", [(0.01, 0.006, 30.0), (0.02, 0.02, 0.0), (0.01, 0.004, -70.0)])
def test_covariance_round_trip(beam):
    got = from_covariance(covariance(*beam))
    assert got[0] == pytest.approx(beam[0]) and got[1] == pytest.approx(beam[1])
    if beam[0] != beam[1]:
        assert got[2] == pytest.approx(beam[2])


def test_common_beam_contains_every_beam_and_is_minimal_when_one_contains_all():
    beams = [(0.010, 0.006, 30.0), (0.011, 0.005, -40.0), (0.009, 0.007, 80.0)]
    c = common_beam(beams)
    assert all(contains(c, b) for b in beams)
    assert area(c) < area((0.011, 0.011, 0))  # tighter than the circle around the largest
    big = (0.02, 0.015, 10.0)
    c2 = common_beam(beams + [big])
    assert c2[0] == pytest.approx(big[0], rel=2e-3) and c2[1] == pytest.approx(big[1], rel=2e-3)


def test_convolve_to_keeps_point_source_peak_and_gives_the_target_shape():
    cdelt = (-0.001, 0.001)
    beam, target = (0.010, 0.006, 30.0), (0.014, 0.009, 50.0)
    img = _gaussian((128, 128), 64, 64, beam, cdelt, peak=2.5)  # a 2.5 Jy point source
    out = convolve_to(img, beam, target, cdelt)
    ref = _gaussian((128, 128), 64, 64, target, cdelt, peak=2.5)
    np.testing.assert_allclose(out, ref, atol=2e-3 * 2.5)
    assert out.max() == pytest.approx(2.5, rel=2e-3)


def test_convolve_to_refuses_a_smaller_target():
    with pytest.raises(ValueError):
        convolve_to(np.zeros((8, 8)), (0.01, 0.01, 0), (0.005, 0.005, 0), (-0.001, 0.001))


def test_restore_sources_adds_a_beam_shaped_source_at_its_position(tmp_path):
    """A subtracted source comes back as a Gaussian of the header's beam, its peak at the
    catalogue position (world -> pixel by astropy) and equal to its apparent flux."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from engine.subtract import restore_sources

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [120.0, 55.0]
    w.wcs.cdelt = [-0.002, 0.002]
    w.wcs.crpix = [65.0, 65.0]
    hdr = w.to_header()
    beam = (0.016, 0.01, 25.0)
    hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = beam
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.zeros((1, 1, 128, 128), np.float32), hdr).writeto(path)
    x0, y0 = 70.3, 58.6  # 0-based pixel of the source
    ra, dec = w.wcs_pix2world([[x0, y0]], 0)[0]
    restore_sources(path, [{"name": "b", "ra_rad": np.deg2rad(ra), "dec_rad": np.deg2rad(dec),
                            "apparent_jy": 7.5}])
    got = np.squeeze(fits.getdata(path))
    ref = _gaussian((128, 128), x0, y0, beam, (-0.002, 0.002), peak=7.5)
    np.testing.assert_allclose(got, ref, atol=2e-3 * 7.5)


def test_covariance_follows_the_fits_position_angle():
    """Analytic: BPA 0 puts the major axis north, BPA 90 east (north through east)."""
    s = 1 / np.sqrt(8 * np.log(2))
    north = covariance(0.02, 0.01, 0.0)
    np.testing.assert_allclose(north, np.diag([(0.01 * s) ** 2, (0.02 * s) ** 2]), atol=1e-15)
    east = covariance(0.02, 0.01, 90.0)
    np.testing.assert_allclose(east, np.diag([(0.02 * s) ** 2, (0.01 * s) ** 2]), atol=1e-15)
    ne = covariance(0.02, 0.01, 45.0)  # major axis towards north-east: x and y correlate
    assert ne[0, 1] > 0


def test_convolve_all_treats_each_image_of_the_stack_as_alone():
    """A member image and its residual convolved together: each matches the analytic target
    Gaussian of its own sources, blanks stay blank in their own image only."""
    cdelt = (-0.001, 0.001)
    beam, target = (0.010, 0.006, 30.0), (0.014, 0.009, 50.0)
    a = _gaussian((128, 160), 64, 64, beam, cdelt, peak=2.5)
    b = _gaussian((128, 160), 100, 40, beam, cdelt, peak=-0.7)
    a[5, 150] = np.nan
    out_a, out_b = convolve_all([a, b], beam, target, cdelt)
    np.testing.assert_allclose(np.nan_to_num(out_a),
                               np.where(np.isnan(a), 0.0,
                                        _gaussian(a.shape, 64, 64, target, cdelt, peak=2.5)),
                               atol=2e-3 * 2.5)
    np.testing.assert_allclose(out_b, _gaussian(b.shape, 100, 40, target, cdelt, peak=-0.7),
                               atol=2e-3 * 0.7)
    assert np.isnan(out_a[5, 150]) and np.isnan(out_a).sum() == 1 and np.isfinite(out_b).all()
    # single precision when every image is float32: the same maps to ~1e-7 of the peak
    single = convolve_all([a.astype(np.float32), b.astype(np.float32)], beam, target, cdelt)
    assert all(x.dtype == np.float32 for x in single)
    np.testing.assert_allclose(single[0], out_a, atol=2e-6 * 2.5, equal_nan=True)
    np.testing.assert_allclose(single[1], out_b, atol=2e-6 * 2.5)
    with pytest.raises(ValueError, match="one 2-d shape"):
        convolve_all([a, b[:, :100]], beam, target, cdelt)
