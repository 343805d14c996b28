"""Measurement Set writing with python-casacore: the one owner of casacore tables here.

Conversion workers import this module; CASA workers (casatools/casatasks) never do
(one casacore per process, see :mod:`engine.casaenv`). Tables are opened for writing only
while a new MS is being built under a temporary name; readers elsewhere use CASA.

Layout: MS v2, one spectral window of ascending channels, one polarization setup
(XX, YY), one FEED row per antenna, one FIELD per distinct phase centre. UVW follow
CASA's sign (``x[ant1] - x[ant2]``) and DATA the matching phase convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.casaenv import import_casacore_tables

# casacore Stokes enum codes of linear correlations, by AIPS (pyuvdata) code
AIPS_TO_CASA_CORR = {-5: 9, -6: 12, -7: 10, -8: 11}


@dataclass
class MSLayout:
    """Everything about an MS except the visibilities. Shapes use Nrows = Ntimes * Nbls."""

    time_mjd_s: np.ndarray  # (Nrows,) MJD seconds UTC (integration centre)
    interval_s: np.ndarray  # (Nrows,)
    ant1: np.ndarray  # (Nrows,) ANTENNA table rows, ant1 < ant2
    ant2: np.ndarray
    field_id: np.ndarray  # (Nrows,)
    uvw_m: np.ndarray  # (Nrows, 3) float64, CASA sign
    freq_hz: np.ndarray  # (Nchan,) ascending
    chan_width_hz: float  # positive
    corr_aips: np.ndarray  # (Npols,)
    ant_names: list
    ant_itrf_m: np.ndarray  # (Nants, 3) absolute ITRF
    dish_m: float
    field_ra_dec: np.ndarray  # (Nfields, 2) J2000 radians
    field_names: list
    field_time_mjd_s: np.ndarray  # (Nfields,)
    telescope: str
    obs_id: str
    pointing_ra_dec: np.ndarray  # (Ntimes, 2) J2000 radians: the dishes' pointing track
    pointing_time_mjd_s: np.ndarray  # (Ntimes,)
    chan_average: int = 1  # recorded channels averaged into each MS channel


def bucket_bytes(nrows: int, nchan: int, npol: int) -> int:
    """StandardStMan bucket for FLAG (one bit per flag): the whole column, at most 32 MB,
    at least 64 kB (a small MS stays small)."""
    return int(min(32 << 20, max(64 << 10, nrows * nchan * npol // 8)))


# DATA tiles of at most this many bytes. Measured on one full observation (1.37 GB of
# DATA, blocks of 18,624 rows): tiles of 64-512 rows wrote in 0.33-0.45 s at best and up to
# 2.5 s in unlucky runs (this VM's page-allocation noise hits every size); 64-128 rows
# (0.8-1.6 MB) were fast most often. The standard storage manager took 1.1 s, 0.6 s of it
# in addrows, which initialises every bucket.
DATA_TILE_BYTES = 3 << 19


def data_tile_rows(nrows: int, nchan: int, npol: int) -> int:
    """Rows per DATA tile: the largest power of two within DATA_TILE_BYTES, at most nrows."""
    per_row = nchan * npol * 8
    rows = 1 << max(0, int(np.floor(np.log2(max(1, DATA_TILE_BYTES // per_row)))))
    return int(max(1, min(rows, nrows)))


def ms_size_estimate(nrows: int, nchan: int, npols: int, *, weight_spectrum: bool = False
                     ) -> int:
    """Bytes an MS needs: DATA (complex64), FLAG and WEIGHT_SPECTRUM (float32, when written)
    per visibility, ~160 B of row columns, 20 % for storage-manager overheads, one spare
    DATA tile, two spare FLAG buckets and 2 MB of subtables."""
    per_vis = 13 if weight_spectrum else 9
    return (int(1.2 * nrows * (nchan * npols * per_vis + 160))
            + data_tile_rows(nrows, nchan, npols) * nchan * npols * 8
            + 2 * bucket_bytes(nrows, nchan, npols) + (2 << 20))


def _create(path: str, nchan: int, npol: int, nrows: int, weight_spectrum: bool = False):
    tables = import_casacore_tables()
    desc = tables.required_ms_desc("MAIN")
    desc["UVW"].update(dataManagerType="TiledColumnStMan", dataManagerGroup="TiledUVW")
    for col in ("FLAG", "WEIGHT", "SIGMA"):
        desc[col].update(dataManagerType="TiledShapeStMan", dataManagerGroup=f"Tiled{col}")
    desc["FLAG_CATEGORY"].update(dataManagerType="TiledShapeStMan",
                                 dataManagerGroup="TiledFlagCategory",
                                 keywords={"CATEGORY": np.array(["baddata"])})
    for key in ("ARRAY_ID", "EXPOSURE", "FEED1", "FEED2", "FIELD_ID", "INTERVAL",
                "OBSERVATION_ID", "PROCESSOR_ID", "SCAN_NUMBER", "STATE_ID", "TIME",
                "TIME_CENTROID"):
        desc[key].update(dataManagerType="IncrementalStMan", dataManagerGroup=key)
    # DATA and FLAG have a fixed shape and are written and read row by row: DATA in tiles
    # of whole rows (see DATA_TILE_BYTES), FLAG (bits) in large standard buckets
    data = tables.makearrcoldesc("DATA", 0j, valuetype="complex", shape=[nchan, npol],
                                 datamanagertype="TiledColumnStMan",
                                 datamanagergroup="TiledData")
    desc.update(tables.maketabdesc(data))
    if weight_spectrum:
        ws = tables.makearrcoldesc("WEIGHT_SPECTRUM", 0.0, valuetype="float",
                                   shape=[nchan, npol], datamanagertype="TiledColumnStMan",
                                   datamanagergroup="TiledWeightSpectrum")
        desc.update(tables.maketabdesc(ws))
    desc["FLAG"]["shape"] = np.array([nchan, npol])
    desc["FLAG"].update(dataManagerType="StandardStMan", dataManagerGroup="FlagSSM")
    dminfo = tables.makedminfo(desc)
    for spec in dminfo.values():
        if spec["NAME"] == "FlagSSM":
            spec["SPEC"] = {"BUCKETSIZE": bucket_bytes(nrows, nchan, npol)}
        if spec["NAME"] in ("TiledData", "TiledWeightSpectrum"):
            spec["SPEC"] = {"DEFAULTTILESHAPE": np.array(
                [npol, nchan, data_tile_rows(nrows, nchan, npol)], dtype=np.int32)}
    return tables.default_ms(path, desc, dminfo)


def write_ms(path: str, layout: MSLayout, read_block, *, rows_per_block: int,
             weight_spectrum: bool = False):
    """Create the MS at ``path`` and fill it.

    ``read_block(r0, r1)`` returns ``(data complex64 (n, Nchan, Npols), flags bool, weight
    float32 (n, Npols), spectrum float32 (n, Nchan, Npols) or None)`` for rows ``r0:r1``
    already in MS convention and order; it is called block by block so the full visibility
    cube never has to sit in memory. With ``weight_spectrum`` the MS gets a WEIGHT_SPECTRUM
    column (per-channel data weights, which CASA and WSClean use in place of WEIGHT).
    """
    tables = import_casacore_tables()
    nrows = layout.time_mjd_s.size
    nchan, npol = layout.freq_hz.size, layout.corr_aips.size
    ms = _create(path, nchan, npol, nrows, weight_spectrum)
    try:
        ms.addrows(nrows)
        ms.putcol("TIME", layout.time_mjd_s)
        ms.putcol("TIME_CENTROID", layout.time_mjd_s)
        ms.putcol("INTERVAL", layout.interval_s)
        ms.putcol("EXPOSURE", layout.interval_s)
        ms.putcol("ANTENNA1", layout.ant1.astype(np.int32))
        ms.putcol("ANTENNA2", layout.ant2.astype(np.int32))
        ms.putcol("FIELD_ID", layout.field_id.astype(np.int32))
        zeros = np.zeros(nrows, dtype=np.int32)
        for col in ("FEED1", "FEED2", "DATA_DESC_ID", "ARRAY_ID", "OBSERVATION_ID"):
            ms.putcol(col, zeros)
        ms.putcol("PROCESSOR_ID", zeros - 1)
        ms.putcol("STATE_ID", zeros - 1)
        ms.putcol("SCAN_NUMBER", zeros + 1)
        ms.putcol("UVW", layout.uvw_m)
        for r0 in range(0, nrows, rows_per_block):
            r1 = min(nrows, r0 + rows_per_block)
            data, flags, weight, spectrum = read_block(r0, r1)
            ms.putcol("DATA", data, startrow=r0, nrow=r1 - r0)
            if weight_spectrum:
                ms.putcol("WEIGHT_SPECTRUM", spectrum, startrow=r0, nrow=r1 - r0)
            ms.putcol("FLAG", flags, startrow=r0, nrow=r1 - r0)
            ms.putcol("WEIGHT", weight, startrow=r0, nrow=r1 - r0)
            with np.errstate(divide="ignore"):
                ms.putcol("SIGMA", np.where(weight > 0, 1 / np.sqrt(weight), 0).astype(np.float32),
                          startrow=r0, nrow=r1 - r0)
            ms.putcol("FLAG_ROW", flags.all(axis=(1, 2)), startrow=r0, nrow=r1 - r0)
        ms.putkeyword("DSA110_OBS_ID", layout.obs_id)
        # the model's bandwidth smearing needs the recorded channel width (kernels.predict)
        ms.putkeyword("DSA110_CHAN_AVERAGE", int(layout.chan_average))
    finally:
        ms.close()
    _write_subtables(tables, path, layout)


def _fill(tables, path, name, nrows, cols: dict):
    t = tables.table(f"{path}/{name}", readonly=False, ack=False)
    try:
        t.addrows(nrows)
        for k, v in cols.items():
            t.putcol(k, v)
    finally:
        t.close()


def _write_subtables(tables, path: str, L: MSLayout):
    nant, nchan, npol = len(L.ant_names), L.freq_hz.size, L.corr_aips.size
    _fill(tables, path, "ANTENNA", nant, {
        "NAME": L.ant_names, "STATION": L.ant_names, "POSITION": L.ant_itrf_m,
        "OFFSET": np.zeros((nant, 3)), "TYPE": ["GROUND-BASED"] * nant,
        "MOUNT": ["ALT-AZ"] * nant, "DISH_DIAMETER": np.full(nant, L.dish_m),
        "FLAG_ROW": np.zeros(nant, bool)})
    width = np.full(nchan, abs(L.chan_width_hz))
    _fill(tables, path, "SPECTRAL_WINDOW", 1, {
        "CHAN_FREQ": L.freq_hz[None, :], "CHAN_WIDTH": width[None], "EFFECTIVE_BW": width[None],
        "RESOLUTION": width[None], "NUM_CHAN": [nchan], "NAME": ["DSA110_L"],
        "REF_FREQUENCY": [L.freq_hz[0]], "TOTAL_BANDWIDTH": [width.sum()],
        "MEAS_FREQ_REF": [5], "NET_SIDEBAND": [1], "FREQ_GROUP": [0],
        "FREQ_GROUP_NAME": ["none"], "IF_CONV_CHAIN": [0], "FLAG_ROW": [False]})
    corr = np.array([AIPS_TO_CASA_CORR[int(p)] for p in L.corr_aips], dtype=np.int32)
    prod = np.array([[0, 0], [1, 1]] if npol == 2 else [[0, 0]], dtype=np.int32)
    _fill(tables, path, "POLARIZATION", 1, {
        "CORR_TYPE": corr[None], "CORR_PRODUCT": prod[None], "NUM_CORR": [npol],
        "FLAG_ROW": [False]})
    _fill(tables, path, "DATA_DESCRIPTION", 1, {
        "SPECTRAL_WINDOW_ID": [0], "POLARIZATION_ID": [0], "FLAG_ROW": [False]})
    _fill(tables, path, "FEED", nant, {
        "ANTENNA_ID": np.arange(nant, dtype=np.int32), "FEED_ID": np.zeros(nant, np.int32),
        "SPECTRAL_WINDOW_ID": np.full(nant, -1, np.int32), "TIME": np.zeros(nant),
        "INTERVAL": np.zeros(nant), "NUM_RECEPTORS": np.full(nant, 2, np.int32),
        "BEAM_ID": np.full(nant, -1, np.int32), "BEAM_OFFSET": np.zeros((nant, 2, 2)),
        "POLARIZATION_TYPE": np.array([["X", "Y"]] * nant),
        "POL_RESPONSE": np.tile(np.eye(2, dtype=np.complex64), (nant, 1, 1)),
        "POSITION": np.zeros((nant, 3)), "RECEPTOR_ANGLE": np.zeros((nant, 2))})
    nf = L.field_ra_dec.shape[0]
    dirs = L.field_ra_dec[:, None, :]
    _fill(tables, path, "FIELD", nf, {
        "NAME": L.field_names, "CODE": [""] * nf, "TIME": L.field_time_mjd_s,
        "NUM_POLY": np.zeros(nf, np.int32), "DELAY_DIR": dirs, "PHASE_DIR": dirs,
        "REFERENCE_DIR": dirs, "SOURCE_ID": np.full(nf, -1, np.int32),
        "FLAG_ROW": np.zeros(nf, bool)})
    # POINTING: the meridian track the dishes follow, whatever the phase centre (the
    # primary beam of a drift scan moves with it), one row per antenna with data and time
    ants = np.unique(np.concatenate([L.ant1, L.ant2])).astype(np.int32)
    nt = L.pointing_time_mjd_s.size
    interval = float(np.median(L.interval_s)) if L.interval_s.size else 0.0
    _fill(tables, path, "POINTING", nt * ants.size, {
        "ANTENNA_ID": np.tile(ants, nt), "TIME": np.repeat(L.pointing_time_mjd_s, ants.size),
        "INTERVAL": np.full(nt * ants.size, interval),
        "NAME": [""] * (nt * ants.size), "NUM_POLY": np.zeros(nt * ants.size, np.int32),
        "TIME_ORIGIN": np.repeat(L.pointing_time_mjd_s, ants.size),
        "DIRECTION": np.repeat(L.pointing_ra_dec, ants.size, axis=0)[:, None, :],
        "TARGET": np.repeat(L.pointing_ra_dec, ants.size, axis=0)[:, None, :],
        "TRACKING": np.ones(nt * ants.size, bool)})
    t0, t1 = L.time_mjd_s.min(), L.time_mjd_s.max()
    _fill(tables, path, "OBSERVATION", 1, {
        "TELESCOPE_NAME": [L.telescope], "TIME_RANGE": np.array([[t0, t1]]),
        "OBSERVER": ["dsa110-engine"], "PROJECT": [L.obs_id], "RELEASE_DATE": [0.0],
        "SCHEDULE_TYPE": [""], "FLAG_ROW": [False]})


def read_geometry(path: str) -> dict:
    """Columns the phase-centre validator needs (read-only, python-casacore)."""
    tables = import_casacore_tables()
    with tables.table(path, ack=False) as t:
        out = {k: t.getcol(k) for k in ("TIME", "ANTENNA1", "ANTENNA2", "FIELD_ID", "UVW")}
    with tables.table(f"{path}/ANTENNA", ack=False) as t:
        out["POSITION"] = t.getcol("POSITION")
    with tables.table(f"{path}/FIELD", ack=False) as t:
        out["PHASE_DIR"] = t.getcol("PHASE_DIR")[:, 0, :]
        out["FIELD_NAME"] = t.getcol("NAME")
    return out
