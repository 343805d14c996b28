"""Science rows: forced-photometry measurements and each source's light-curve statistics."""

from __future__ import annotations

import time

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

    def sources(self, variable_only: bool = False) -> list[dict]:
        """Every source with statistics (candidates only with ``variable_only``), by name."""
        where = "variable = 1" if variable_only else None
        return list(self.db["sources"].rows_where(where, order_by="name"))
