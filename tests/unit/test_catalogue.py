"""engine.catalogue's naming and new-source selection, against astropy and by hand."""

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from engine.catalogue import iau_name, new_detections


def _iau_astropy(ra, dec):
    c = SkyCoord(ra * u.deg, dec * u.deg)
    h, m, s = c.ra.hms
    sign = "-" if dec < 0 else "+"
    d, dm, ds = (abs(x) for x in c.dec.dms)
    return (f"DSA J{int(h):02d}{int(m):02d}{np.floor(s * 10) / 10:04.1f}"
            f"{sign}{int(d):02d}{int(dm):02d}{int(np.floor(ds)):02d}")


def test_iau_name_matches_astropy():
    rng = np.random.default_rng(0)
    for ra, dec in zip(rng.uniform(0, 360, 200), rng.uniform(-89, 89, 200)):
        assert iau_name(ra, dec) == _iau_astropy(ra, dec)
    assert iau_name(0.0, -0.5) == "DSA J000000.0-003000"


def _row(ra, dec, snr, pb=1.0):
    return {"ra_deg": ra, "dec_deg": dec, "snr": snr, "pb": pb, "int_jy": snr * 1e-3}


def test_new_detections_leave_known_faint_and_low_beam_ones_out():
    known = [(150.0, 71.0)]
    rows = [_row(150.0 + 5 / 3600, 71.0, 50),  # 5 arcsec from a known source
            _row(150.1, 71.1, 8),  # too faint
            _row(150.2, 71.2, 20, pb=0.1),  # too far down the beam
            _row(150.3, 71.3, 12),  # new
            _row(150.3 + 4 / 3600, 71.3, 30)]  # new, brighter, same source as the one above
    new = new_detections(rows, known, radius_deg=15 / 3600, min_snr=10, min_pb=0.3,
                         obs_id="o")
    assert len(new) == 1
    assert new[0]["first_snr"] == 30 and new[0]["first_obs_id"] == "o"
    assert new[0]["name"] == iau_name(150.3 + 4 / 3600, 71.3)
    assert new_detections(rows, [], radius_deg=15 / 3600, min_snr=10, min_pb=0.3,
                          obs_id="o")[0]["first_snr"] == 50
