"""UVW of one observation by the engine and by three independent references.

The engine's MS (single phasing) against: pyuvdata's phase-and-write_ms (with pyuvdata's
default frame position angle and with it evaluated exactly), casacore's ``me.touvw`` on
the same rows, and CASA's own simulator (``sm.observe``) for the same antennas, times and
phase centre. Differences are the largest over all cross-correlation rows, in mm, with the
longest baseline; the pairs between references show how well "the uvw" is defined at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine import config

ROOT = Path(__file__).resolve().parent.parent

CASA_UVW = r"""
import json, shutil, sys, numpy as np
from engine.casaenv import import_casatools
ct = import_casatools()
ms, sim = sys.argv[1], sys.argv[2]
tb = ct.table(); me, qa = ct.measures(), ct.quanta()

def touvw(path):
    tb.open(path); t = tb.getcol("TIME"); a1 = tb.getcol("ANTENNA1"); a2 = tb.getcol("ANTENNA2")
    tb.close(); tb.open(path + "/ANTENNA"); pos = tb.getcol("POSITION").T; tb.close()
    tb.open(path + "/FIELD"); ra, dec = tb.getcol("PHASE_DIR")[:, 0, 0]; tb.close()
    out = np.full((t.size, 3), np.nan)
    me.doframe(me.observatory("OVRO_MMA"))
    me.doframe(me.direction("J2000", qa.quantity(ra, "rad"), qa.quantity(dec, "rad")))
    for tk in np.unique(t):
        rows = np.flatnonzero((t == tk) & (a1 != a2))
        me.doframe(me.epoch("UTC", qa.quantity(tk, "s")))
        b = pos[a1[rows]] - pos[a2[rows]]
        r = me.touvw(me.baseline("ITRF", *[qa.quantity(b[:, k].tolist(), "m") for k in range(3)]))
        out[rows] = np.asarray(r[1]["value"]).reshape(-1, 3)
    return out

res = {"touvw": touvw(ms).tolist()}
tb.open(ms + "/ANTENNA"); pos = tb.getcol("POSITION"); names = list(tb.getcol("NAME"))
dish = tb.getcol("DISH_DIAMETER"); tb.close()
tb.open(ms); t = np.unique(tb.getcol("TIME")); tb.close()
tb.open(ms + "/FIELD"); ra, dec = tb.getcol("PHASE_DIR")[:, 0, 0]; tb.close()
shutil.rmtree(sim, ignore_errors=True)
sm = ct.simulator(); sm.open(sim)
sm.setconfig(telescopename="OVRO_MMA", x=pos[0].tolist(), y=pos[1].tolist(), z=pos[2].tolist(),
             dishdiameter=dish.tolist(), mount=["alt-az"] * len(names), antname=names,
             coordsystem="global", referencelocation=me.observatory("OVRO_MMA"))
sm.setspwindow(spwname="L", freq="1.4GHz", deltafreq="1MHz", freqresolution="1MHz",
               nchannels=1, stokes="XX YY")
sm.setfeed("perfect X Y")
sm.setfield(sourcename="c", sourcedirection=me.direction("J2000", qa.quantity(ra, "rad"),
                                                        qa.quantity(dec, "rad")))
sm.setlimits(shadowlimit=0.0, elevationlimit="0deg")
sm.setauto(autocorrwt=0.0)
dt = float(np.diff(t)[0])
sm.settimes(integrationtime=f"{dt}s", usehourangle=False,
            referencetime=me.epoch("UTC", qa.quantity(t[0] - dt / 2, "s")))
sm.observe("c", "L", starttime="0s", stoptime=f"{dt * t.size}s")
sm.close()
tb.open(sim)
res["sim"] = {k: tb.getcol(k).tolist() for k in ("TIME", "ANTENNA1", "ANTENNA2")}
res["sim"]["UVW"] = tb.getcol("UVW").T.tolist(); tb.close()
res["sim_touvw"] = touvw(sim).tolist()
res["sim_requested_t0"] = float(t[0])
print("RESULT" + json.dumps(res))
"""


def _rows(ms: str) -> dict:
    """TIME, antenna names and UVW of the cross-correlation rows, sorted by (time, names)."""
    from casacore import tables

    with tables.table(ms, ack=False) as t:
        c = {k: t.getcol(k) for k in ("TIME", "ANTENNA1", "ANTENNA2", "UVW")}
    with tables.table(ms + "/ANTENNA", ack=False) as t:
        names = np.array(t.getcol("NAME"))
    cross = c["ANTENNA1"] != c["ANTENNA2"]
    n1, n2 = names[c["ANTENNA1"]][cross], names[c["ANTENNA2"]][cross]
    order = np.lexsort((n2, n1, np.round(c["TIME"][cross], 3)))
    return {"index": np.flatnonzero(cross)[order], "uvw": c["UVW"][cross][order],
            "key": list(zip(np.round(c["TIME"][cross], 3)[order], n1[order], n2[order]))}


def _mm(a, b) -> float:
    return float(np.nanmax(np.abs(np.asarray(a) - np.asarray(b))) * 1e3)


def bench_uvw_references(cfg, work: Path) -> dict:
    from engine import geometry
    from engine.convert import convert_local
    from engine.telescope import Telescope
    from kernels.geometry import baseline_uvw_ms

    files = sorted(str(p) for p in (work / "incoming").glob("*.hdf5"))[: cfg.band.nsubbands]
    d = work / "uvw_refs"
    d.mkdir(exist_ok=True)
    c = config.load(None, {**cfg.as_flat(), "convert.phasing": "single"})
    eng = convert_local(files, str(d / "engine.ms"), c, workdir=d)["ms_path"]
    from casacore import tables

    with tables.table(eng + "/FIELD", ack=False) as t:
        ra, dec = (float(x) for x in t.getcol("PHASE_DIR")[0, 0])
    refs = {}
    for name, flag in (("pyuvdata_default", []), ("pyuvdata_exact_pa", ["--exact-frame-pa"])):
        subprocess.run([sys.executable, "-m", "tests.reference.pyuvdata_convert", *flag,
                        str(d / f"{name}.ms"), repr(ra), repr(dec), *files], cwd=ROOT,
                       check=True, capture_output=True)
        refs[name] = _rows(str(d / f"{name}.ms"))
    p = subprocess.run([sys.executable, "-c", CASA_UVW, eng, str(d / "casa_sim.ms")], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    casa = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
    e = _rows(eng)
    for r in refs.values():
        if r["key"] != e["key"]:
            raise RuntimeError("reference rows do not match the engine's")
    touvw = np.array(casa["touvw"])[e["index"]]
    out = {"longest_baseline_m": float(np.linalg.norm(e["uvw"], axis=1).max()),
           "engine_vs_pyuvdata_exact_pa_mm": _mm(e["uvw"], refs["pyuvdata_exact_pa"]["uvw"]),
           "engine_vs_pyuvdata_default_mm": _mm(e["uvw"], refs["pyuvdata_default"]["uvw"]),
           "engine_vs_casa_touvw_mm": _mm(e["uvw"], touvw),
           "pyuvdata_exact_pa_vs_casa_touvw_mm": _mm(refs["pyuvdata_exact_pa"]["uvw"], touvw)}
    # CASA's simulator: its rows against casacore's touvw for the same rows, and against
    # the engine's geometry evaluated at the simulator's own TIME labels
    s = {k: np.array(v) for k, v in casa["sim"].items()}
    cross = s["ANTENNA1"] != s["ANTENNA2"]
    sim_touvw = np.array(casa["sim_touvw"])[cross]
    out["casa_simulator_vs_casa_touvw_mm"] = _mm(s["UVW"][cross], sim_touvw)
    with tables.table(eng + "/ANTENNA", ack=False) as t:
        pos = t.getcol("POSITION")
    ut, ti = np.unique(s["TIME"], return_inverse=True)
    rot = geometry.uvw_frames(ra, dec, ut / 86400 + 2400000.5, Telescope(c).location)
    mine = baseline_uvw_ms(rot, pos, ti, s["ANTENNA1"], s["ANTENNA2"])
    out["engine_vs_casa_simulator_mm"] = _mm(mine[cross], s["UVW"][cross])
    out["casa_simulator_time_label_offset_s"] = float(ut[0] - casa["sim_requested_t0"])
    return out
