import numpy as np
from scipy.optimize import brentq

from engine import config
from engine.telescope import C_M_S, Telescope, airy_beam


def test_stations_and_data_antennas():
    tel = Telescope(config.load(None))
    assert len(tel.stations) == 117
    nums = tel.data_station_numbers
    assert len(nums) == 96 and len(set(nums)) == 96
    assert 101 in nums and 115 in nums  # the stations whose baselines arrive reversed
    # DSA-117 has no elevation in the table: the documented default applies
    assert tel.stations[-1].height_m == 1182.6
    # max baseline of the data antennas about 2.7 km
    xyz = tel.station_ecef[[n - 1 for n in nums]]
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1).max()
    assert 2300 < d < 3000


def test_band_layout_matches_the_format():
    tel = Telescope(config.load(None))
    f0 = tel.subband_freqs_hz(0)
    f15 = tel.subband_freqs_hz(15)
    assert f0[0] > f0[-1]  # descending
    assert abs(f0[0] - 1498.6431884765625e6) < 1
    allf = np.concatenate([tel.subband_freqs_hz(s) for s in range(16)])
    assert allf.size == 768
    assert np.allclose(np.diff(allf), -244140.625)
    lo_edge, hi_edge = allf.min() - 122070.3125, allf.max() + 122070.3125
    assert hi_edge - lo_edge == 187.5e6
    assert abs(lo_edge - 1311.25e6) < 0.05e6 and abs(hi_edge - 1498.75e6) < 0.05e6
    assert f15.min() == allf.min()


def test_airy_fwhm_is_2_7_deg_at_1_4_ghz():
    half = brentq(lambda t: airy_beam(np.sin(t), 1.4e9, 4.65) - 0.5, 1e-4, 0.1)
    # analytic Airy: FWHM = 1.029 lambda / D
    assert abs(2 * half - 1.029 * C_M_S / 1.4e9 / 4.65) < 1e-3 * (2 * half)
    assert 2.6 < np.rad2deg(2 * half) < 2.8
