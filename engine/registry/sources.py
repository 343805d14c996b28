"""Science rows: forced-photometry measurements and each source's light-curve statistics."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.states import ProductState


class SourceRecords:
    """Mixed into :class:`engine.registry.Registry` (uses its connection and transactions)."""

    def record_measurements(self, obs_id: str, data_id: str, mjd: float, rows: list[dict]):
        """One image's forced photometry: its rows replace any earlier ones of the same
        image (a rerun adds nothing), in one transaction."""
        now = time.time()
        with self.write():
            self.db["measurements"].delete_where("obs_id = ?", [obs_id])
            self.db["measurements"].insert_all(
                [{"source": r["name"], "obs_id": obs_id, "data_id": data_id, "mjd": mjd,
                  **{k: r[k] for k in ("flux_jy", "err_jy", "apparent_jy", "pb", "rms_jy",
                                       "ra_deg", "dec_deg", "x", "y")},
                  "measured_at": now} for r in rows], pk=("source", "obs_id"))

    def light_curves(self, names: list[str] | None = None) -> dict[str, list[dict]]:
        """Measurements in published images, by source, in time order: {name: [rows]}."""
        sql = ("select m.* from measurements m join products p on p.data_id = m.data_id "
               "where p.state = ?")
        args = [ProductState.PUBLISHED.value]
        if names is not None:
            if not names:
                return {}
            sql += f" and m.source in ({', '.join('?' * len(names))})"
            args += list(names)
        out: dict[str, list[dict]] = {}
        for r in self.db.query(sql + " order by m.source, m.mjd", args):
            out.setdefault(r["source"], []).append(r)
        return out

    def measured_sources(self, obs_id: str) -> list[str]:
        """Names of the sources measured in one image."""
        return [r["source"] for r in self.db["measurements"].rows_where(
            "obs_id = ?", [obs_id], select="source")]

    def set_source_stats(self, rows: list[dict]) -> list[dict]:
        """Light-curve statistics (name, ra_deg, dec_deg, n, eta, v, variable,
        mean_flux_jy). A source newly a candidate gets an event; those rows are returned."""
        now = time.time()
        new = []
        with self.write():
            for r in rows:
                old = self.get("sources", r["name"])
                self.db["sources"].upsert({**r, "variable": int(r["variable"]),
                                           "updated_at": now}, pk="name")
                if r["variable"] and not (old and old["variable"]):
                    self.event("sources", r["name"], None, "variable",
                               {"eta": r["eta"], "v": r["v"], "n": r["n"]})
                    new.append(r)
        return new

    def new_sources(self) -> list[dict]:
        """Sources the finder detected that the reference catalogue lacks, first found first:
        name, ra_deg, dec_deg, first_obs_id, first_snr, first_flux_jy."""
        return list(self.db["new_sources"].rows_where(order_by="found_at, name"))

    def add_new_sources(self, rows: list[dict]):
        """Record newly detected sources (a name already known is left as it was) with an
        event each."""
        now = time.time()
        with self.write():
            for r in rows:
                if self.get("new_sources", r["name"]) is None:
                    self.db["new_sources"].insert({**r, "found_at": now}, pk="name")
                    self.event("new_sources", r["name"], None, "detected",
                               {k: r[k] for k in ("first_obs_id", "first_snr")})

    def unscanned_catalogues(self) -> list[tuple[str, str]]:
        """(obs_id, catalogue path) of the published images whose catalogue was not scanned
        for new sources yet, oldest observation first."""
        sql = ("select i.obs_id, p.published_path, f.name from images i "
               "join products p on p.data_id = 'image:' || i.obs_id "
               "join product_files f on f.data_id = p.data_id and f.kind = 'catalogue' "
               "where p.state = ? and i.sources_scanned is null order by i.obs_id")
        return [(r["obs_id"], str(Path(r["published_path"]) / r["name"]))
                for r in self.db.query(sql, [ProductState.PUBLISHED.value])]

    def mark_sources_scanned(self, obs_id: str):
        with self.write():
            self.db["images"].update(obs_id, {"sources_scanned": 1})

    def set_light_curve_png(self, name: str, path: str, sha256: str):
        """Where a candidate's light-curve PNG is, after it was written."""
        with self.write():
            self.db["sources"].update(name, {"png_path": path, "png_sha256": sha256})

    def sources(self, variable_only: bool = False) -> list[dict]:
        """Every source with statistics (candidates only with ``variable_only``), by name."""
        where = "variable = 1" if variable_only else None
        return list(self.db["sources"].rows_where(where, order_by="name"))

    def science_summary(self) -> dict:
        """For ``status``: sources with statistics, measurements, the candidates (with their
        light-curve PNGs), and the catalogues' reference QA: how many products have one, the
        median of their flux ratios and offsets, and the products it rejected."""
        qas = []
        for img in self.db["images"].rows:
            qas.append((f"image:{img['obs_id']}", json.loads(img["qa"] or "{}")))
        for mos in self.db["mosaics"].rows:
            if mos.get("manifest"):
                qas.append((mos["mosaic_id"], json.loads(mos["manifest"]).get("qa", {})))
        cat = [(d, (q.get("sources") or {}).get("qa")) for d, q in qas]
        cat = [(d, q) for d, q in cat if q]
        ratios = sorted(q["flux_ratio"] for _, q in cat if q.get("flux_ratio") is not None)
        offs = sorted(q["offset_beams"] for _, q in cat if q.get("offset_beams") is not None)

        def median(x):
            n = len(x)
            return None if not n else (x[n // 2] if n % 2 else 0.5 * (x[n // 2 - 1] + x[n // 2]))

        return {"sources": self.count("sources"), "measurements": self.count("measurements"),
                "candidates": {r["name"]: r.get("png_path") for r in self.sources(True)},
                "catalogues": len(cat), "catalogue_flux_ratio": median(ratios),
                "catalogue_offset_beams": median(offs),
                "rejected_by_catalogue_qa": [d for d, q in cat
                                             if q.get("judged") and not q.get("passes")]}
