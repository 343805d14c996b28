"""Image QA: the residual against the data's thermal noise decides publication."""

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
