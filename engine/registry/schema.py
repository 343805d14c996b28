"""The registry's schema: its tables and the migrations that built them, version by version.

A registry file records its version in SQLite's ``user_version``; opening an older file
applies the missing migrations in order (never edit a released migration; add one).
"""

from __future__ import annotations

import sqlite_utils

SCHEMA_VERSION = 11

# each table's primary key
KEYS = {"observations": "obs_id", "products": "data_id", "mosaics": "mosaic_id",
        "images": "obs_id", "caltables": "caltable_id", "files": "path",
        "reconcile_runs": "id", "sources": "name", "new_sources": "name"}


def _v1(db: sqlite_utils.Database):
    db["files"].create({
        "path": str, "obs_id": str, "subband": int, "header_start_jd": float,
        "filename_jd": float, "dec_rad": float, "nfreqs": int, "nblts": int, "size": int,
        "mtime": float, "status": str, "error": str, "unreadable_scans": int,
        "first_seen_at": float}, pk="path")
    db["files"].create_index(["obs_id"])
    db["observations"].create({
        "obs_id": str, "start_jd": float, "end_jd": float, "dec_rad": float,
        "n_subbands": int, "state": str, "lease_owner": str, "lease_expires_at": float,
        "ms_path": str, "image_path": str, "manifest": str, "error": str, "attempts": int,
        "newest_file_mtime": float, "updated_at": float}, pk="obs_id")
    db["observations"].create_index(["state", "start_jd"])
    db["caltables"].create({
        "caltable_id": str, "obs_id": str, "kind": str, "path": str, "calibrator": str,
        "transit_mjd": float, "valid_from_mjd": float, "valid_to_mjd": float,
        "dec_rad": float, "qa": str, "sha256": str}, pk="caltable_id")
    db["images"].create({
        "obs_id": str, "path": str, "pb_path": str, "png_path": str, "sha256": str,
        "size": int, "qa": str, "caltables": str}, pk="obs_id")
    db["mosaics"].create({
        "mosaic_id": str, "members": str, "dec_rad": float, "start_jd": float,
        "end_jd": float, "state": str, "path": str, "error": str, "updated_at": float},
        pk="mosaic_id")
    db["products"].create({
        "data_id": str, "kind": str, "stage_path": str, "published_path": str,
        "qa_status": str, "validation_status": str, "publication_status": str,
        "state": str, "attempts": int, "last_error": str, "sha256": str, "size": int,
        "updated_at": float}, pk="data_id")
    db["events"].create({"id": int, "at": float, "table_name": str, "key": str,
                         "old": str, "new": str, "detail": str}, pk="id")
    db["events"].create_index(["table_name", "key"])


def _v2(db: sqlite_utils.Database):
    db["observations"].add_column("calibration_applied", str)


def _v3(db: sqlite_utils.Database):
    db["observations"].add_column("calibrator", str)
    db["observations"].add_column("transit_mjd", float)
    db["caltables"].add_column("size", int)
    db["caltables"].create_index(["valid_from_mjd", "valid_to_mjd"])


def _v4(db: sqlite_utils.Database):
    db["images"].add_column("pb_sha256", str)
    db["images"].add_column("pb_size", int)
    db["mosaics"].add_column("manifest", str)


def _v5(db: sqlite_utils.Database):
    """Indexes for a registry holding years of rows. (No index on files.status alone: SQLite
    would pick it for per-observation questions and scan millions of 'ok' rows.)"""
    db["files"].create_index(["obs_id", "status"])
    db["products"].create_index(["state"])
    db["mosaics"].create_index(["state"])
    db["observations"].create_index(["start_jd"])


def _v6(db: sqlite_utils.Database):
    """Each image's residual (the QA's residual rms and the mosaic's residual come from it)."""
    db["images"].add_column("residual_path", str)
    db["images"].add_column("residual_sha256", str)
    db["images"].add_column("residual_size", int)


def _v7(db: sqlite_utils.Database):
    """Every file of every product (reconcile checks each), and reconcile's own record.

    Backfilled from the images and mosaics tables: image, primary beam and residual with
    their sha256 and size, the PNG by name only (not recorded before); a mosaic's manifest
    lists all its files."""
    import json
    from pathlib import Path

    db["product_files"].create({"data_id": str, "name": str, "kind": str, "sha256": str,
                                "size": int}, pk=("data_id", "name"))
    db["reconcile_runs"].create({"id": int, "at": float, "deep": int, "files": int,
                                 "problems": int, "report": str}, pk="id")
    rows = []
    for img in db["images"].rows:
        for kind, col in (("image", ""), ("pb", "pb_"), ("residual", "residual_")):
            if img.get(f"{col}path"):
                rows.append({"data_id": f"image:{img['obs_id']}",
                             "name": Path(img[f"{col}path"]).name, "kind": kind,
                             "sha256": img.get(f"{col}sha256"), "size": img.get(f"{col}size")})
        if img.get("png_path"):
            rows.append({"data_id": f"image:{img['obs_id']}", "kind": "png",
                         "name": Path(img["png_path"]).name, "sha256": None, "size": None})
    for mos in db["mosaics"].rows:
        if mos.get("manifest"):
            for kind, f in json.loads(mos["manifest"])["files"].items():
                rows.append({"data_id": mos["mosaic_id"], "kind": kind,
                             "name": Path(f["path"]).name, "sha256": f["sha256"],
                             "size": f["size"]})
    db["product_files"].insert_all(rows, pk=("data_id", "name"), replace=True)


def _v8(db: sqlite_utils.Database):
    """What flagging removed from each observation (docs/FLAGGING.md)."""
    db["observations"].add_column("flag_fraction", float)
    db["observations"].add_column("flag_stats", str)


def _v9(db: sqlite_utils.Database):
    """Forced photometry (one row per source per image, keyed so a rerun replaces it) and
    each source's light-curve statistics (docs/SCIENCE.md)."""
    db["measurements"].create({
        "source": str, "obs_id": str, "data_id": str, "mjd": float, "flux_jy": float,
        "err_jy": float, "apparent_jy": float, "pb": float, "rms_jy": float,
        "ra_deg": float, "dec_deg": float, "x": float, "y": float, "measured_at": float},
        pk=("source", "obs_id"))
    db["measurements"].create_index(["obs_id"])
    db["sources"].create({
        "name": str, "ra_deg": float, "dec_deg": float, "n": int, "eta": float, "v": float,
        "variable": int, "mean_flux_jy": float, "updated_at": float}, pk="name")
    db["sources"].create_index(["variable"])


def _v10(db: sqlite_utils.Database):
    """A candidate's light-curve PNG (products/lightcurves/), where it is and its checksum;
    sources the finder detected that the reference catalogue lacks (measured from then on).
    """
    db["sources"].add_column("png_path", str)
    db["sources"].add_column("png_sha256", str)
    db["images"].add_column("sources_scanned", int)
    db["new_sources"].create({
        "name": str, "ra_deg": float, "dec_deg": float, "first_obs_id": str,
        "first_snr": float, "first_flux_jy": float, "found_at": float}, pk="name")


def _v11(db: sqlite_utils.Database):
    """How many times a mosaic failed: a following driver re-plans a failed mosaic at most
    ``driver.max_attempts`` times in all."""
    db["mosaics"].add_column("attempts", int)


MIGRATIONS = {1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6, 7: _v7, 8: _v8, 9: _v9,
              10: _v10, 11: _v11}
