"""reconcile on a real run's products: each kind of damage reported exactly once, nothing
false, and ``--repair`` followed by ``run`` makes the damaged products again.

Three observations are run end to end (real UVH5 -> MS -> tclean -> products). Then:
observation 0 loses its PNG (a removed file) and has its primary beam truncated,
observation 1's image is changed in place without a size change (only ``--deep`` can see
that), observation 2's whole product folder is removed, and an orphan file (in a product
folder) and an orphan folder (in stage) appear.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import ray
from astropy.io import fits

from engine import config, scheduler, simulate
from engine.cli import main
from engine.registry import Registry


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    base = tmp_path_factory.mktemp("reconcile")
    cfg = config.load(config.CONFIG_DIR / "ci.toml",
                      {"sim.nobs": 3, "image.max_imsize": 128, "image.niter": 20})
    simulate.simulate_run(cfg, base / "incoming")
    if ray.is_initialized():
        ray.shutdown()
    summary = scheduler.run(cfg, base)
    assert len(summary.published) == 3 and not summary.failed
    reg = Registry(base / "registry.sqlite")
    obs = sorted(reg.rows("observations"), key=lambda r: r["start_jd"])
    images = [reg.get("images", o["obs_id"]) for o in obs]
    before = {o["obs_id"]: _pixels(i["path"]) for o, i in zip(obs, images)}
    clean = _reconcile(base, "--deep")
    return base, cfg, obs, images, before, clean


def _pixels(path) -> str:
    """sha256 of an image's pixels (the FITS header carries the time it was written)."""
    with fits.open(path) as h:
        return hashlib.sha256(np.ascontiguousarray(h[0].data).tobytes()).hexdigest()


def _reconcile(base: Path, *extra) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(base),
              "reconcile", "--json", *extra])
    return json.loads(out.getvalue())


def test_a_clean_run_has_no_problems(damaged):
    """No false reports: not for the engine's container folders, not for retained MSs."""
    base, cfg, obs, images, before, clean = damaged
    assert clean["problems"] == [], clean["problems"]
    # every product file (image, primary beam, residual, PNG, source catalogue), the three
    # MSs and the 48 input files were checked
    assert clean["files"] == 3 * 5 + 3 + 48 and clean["bytes_hashed"] > 0


def test_each_damage_is_reported_once_and_nothing_else(damaged):
    base, cfg, obs, images, before, clean = damaged
    Path(images[0]["png_path"]).unlink()
    pb = Path(images[0]["pb_path"])
    pb.write_bytes(pb.read_bytes()[:-2880])
    img1 = Path(images[1]["path"])
    raw = bytearray(img1.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 8] = bytes(b ^ 0xFF for b in raw[mid:mid + 8])  # pixels changed, same size
    img1.write_bytes(bytes(raw))
    shutil.rmtree(Path(images[2]["path"]).parent)
    (Path(images[0]["path"]).parent / "notes.txt").write_text("not the engine's")
    (base / "stage" / "stray").mkdir()
    (base / "stage" / "stray" / "x.bin").write_bytes(b"x")

    shallow = _reconcile(base)
    deep = _reconcile(base, "--deep")
    found = {(p["what"], p["key"], Path(p["path"]).name) for p in deep["problems"]}
    o = [r["obs_id"] for r in obs]
    assert found == {
        ("missing", f"image:{o[0]}", Path(images[0]["png_path"]).name),
        ("size", f"image:{o[0]}", pb.name),
        ("sha256", f"image:{o[1]}", img1.name),
        ("folder-missing", f"image:{o[2]}", o[2]),
        ("orphan", "", "notes.txt"),
        ("orphan", "", "stray"),
    }
    assert len(deep["problems"]) == 6  # each exactly once
    # without --deep the same, except the change that kept the size
    assert {(p["what"], p["key"]) for p in shallow["problems"]} == {
        (w, k) for w, k, _ in found if w != "sha256"}
    # status shows the last reconcile
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--config", str(config.CONFIG_DIR / "ci.toml"), "--workdir", str(base),
              "status", "--json"])
    last = json.loads(out.getvalue())["reconcile"]
    assert last["problems"] == 6 and last["deep"]


def test_repair_then_run_makes_the_damaged_products_again(damaged):
    base, cfg, obs, images, before, clean = damaged
    if not any((base / "stage" / "stray").glob("*")):
        pytest.skip("needs the damage of the previous test")
    repaired = _reconcile(base, "--deep", "--repair")
    assert len(repaired["repaired"]) == 3, repaired["repaired"]
    # orphans are listed, never deleted without --delete-orphans
    assert (base / "stage" / "stray" / "x.bin").exists()
    if ray.is_initialized():
        ray.shutdown()
    summary = scheduler.run(cfg, base)
    ray.shutdown()
    o = [r["obs_id"] for r in obs]
    assert sorted(summary.published) == sorted(f"image:{x}" for x in o)  # each once
    assert not summary.failed
    reg = Registry(base / "registry.sqlite")
    assert reg.counts("products") == {"published": 3}
    for x in o:  # re-imaged from the retained MS: the same pixels
        assert _pixels(reg.get("images", x)["path"]) == before[x]
    after = _reconcile(base, "--deep")
    # what is left: the damaged folders moved aside, and the two orphans, all listed
    left = sorted(Path(p["path"]).name.split(".broken-")[0] for p in after["problems"])
    assert all(p["what"] == "orphan" for p in after["problems"])
    assert left == sorted([o[0], o[1], "stray"]), after["problems"]
    deleted = _reconcile(base, "--delete-orphans")
    assert len(deleted["repaired"]) == 3 and not (base / "stage" / "stray").exists()
    assert _reconcile(base, "--deep")["problems"] == []
