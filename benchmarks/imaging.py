"""Imaging at the cost the science needs (issue 18): where an observation's imaging time
goes, and what averaging and tclean's minor-cycle depth change, measured on one MS.

The observation of :func:`benchmarks.science.calibrator_observation` (J0834+555 transiting
0.57 deg off the pointing declination, gains, bandpasses, the telescope's noise) is
converted twice, as recorded and with ``convert.max_channel_width_hz`` averaging (the
engine's default), each calibrated by the engine, then imaged with the engine's default
imaging configuration (two-stage masked clean to 3 x the residual rms; mtmfs with tclean
where the configuration asks nterms 2, as the small scale's does; `configs/dsa110.toml` now
sets Hogbom) on the image grid of the full-scale science runs (2048 x 3 arcsec at full scale):

* ``recorded``: WSClean;
* ``averaged``: WSClean, tclean mtmfs (nterms 2, the engine's) and Hogbom (nterms 1), both
  with WSClean's minor-cycle depth (``image.max_psf_fraction`` 0.2, as ``-mgain 0.8``; with
  CASA's 0.8 a full-scale mtmfs clean took 16 major cycles and diverged: docs/IMAGING.md).

Reported per run: conversion, calibration and imaging seconds (imaging includes applycal,
the subtraction of the bright calibrator, the residual and noise statistics, PNG and
catalogue), the imager's own seconds, major cycles, the residual rms over the data's
thermal estimate, and the median measured / expected peak of the field sources (S/N > 20).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from benchmarks.science import CAL_IMAGE, _flux_ratio, _subprocess, calibrator_observation
from engine import config


TCLEAN = {"tclean_mtmfs": {"image.backend": "tclean", "image.nterms": 2},
          "tclean_hogbom": {"image.backend": "tclean", "image.nterms": 1}}


def _variants(label: str, have_wsclean: bool, psf_fraction: float) -> dict:
    out = {"wsclean": {"image.backend": "wsclean"}} if have_wsclean else {}
    if label == "averaged" or not have_wsclean:
        out.update({k: {**v, "image.max_psf_fraction": psf_fraction}
                    for k, v in TCLEAN.items()})
    return out


def bench_imaging(cfg, work: Path, psf_fraction: float = 0.2) -> dict:
    from engine.convert import convert_local
    from engine.paths import digest

    full = cfg.sim.nants == 96
    grid = {"image.imsize": 2048 if full else 512, "image.cell_arcsec": 3.0 if full else 8.0,
            "convert.phasing": "single"}  # WSClean images one phase centre
    obs = calibrator_observation(cfg, work, grid)
    out = {"imsize": grid["image.imsize"], "cell_arcsec": grid["image.cell_arcsec"],
           "noise_jy": obs["noise_jy"], "runs": {}}
    have_wsclean = shutil.which("wsclean") is not None
    for label, conv in (("recorded", {"convert.max_channel_width_hz": 0.0}),
                        ("averaged", {})):
        flat = {**obs["flat"], **conv}
        c = config.load(None, flat)
        ms = work / f"{label}.ms"
        t0 = time.perf_counter()
        m = convert_local(obs["paths"], str(ms), c, workdir=work)
        run = {"convert_s": time.perf_counter() - t0, "nchan": m["nchan"],
               "ms_bytes": digest(ms)[1]}
        wdir = work / label
        shutil.rmtree(wdir, ignore_errors=True)
        wdir.mkdir()
        variants = _variants(label, have_wsclean, psf_fraction)
        res = _subprocess(CAL_IMAGE, ms, wdir, json.dumps(c.as_flat()),
                          repr(float(obs["transit"])), json.dumps(variants), obs["cal"].name)
        run["calibrate_s"] = res["calibrate_s"]
        for v in variants:
            qa = res[v + "_qa"]
            run[v] = {"image_s": res[v + "_s"], "imager_s": qa.get("imager_s"),
                      "major_cycles": (qa.get("clean") or {}).get("major_cycles"),
                      "residual_over_thermal": qa.get("thermal_ratio"),
                      **_flux_ratio(res[v + "_image"], obs["sky"], obs["pointing"],
                                    obs["freqs"], c, obs["cal"].name)}
        out["runs"][label] = run
        shutil.rmtree(ms, ignore_errors=True)
    runs = out["runs"]
    if have_wsclean:
        out["wsclean_recorded_over_averaged"] = (runs["recorded"]["wsclean"]["imager_s"]
                                                 / runs["averaged"]["wsclean"]["imager_s"])
        for v in TCLEAN:
            out[v + "_over_wsclean"] = (runs["averaged"][v]["imager_s"]
                                        / runs["averaged"]["wsclean"]["imager_s"])
    return out
