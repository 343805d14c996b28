"""Smearing factors against brute force: visibilities of a point source integrated over
many sub-channels and sub-integrations (exact Earth rotation, no sinc, no linearisation),
then the image's peak as the weighted mean of their real parts."""

import numpy as np
import pytest

from engine.constants import C_M_S
from engine.smearing import (OMEGA_EARTH, equatorial_baselines, peak_response,
                             uvw_and_rates, worst_loss)

rng = np.random.default_rng(11)


def _brute(L, dec, freq, dnu, T, offset, pa, ha, nsub=48):
    l, m = np.sin(offset) * np.sin(pa), np.sin(offset) * np.cos(pa)
    n1 = np.sqrt(1 - l * l - m * m) - 1
    nus = freq + dnu * ((np.arange(nsub) + 0.5) / nsub - 0.5)
    ts = T * ((np.arange(nsub) + 0.5) / nsub - 0.5)
    acc = np.zeros(len(L), complex)
    for t in ts:
        uvw, _ = uvw_and_rates(L, ha + OMEGA_EARTH * t, dec)  # positions only, exact H
        path = uvw @ np.array([l, m, n1])
        acc += np.exp(2j * np.pi * np.outer(path, nus) / C_M_S).mean(axis=1)
    acc /= nsub
    uvw0, _ = uvw_and_rates(L, ha, dec)
    centre = np.exp(2j * np.pi * (uvw0 @ np.array([l, m, n1])) * freq / C_M_S)
    return float(np.mean(np.real(acc / centre)))


@pytest.mark.parametrize("dnu,T,offset_deg", [(1e6, 12.9, 1.0), (4e6, 0.0, 1.5),
                                              (0.0, 60.0, 1.2), (2e6, 30.0, 2.0)])
def test_peak_response_matches_brute_force(dnu, T, offset_deg):
    enu = np.column_stack([rng.uniform(-1200, 1200, 12), rng.uniform(-800, 800, 12),
                           rng.uniform(-3, 3, 12)])
    L = equatorial_baselines(enu, np.radians(37.23))
    for pa in (0.3, 1.2, 2.5):
        got = peak_response(L, dec_rad=np.radians(54.6), freq_hz=1.4e9, chan_width_hz=dnu,
                            int_s=T, offset_rad=np.radians(offset_deg), pa_rad=pa,
                            ha_rad=(0.01,))
        want = _brute(L, np.radians(54.6), 1.4e9, dnu, T, np.radians(offset_deg), pa, 0.01)
        assert abs(got - want) < 2e-3 * max(1 - want, 0.01) + 2e-4, (got, want)
        assert want < 1.0


def test_no_averaging_keeps_the_peak_and_more_loses_more():
    enu = np.column_stack([rng.uniform(-1000, 1000, 10), rng.uniform(-1000, 1000, 10),
                           np.zeros(10)])
    L = equatorial_baselines(enu, np.radians(37.23))
    kw = dict(dec_rad=np.radians(40.0), freq_hz=1.4e9, offset_rad=np.radians(1.0))
    assert worst_loss(L, chan_width_hz=0.0, int_s=0.0, **kw) == pytest.approx(0.0, abs=1e-12)
    losses = [worst_loss(L, chan_width_hz=f * 244e3, int_s=12.9, **kw) for f in (1, 2, 4, 8)]
    assert all(a < b for a, b in zip(losses, losses[1:]))
    # uniform weighting with cells so fine that no two samples share one is natural
    assert worst_loss(L, chan_width_hz=2e6, int_s=12.9, weighting="uniform", fov_rad=10.0,
                      **kw) == pytest.approx(worst_loss(L, chan_width_hz=2e6, int_s=12.9,
                                                        **kw), rel=1e-12)


def test_enu_offsets_match_pyuvdata(ci_cfg):
    """Baselines in east-north-up from the stations' geocentric positions, against
    pyuvdata's ENU_from_ECEF (translations aside: only differences matter)."""
    from pyuvdata.utils import ENU_from_ECEF

    from engine.smearing import enu_from_ecef
    from engine.telescope import Telescope

    tel = Telescope(ci_cfg)
    s = ci_cfg.site
    ours = enu_from_ecef(tel.station_ecef, np.radians(s.latitude_deg),
                         np.radians(s.longitude_deg))
    ref = ENU_from_ECEF(tel.station_ecef, latitude=np.radians(s.latitude_deg),
                        longitude=np.radians(s.longitude_deg), altitude=s.height_m)
    np.testing.assert_allclose(ours - ours[0], ref - ref[0], atol=1e-6)
