"""Independent reference conversion through pyuvdata (run as a separate process).

    python -m tests.reference.pyuvdata_convert OUT.ms RA_RAD DEC_RAD FILE [FILE ...]

Reads the subbands with pyuvdata, concatenates them in frequency, declares the data's
real phasing (apparent HA = 0 at the pointing declination, i.e. a fixed az/el: pyuvdata's
"driftscan" phase centre), rephases to the J2000 target with pyuvdata's own phasing, and
writes the MS with pyuvdata's own writer. Nothing here uses engine code.
"""

import sys
import time

import numpy as np
import pyuvdata
from astropy import units as u
from astropy.coordinates import AltAz, HADec, SkyCoord
from astropy.time import Time


def convert(files, out_ms, ra, dec):
    uvs = []
    for f in files:
        uv = pyuvdata.UVData.from_file(f, file_type="uvh5", run_check=False)
        uv.uvw_array = uv.uvw_array.astype(np.float64)
        uvs.append(uv)
    uv = uvs[0]
    uv.fast_concat(uvs[1:], "freq", inplace=True, run_check=False)
    dec_app = float(uv.extra_keywords["phase_center_dec"])
    tmid = Time(np.mean(uv.time_array), format="jd")
    loc = uv.telescope.location
    aa = SkyCoord(HADec(ha=0 * u.rad, dec=dec_app * u.rad, obstime=tmid, location=loc)
                  ).transform_to(AltAz(obstime=tmid, location=loc))
    cat = uv._add_phase_center("meridian", cat_type="driftscan", cat_lon=aa.az.rad,
                               cat_lat=aa.alt.rad, cat_frame="altaz")
    uv.phase_center_id_array[:] = cat
    uv._clear_unused_phase_centers()
    uv._set_app_coords_helper()
    uv.set_uvws_from_antenna_positions(update_vis=False)
    uv.phase(lon=ra, lat=dec, epoch="J2000", cat_name="target", use_ant_pos=True)
    uv.reorder_freqs(channel_order="freq")
    uv.write_ms(out_ms, clobber=True, run_check=False)


if __name__ == "__main__":
    t0 = time.perf_counter()
    convert(sys.argv[4:], sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
    print(f"pyuvdata conversion took {time.perf_counter() - t0:.2f} s")
