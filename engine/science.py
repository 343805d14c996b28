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

    def after_publication(self, obs_id: str, manifest: dict, found: list[dict]):
        """A published image: its new sources, then its sources' statistics."""
        if found:
            self.record_new_sources(obs_id, found, manifest["qa"].get("bmaj_arcsec", np.nan))
        phot = manifest.get("photometry")
        if phot:
            self.update_variability([r["name"] for r in phot["rows"]])

    def record_new_sources(self, obs_id: str, found: list[dict], bmaj_arcsec: float):
        """An image's detections that neither the reference catalogue nor an earlier
        detection explains (engine.catalogue.new_detections) become new sources, measured
        by every later image task."""
        from engine.catalogue import new_detections
        from engine.photometry import catalogue

        sc = self.cfg.sources
        if sc.new_min_snr <= 0 or not np.isfinite(bmaj_arcsec):
            return
        known = [(np.degrees(s.ra_rad), np.degrees(s.dec_rad)) for s in catalogue(self.cfg)]
        known += [(r["ra_deg"], r["dec_deg"]) for r in self.reg.new_sources()]
        new = new_detections(found, known, radius_deg=sc.match_radius_beams * bmaj_arcsec
                             / 3600, min_snr=sc.new_min_snr,
                             min_pb=self.cfg.photometry.min_pb, obs_id=obs_id)
        if new:
            self.reg.add_new_sources(new)
            log.info("%s: new sources %s", obs_id, ", ".join(r["name"] for r in new))

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
        """products/lightcurves/<name>.png (atomic), then its path and sha256 recorded."""
        from engine.quicklook import light_curve_png, safe_name

        path = light_curve_png(name, curve, stats,
                               self.products / "lightcurves" / f"{safe_name(name)}.png")
        self.reg.set_light_curve_png(name, str(path), digest(path)[0])
