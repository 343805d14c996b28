"""The thermal noise of an image, estimated from the visibilities, not from the image.

The noise of each baseline comes from the polarization difference ``(XX - YY) / 2``: for an
unpolarized sky the signal cancels and what is left has the same noise as the Stokes-I
visibility ``(XX + YY) / 2`` (both are half the sum or difference of two independent noises).
A robust rms (MAD) over each baseline's integrations and channels keeps a polarized source
or a stray interferer from inflating it. The per-baseline noise is then carried through the
imaging weights the imager uses (:func:`kernels.weights.image_noise`), giving the rms a dirty
image made of noise alone would have: the floor a clean can reach. Residual rms over that
floor says how far the image is from the noise (sidelobes, calibration errors, RFI).

The estimate needs calibrated data: before calibration XX and YY carry different gains, so
``XX - YY`` holds ``(g_x - g_y)`` times the sky and overestimates the noise.

Runs in CASA workers (casatools). Large observations are read with a channel stride so at
most ``max_values`` visibilities are read; the weights' uv density is scale-free, so the
estimate does not depend on the stride.
"""

from __future__ import annotations

import numpy as np

from engine.errors import CasaTaskError
from kernels.weights import image_noise

MAD_TO_SIGMA = 1.4826


def baseline_sigma(diff, valid, a1, a2):
    """Robust rms of the real and imaginary parts of ``diff`` per baseline, per row.

    ``diff`` (Nrows, Nchan) complex; ``valid`` (Nrows, Nchan) bool; ``a1, a2`` (Nrows,).
    Returns (Nrows,) float, NaN for baselines without valid samples.
    """
    key = a1.astype(np.int64) * 65536 + a2.astype(np.int64)
    keys, inv = np.unique(key, return_inverse=True)
    out = np.full(keys.size, np.nan)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(keys.size + 1))
    for b in range(keys.size):
        rows = order[bounds[b]:bounds[b + 1]]
        d = diff[rows][valid[rows]]
        if d.size >= 4:
            x = np.concatenate([d.real, d.imag])
            out[b] = MAD_TO_SIGMA * np.median(np.abs(x - np.median(x)))
    return out[inv]


def thermal_estimate(ct, ms: str, column: str, *, cell_arcsec: float, imsize: int,
                     weighting: str, robust: float, max_values: float = 2e7) -> dict:
    """Thermal rms (Jy/beam) of a Stokes-I mfs image of ``column`` from the data's own noise.

    Each visibility's noise is ``s_b / sqrt(w)``: ``w`` its data weight (WEIGHT_SPECTRUM
    when the MS has it, else WEIGHT; the mean of XX and YY) and ``s_b`` its baseline's
    robust rms of ``(XX - YY) / 2`` scaled by ``sqrt(w)``, so visibilities of one baseline
    that carry different weights (an averaged channel that kept fewer samples, a row with
    fewer nsamples) get the noise their weight says.

    Returns ``{"thermal_jy", "vis_sigma_jy" (median over rows of the noise rms of one
    visibility's real part at the row's mean weight), "nvis" (valid visibilities used),
    "chan_stride"}``.
    """
    tb = ct.table()
    tb.open(ms)
    try:
        if column not in tb.colnames():
            raise CasaTaskError(f"{ms}: no {column} column for the thermal-noise estimate")
        npol, nchan = (int(x) for x in tb.getcell(column, 0).shape)
        nrow = tb.nrows()
        stride = max(1, int(np.ceil(nrow * nchan / max_values)))
        blc, trc, inc = [0, 0], [npol - 1, nchan - 1], [1, stride]
        data = tb.getcolslice(column, blc, trc, inc)  # (Npol, Nchan', Nrows)
        flag = tb.getcolslice("FLAG", blc, trc, inc)
        uvw = tb.getcol("UVW")
        a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
        if "WEIGHT_SPECTRUM" in tb.colnames():
            ws = tb.getcolslice("WEIGHT_SPECTRUM", blc, trc, inc)  # (Npol, Nchan', Nrows)
            weight = (0.5 * (ws[0] + ws[-1])).T.astype(np.float64)  # (Nrows, Nchan')
        else:
            weight = tb.getcol("WEIGHT").mean(axis=0).astype(np.float64)[:, None]
        flag_row = tb.getcol("FLAG_ROW")
    finally:
        tb.close()
    tb.open(f"{ms}/SPECTRAL_WINDOW")
    freqs = tb.getcol("CHAN_FREQ")[::stride, 0]
    tb.close()
    if npol < 2:
        raise CasaTaskError(f"{ms}: {npol} polarization(s); the thermal estimate needs XX and YY")
    diff = (0.5 * (data[0] - data[-1])).T  # (Nrows, Nchan')
    valid = ~(flag[0] | flag[-1]).T & ~flag_row[:, None] & (a1 != a2)[:, None]
    valid &= np.isfinite(diff.real) & np.isfinite(diff.imag)
    weight = np.broadcast_to(weight, diff.shape)
    valid &= weight > 0
    root_w = np.sqrt(np.where(valid, weight, 0.0))
    unit = baseline_sigma(diff * root_w, valid, a1, a2)  # rms at weight 1, per row
    valid &= np.isfinite(unit)[:, None]
    unit = np.nan_to_num(unit)
    sig = np.where(valid, unit[:, None] / np.where(valid, root_w, 1.0), 0.0)
    thermal = image_noise(uvw[:2].T, freqs, valid, weight, sig,
                          cell_rad=np.deg2rad(cell_arcsec / 3600), imsize=imsize,
                          weighting=weighting, robust=robust)
    # a channel stride of k keeps 1/k of the visibilities: the full band's noise is lower
    thermal /= np.sqrt(nchan / len(freqs))
    nok = valid.sum(axis=1)
    rows = nok > 0
    w_row = np.where(valid, weight, 0.0).sum(axis=1)[rows] / nok[rows]  # mean valid weight
    good = unit[rows] / np.sqrt(w_row)
    return {"thermal_jy": float(thermal), "vis_sigma_jy": float(np.median(good)) if good.size
            else float("nan"), "nvis": int(valid.sum()) * (nchan // len(freqs)),
            "chan_stride": stride}
