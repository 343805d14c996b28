"""Kernel case: visibilities rephased per second per core, on the same data, by the engine's
numba kernel, a plain numpy expression, and pyuvdata's own w-term phasing
(``UVData._apply_w_proj``, the step its ``phase`` applies to the visibilities)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np


def _best(fn, repeats=3) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def bench_kernels(cfg, work) -> dict:
    """One full observation's worth of rows of one subband (4656 baselines x 24 integrations
    x 48 channels x 2 polarizations; 4 integrations at small scale), single thread."""
    from pyuvdata import UVData

    from kernels.visibility import C_M_S, rephase

    rng = np.random.default_rng(0)
    nrow = 4656 * (4 if cfg.sim.ntimes < 24 else 24)
    vis0 = (rng.standard_normal((nrow, 48, 2)) + 1j * rng.standard_normal((nrow, 48, 2))
            ).astype(np.complex64)
    dw = rng.uniform(-2000, 2000, nrow)  # metres
    f = np.linspace(1.31e9, 1.5e9, 48)
    rephase(vis0[:10].copy(), dw[:10], f)  # compile (or load the cache)
    work_arr = vis0.copy()

    def numba_run():
        work_arr[...] = vis0
        rephase(work_arr, dw, f)

    def numpy_run():
        work_arr[...] = vis0
        work_arr[...] *= np.exp(-2j * np.pi * dw[:, None, None] * f[None, :, None] / C_M_S)

    uv = SimpleNamespace(metadata_only=False, data_array=work_arr, freq_array=f,
                         Nblts=nrow, Nfreqs=f.size)

    def pyuvdata_run():
        work_arr[...] = vis0
        UVData._apply_w_proj(uv, new_w_vals=dw, old_w_vals=0.0)

    copy_s = _best(lambda: work_arr.__setitem__(Ellipsis, vis0))
    t = {name: _best(fn) - copy_s for name, fn in
         (("numba", numba_run), ("numpy", numpy_run), ("pyuvdata", pyuvdata_run))}
    # the three agree (same sign convention: V' = V exp(-2 pi i dw nu / c))
    results = {}
    for name, fn in (("numba", numba_run), ("numpy", numpy_run), ("pyuvdata", pyuvdata_run)):
        fn()
        results[name] = work_arr[:2000].copy()
    n = vis0.size
    return {"visibilities": n, "threads": 1,
            **{f"{k}_vis_per_s": n / v for k, v in t.items()},
            "speedup_vs_numpy": t["numpy"] / t["numba"],
            "speedup_vs_pyuvdata": t["pyuvdata"] / t["numba"],
            "max_diff_vs_pyuvdata": float(np.abs(results["numba"] - results["pyuvdata"]).max()),
            "max_diff_vs_numpy": float(np.abs(results["numba"] - results["numpy"]).max())}
