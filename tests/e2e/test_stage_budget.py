"""A bounded stage (issue 17): with a budget that holds a few observations, a run takes
every observation through to publication without the stage ever exceeding it (sampled
through the run), removes kept MSs no open window needs (recorded after the removal),
holds back new observations while there is no room, and ``status`` reports it all."""

import json
import threading

import pytest
import ray

from benchmarks.soak import files_bytes
from engine import config, scheduler, simulate
from engine.cli import main as cli_main
from engine.registry import Registry


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("budget")
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {"sim.nobs": 6, "image.max_imsize": 256, "image.niter": 50,
                       "mosaic.size": 3, "mosaic.overlap": 1})
    paths, _, _ = simulate.simulate_run(cfg, base / "incoming")
    per_obs = sum(p.stat().st_size for p in paths[0])
    # at this scale an observation's folder peaks near 10 x its input (CASA's work images
    # beside the MS, ~2 x): room for one observation at its peak beside four kept MSs;
    # six arrive at once
    budget = 20 * per_obs
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        **cfg.as_flat(), "driver.stage_budget_gb": budget / 1e9})
    samples, stop = [], threading.Event()
    stage = cfg.resolve_path("stage", base)

    def sample():
        while not stop.wait(0.1):
            samples.append(files_bytes(stage))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        summary = scheduler.run(cfg, base)
    finally:
        stop.set()
        t.join()
        if ray.is_initialized():
            ray.shutdown()
    yield base, cfg, budget, samples, summary, paths


def test_every_observation_published_and_the_stage_never_over_budget(budget_run):
    base, cfg, budget, samples, summary, paths = budget_run
    assert len(summary.imaged) == len(paths) == 6
    assert not summary.failed
    reg = Registry(cfg.resolve_path("registry", base))
    prods = reg.counts("products")
    assert prods.get("published", 0) >= 6
    assert len(samples) > 20
    assert max(samples) <= budget, f"stage reached {max(samples)} B over its {budget} B"
    # the budget was binding: MSs were removed, each recorded after the removal, and
    # those MSs are gone from disk while their images are published
    removed = [e for e in reg.events("observations")
               if e["detail"] and "retention" in e["detail"]]
    assert removed, "the budget never made the engine remove an MS"
    for e in removed:
        obs = reg.get("observations", e["key"])
        assert obs["ms_path"] is None
        assert not list(cfg.resolve_path("stage", base).glob(f"{e['key']}/*.ms"))
        assert reg.get("products", f"image:{e['key']}")["state"] == "published"
    reg.close()


def test_status_reports_stage_lag_and_windows(budget_run, capsys):
    base, cfg, budget, samples, summary, paths = budget_run
    capsys.readouterr()
    flat = cfg.as_flat()
    sets = [f"--set=driver.stage_budget_gb={flat['driver.stage_budget_gb']}"]
    assert cli_main(["--config", str(config.CONFIG_DIR / "ci.toml"), *sets,
                     "--workdir", str(base), "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    st = out["stage"]
    assert abs(st["budget_bytes"] - budget) <= 1
    assert st["used_bytes"] == files_bytes(cfg.resolve_path("stage", base))
    assert st["used_bytes"] <= budget and st["backpressure"] is False
    lag = out["lag"]
    assert lag["behind_s"] == 0.0  # every observation published
    assert lag["publication_s"]["n"] == 6 and lag["publication_s"]["p95"] > 0
    # six observations in windows of three overlapping by one: 0-2 and 2-4, both
    # published; 4-5 is too short to be a window: nothing is left open
    assert out["mosaics"] == {"published": 2}
    assert out["windows"] == []


def test_backpressure_holds_new_observations_and_status_says_so(tmp_path, capsys):
    """A budget smaller than one observation: nothing is converted, nothing is lost, the
    observations stay complete, and status names the one waiting for room."""
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {"sim.nobs": 1})
    paths, _, _ = simulate.simulate_run(cfg, tmp_path / "incoming")
    per_obs = sum(p.stat().st_size for p in paths[0])
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {"sim.nobs": 1, "driver.stage_budget_gb": per_obs / 2 / 1e9})
    try:
        summary = scheduler.run(cfg, tmp_path)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert summary.converted == [] and not summary.failed
    reg = Registry(cfg.resolve_path("registry", tmp_path))
    assert reg.counts("observations") == {"complete": 1}
    reg.close()
    capsys.readouterr()
    assert cli_main(["--config", str(config.CONFIG_DIR / "ci.toml"),
                     f"--set=driver.stage_budget_gb={per_obs / 2 / 1e9}",
                     "--workdir", str(tmp_path), "status"]) == 0
    text = capsys.readouterr().out
    assert "FULL" in text and "waits for room" in text


def test_a_mosaics_stage_estimate_covers_what_it_wrote(budget_run):
    """Mosaic work counts against the budget at its estimate (output grid x bytes per
    pixel): the estimate must cover every file the mosaic wrote, and not by much more."""
    from engine.stage_budget import StageBudget

    base, cfg, budget, samples, summary, paths = budget_run
    reg = Registry(cfg.resolve_path("registry", base))
    mosaics = list(reg.rows("mosaics", "published"))
    assert len(mosaics) == 2
    for mos in mosaics:
        members = []
        for o in json.loads(mos["members"]):  # as the driver hands them to the mosaic task
            img = reg.get("images", o)
            qa = json.loads(img["qa"])
            members.append({"image": img["path"], "residual": img.get("residual_path"),
                            "thermal_jy": qa.get("thermal_jy")})
        est = StageBudget.mosaic_estimate(members)
        folder = reg.get("products", mos["mosaic_id"])["published_path"]
        wrote = files_bytes(folder)
        assert 0.6 * est <= wrote <= est, (wrote, est)
    reg.close()


def test_a_budget_too_small_for_a_mosaic_fails_the_mosaic_not_the_run(tmp_path):
    """Room for the observations but a mosaic larger than the whole budget: every image
    goes through, the mosaic fails with the reason and the setting to change, and nothing
    waits forever."""
    # small cells: each image covers little sky, the three observations' mosaic a strip
    # ten times as long (~13 MB of maps against an 8 MB budget)
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {"sim.nobs": 3, "image.imsize": 256, "image.cell_arcsec": 2.0,
                       "image.niter": 50, "mosaic.size": 3, "mosaic.overlap": 1})
    paths, _, _ = simulate.simulate_run(cfg, tmp_path / "incoming")
    per_obs = sum(p.stat().st_size for p in paths[0])
    cfg = config.load(config.CONFIG_DIR / "ci.toml", {
        **cfg.as_flat(), "driver.stage_budget_gb": 12 * per_obs / 1e9})
    try:
        summary = scheduler.run(cfg, tmp_path)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert len(summary.imaged) == 3
    reg = Registry(cfg.resolve_path("registry", tmp_path))
    mos = list(reg.db["mosaics"].rows)
    assert len(mos) == 1 and mos[0]["state"] == "failed", mos
    assert "raise driver.stage_budget_gb" in mos[0]["error"]
    assert mos[0]["mosaic_id"] in summary.failed
    # three image products, each through QA (at 2 arcsec cells, tiny scale, one may fall
    # below the dynamic range QA asks for): nothing left half-way
    prods = reg.counts("products")
    assert sum(prods.values()) == 3 and set(prods) <= {"published", "rejected"}, prods
    reg.close()
