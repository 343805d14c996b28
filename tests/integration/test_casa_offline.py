"""CASA in its own process: offline, OVRO_MMA known, frames agree with astropy."""

import json
import subprocess
import sys

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord, TETE
from astropy.time import Time

SCRIPT = r"""
import json, socket
def refuse(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from engine.casaenv import import_casatools
ct = import_casatools()
me, qa = ct.measures(), ct.quanta()
obs = me.observatory('OVRO_MMA')
me.doframe(me.epoch('UTC', qa.quantity(60950.0, 'd')))
me.doframe(obs)
d = me.measure(me.direction('J2000', qa.quantity(1.3, 'rad'), qa.quantity(0.9, 'rad')), 'APP')
print(json.dumps({"lat": obs['m1']['value'], "lon": obs['m0']['value'],
                  "app": [d['m0']['value'], d['m1']['value']]}))
"""


def test_casatools_offline_observatory_and_frames():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(np.rad2deg(res["lat"]) - 37.23) < 0.02
    assert abs(np.rad2deg(res["lon"]) + 118.28) < 0.02
    # astropy's apparent (true equator and equinox of date) place of the same J2000 position
    app = SkyCoord(1.3 * u.rad, 0.9 * u.rad).transform_to(
        TETE(obstime=Time(60950.0, format="mjd")))
    sep = SkyCoord(res["app"][0] * u.rad, res["app"][1] * u.rad).separation(
        SkyCoord(app.ra, app.dec))
    assert sep.arcsec < 1.0


def test_one_casacore_per_process():
    script = ("import casacore.tables\nfrom engine.casaenv import import_casatools\n"
              "import_casatools()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "one casacore per process" in out.stderr
