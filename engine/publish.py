"""Products: register, QA, validate, and publish atomically from stage to products.

A product's row in ``products`` walks ``STAGING -> VALIDATED -> PUBLISHED`` (or
``REJECTED``; :class:`engine.states.ProductState`). Images have data_id ``image:<obs_id>``
and land in ``products/<obs_id>/``; mosaics have data_id = mosaic_id and land in
``products/mosaics/<mosaic_id>/``. Every file is checked against its manifest (size,
sha256) before it moves and again where it lands.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.config import Config
from engine.errors import EngineError, StaleProductError
from engine.paths import atomic_move, confine, verify
from engine.registry import Registry
from engine.states import Check, ProductState

log = logging.getLogger(__name__)

MAIN_FILE = {"image": "image", "mosaic": "mosaic"}


def _verify_files(manifest: dict, root: Path):
    for f in manifest["files"].values():
        verify(f["path"], sha256=f["sha256"], size=f["size"], root=root)


def image_data_id(obs_id: str) -> str:
    """The product id of an observation's image."""
    return f"image:{obs_id}"


def register_image(reg: Registry, manifest: dict, stage_root: Path) -> str:
    """Record an image product (data_id = ``image:<obs_id>``) after checking it on disk."""
    _verify_files(manifest, stage_root)
    data_id = image_data_id(manifest["obs_id"])
    reg.record_image(data_id, manifest)
    return data_id


def register_mosaic(reg: Registry, manifest: dict, stage_root: Path) -> str:
    """Record a mosaic product; its data_id is its mosaic_id."""
    _verify_files(manifest, stage_root)
    data_id = manifest["mosaic_id"]
    reg.record_mosaic(data_id, manifest)
    return data_id


def qa_check(cfg: Config, qa: dict) -> tuple[bool, str]:
    """(passes, reason): a finite dynamic range above its floor, a residual within
    ``image.max_thermal_ratio`` of the data's thermal noise where that was measured, a
    restoring beam sampled by at least ``image.min_beam_pixels`` across its minor axis, and
    the source catalogue's flux ratio and offset against the reference catalogue within
    ``sources.qa_*`` where enough reference sources were matched to judge."""
    dr = qa.get("dynamic_range")
    if dr is None or not dr == dr:
        return False, "no finite dynamic range (empty or NaN image)"
    empty = None
    if dr < cfg.publish.min_dynamic_range:
        empty, why = _empty_field(cfg, qa, dr)
        if not empty:
            return False, why
    ratio = qa.get("thermal_ratio")
    if "thermal_ratio" in qa and not (ratio is not None and ratio == ratio):
        return False, "no thermal-noise estimate (no valid visibilities?)"
    if ratio is not None and ratio > cfg.image.max_thermal_ratio:
        return False, (f"residual rms {qa['residual_rms_jy']:.3g} Jy/beam is {ratio:.2f} x the "
                       f"data's thermal estimate {qa['thermal_jy']:.3g} (limit "
                       f"{cfg.image.max_thermal_ratio})")
    bmin, cell = qa.get("bmin_arcsec"), qa.get("cell_arcsec")
    if bmin and cell and bmin == bmin and bmin / cell < cfg.image.min_beam_pixels:
        p = bmin / cell
        return False, (f"restoring beam minor axis {bmin:.3g} arcsec is {p:.2f} pixels of "
                       f"{cell:.3g} arcsec (limit {cfg.image.min_beam_pixels}): a point "
                       f"source half a pixel off along that axis loses "
                       f"{100 * (1 - 2 ** (-1 / p ** 2)):.0f} % of its peak")
    cat = (qa.get("sources") or {}).get("qa") or {}
    if cat.get("judged") and not cat.get("passes"):
        return False, cat["reason"]
    if empty:
        return True, why
    extra = f", residual/thermal {ratio:.2f}" if ratio is not None else ""
    return True, f"dynamic range {dr:.1f}{extra}"


def _empty_field(cfg: Config, qa: dict, dr: float) -> tuple[bool, str]:
    """(is a sound image of an empty field, reason) for an image whose peak is below
    ``publish.min_dynamic_range`` x its residual rms.

    Such an image is still a product (it gives the field's upper limits for light curves)
    when ``publish.accept_empty_fields`` is set and its residual rms was measured against
    the visibilities' thermal noise and is within ``image.max_thermal_ratio`` of it (a
    failed calibration or a broken image leaves its flux scattered above the thermal
    level), and when the reference catalogue, if one was consulted, predicted no source
    above ``sources.qa_min_snr`` sigma in it (a predicted source missing is a failure)."""
    floor = cfg.publish.min_dynamic_range
    low = f"dynamic range {dr:.1f} below {floor}"
    if not cfg.publish.accept_empty_fields:
        return False, low
    ratio = qa.get("thermal_ratio")
    if ratio is None or not ratio == ratio:
        return False, f"{low}, and no thermal-noise estimate to call it an empty field"
    if ratio > cfg.image.max_thermal_ratio:
        return False, (f"{low}, and the residual is {ratio:.2f} x the thermal estimate "
                       f"(limit {cfg.image.max_thermal_ratio}): not an empty field")
    cat = (qa.get("sources") or {}).get("qa") or {}
    expected = cat.get("n_expected") or 0
    if expected:
        return False, (f"{low}, but the reference catalogue predicts {expected} source(s) "
                       f"above {cfg.sources.qa_min_snr} sigma in the image")
    ref = ("no reference source predicted above "
           f"{cfg.sources.qa_min_snr} sigma" if cat else "no reference catalogue consulted")
    return True, (f"empty field: peak {dr:.1f} x the residual rms (below {floor}), "
                  f"residual/thermal {ratio:.2f}, {ref}")


def destination(row: dict) -> Path:
    if row["kind"] == "mosaic":
        return Path("mosaics") / row["data_id"]
    return Path(row["data_id"].split(":", 1)[1])


def validate_and_publish(reg: Registry, cfg: Config, data_id: str, qa: dict, *,
                         stage_root: Path, products_root: Path) -> dict:
    """QA -> validation status -> move to products (retrying with backoff) -> published."""
    ok, why = qa_check(cfg, qa)
    row = reg.get("products", data_id)
    if row["state"] == ProductState.PUBLISHED:
        return row
    if not ok:
        return reg.transition("products", data_id, ProductState.REJECTED, qa_status=Check.FAIL,
                              validation_status=ProductState.REJECTED, last_error=why)
    log.info("%s: QA passes: %s", data_id, why)
    if row["state"] != ProductState.VALIDATED:
        reg.transition("products", data_id, ProductState.VALIDATED, qa_status=Check.PASS,
                       validation_status=ProductState.VALIDATED)
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
            return reg.transition("products", data_id, ProductState.PUBLISHED,
                                  published_path=str(dst),
                                  publication_status=ProductState.PUBLISHED, attempts=attempt)
        except (OSError, StaleProductError, StopIteration) as exc:
            last = f"publish attempt {attempt}: {exc}"
            log.warning("%s: %s", data_id, last)
            reg.note_publish_attempt(data_id, attempt, last)
            time.sleep(min(2 ** attempt * 0.1, 5))
    raise EngineError(f"{data_id}: not published after {cfg.publish.max_attempts} attempts; "
                      f"{last}")


def _record_published_paths(reg: Registry, row: dict, dst: Path):
    if row["kind"] == "image":
        res = next(dst.glob("*.residual.fits"), None)
        reg.set_image_paths(row["data_id"].split(":", 1)[1], {
            "path": str(next(dst.glob("*.image.fits"))),
            "pb_path": str(next(dst.glob("*.pb.fits"))),
            "residual_path": str(res) if res else None,
            "png_path": str(next(dst.glob("*.png")))})
    else:
        reg.set_mosaic_path(row["data_id"], str(dst / f"{row['data_id']}.fits"))
