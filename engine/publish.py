"""Products: register, QA, validate, and publish atomically from stage to products.

A product's row in ``products`` walks ``staging -> validated -> published`` (or
``rejected``). Images have data_id ``image:<obs_id>`` and land in ``products/<obs_id>/``;
mosaics have data_id = mosaic_id and land in ``products/mosaics/<mosaic_id>/``. Every
file is checked against its manifest (size, sha256) before it moves and again where it
lands.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from engine.config import Config
from engine.errors import EngineError, StaleProductError
from engine.paths import atomic_move, confine, verify
from engine.registry import Registry

log = logging.getLogger(__name__)

MAIN_FILE = {"image": "image", "mosaic": "mosaic"}


def _stage_product(reg: Registry, data_id: str, kind: str, manifest: dict):
    main = manifest["files"][MAIN_FILE[kind]]
    old = reg.get("products", data_id)
    if old is not None and old["state"] == "published":
        return
    reg.db["products"].upsert({
        "data_id": data_id, "kind": kind, "stage_path": manifest["dir"],
        "published_path": None, "qa_status": None, "validation_status": "pending",
        "publication_status": "pending", "state": "staging", "attempts": 0,
        "last_error": None, "sha256": main["sha256"], "size": main["size"],
        "updated_at": time.time()}, pk="data_id")
    reg.event("products", data_id, old["state"] if old else None, "staging")


def _verify_files(manifest: dict, root: Path):
    for f in manifest["files"].values():
        verify(f["path"], sha256=f["sha256"], size=f["size"], root=root)


def register_image(reg: Registry, manifest: dict, stage_root: Path) -> str:
    """Record an image product (data_id = ``image:<obs_id>``) after checking it on disk."""
    _verify_files(manifest, stage_root)
    data_id = f"image:{manifest['obs_id']}"
    img, pb = manifest["files"]["image"], manifest["files"]["pb"]
    res = manifest["files"].get("residual") or {}
    with reg.write():
        reg.db["images"].upsert({
            "obs_id": manifest["obs_id"], "path": img["path"], "pb_path": pb["path"],
            "residual_path": res.get("path"), "residual_sha256": res.get("sha256"),
            "residual_size": res.get("size"),
            "png_path": manifest["files"]["png"]["path"], "sha256": img["sha256"],
            "size": img["size"], "pb_sha256": pb["sha256"], "pb_size": pb["size"],
            "qa": json.dumps(manifest["qa"]), "caltables": ",".join(manifest["caltables"])},
            pk="obs_id")
        _stage_product(reg, data_id, "image", manifest)
    return data_id


def register_mosaic(reg: Registry, manifest: dict, stage_root: Path) -> str:
    """Record a mosaic product; its data_id is its mosaic_id."""
    _verify_files(manifest, stage_root)
    data_id = manifest["mosaic_id"]
    with reg.write():
        reg.db["mosaics"].update(data_id, {"manifest": json.dumps(manifest),
                                           "path": manifest["files"]["mosaic"]["path"]})
        _stage_product(reg, data_id, "mosaic", manifest)
    return data_id


def qa_check(cfg: Config, qa: dict) -> tuple[bool, str]:
    """(passes, reason): a finite dynamic range above its floor, and a residual within
    ``image.max_thermal_ratio`` of the data's thermal noise where that was measured."""
    dr = qa.get("dynamic_range")
    if dr is None or not dr == dr:
        return False, "no finite dynamic range (empty or NaN image)"
    if dr < cfg.publish.min_dynamic_range:
        return False, f"dynamic range {dr:.1f} below {cfg.publish.min_dynamic_range}"
    ratio = qa.get("thermal_ratio")
    if "thermal_ratio" in qa and not (ratio is not None and ratio == ratio):
        return False, "no thermal-noise estimate (no valid visibilities?)"
    if ratio is not None and ratio > cfg.image.max_thermal_ratio:
        return False, (f"residual rms {qa['residual_rms_jy']:.3g} Jy/beam is {ratio:.2f} x the "
                       f"data's thermal estimate {qa['thermal_jy']:.3g} (limit "
                       f"{cfg.image.max_thermal_ratio})")
    extra = f", residual/thermal {ratio:.2f}" if ratio is not None else ""
    return True, f"dynamic range {dr:.1f}{extra}"


def destination(row: dict) -> Path:
    if row["kind"] == "mosaic":
        return Path("mosaics") / row["data_id"]
    return Path(row["data_id"].split(":", 1)[1])


def validate_and_publish(reg: Registry, cfg: Config, data_id: str, qa: dict, *,
                         stage_root: Path, products_root: Path) -> dict:
    """QA -> validation status -> move to products (retrying with backoff) -> published."""
    ok, why = qa_check(cfg, qa)
    row = reg.get("products", data_id)
    if row["state"] == "published":
        return row
    if not ok:
        return reg.transition("products", data_id, "rejected", qa_status="fail",
                              validation_status="rejected", last_error=why)
    if row["state"] != "validated":
        reg.transition("products", data_id, "validated", qa_status="pass",
                       validation_status="validated")
    src = confine(row["stage_path"], stage_root)
    dst = confine(destination(row), products_root)
    main = MAIN_FILE[row["kind"]]
    last = None
    for attempt in range(1, cfg.publish.max_attempts + 1):
        try:
            if src.exists():
                atomic_move(src, dst)
            main_path = (next(dst.glob("*.image.fits")) if main == "image"
                         else dst / f"{data_id}.fits")
            verify(main_path, sha256=row["sha256"], size=row["size"], root=products_root)
            _record_published_paths(reg, row, dst)
            return reg.transition("products", data_id, "published", published_path=str(dst),
                                  publication_status="published", attempts=attempt)
        except (OSError, StaleProductError, StopIteration) as exc:
            last = f"publish attempt {attempt}: {exc}"
            log.warning("%s: %s", data_id, last)
            with reg.write():
                reg.db["products"].update(data_id, {"attempts": attempt, "last_error": last})
            time.sleep(min(2 ** attempt * 0.1, 5))
    raise EngineError(f"{data_id}: not published after {cfg.publish.max_attempts} attempts; "
                      f"{last}")


def _record_published_paths(reg: Registry, row: dict, dst: Path):
    with reg.write():
        if row["kind"] == "image":
            obs_id = row["data_id"].split(":", 1)[1]
            res = next(dst.glob("*.residual.fits"), None)
            reg.db["images"].update(obs_id, {
                "path": str(next(dst.glob("*.image.fits"))),
                "pb_path": str(next(dst.glob("*.pb.fits"))),
                "residual_path": str(res) if res else None,
                "png_path": str(next(dst.glob("*.png")))})
        else:
            reg.db["mosaics"].update(row["data_id"], {"path": str(dst / f"{row['data_id']}.fits")})
