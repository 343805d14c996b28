"""Image QA: the residual against the data's thermal noise decides publication."""

import numpy as np

from engine import config
from engine.publish import qa_check


def test_residual_far_above_thermal_is_rejected_with_the_reason():
    cfg = config.load(None, {"image.max_thermal_ratio": 2.0})
    ok, why = qa_check(cfg, {"dynamic_range": 500.0, "residual_rms_jy": 3e-3,
                             "thermal_jy": 1e-3, "thermal_ratio": 3.0})
    assert not ok and "3.00 x" in why and "thermal" in why and "limit 2.0" in why
    ok, why = qa_check(cfg, {"dynamic_range": 500.0, "residual_rms_jy": 1.5e-3,
                             "thermal_jy": 1e-3, "thermal_ratio": 1.5})
    assert ok and "1.50" in why


def test_no_thermal_estimate_is_not_a_pass():
    """An image whose visibilities gave no noise estimate (all flagged, all zero) fails."""
    cfg = config.load(None, {})
    ok, why = qa_check(cfg, {"dynamic_range": 500.0, "thermal_ratio": None})
    assert not ok and "thermal" in why
    ok, _ = qa_check(cfg, {"dynamic_range": 500.0})  # products without the measurement
    assert ok


def test_an_undersampled_restoring_beam_is_rejected_with_the_peak_it_loses():
    """A 14 arcsec minor axis on 8 arcsec pixels (WSClean's beam on the mosaic test's grid):
    a point source half a pixel off the grid keeps exp(-4 ln2 (0.5/1.75)^2) = 80 % of its
    peak on the best pixel (computed here by sampling the Gaussian), so the image is not
    published; on 4 arcsec pixels it is."""
    cfg = config.load(None, {})
    fwhm_px = 14.0 / 8.0
    x = np.arange(-5, 6) + 0.5  # pixel centres, the source half a pixel off
    kept = np.exp(-4 * np.log(2) * (x / fwhm_px) ** 2).max()
    qa = {"dynamic_range": 500.0, "bmin_arcsec": 14.0, "cell_arcsec": 8.0}
    ok, why = qa_check(cfg, qa)
    assert not ok and "1.75 pixels" in why and f"{100 * (1 - kept):.0f} %" in why
    assert qa_check(cfg, {**qa, "cell_arcsec": 4.0})[0]
    assert qa_check(config.load(None, {"image.min_beam_pixels": 0}), qa)[0]


def test_an_empty_field_at_the_thermal_noise_is_published_with_its_reason():
    """A field with no source above 3 x the residual rms is a product (upper limits) when
    its residual sits at the data's thermal noise and no reference source is predicted in
    it; the same low peak with a residual far above thermal (flux scattered by a failed
    calibration), without a thermal estimate, or with reference sources predicted, is not."""
    cfg = config.load(None, {})
    sound = {"dynamic_range": 2.6, "residual_rms_jy": 1.05e-3, "thermal_jy": 1e-3,
             "thermal_ratio": 1.05}
    ok, why = qa_check(cfg, sound)
    assert ok and why.startswith("empty field") and "2.6" in why and "1.05" in why
    assert "no reference catalogue" in why
    none_predicted = {**sound, "sources": {"n": 0, "qa": {"n_expected": 0, "judged": False,
                                                          "passes": True}}}
    ok, why = qa_check(cfg, none_predicted)
    assert ok and "no reference source predicted" in why
    predicted = {**sound, "sources": {"n": 0, "qa": {"n_expected": 2, "judged": False,
                                                     "passes": True}}}
    ok, why = qa_check(cfg, predicted)
    assert not ok and "predicts 2 source(s)" in why and "dynamic range 2.6 below 3" in why
    ok, why = qa_check(cfg, {**sound, "thermal_ratio": 4.0, "residual_rms_jy": 4e-3})
    assert not ok and "not an empty field" in why
    ok, why = qa_check(cfg, {"dynamic_range": 2.6})
    assert not ok and "no thermal-noise estimate" in why
    strict = config.load(None, {"publish.accept_empty_fields": False})
    ok, why = qa_check(strict, sound)
    assert not ok and why == "dynamic range 2.6 below 3.0"
