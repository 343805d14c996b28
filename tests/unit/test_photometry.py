"""Forced photometry and variability against independent references: scipy's least-squares
fit of the beam, numpy's chi-square, and simulated light curves."""

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from engine import config
from engine.variability import eta_v, is_variable
from kernels.photometry import forced_peak, forced_peaks


def _beam(a, b, c, x0, y0, shape):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    dx, dy = xx - x0, yy - y0
    return np.exp(-0.5 * (a * dx * dx + 2 * b * dx * dy + c * dy * dy))


@pytest.mark.parametrize("seed", range(4))
def test_forced_peak_matches_a_direct_fit(seed):
    """The matched filter is the least-squares amplitude at a fixed position: scipy's
    curve_fit of the same model over the same box agrees to rounding."""
    rng = np.random.default_rng(seed)
    a, b, c = 0.08, 0.02 * (seed - 1.5), 0.15
    x0, y0 = 31.3 + seed * 0.17, 28.6 - seed * 0.23
    img = 2.5 * _beam(a, b, c, x0, y0, (64, 64)) + rng.normal(scale=0.2, size=(64, 64))
    half = 6
    amp, den, n = forced_peak(img, x0, y0, a, b, c, half)
    ix, iy = int(math.floor(x0 + 0.5)), int(math.floor(y0 + 0.5))
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    box = img[iy - half:iy + half + 1, ix - half:ix + half + 1]

    def model(xy, amp):
        dx, dy = xy[0] - x0, xy[1] - y0
        return amp * np.exp(-0.5 * (a * dx * dx + 2 * b * dx * dy + c * dy * dy))

    (ref,), _ = curve_fit(model, (xx.ravel(), yy.ravel()), box.ravel(), p0=(1.0,))
    design = model((xx.ravel(), yy.ravel()), 1.0)[:, None]
    (exact,), *_ = np.linalg.lstsq(design, box.ravel(), rcond=None)
    assert amp == pytest.approx(exact, rel=1e-12)
    assert amp == pytest.approx(ref, rel=1e-6)
    assert n == box.size and abs(amp - 2.5) < 0.3


def test_forced_peak_skips_blanked_pixels_and_edges():
    img = 3.0 * _beam(0.1, 0.0, 0.1, 2.2, 3.4, (20, 20))
    img[3, 3] = np.nan
    amp, _, n = forced_peak(img, 2.2, 3.4, 0.1, 0.0, 0.1, 5)
    assert amp == pytest.approx(3.0, rel=1e-12)
    assert n == 8 * 9 - 1  # columns 0-7 and rows 0-8 of the +-5 box inside the image
    amps, used = forced_peaks(np.full((8, 8), np.nan), np.array([4.0]), np.array([4.0]),
                              0.1, 0.0, 0.1, 2)
    assert np.isnan(amps[0]) and used[0] == 0


def test_eta_is_the_reduced_chi_square_and_v_the_fractional_rms():
    rng = np.random.default_rng(1)
    f = rng.normal(1.0, 0.05, size=12)
    s = np.full(12, 0.05)
    eta, v = eta_v(f, s)
    wmean = np.sum(f / s ** 2) / np.sum(1 / s ** 2)
    assert eta == pytest.approx(np.sum((f - wmean) ** 2 / s ** 2) / 11, rel=1e-10)
    assert v == pytest.approx(np.std(f, ddof=1) / np.mean(f), rel=1e-10)
    assert math.isnan(eta_v([1.0], [0.1])[0])


def test_steady_sources_are_not_variable_and_a_doubling_is():
    """Steady light curves with right errors: eta ~ 1 (a thousand of them, none a
    candidate); one that doubles is."""
    cfg = config.load(None)
    rng = np.random.default_rng(2)
    etas, flagged = [], 0
    for _ in range(1000):
        n = int(rng.integers(3, 12))
        s = np.full(n, 0.05)
        f = rng.normal(1.0, 0.05, size=n)
        eta, v = eta_v(f, s)
        etas.append(eta)
        flagged += is_variable(eta, v, n, cfg)
    assert abs(np.mean(etas) - 1) < 0.1 and flagged == 0
    eta, v = eta_v([1.0, 1.0, 2.0, 2.0], [0.05] * 4)
    assert is_variable(eta, v, 4, cfg)


def test_forced_peak_of_an_unplaceable_position_is_nan():
    """Catalogue sources behind a SIN image's tangent plane come back from astropy as NaN
    pixels, and far ones as huge numbers: a blank result, never a crash (a NaN position
    once crashed the image worker with a segmentation fault)."""
    img = 3.0 * _beam(0.1, 0.0, 0.1, 10.0, 10.0, (20, 20))
    xs = np.array([np.nan, 10.0, 3.3e4, -8.9e3, 1e300, -np.inf, 10.0])
    ys = np.array([np.nan, np.nan, 3.9e4, 1.1e3, 5.0, 5.0, 10.0])
    amps, used = forced_peaks(img, xs, ys, 0.1, 0.0, 0.1, 9)
    assert np.isnan(amps[:6]).all() and (used[:6] == 0).all()
    assert amps[6] == pytest.approx(3.0, rel=1e-12) and used[6] == 19 * 19
