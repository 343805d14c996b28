"""Light curves over two days (slow): forced photometry of the reference catalogue in every
image, eta and V, candidates marked; a driver killed mid-photometry and a rerun lose and
duplicate nothing.

The same sky is simulated twice, one sidereal day apart (the same field at the same hour
angles), with interference and a dead antenna in every observation; on the second day one
source is twice as bright and one half as bright (``sim.variable``). Expected values come
from the simulator's truth of each day.
"""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import ray
from astropy.time import Time

from engine import config, scheduler, simulate
from engine.calibrators import SIDEREAL_DAY_S
from engine.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SCALE = {"sim.nants": 24, "sim.nchan_per_subband": 4, "sim.ntimes": 6, "sim.nobs": 2,
         "sim.nsources": 8, "sim.flux_range_jy": "0.5,2.0", "sim.noise_jy": 1.88,
         "sim.field_radius_deg": 1.0, "sim.seed": 41, "image.imsize": 512,
         "image.max_imsize": 512, "image.cell_arcsec": 24.0, "image.niter": 500,
         "mosaic.size": 2, "mosaic.overlap": 0, "ray.max_obs_in_flight": 2,
         # what the telescope also does: interference (flagged in conversion) and a dead
         # antenna, placed afresh in every observation
         "sim.rfi": "narrowband,burst,dead_antenna", "sim.rfi_sigma": 20.0}


def _driver(base, cfg_flat, faults):
    args = [sys.executable, "-m", "engine", "--config", str(config.CONFIG_DIR / "ci.toml"),
            "--workdir", str(base)]
    for k, v in cfg_flat.items():
        args += ["--set", f"{k}={v}"]
    env = {**__import__("os").environ, "DSA110_FAULTS": faults}
    return subprocess.run(args + ["run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True, env=env, timeout=1500)


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    base = tmp_path_factory.mktemp("twodays")
    inc = base / "incoming"
    for day in ("day1", "day2"):
        (base / day).mkdir()
    cfg1 = config.load(config.CONFIG_DIR / "ci.toml", SCALE)
    _, sky, _ = simulate.simulate_run(cfg1, inc, truth_path=base / "day1" / "truth.json")
    truth1 = json.loads((base / "day1" / "truth.json").read_text())
    # the two brightest sources vary on day 2 (bright enough to measure in every image)
    order = np.argsort(sky.flux_jy)[::-1]
    brighter, fainter = sky.names[order[0]], sky.names[order[1]]
    start2 = Time(Time(cfg1.sim.start).jd + SIDEREAL_DAY_S / 86400, format="jd").isot[:23]
    cfg2 = config.load(None, {**cfg1.as_flat(), "sim.start": start2,
                              "sim.variable": f"{brighter}:2.0,{fainter}:0.5"})
    simulate.simulate_run(cfg2, inc, truth_path=base / "day2" / "truth.json")
    truth2 = json.loads((base / "day2" / "truth.json").read_text())
    # the reference catalogue lacks the third brightest (steady) source: the finder must
    # find it as a new source and the later images measure it
    missing = sky.names[order[2]]
    lines = (base / "day1" / "sky.csv").read_text().splitlines()
    (base / "reference.csv").write_text(
        "\n".join(ln for ln in lines if not ln.startswith(missing + ",")) + "\n")
    flat = {**SCALE, "sky.reference_catalog": str(base / "reference.csv")}
    # the first driver dies (SIGKILL, with its Ray) right after recording the forced
    # photometry of a day-2 image, before the image itself is recorded
    p = _driver(base, flat, f"driver.measured@{start2[:10]}T*=kill")
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    db = sqlite3.connect(base / "registry.sqlite")
    (killed,) = db.execute("SELECT DISTINCT obs_id FROM measurements WHERE obs_id NOT IN "
                           "(SELECT obs_id FROM images)").fetchone()
    db.close()
    cfg = config.load(config.CONFIG_DIR / "ci.toml", flat)
    if ray.is_initialized():
        ray.shutdown()
    try:
        summary = scheduler.run(cfg, base)
        n_first = _count(base)
        again = scheduler.run(cfg, base)  # nothing new: the same measurements
    finally:
        ray.shutdown()
    return {"base": base, "cfg": cfg, "summary": summary, "again": again, "n_first": n_first,
            "truth": (truth1, truth2), "varied": (brighter, fainter), "killed": killed,
            "start2": start2, "missing": missing}


def _count(base):
    db = sqlite3.connect(base / "registry.sqlite")
    n = db.execute("SELECT count(*) FROM measurements").fetchone()[0]
    db.close()
    return n


def _lightcurves(base, capsys, *extra):
    capsys.readouterr()
    assert main(["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(base),
                 "lightcurves", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)["sources"]


def test_both_varied_sources_are_candidates_and_no_steady_one_is(two_days, capsys):
    d = two_days
    assert not d["summary"].failed, d["summary"].failed
    curves = {s["name"]: s for s in _lightcurves(d["base"], capsys)}
    for name in d["varied"]:
        assert curves[name]["variable"], curves[name]
        assert curves[name]["n"] == 4
    steady = [s for n, s in curves.items() if n not in d["varied"] and s["n"] >= 3]
    assert len(steady) >= 3, sorted(curves)
    assert not [s["name"] for s in steady if s["variable"]], [
        (s["name"], s["eta"], s["v"]) for s in steady]


def test_light_curve_fluxes_match_the_truth(two_days, capsys):
    """Median |measured / true - 1| within 10 % over every measurement (the truth of the
    measurement's day, at the band centre where the image is made)."""
    d = two_days
    day2 = d["start2"][:10]
    true = [dict(zip(t["sky"]["names"], zip(t["sky"]["flux_jy"], t["sky"]["spectral_index"])))
            for t in d["truth"]]
    ratios = []
    for s in _lightcurves(d["base"], capsys):
        name = _truth_name(d, s)  # a new source is named by the engine: found by position
        for m in s["measurements"]:
            flux, alpha = true[1 if m["obs_id"].startswith(day2) else 0][name]
            ratios.append(m["flux_jy"] / (flux * (1.405e9 / 1.4e9) ** alpha))
    ratios = np.array(ratios)
    assert len(ratios) >= 12
    assert np.median(np.abs(ratios - 1)) < 0.10, np.round(ratios, 3)
    one = _lightcurves(d["base"], capsys, "--source", d["varied"][0])
    assert [s["name"] for s in one] == [d["varied"][0]]
    fluxes = [m["flux_jy"] for m in one[0]["measurements"]]  # time order: day 1, day 2
    assert np.mean(fluxes[2:]) / np.mean(fluxes[:2]) == pytest.approx(2.0, rel=0.15)


def _truth_name(d, s) -> str:
    """The simulated source a light curve belongs to: by name, or for a source the engine
    found and named itself, the truth source within 30 arcsec of its position."""
    sky = d["truth"][0]["sky"]
    if s["name"] in sky["names"]:
        return s["name"]
    sep = np.degrees(np.hypot((np.radians(s["ra_deg"]) - np.array(sky["ra_rad"]))
                              * np.cos(np.radians(s["dec_deg"])),
                              np.radians(s["dec_deg"]) - np.array(sky["dec_rad"]))) * 3600
    assert sep.min() < 30, (s["name"], sep.min())
    return sky["names"][int(np.argmin(sep))]


def test_a_source_missing_from_the_reference_is_found_and_followed(two_days, capsys):
    """Exactly one new source, the one left out of the reference catalogue, named by its
    position, measured in the later images at its true flux, and not a candidate."""
    d = two_days
    db = sqlite3.connect(d["base"] / "registry.sqlite")
    new = [r[0] for r in db.execute("SELECT name FROM new_sources")]
    db.close()
    assert len(new) == 1 and new[0].startswith("DSA J"), new
    (s,) = _lightcurves(d["base"], capsys, "--source", new[0])
    assert _truth_name(d, s) == d["missing"]
    assert s["n"] >= 2 and not s["variable"]
    sky = d["truth"][0]["sky"]
    k = sky["names"].index(d["missing"])
    want = sky["flux_jy"][k] * (1.405e9 / 1.4e9) ** sky["spectral_index"][k]
    got = np.median([m["flux_jy"] for m in s["measurements"]])
    print(f"new source {new[0]} = {d['missing']}: {s['n']} measurements, median "
          f"{got:.3f} Jy, true {want:.3f} Jy")
    assert got == pytest.approx(want, rel=0.10)


def test_a_killed_driver_and_a_rerun_lose_and_duplicate_nothing(two_days):
    d = two_days
    db = sqlite3.connect(d["base"] / "registry.sqlite")
    per_obs = dict(db.execute("SELECT obs_id, count(*) FROM measurements GROUP BY obs_id"))
    images = {r[0] for r in db.execute("SELECT obs_id FROM images")}
    sources = {r[0] for r in db.execute("SELECT DISTINCT source FROM measurements")}
    stats = dict(db.execute("SELECT name, variable FROM sources"))
    db.close()
    assert set(per_obs) == images and len(images) == 4  # the killed one was made again
    assert d["killed"] in per_obs
    assert _count(d["base"]) == d["n_first"]  # the rerun added nothing
    assert not d["again"].imaged and not d["again"].failed
    # every measured source has its statistics in the registry; the candidates are marked
    assert set(stats) == sources
    assert {n for n, v in stats.items() if v} == set(d["varied"])


def test_each_candidate_has_its_light_curve_png(two_days, capsys):
    """products/lightcurves/<name>.png for each candidate and no other source, recorded with
    its checksum; reconcile finds every product, the PNGs included, as recorded; status
    names the candidates and the catalogues' QA."""
    import matplotlib.image as mpimg

    from engine import reconcile
    from engine.paths import digest
    from engine.run_state import Areas
    from engine.registry import Registry

    d = two_days
    reg = Registry(d["base"] / "registry.sqlite")
    rows = {r["name"]: r for r in reg.sources()}
    drawn = {n for n, r in rows.items() if r["png_path"]}
    assert drawn == set(d["varied"])
    for name in drawn:
        path = rows[name]["png_path"]
        assert path.startswith(str(d["base"] / "products" / "lightcurves"))
        assert digest(path)[0] == rows[name]["png_sha256"]
        assert mpimg.imread(path).shape[1] > 300  # a picture, not an empty file
    cfg = config.load(config.CONFIG_DIR / "ci.toml")
    report = reconcile.check(reg, Areas.from_config(cfg, d["base"]), deep=True)
    assert not report.problems, [p.line() for p in report.problems]
    capsys.readouterr()
    assert main(["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(d["base"]),
                 "status", "--json"]) == 0
    sci = json.loads(capsys.readouterr().out)["science"]
    assert set(sci["candidates"]) == set(d["varied"])
    assert sci["measurements"] == _count(d["base"])
    # every image and the mosaics have a catalogue QA'd against the reference catalogue
    assert sci["catalogues"] >= 4 and not sci["rejected_by_catalogue_qa"]
    assert abs(sci["catalogue_flux_ratio"] - 1) < 0.15
