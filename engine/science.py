"""The driver's science bookkeeping: an image's forced photometry into the registry, new
sources from its catalogue, light-curve statistics, candidates and their PNGs.

Runs on the driver (registry writes only; the measuring and the finding happen in the image
tasks). Kept out of engine/scheduler.py so the driver stays about scheduling.
"""

from __future__ import annotations

import logging

import numpy as np

from engine import faults
from engine.config import Config
from engine.constants import JD_TO_MJD
from engine.errors import EngineError
from engine.paths import digest
from engine.registry import Registry

log = logging.getLogger(__name__)


class Science:
    def __init__(self, reg: Registry, cfg: Config, products_root):
        self.reg, self.cfg, self.products = reg, cfg, products_root

    def extra_sources(self) -> list[dict]:
        """The new sources found so far (name, ra_deg, dec_deg), for an image task to
        measure beside the reference catalogue."""
        return [{k: r[k] for k in ("name", "ra_deg", "dec_deg")} for r in self.reg.new_sources()]

    def record_photometry(self, obs: dict, data_id: str, manifest: dict):
        """Before the image is registered: its measurements into the registry (a driver
        killed after this remakes the image and its measurements replace these, keyed by
        source and observation) and a summary, or the task's photometry error, into its QA."""
        phot = manifest.get("photometry")
        if manifest.get("photometry_error"):  # the image stands; the reason is in its QA
            manifest["qa"]["photometry"] = {"error": manifest["photometry_error"]}
        if phot is None:
            return
        mjd = 0.5 * (obs["start_jd"] + obs["end_jd"]) - JD_TO_MJD
        self.reg.record_measurements(obs["obs_id"], data_id, mjd, phot["rows"])
        faults.check("driver.measured", obs["obs_id"])
        manifest["qa"]["photometry"] = {"sources": len(phot["rows"]),
                                        "catalogue": phot["catalogue"],
                                        "seconds": phot["seconds"]}

    def after_publication(self, manifest: dict):
        """A published image: the new sources of every published image not scanned yet
        (this one among them), then its sources' statistics."""
        self.scan_new_sources()
        phot = manifest.get("photometry")
        if phot:
            self.update_variability([r["name"] for r in phot["rows"]])

    def scan_new_sources(self):
        """Every published image whose catalogue was not scanned for new sources yet: its
        detections that neither the reference catalogue nor an earlier detection explains
        (engine.catalogue.new_detections) become new sources, measured by every later image
        task; then the image is marked scanned. Run after each publication and at the start
        of a run (a driver killed in between, a product republished by recovery). A
        catalogue that cannot be read is logged and left for the next run."""
        from astropy.io import fits

        from engine.catalogue import new_detections, read_catalogue
        from engine.photometry import catalogue

        sc = self.cfg.sources
        todo = self.reg.unscanned_catalogues()
        if not todo:
            return
        try:
            known = [(np.degrees(s.ra_rad), np.degrees(s.dec_rad)) for s in catalogue(self.cfg)]
        except EngineError as exc:
            log.error("new sources not scanned: %s", exc)
            return
        for obs_id, path in todo:
            try:
                rows = read_catalogue(path)
                bmaj = float(fits.getheader(path, 1)["BMAJ"])
            except (OSError, KeyError, ValueError) as exc:
                log.error("%s: catalogue %s unreadable, new sources not scanned: %s",
                          obs_id, path, exc)
                continue
            if sc.new_min_snr > 0:
                known_now = known + [(r["ra_deg"], r["dec_deg"])
                                     for r in self.reg.new_sources()]
                new = new_detections(rows, known_now,
                                     radius_deg=sc.match_radius_beams * bmaj,
                                     min_snr=sc.new_min_snr,
                                     min_pb=self.cfg.photometry.min_pb, obs_id=obs_id)
                if new:
                    self.reg.add_new_sources(new)
                    log.info("%s: new sources %s", obs_id, ", ".join(r["name"] for r in new))
            self.reg.mark_sources_scanned(obs_id)

    def update_variability(self, names: list[str] | None = None):
        """Recompute eta and V of these sources (all with None) from their measurements in
        published images, mark the candidates (engine.variability) and redraw their light
        curves."""
        from engine.variability import light_curve_stats

        curves = self.reg.light_curves(names)
        rows = [{"name": name, **light_curve_stats(curve, self.cfg)}
                for name, curve in curves.items()]
        for r in self.reg.set_source_stats(rows):
            log.info("new variable candidate %s: eta %.1f, V %.2f over %d measurements",
                     r["name"], r["eta"], r["v"], r["n"])
        for r in rows:  # a candidate's light curve is a product, redrawn as it grows
            if r["variable"]:
                self.write_light_curve(r["name"], curves[r["name"]], r)

    def write_light_curve(self, name: str, curve: list[dict], stats: dict):
        """products/lightcurves/<name>.png (atomic), then its path and sha256 recorded. A
        PNG that cannot be written (a full disk) is logged; the next run draws it again."""
        from engine.quicklook import light_curve_png, safe_name

        try:
            path = light_curve_png(name, curve, stats,
                                   self.products / "lightcurves" / f"{safe_name(name)}.png")
        except (OSError, ValueError) as exc:
            log.error("light curve of %s not drawn: %s", name, exc)
            return
        self.reg.set_light_curve_png(name, str(path), digest(path)[0])
