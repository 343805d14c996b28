"""Product rows: images, mosaics and calibration tables, from stage to publication."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.errors import RegistryError
from engine.states import Check, MosaicState, ObsState, ProductState


class ProductRecords:
    """Mixed into :class:`engine.registry.Registry` (uses its connection and transactions)."""

    def _stage_product(self, data_id: str, kind: str, stage_dir: str, main: dict) -> bool:
        """(Re)stage a product unless it is already published (False); in a transaction."""
        old = self.get("products", data_id)
        if old is not None and old["state"] == ProductState.PUBLISHED:
            return False
        self.db["products"].upsert({
            "data_id": data_id, "kind": kind, "stage_path": stage_dir,
            "published_path": None, "qa_status": None, "validation_status": Check.PENDING,
            "publication_status": Check.PENDING, "state": ProductState.STAGING,
            "attempts": 0, "last_error": None, "sha256": main["sha256"],
            "size": main["size"], "updated_at": time.time()}, pk="data_id")
        self.event("products", data_id, old["state"] if old else None, ProductState.STAGING)
        return True

    def _record_files(self, data_id: str, files: dict):
        """Every file of a product (name in its folder, sha256, size); inside a transaction."""
        self.db["product_files"].delete_where("data_id = ?", [data_id])
        self.db["product_files"].insert_all(
            [{"data_id": data_id, "name": Path(f["path"]).name, "kind": kind,
              "sha256": f["sha256"], "size": f["size"]} for kind, f in files.items()],
            pk=("data_id", "name"))

    def product_files(self, data_id: str) -> list[dict]:
        """The product's files: name (in the product's folder), kind, sha256, size."""
        return list(self.db["product_files"].rows_where("data_id = ?", [data_id],
                                                        order_by="name"))

    def record_image(self, data_id: str, manifest: dict):
        """The image row (image, primary beam, residual, PNG, QA) and its staged product."""
        f = manifest["files"]
        img, pb, res = f["image"], f["pb"], f.get("residual") or {}
        with self.write():
            self.db["images"].upsert({
                "obs_id": manifest["obs_id"], "path": img["path"], "pb_path": pb["path"],
                "residual_path": res.get("path"), "residual_sha256": res.get("sha256"),
                "residual_size": res.get("size"), "png_path": f["png"]["path"],
                "sha256": img["sha256"], "size": img["size"], "pb_sha256": pb["sha256"],
                "pb_size": pb["size"], "qa": json.dumps(manifest["qa"]),
                "caltables": ",".join(manifest["caltables"])}, pk="obs_id")
            if self._stage_product(data_id, "image", manifest["dir"], img):
                self._record_files(data_id, f)

    def record_mosaic(self, data_id: str, manifest: dict):
        """The mosaic's manifest and main file, and its staged product."""
        main = manifest["files"]["mosaic"]
        with self.write():
            self.db["mosaics"].update(data_id, {"manifest": json.dumps(manifest),
                                                "path": main["path"]})
            if self._stage_product(data_id, "mosaic", manifest["dir"], main):
                self._record_files(data_id, manifest["files"])

    def plan_mosaic(self, win) -> None:
        """A new window (:class:`engine.windows.Window`) in state planned."""
        with self.write():
            self.db["mosaics"].insert({
                "mosaic_id": win.mosaic_id, "members": json.dumps(win.members),
                "dec_rad": win.dec_rad, "start_jd": win.start_jd, "end_jd": win.end_jd,
                "state": MosaicState.PLANNED, "updated_at": time.time()})
            self.event("mosaics", win.mosaic_id, None, MosaicState.PLANNED)

    def note_publish_attempt(self, data_id: str, attempt: int, error: str):
        with self.write():
            self.db["products"].update(data_id, {"attempts": attempt, "last_error": error})

    def set_image_paths(self, obs_id: str, paths: dict):
        """Where an image's files now are (``path``, ``pb_path``, ``residual_path``,
        ``png_path``), after publication moved them."""
        with self.write():
            self.db["images"].update(obs_id, paths)

    def set_mosaic_path(self, mosaic_id: str, path: str):
        with self.write():
            self.db["mosaics"].update(mosaic_id, {"path": path})

    def repair_image(self, data_id: str, obs_to: ObsState, reason: str):
        """An image whose files are broken: the product is rejected (restaged when the image
        is made again) and its observation goes back to ``obs_to`` (CONVERTED: re-imaged
        from its MS; COMPLETE: reconverted) unless it is already waiting to be re-made.
        Both moves are checked before either is made; a row with a task in flight raises
        :class:`RegistryError` and nothing changes."""
        obs_id = data_id.split(":", 1)[1]
        obs = self.get("observations", obs_id)
        state = ObsState(obs["state"])
        move_obs = state in (ObsState.IMAGED, ObsState.MOSAICKED)
        if not move_obs and state not in (ObsState.CONVERTED, ObsState.COMPLETE,
                                          ObsState.FAILED, ObsState.AWAITING_CALIBRATION):
            raise RegistryError(f"{obs_id} is {state}: a task is in flight; run reconcile "
                                "--repair while no driver runs")
        self._reject(data_id, reason)
        if move_obs:
            self.transition("observations", obs_id, obs_to, error=reason, lease_owner=None)

    def fail_mosaic(self, mosaic_id: str, error: str) -> int:
        """The mosaic FAILED with ``error``, one more attempt counted; returns the count
        (:func:`engine.recovery.retry_failed` plans it again while under the limit)."""
        attempts = (self.get("mosaics", mosaic_id).get("attempts") or 0) + 1
        self.transition("mosaics", mosaic_id, MosaicState.FAILED, error=error[:2000],
                        attempts=attempts)  # mosaics have one writer: the driver
        return attempts

    def repair_mosaic(self, mosaic_id: str, reason: str):
        """A mosaic whose files are broken: planned again (unless it is), product rejected;
        checked before anything changes, as :meth:`repair_image`."""
        state = MosaicState(self.get("mosaics", mosaic_id)["state"])
        if state == MosaicState.MOSAICKING:
            raise RegistryError(f"{mosaic_id} is being made: run reconcile --repair while no "
                                "driver runs")
        self._reject(mosaic_id, reason)
        if state != MosaicState.PLANNED:
            self.transition("mosaics", mosaic_id, MosaicState.PLANNED, error=reason)

    def _reject(self, data_id: str, reason: str):
        if self.get("products", data_id)["state"] != ProductState.REJECTED:
            self.transition("products", data_id, ProductState.REJECTED, last_error=reason)

    def record_reconcile(self, report: dict):
        """What one reconcile found (and repaired), for ``status``."""
        with self.write():
            self.db["reconcile_runs"].insert({
                "at": time.time(), "deep": int(report["deep"]), "files": report["files"],
                "problems": len(report["problems"]), "report": json.dumps(report)})

    def last_reconcile(self) -> dict | None:
        rows = list(self.db["reconcile_runs"].rows_where(order_by="id desc", limit=1))
        return rows[0] if rows else None

    def register_caltables(self, manifest: dict, dec_rad: float):
        """Record a calibration set (bandpass + gains) with its validity windows (MJD)."""
        with self.write():
            for kind, t in manifest["tables"].items():
                cid = f"{manifest['obs_id']}:{kind}"
                self.db["caltables"].upsert({
                    "caltable_id": cid, "obs_id": manifest["obs_id"], "kind": kind,
                    "path": t["path"], "calibrator": manifest["calibrator"],
                    "transit_mjd": manifest["transit_mjd"],
                    "valid_from_mjd": t["valid_from_mjd"], "valid_to_mjd": t["valid_to_mjd"],
                    "dec_rad": dec_rad, "qa": json.dumps(manifest["qa"]),
                    "sha256": t["sha256"], "size": t["size"]}, pk="caltable_id")
                self.event("caltables", cid, None, "registered")

    def valid_caltables(self, mjd: float, dec_rad: float, *, dec_tol_rad: float
                        ) -> dict | None:
        """Bandpass and gain tables valid at observation time ``mjd`` (nearest transit).

        Validity is decided by observation time only: ``valid_from_mjd <= mjd <=
        valid_to_mjd`` at the same pointing declination. Returns ``{kind: row}`` with both
        kinds, or None.
        """
        out = {}
        for kind in ("bandpass", "gains"):
            rows = list(self.db["caltables"].rows_where(
                "kind = ? AND valid_from_mjd <= ? AND valid_to_mjd >= ? AND "
                "abs(dec_rad - ?) < ?", [kind, mjd, mjd, dec_rad, dec_tol_rad]))
            if not rows:
                return None
            out[kind] = min(rows, key=lambda r: abs(r["transit_mjd"] - mjd))
        return out
