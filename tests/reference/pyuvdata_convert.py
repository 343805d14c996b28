"""Independent reference conversion through pyuvdata (run as a separate process).

    python -m tests.reference.pyuvdata_convert [--exact-frame-pa] [--average N] OUT.ms RA_RAD
        DEC_RAD FILE...

Reads the subbands with pyuvdata, concatenates them in frequency, declares the data's
real phasing (apparent HA = 0 at the pointing declination, i.e. a fixed az/el: pyuvdata's
"driftscan" phase centre), rephases to the J2000 target with pyuvdata's own phasing, and
writes the MS with pyuvdata's own writer. Nothing here uses engine code.

``--exact-frame-pa``: pyuvdata turns u,v from the apparent frame to J2000 by a position
angle it finds from two points 0.5 deg either side of the centre, taken at one end of the
arc: an error of about -0.5 deg x tan(dec) x frame_pa, first order in the offset (5.3e-5 rad
at dec 55 deg in 2025, 10 cm on a 2.5 km baseline). With this flag the angle comes from
the same pyuvdata function with a 1e-6 rad offset (left error ~1e-8 rad) and the uvw are
recomputed from the antenna positions; w, and so the visibilities, do not change. The
benchmark times pyuvdata's path without it.
"""

import sys
import time

import numpy as np
import pyuvdata
from astropy import units as u
from astropy.coordinates import AltAz, HADec, SkyCoord
from astropy.time import Time


def exact_frame_pa(uv):
    """uvw with pyuvdata's own frame position angle, evaluated with a 1e-6 rad offset."""
    import warnings

    from pyuvdata.utils.phasing import calc_frame_pos_angle

    uv.phase_center_frame_pa = calc_frame_pos_angle(
        time_array=uv.time_array, app_ra=uv.phase_center_app_ra,
        app_dec=uv.phase_center_app_dec, telescope_loc=uv.telescope.location,
        ref_frame="icrs", offset_pos=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "without adjusting visibility phases": w is unchanged
        uv.set_uvws_from_antenna_positions(update_vis=False)


def convert(files, out_ms, ra, dec, *, exact_pa=False, average=1):
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
    if exact_pa:
        exact_frame_pa(uv)
    uv.reorder_freqs(channel_order="freq")
    if average > 1:
        uv.frequency_average(n_chan_to_avg=average, sum_nsample=True)
    uv.write_ms(out_ms, clobber=True, run_check=False)


if __name__ == "__main__":
    t0 = time.perf_counter()
    args = sys.argv[1:]
    exact = "--exact-frame-pa" in args
    args = [a for a in args if a != "--exact-frame-pa"]
    average = 1
    if "--average" in args:
        i = args.index("--average")
        average = int(args[i + 1])
        del args[i:i + 2]
    convert(args[3:], args[0], float(args[1]), float(args[2]), exact_pa=exact,
            average=average)
    print(f"pyuvdata conversion took {time.perf_counter() - t0:.2f} s")
