"""Quick-look PNGs: the stretch shows faint and bright sky at once, the axes are RA/Dec,
the catalogue's sources on the image are circled, and the picture is cropped to content."""

import numpy as np
from astropy.wcs import WCS

from engine.quicklook import asinh_levels, figure, render, robust_rms, stretch


def _image(n=200, seed=0):
    rng = np.random.default_rng(seed)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [150.0, 71.6]
    w.wcs.crpix = [n / 2 + 1, n / 2 + 1]
    w.wcs.cdelt = [-20 / 3600, 20 / 3600]
    hdr = w.to_header()
    hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = 60 / 3600, 40 / 3600, 30.0
    data = rng.normal(0, 1e-3, (n, n))
    data[100, 100] = 1.0  # 1000 sigma
    data[50, 150] = 5e-3  # 5 sigma
    return data, hdr, w


def test_faint_and_bright_are_both_visible():
    data, hdr, _ = _image()
    rms = robust_rms(data)
    assert abs(rms - 1e-3) < 1e-4  # against the noise the image was made with
    vmin, vmax, a = asinh_levels(data, rms)
    faint, bright, noise = stretch([5 * rms, data.max(), rms], vmin, vmax, a)
    assert bright == 1.0
    # a linear stretch puts 5 sigma at 0.008 of the range and 1 sigma 0.004 below it
    assert faint > 0.15 and noise < faint
    assert (faint - noise) / (4 * rms / (vmax - vmin)) > 10


def test_axes_circles_beam_and_crop(tmp_path):
    data, hdr, w = _image()
    ra_in, dec_in = w.all_pix2world([[150, 50], [30, 170]], 0).T
    sources = [("IN1", ra_in[0], dec_in[0]), ("IN2", ra_in[1], dec_in[1]),
               ("OUT", 150.0, 60.0), ("FAR SIDE", 330.0, -71.6)]
    fig = figure(data, hdr, title="t", sources=sources)
    ax = fig.axes[0]
    assert ax.coords[0].get_axislabel() == "RA (J2000)"
    assert ax.coords[1].get_axislabel() == "Dec (J2000)"
    kinds = [type(p).__name__ for p in ax.patches]
    assert kinds.count("Circle") == 2 and kinds.count("Ellipse") == 1
    png = render(data, hdr, tmp_path / "q.png", title="t", sources=sources)
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]
    white = (img > 0.99).all(axis=2)
    # cropped: no fully white row or column along the picture's edges beyond the margin
    for edge in (white[:8], white[-8:], white[:, :8].T, white[:, -8:].T):
        assert not edge.all(axis=1).all()


def test_circles_stay_visible_on_a_wide_mosaic():
    """A 6000-pixel strip is drawn ~5 image pixels per screen pixel: a circle of two beams
    (6 pixels) would be about one screen pixel and hide the source it marks."""
    from engine.skyimage import sky_wcs

    n_x, n_y = 6000, 400
    w = sky_wcs((n_y, n_x), 8.0, 200.0, 31.0)
    hdr = w.to_header()
    hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = 24 / 3600, 24 / 3600, 0.0
    data = np.random.default_rng(1).normal(0, 1e-3, (n_y, n_x))
    ra, dec = w.all_pix2world([[3000, 200]], 0).T
    fig = figure(data, hdr, title="strip", sources=[("S", ra[0], dec[0])])
    ax = fig.axes[0]
    circle = next(p for p in ax.patches if type(p).__name__ == "Circle")
    fig.canvas.draw()
    # the circle's radius in screen pixels, through the axes' data-to-display transform
    (x0, _), (x1, _) = ax.transData.transform([(3000, 200), (3000 + circle.radius, 200)])
    screen_px = (x1 - x0) * 100 / fig.dpi  # at the PNG's 100 dpi
    assert screen_px >= 7.5
    assert circle.radius > 2 * 3  # bigger than two beams in image pixels


def test_a_wide_mosaic_keeps_every_source_peak_on_screen():
    from engine.quicklook import display_pixels

    rng = np.random.default_rng(3)
    data = rng.normal(0, 1e-3, (400, 6000))
    data[:, :500] = np.nan  # outside the coverage
    data[200, 3001] = 0.5  # a source one pixel wide
    data[100, 4000] = -0.02  # a negative artefact keeps its sign
    shown, extent = display_pixels(data, 1200)
    assert shown.shape == (80, 1200) and extent == (-0.5, 5999.5, -0.5, 399.5)
    assert shown[40, 600] == 0.5 and shown[20, 800] == -0.02
    assert np.isnan(shown[:, :100]).all() and np.isfinite(shown[:, 101:]).all()
    # a picture small enough to show pixel for pixel is left alone
    small, extent = display_pixels(data[:, :1000], 1200)
    assert extent is None and small.shape == (400, 1000)
