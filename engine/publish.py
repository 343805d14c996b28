"""Products: register, QA, validate, and publish atomically from stage to products.

A product's row in ``products`` walks ``staging -> validated -> published`` (or
``rejected``). Every file is checked against its manifest (size, sha256) before it moves
and again where it lands.
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


def register_image(reg: Registry, manifest: dict, stage_root: Path) -> str:
    """Record an image product (data_id = ``image:<obs_id>``) after checking it on disk."""
    for f in manifest["files"].values():
        verify(f["path"], sha256=f["sha256"], size=f["size"], root=stage_root)
    data_id = f"image:{manifest['obs_id']}"
    img = manifest["files"]["image"]
    with reg.write():
        reg.db["images"].upsert({
            "obs_id": manifest["obs_id"], "path": img["path"],
            "pb_path": manifest["files"]["pb"]["path"],
            "png_path": manifest["files"]["png"]["path"], "sha256": img["sha256"],
            "size": img["size"], "qa": json.dumps(manifest["qa"]),
            "caltables": ",".join(manifest["caltables"])}, pk="obs_id")
        old = reg.get("products", data_id)
        if old is None or old["state"] != "published":
            reg.db["products"].upsert({
                "data_id": data_id, "kind": "image", "stage_path": manifest["dir"],
                "published_path": None, "qa_status": None, "validation_status": "pending",
                "publication_status": "pending", "state": "staging", "attempts": 0,
                "last_error": None, "sha256": img["sha256"], "size": img["size"],
                "updated_at": time.time()}, pk="data_id")
            reg.event("products", data_id, old["state"] if old else None, "staging")
    return data_id


def qa_image(cfg: Config, qa: dict) -> tuple[bool, str]:
    dr = qa.get("dynamic_range")
    if dr is None or not dr == dr:
        return False, "no finite dynamic range (empty or NaN image)"
    if dr < cfg.publish.min_dynamic_range:
        return False, f"dynamic range {dr:.1f} below {cfg.publish.min_dynamic_range}"
    return True, f"dynamic range {dr:.1f}"


def validate_and_publish(reg: Registry, cfg: Config, data_id: str, qa: dict, *,
                         stage_root: Path, products_root: Path) -> dict:
    """QA -> validation status -> move to products (retrying) -> published."""
    ok, why = qa_image(cfg, qa)
    row = reg.get("products", data_id)
    if not ok:
        return reg.transition("products", data_id, "rejected", qa_status="fail",
                              validation_status="rejected", last_error=why)
    reg.transition("products", data_id, "validated", qa_status="pass",
                   validation_status="validated")
    src = confine(row["stage_path"], stage_root)
    dst = confine(Path(data_id.split(":", 1)[1]), products_root)
    last = None
    for attempt in range(1, cfg.publish.max_attempts + 1):
        try:
            atomic_move(src, dst)
            img = next(dst.glob("*.image.fits"))
            verify(img, sha256=row["sha256"], size=row["size"], root=products_root)
            obs_id = data_id.split(":", 1)[1]
            with reg.write():
                reg.db["images"].update(obs_id, {
                    "path": str(img), "pb_path": str(next(dst.glob("*.pb.fits"))),
                    "png_path": str(next(dst.glob("*.png")))})
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
