"""Fast reads of correlator UVH5 files with h5py (no pyuvdata object, no full checks).

Both UVH5 layouts are accepted: the correlator's (``freq_array`` (1, Nfreqs), ``visdata``
(Nblts, 1, Nfreqs, Npols)) and pyuvdata 3's (``freq_array`` (Nfreqs,), ``visdata``
(Nblts, Nfreqs, Npols)). Every problem is an :class:`~engine.errors.InputFileError`
naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from astropy.time import Time

from engine.errors import FileNotReadyError, InputFileError

FILENAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(\d{2})\.hdf5$")
REQUIRED_HEADER = ("time_array", "ant_1_array", "ant_2_array", "freq_array",
                   "polarization_array", "antenna_numbers", "antenna_positions", "Nblts",
                   "Nfreqs", "Npols", "uvw_array")
REQUIRED_KEYWORDS = ("phase_center_dec",)


def parse_filename(path) -> tuple[float, int]:
    """``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` -> (filename time as JD UTC, subband index)."""
    name = Path(path).name
    m = FILENAME_RE.match(name)
    if not m:
        raise InputFileError(path, "malformed filename (expected YYYY-MM-DDTHH:MM:SS_sbNN.hdf5)")
    try:
        jd = Time(m.group(1), format="isot", scale="utc").jd
    except ValueError:
        raise InputFileError(path, f"filename time {m.group(1)!r} is not a valid date") from None
    return jd, int(m.group(2))


def _scalar(v):
    v = v[()]
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        return v.item()
    return v


@dataclass
class Header:
    """What discovery needs from one file, read without loading visibilities."""

    path: str
    start_jd: float  # time_array[0], JD UTC: identical across one observation's subbands
    end_jd: float
    ntimes: int
    nblts: int
    nfreqs: int
    npols: int
    freq_hz: np.ndarray  # (Nfreqs,) as written (descending for DSA-110)
    dec_rad: float  # apparent pointing declination (extra_keywords phase_center_dec)
    ants: int  # Nants_data


def open_h5(path) -> h5py.File:
    """Open for reading, separating 'not finished yet' from 'broken'."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise InputFileError(path, "file disappeared") from None
    except PermissionError:
        raise InputFileError(path, "permission denied") from None
    except OSError as exc:
        raise FileNotReadyError(path, f"not a readable HDF5 file ({exc.__class__.__name__}: "
                                      f"{str(exc).splitlines()[0][:120]})") from None


def _freqs(h, path) -> np.ndarray:
    f = np.asarray(h["freq_array"][()], dtype=np.float64)
    if f.ndim == 2 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 1:
        raise InputFileError(path, f"freq_array has shape {f.shape}, expected (Nfreqs,)")
    return f


def read_header(path) -> Header:
    """Header of one subband file (h5py metadata read; visibilities untouched)."""
    with open_h5(path) as f:
        if "Header" not in f or "Data" not in f or "visdata" not in f["Data"]:
            raise InputFileError(path, "not a UVH5 file (no Header or Data/visdata group)")
        h = f["Header"]
        missing = [k for k in REQUIRED_HEADER if k not in h]
        if missing:
            raise InputFileError(path, f"header lacks {', '.join(missing)}")
        ek = h.get("extra_keywords")
        miss_kw = [k for k in REQUIRED_KEYWORDS if ek is None or k not in ek]
        if miss_kw:
            raise InputFileError(path, f"extra_keywords lack {', '.join(miss_kw)} "
                                       "(cannot tell the pointing declination)")
        times = h["time_array"]
        nblts = int(_scalar(h["Nblts"]))
        if times.shape != (nblts,):
            raise InputFileError(path, f"time_array has shape {times.shape}, Nblts = {nblts}")
        t_all = times[()]
        if not np.all(np.isfinite(t_all)):
            raise InputFileError(path, "time_array holds non-finite values")
        freqs = _freqs(h, path)
        nfreqs, npols = int(_scalar(h["Nfreqs"])), int(_scalar(h["Npols"]))
        vshape = f["Data"]["visdata"].shape
        if vshape not in ((nblts, nfreqs, npols), (nblts, 1, nfreqs, npols)):
            raise InputFileError(path, f"visdata has shape {vshape}, header says "
                                       f"Nblts={nblts} Nfreqs={nfreqs} Npols={npols}")
        dec = float(_scalar(ek["phase_center_dec"]))
        if not np.isfinite(dec) or abs(dec) > np.pi / 2:
            raise InputFileError(path, f"phase_center_dec = {dec} is not a declination (rad)")
        return Header(str(path), float(t_all[0]), float(t_all.max()), int(np.unique(t_all).size),
                      nblts, nfreqs, npols, freqs, dec,
                      int(_scalar(h["Nants_data"])) if "Nants_data" in h else -1)


@dataclass
class Subband:
    """One subband fully read. Antenna columns hold antenna NUMBERS as in the file."""

    path: str
    time_jd: np.ndarray  # (Nblts,)
    ant1: np.ndarray  # (Nblts,) antenna numbers
    ant2: np.ndarray
    freq_hz: np.ndarray  # (Nfreqs,)
    pols: np.ndarray  # (Npols,) AIPS codes, -5 XX, -6 YY
    vis: np.ndarray  # (Nblts, Nfreqs, Npols) complex64
    flags: np.ndarray  # (Nblts, Nfreqs, Npols) bool
    nsamples: np.ndarray  # (Nblts, Nfreqs, Npols) float32
    integration_s: np.ndarray  # (Nblts,)
    antenna_numbers: np.ndarray  # (Nants_telescope,)
    antenna_names: list
    antenna_positions: np.ndarray  # (Nants_telescope, 3) ITRF metres relative to the site
    site_lat_lon_alt: tuple  # deg, deg, m
    dec_rad: float


def _read_into(ds, dtype, shape, buffers):
    """Read a dataset as ``dtype`` with ``shape``, into a reused buffer when one is given.

    Large fresh arrays cost a page fault per 4 kB on first touch (about as much as the
    read itself here), so long-lived workers pass a :class:`BufferPool`.
    """
    out = buffers.get(ds.name, shape, dtype) if buffers is not None else np.empty(shape, dtype)
    raw_view = out.reshape(ds.shape)
    if ds.dtype.names == ("r", "i") and np.dtype(dtype) == np.complex64 \
            and ds.dtype["r"] != np.float32:
        raw = ds[()]
        raw_view[...] = raw["r"] + 1j * raw["i"]
    else:
        ds.read_direct(raw_view)  # h5py converts (r, i) compounds and int/float kinds
    return out


class BufferPool:
    """Process-local arrays reused across tasks, one per (name, shape, dtype)."""

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype):
        key = (name, tuple(shape), np.dtype(dtype).str)
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, dtype)
        return self._arrays[key]


def read_subband(path, *, buffers: BufferPool | None = None) -> Subband:
    """Read one subband (header, visibilities, flags, nsamples) with h5py.

    With ``buffers``, the three big arrays are views of reused process-local buffers: they
    are valid until the next read with the same pool.
    """
    hdr = read_header(path)
    with open_h5(path) as f:
        h, d = f["Header"], f["Data"]
        shape = (hdr.nblts, hdr.nfreqs, hdr.npols)
        try:
            vis = _read_into(d["visdata"], np.complex64, shape, buffers)
            if "flags" in d:
                flags = _read_into(d["flags"], bool, shape, buffers)
            else:
                flags = np.zeros(shape, dtype=bool)
            if "nsamples" in d:
                nsamp = _read_into(d["nsamples"], np.float32, shape, buffers)
            else:
                nsamp = np.ones(shape, dtype=np.float32)
        except (OSError, ValueError, TypeError) as exc:
            raise InputFileError(path, f"cannot read visibilities: {exc}") from None
        itime = np.broadcast_to(np.asarray(h["integration_time"][()], float), (hdr.nblts,)) \
            if "integration_time" in h else np.full(hdr.nblts, np.nan)
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in h["antenna_names"][()]] if "antenna_names" in h else []
        lla = tuple(float(_scalar(h[k])) if k in h else np.nan
                    for k in ("latitude", "longitude", "altitude"))
        sb = Subband(str(path), h["time_array"][()].astype(np.float64),
                     h["ant_1_array"][()].astype(np.int64), h["ant_2_array"][()].astype(np.int64),
                     hdr.freq_hz, h["polarization_array"][()].astype(np.int64), vis, flags,
                     nsamp, np.array(itime), h["antenna_numbers"][()].astype(np.int64), names,
                     h["antenna_positions"][()].astype(np.float64), lla, hdr.dec_rad)
    if sb.ant1.shape != (hdr.nblts,) or sb.ant2.shape != (hdr.nblts,):
        raise InputFileError(path, "ant_1_array/ant_2_array do not have Nblts entries")
    if not np.all(np.isin(np.concatenate([sb.ant1, sb.ant2]), sb.antenna_numbers)):
        raise InputFileError(path, "baselines name antennas missing from antenna_numbers")
    return sb
