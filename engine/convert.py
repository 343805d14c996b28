"""Conversion of one observation: 16 UVH5 subbands -> zarr stage store -> one MS.

Three steps, each a plain function of paths and configuration (the driver runs them as
Ray tasks):

1. :func:`engine.convert_plan.plan_observation` reads the 16 headers (metadata only)
   and fixes the layout: ascending channel grid, each file's channel slot, channel
   averaging.
2. :func:`convert_subband` (one per file) reads visibilities, conjugates reversed
   baselines, converts to the MS sign convention, flags autocorrelations and non-finite
   values, reorders rows and writes its channel block into the zarr store. A marker file
   records the block, so a failed assembly never redoes subband work.
3. :func:`assemble_ms` computes UVW (numba kernel on per-integration rotations), rephases
   if asked, and writes the MS through a temporary name and an atomic rename.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from types import SimpleNamespace
from pathlib import Path

import numpy as np

from engine import faults, geometry
from engine.config import Config
from engine.convert_plan import Plan, plan_observation
from engine.constants import JD_TO_MJD
from engine.errors import InputFileError, ObservationError, StaleProductError, StorageError
from engine.flagging import flag_subband
from engine.paths import digest as paths_digest
from engine.telescope import Telescope
from engine.uvh5io import BufferPool, read_header, read_subband
from kernels.geometry import baseline_uvw_ms
from kernels.visibility import average_channels, to_ms_order

log = logging.getLogger(__name__)

# reused by the tasks a long-lived worker runs (see uvh5io.BufferPool)
_POOL = BufferPool()


def ms_row_order(time_jd, ant1, ant2):
    """Row order (time, ant1, ant2) after putting every baseline as ant1 <= ant2.

    Returns ``(order, swapped, t_sorted, a1_sorted, a2_sorted)``; ``swapped`` flags the raw
    rows whose antennas were reversed.
    """
    swapped = ant1 > ant2
    lo, hi = np.minimum(ant1, ant2), np.maximum(ant1, ant2)
    order = np.lexsort((hi, lo, time_jd))
    return order, swapped, time_jd[order], lo[order], hi[order]


def store_arrays(plan: Plan) -> tuple:
    """Names of the stage store's arrays: ``count`` only when channels are averaged."""
    base = ("vis", "flags", "wsum", "nraw", "nvalid")
    return base + ("count",) if plan.average > 1 else base


def open_store(store: Path, plan: Plan, *, create: bool, compress: bool = False) -> dict:
    """The observation's zarr stage store, in MS row order and MS convention.

    ``vis`` (Nrows, Nchan, Npols) complex64 and ``flags`` bool, chunked one integration by
    one subband, Nchan after averaging (``plan.nchan_out``); ``wsum``/``nraw``/``nvalid``
    (Nrows, Nsubbands, Npols) hold each subband's sum of nsamples over its unflagged
    recorded channels, its count of those channels and its count of unflagged (averaged)
    channels, from which assembly forms WEIGHT; with averaging, ``count`` (Nrows, Nchan,
    Npols) uint8 holds the unflagged recorded samples in each averaged channel, from which
    assembly forms WEIGHT_SPECTRUM. Returns {name: array}.
    """
    import zarr

    names = store_arrays(plan)
    if not create:
        g = zarr.open_group(str(store), mode="r+")
        # every chunk is written, even one equal to the fill value: zarr's default compares
        # each chunk with it first, which took half of the write time (measured)
        return {k: g[k].with_config({"write_empty_chunks": True}) for k in names}
    shape = (plan.nrows, plan.nchan_out, plan.npols)
    chunks = (plan.nbls, max(s.nchan for s in plan.slots) // plan.average, plan.npols)
    g = zarr.open_group(str(store), mode="w")
    comp = {} if compress else {"compressors": None}
    wshape = (plan.nrows, len(plan.slots), plan.npols)
    wchunks = (plan.nrows, 1, plan.npols)
    spec = {"vis": (shape, chunks, "complex64", 0j), "flags": (shape, chunks, "bool", True),
            "wsum": (wshape, wchunks, "float64", 0.0), "nraw": (wshape, wchunks, "int64", 0),
            "nvalid": (wshape, wchunks, "int64", 0), "count": (shape, chunks, "uint8", 0)}
    arrays = {k: g.create_array(k, shape=spec[k][0], chunks=spec[k][1], dtype=spec[k][2],
                                fill_value=spec[k][3], **comp) for k in names}
    g.attrs["plan"] = plan.to_json()
    return arrays


def marker_path(store: Path, sb: int) -> Path:
    return Path(store) / f"sb{sb:02d}.done.json"


def convert_subband(path: str, store: str, plan_json: str) -> dict:
    """Read one subband and write its channel block into the zarr store.

    Returns a manifest dict (subband, channels, rows, non-finite count, timings).
    """
    t0 = time.perf_counter()
    faults.check("convert.subband", path)
    plan = Plan.from_json(plan_json)
    slot = next((s for s in plan.slots if s.path == path), None)
    if slot is None:
        raise ObservationError(f"{path} is not part of the plan of {plan.obs_id}")
    sb = read_subband(path, buffers=_POOL)
    t_read = time.perf_counter() - t0
    if sb.vis.shape != (plan.nrows, slot.nchan, plan.npols):
        raise InputFileError(path, f"visdata shape {sb.vis.shape} does not match the plan "
                                   f"({plan.nrows}, {slot.nchan}, {plan.npols})")
    if set(sb.pols.tolist()) - {-5, -6, -7, -8}:
        raise InputFileError(path, f"polarizations {sb.pols.tolist()} are not linear (XX/YY)")
    order, swapped, t_s, a1_s, a2_s = ms_row_order(sb.time_jd, sb.ant1, sb.ant2)
    keys = np.stack([a1_s, a2_s])
    if np.any((np.diff(t_s) == 0) & np.all(np.diff(keys, axis=1) == 0, axis=0)):
        raise InputFileError(path, "a baseline appears twice in one integration")
    ref_keys = _reference_keys(store)
    if ref_keys is not None and not (np.array_equal(ref_keys[0], a1_s)
                                     and np.array_equal(ref_keys[1], a2_s)
                                     and np.allclose(ref_keys[2], t_s, rtol=0, atol=1e-8)):
        raise InputFileError(path, "baselines or times differ from the other subbands")
    flags = sb.flags
    cross = sb.ant1 != sb.ant2
    per_row = flags.shape[1] * flags.shape[2]
    n_in_flagged = int(np.count_nonzero(flags.reshape(flags.shape[0], per_row), axis=1)[cross]
                       .sum())
    in_flagged = n_in_flagged / (int(cross.sum()) * per_row) if cross.any() else 1.0
    flags[~cross] = True  # autocorrelations never enter calibration or imaging
    t_flag = time.perf_counter()
    flag_stats = flag_subband(sb.vis, flags, order, sb.ant1, sb.ant2, plan.ntimes, plan.nbls,
                              SimpleNamespace(**plan.flag)) if plan.flag else {}
    t_flag = time.perf_counter() - t_flag
    # one numba pass: MS row order, MS convention (reversed rows keep their phase), ascending
    # channels, non-finite values zeroed and flagged, per-row weight sums and, in single
    # phasing, the rotation of this block's channels to the target centre
    c = slice(slot.chan0, slot.chan0 + slot.nchan)
    with np.load(Path(store) / "geometry.npz") as z:
        dw = z["dw"]
    outs = (_POOL.get("vis_out", sb.vis.shape, np.complex64),
            _POOL.get("flag_out", sb.vis.shape, bool))
    vis_o, flags_o, wsum, nvalid, nonfinite = to_ms_order(
        sb.vis, flags, sb.nsamples, order, swapped, reverse=slot.descending,
        dw_m=dw if dw.size else None, freq_hz=np.asarray(plan.freq_hz)[c], out=outs)
    del sb
    flagged = 1.0 - float(nvalid.sum()) / flags_o.size
    nraw, count = nvalid, None
    if plan.average > 1:  # after the rephasing: groups average in the imaged frame
        shape = (plan.nrows, slot.nchan // plan.average, plan.npols)
        vis_o, flags_o, nvalid, count = average_channels(
            vis_o, flags_o, plan.average, out=(_POOL.get("vis_avg", shape, np.complex64),
                                               _POOL.get("flag_avg", shape, bool),
                                               _POOL.get("count_avg", shape, np.uint8)))
    n_bad = int(np.count_nonzero(nonfinite))
    z = open_store(Path(store), plan, create=False)
    k = [s.subband for s in plan.slots].index(slot.subband)
    c_out = plan.out_slice(slot)
    z["vis"][:, c_out, :] = vis_o
    z["flags"][:, c_out, :] = flags_o
    if count is not None:
        z["count"][:, c_out, :] = count
    z["wsum"][:, k, :] = wsum
    z["nraw"][:, k, :] = nraw
    z["nvalid"][:, k, :] = nvalid
    manifest = {"subband": slot.subband, "path": path, "chan0": slot.chan0,
                "nchan": slot.nchan, "rows": plan.nrows, "nonfinite_rows": n_bad,
                "averaged": plan.average, "flagged_fraction": flagged,
                "input_flagged_fraction": in_flagged, "flags": flag_stats,
                "read_s": t_read, "flag_s": t_flag, "total_s": time.perf_counter() - t0}
    if n_bad:
        log.warning("%s: %d rows hold NaN/Inf visibilities; flagged", path, n_bad)
    if in_flagged >= 1.0:
        log.warning("%s: every cross-correlation is flagged in the file", path)
    m = marker_path(Path(store), slot.subband)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, m)
    return manifest


def _reference_keys(store: str):
    p = Path(store) / "rowkeys.npz"
    if not p.exists():
        return None
    with np.load(p) as z:
        return z["a1"], z["a2"], z["t"]


def write_row_keys(store: Path, first_path: str):
    """Store the MS row keys of the first subband (header arrays only) for the others."""
    import h5py

    with h5py.File(first_path, "r") as f:
        h = f["Header"]
        t, a1, a2 = (h[k][()] for k in ("time_array", "ant_1_array", "ant_2_array"))
    _, _, t_s, a1_s, a2_s = ms_row_order(t.astype(np.float64), a1.astype(np.int64),
                                         a2.astype(np.int64))
    tmp = Path(store) / "rowkeys.tmp.npz"
    np.savez(tmp, a1=a1_s, a2=a2_s, t=t_s)
    os.replace(tmp, Path(store) / "rowkeys.npz")


def compute_geometry(store: Path, plan: Plan, cfg: Config):
    """UVW, fields and (single phasing) per-row w offsets, once per observation.

    Per-integration rotations come from astropy/erfa, the per-baseline work from the numba
    kernel. Saved as ``geometry.npz`` in the store: subband tasks read ``dw`` to rephase
    their channels in parallel, the assembly reads the rest.
    """
    tel = Telescope(cfg)
    first = read_subband_meta(plan.slots[0].path)
    with np.load(store / "rowkeys.npz") as z:
        a1_num, a2_num, t_rows = z["a1"], z["a2"], z["t"]
    index_of = {int(n): i for i, n in enumerate(first["antenna_numbers"])}
    a1 = np.array([index_of[int(n)] for n in a1_num])
    a2 = np.array([index_of[int(n)] for n in a2_num])
    times, time_index = np.unique(t_rows, return_inverse=True)
    ant_itrf = first["antenna_positions"] + first["site_itrf"]
    m_ra, m_dec, ra, dec = phase_centres(plan, times, cfg, tel)
    single = cfg.convert.phasing == "single"
    nt = times.size
    rot = geometry.uvw_frames(np.concatenate([ra, m_ra]) if single else ra,
                              np.concatenate([dec, m_dec]) if single else dec,
                              np.concatenate([times, times]) if single else times, tel.location)
    uvw = baseline_uvw_ms(rot[:nt], ant_itrf, time_index, a1, a2)
    dw = np.zeros(0)
    if single:
        uvw_m = baseline_uvw_ms(rot[nt:], ant_itrf, time_index, a1, a2)
        dw = uvw[:, 2] - uvw_m[:, 2]
        fields = np.array([[ra[0], dec[0]]])
        field_id = np.zeros(plan.nrows, dtype=np.int32)
        names = [plan.obs_id]
        ftimes = np.array([(times.mean() - JD_TO_MJD) * 86400.0])
    else:
        fields = np.stack([ra, dec], axis=1)
        field_id = time_index.astype(np.int32)
        names = [f"{plan.obs_id}_t{k:02d}" for k in range(times.size)]
        ftimes = (times - JD_TO_MJD) * 86400.0
    tmp = store / "geometry.tmp.npz"
    np.savez(tmp, t=t_rows, uvw=uvw, dw=dw, a1=a1, a2=a2, field_id=field_id, fields=fields,
             field_times=ftimes, field_names=json.dumps(names),
             pointing=np.stack([m_ra, m_dec], axis=1), pointing_times=(times - JD_TO_MJD) * 86400)
    os.replace(tmp, store / "geometry.npz")


# the store's layout (arrays and their meaning); a store of another layout is made again
STORE_LAYOUT = 2  # 2: nraw, and count for WEIGHT_SPECTRUM


def _convert_key(cfg: Config) -> str:
    """The configuration a store's contents depend on (beyond the data), and its layout."""
    c = cfg.convert
    return json.dumps([STORE_LAYOUT, c.phasing, repr(c.single_ra_deg), repr(c.single_dec_deg),
                       c.zarr_compress, cfg.site.latitude_deg, cfg.site.longitude_deg,
                       cfg.site.height_m])


def prepare_store(store: Path, plan: Plan, cfg: Config) -> list[int]:
    """Create the store unless a matching one exists; return subbands still to convert."""
    store = Path(store)
    if store.exists():
        try:
            import zarr

            attrs = zarr.open_group(str(store), mode="r").attrs
            same = (attrs.get("plan") == plan.to_json()
                    and attrs.get("convert") == _convert_key(cfg))
        except (OSError, ValueError, KeyError):
            same = False
        if same and (store / "geometry.npz").exists():
            return [s.subband for s in plan.slots if not marker_path(store, s.subband).exists()]
        shutil.rmtree(store)
    open_store(store, plan, create=True, compress=cfg.convert.zarr_compress)
    write_row_keys(store, plan.slots[0].path)
    compute_geometry(store, plan, cfg)
    import zarr

    zarr.open_group(str(store), mode="r+").attrs["convert"] = _convert_key(cfg)
    return [s.subband for s in plan.slots]


def phase_centres(plan: Plan, times_jd: np.ndarray, cfg: Config, tel: Telescope):
    """Per-integration J2000 phase centres of the data as recorded and as requested.

    Returns ``(meridian_ra, meridian_dec, target_ra, target_dec)`` arrays of (Ntimes,).
    """
    mid = 0.5 * (times_jd[0] + times_jd[-1])
    r, d = geometry.meridian_icrs(np.append(times_jd, mid), plan.dec_rad, tel.location)
    m_ra, m_dec = r[:-1], d[:-1]
    if cfg.convert.phasing == "meridian":
        return m_ra, m_dec, m_ra, m_dec
    if np.isfinite(cfg.convert.single_ra_deg) and np.isfinite(cfg.convert.single_dec_deg):
        ra, dec = np.deg2rad(cfg.convert.single_ra_deg), np.deg2rad(cfg.convert.single_dec_deg)
    else:
        ra, dec = float(r[-1]), float(d[-1])
    return m_ra, m_dec, np.full_like(m_ra, ra), np.full_like(m_dec, dec)


def assemble_ms(store: str, out_ms: str, cfg: Config) -> dict:
    """Write the observation's MS from the complete zarr store (temporary name + rename)."""
    import zarr

    from engine.msio import MSLayout, ms_size_estimate, write_ms

    t0 = time.perf_counter()
    faults.check("convert.assemble", out_ms)
    store = Path(store)
    g = zarr.open_group(str(store), mode="r")
    plan = Plan.from_json(g.attrs["plan"])
    missing = [s.subband for s in plan.slots if not marker_path(store, s.subband).exists()]
    if missing:
        # the engine's own state is off (store removed meanwhile), not the input: retried
        raise StaleProductError(f"{store}: subbands {missing} not converted yet")
    tel = Telescope(cfg)
    first = read_subband_meta(plan.slots[0].path)
    with np.load(store / "geometry.npz") as z:
        geo = {k: z[k] for k in z.files}
    t_rows, uvw, a1, a2, field_id = (geo[k] for k in ("t", "uvw", "a1", "a2", "field_id"))
    fields_ra_dec, ftimes = geo["fields"], geo["field_times"]
    pointing, pointing_times = geo["pointing"], geo["pointing_times"]
    names = json.loads(str(geo["field_names"]))
    ant_itrf = first["antenna_positions"] + first["site_itrf"]
    freqs = plan.out_freq_hz()
    layout = MSLayout(
        time_mjd_s=(t_rows - JD_TO_MJD) * 86400.0,
        interval_s=np.full(plan.nrows, first["integration_s"]), ant1=a1, ant2=a2,
        field_id=field_id, uvw_m=uvw, freq_hz=freqs,
        chan_width_hz=abs(plan.chan_width_hz) * plan.average,
        corr_aips=first["pols"], ant_names=first["antenna_names"], ant_itrf_m=ant_itrf,
        dish_m=tel.dish_diameter_m, field_ra_dec=fields_ra_dec, field_names=names,
        field_time_mjd_s=ftimes, telescope=cfg.site.casa_name, obs_id=plan.obs_id,
        pointing_ra_dec=pointing, pointing_time_mjd_s=pointing_times,
        chan_average=plan.average)
    z_vis, z_flags = g["vis"], g["flags"]
    wsum_sb, nraw_sb = g["wsum"][...], g["nraw"][...]
    wsum, nvalid = wsum_sb.sum(axis=1), g["nvalid"][...].sum(axis=1)
    if not nvalid.any():
        raise ObservationError(f"{plan.obs_id}: every visibility of every subband is flagged "
                               "or non-finite; nothing to image")
    # WEIGHT: nsamples summed over a row's unflagged recorded channels per unflagged MS
    # channel (0 for a fully flagged row): each averaged channel carries its samples' weight.
    # It is the mean of WEIGHT_SPECTRUM over a row's unflagged channels.
    weight_all = np.where(nvalid > 0, wsum / np.maximum(nvalid, 1), 0).astype(np.float32)
    # WEIGHT_SPECTRUM (averaging only): a group that kept n of its k recorded samples has
    # n x (the row's nsamples per sample), so a channel next to a flagged one is not given
    # the weight of a full group; nsamples are constant across one subband's channels
    per_sample = np.where(nraw_sb > 0, wsum_sb / np.maximum(nraw_sb, 1), 0.0)
    z_count = g["count"] if plan.average > 1 else None
    sb_slices = [plan.out_slice(s) for s in plan.slots]

    from zarr.core.buffer.cpu import NDBuffer

    def read_block(r0, r1):
        shape = (r1 - r0, freqs.size, plan.npols)
        data = _POOL.get(f"block_vis{r1 - r0}", shape, np.complex64)
        flags = _POOL.get(f"block_flag{r1 - r0}", shape, bool)
        z_vis.get_basic_selection((slice(r0, r1),), out=NDBuffer.from_numpy_array(data))
        z_flags.get_basic_selection((slice(r0, r1),), out=NDBuffer.from_numpy_array(flags))
        if z_count is None:
            return data, flags, weight_all[r0:r1], None
        spectrum = _POOL.get(f"block_ws{r1 - r0}", shape, np.float32)
        count = z_count[r0:r1]
        for k, c in enumerate(sb_slices):
            np.multiply(count[:, c, :], per_sample[r0:r1, k, None, :], out=spectrum[:, c, :],
                        casting="unsafe")
        return data, flags, weight_all[r0:r1], spectrum

    out_ms = Path(out_ms)
    tmp = out_ms.with_name(out_ms.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    # casacore aborts the whole process when a table cannot be flushed to a full disk, so
    # the space is checked before anything is written
    need = ms_size_estimate(plan.nrows, freqs.size, plan.npols,
                            weight_spectrum=z_count is not None)
    free = shutil.disk_usage(out_ms.parent).free
    if free < need:
        raise StorageError(f"{out_ms}: stage is full: {free / 1e6:.1f} MB free, the MS needs "
                           f"about {need / 1e6:.1f} MB; nothing written, subband blocks kept")
    # blocks of whole integrations, about 128 MB of visibilities, in reused buffers
    rows_per_block = plan.nbls * max(1, int(128e6 // max(1, plan.nbls * freqs.size * 8)))
    try:
        write_ms(str(tmp), layout, read_block, rows_per_block=rows_per_block,
                 weight_spectrum=z_count is not None)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial MS behind
        if _is_no_space(exc):
            raise StorageError(f"{out_ms}: stage is full while writing the MS ({exc}); "
                               "partial MS removed, subband blocks kept") from None
        raise
    t_write = time.perf_counter() - t0
    from engine.msio import read_geometry
    from engine.validate import validate_phasing

    phasing_report = validate_phasing(
        read_geometry(str(tmp)), tel.location,
        dec_app_rad=plan.dec_rad if cfg.convert.phasing == "meridian" else None)
    digest, size = paths_digest(tmp)
    if out_ms.exists():
        shutil.rmtree(out_ms)
    os.replace(tmp, out_ms)
    return {"obs_id": plan.obs_id, "ms_path": str(out_ms), "size": size, "sha256": digest,
            "rows": plan.nrows, "nchan": freqs.size, "nfields": len(names),
            "phasing": cfg.convert.phasing, "phasing_report": phasing_report,
            "write_s": t_write,
            "total_s": time.perf_counter() - t0}


def _is_no_space(exc: BaseException) -> bool:
    """ENOSPC from Python, or casacore's RuntimeError text for it."""
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def read_subband_meta(path: str) -> dict:
    """Antenna table and per-file constants of one subband (header only)."""
    import h5py
    from astropy import units as u
    from astropy.coordinates import EarthLocation

    with h5py.File(path, "r") as f:
        h = f["Header"]
        lat, lon, alt = (float(h[k][()]) for k in ("latitude", "longitude", "altitude"))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in h["antenna_names"][()]]
        loc = EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, alt * u.m)
        return {"antenna_numbers": h["antenna_numbers"][()].astype(np.int64),
                "antenna_names": names,
                "antenna_positions": h["antenna_positions"][()].astype(np.float64),
                "site_itrf": np.array([loc.x.to_value(u.m), loc.y.to_value(u.m),
                                       loc.z.to_value(u.m)]),
                "integration_s": float(np.atleast_1d(h["integration_time"][()])[0]),
                "pols": h["polarization_array"][()].astype(np.int64)}


def convert_local(paths, out_ms: str, cfg: Config, *, workdir: Path | None = None,
                  workers: int = 1) -> dict:
    """Convert one observation outside Ray (``dsa110-engine convert``): its subbands in
    ``workers`` processes (1: in this process), then the assembly here.

    Worker processes are spawned (not forked: this process may hold threads) and share
    nothing but the zarr store, as Ray's conversion tasks do; an error in one subband
    stops the conversion and is raised here as the task raised it.
    """
    from engine.discover import obs_id_for

    headers = [read_header(p) for p in paths]
    obs_id = obs_id_for(headers[0].start_jd, headers[0].dec_rad)
    plan = plan_observation(obs_id, paths, cfg, headers=headers)
    store = Path(workdir or Path(out_ms).parent) / f"{obs_id}.zarr"
    todo = prepare_store(store, plan, cfg)
    slots = [s.path for s in plan.slots if s.subband in todo]
    if workers > 1 and len(slots) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(slots)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            subbands = list(pool.map(convert_subband, slots, [str(store)] * len(slots),
                                     [plan.to_json()] * len(slots)))
    else:
        subbands = [convert_subband(p, str(store), plan.to_json()) for p in slots]
    manifest = assemble_ms(str(store), out_ms, cfg)
    manifest["subbands"] = subbands  # as the Ray path returns them (engine.raytasks)
    shutil.rmtree(store)
    return manifest


def subband_manifests(store) -> list[dict]:
    """The manifests of every subband converted into ``store`` (its marker files), in
    subband order; [] if the store is gone."""
    store = Path(store)
    if not store.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(store.glob("sb*.done.json"))]


def input_warnings(subbands: list) -> list:
    """Problems in an observation's files that conversion flagged rather than rejected."""
    out = []
    for m in sorted(subbands, key=lambda m: m["subband"]):
        if m.get("nonfinite_rows"):
            out.append(f"{m['path']}: {m['nonfinite_rows']} of {m['rows']} rows hold NaN/Inf "
                       "visibilities (flagged)")
        if m.get("input_flagged_fraction", 0) >= 1.0:
            out.append(f"{m['path']}: every visibility is flagged in the file")
    return out
