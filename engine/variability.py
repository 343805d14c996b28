"""Variability of a light curve: the weighted reduced chi-square eta and the modulation
index V (Swinbank et al. 2015, LOFAR TraP; Mooley et al. 2016 for their use in surveys).

For N flux densities f_i (Jy) with errors s_i (Jy) and weights w_i = 1 / s_i^2:

    eta = N / (N - 1) x ( <w f^2> - <w f>^2 / <w> )      (<.>: the mean over i)
    V   = sqrt( N / (N - 1) x ( <f^2> - <f>^2 ) ) / <f>  (the sample std over the mean)

eta is the chi-square of a constant (the weighted mean) per degree of freedom: about 1 for
a steady source whose errors are right. V is the fractional rms, whatever the errors.
"""

from __future__ import annotations

import numpy as np


def eta_v(flux, err) -> tuple[float, float]:
    """(eta, V) of one light curve; NaN for fewer than two measurements."""
    f = np.asarray(flux, dtype=float)
    s = np.asarray(err, dtype=float)
    n = f.size
    if n < 2:
        return float("nan"), float("nan")
    w = 1.0 / s ** 2
    eta = n / (n - 1) * (np.mean(w * f ** 2) - np.mean(w * f) ** 2 / np.mean(w))
    mean = np.mean(f)
    var = n / (n - 1) * (np.mean(f ** 2) - mean ** 2)
    v = np.sqrt(max(var, 0.0)) / mean if mean != 0 else float("nan")
    return float(eta), float(v)


def is_variable(eta: float, v: float, n: int, cfg) -> bool:
    """A candidate: at least ``photometry.min_measurements`` measurements, eta above
    ``photometry.eta_threshold`` and V above ``photometry.v_threshold``."""
    p = cfg.photometry
    return bool(n >= p.min_measurements and np.isfinite(eta) and np.isfinite(v)
                and eta > p.eta_threshold and v > p.v_threshold)


def light_curve_stats(curve: list[dict], cfg) -> dict:
    """One source's statistics from its measurements (dicts with flux_jy, err_jy, ra_deg,
    dec_deg, in time order): n, eta, v (None when undefined), variable, mean_flux_jy and
    the position of the first measurement."""
    f = [m["flux_jy"] for m in curve]
    eta, v = eta_v(f, [m["err_jy"] for m in curve])
    return {"ra_deg": curve[0]["ra_deg"], "dec_deg": curve[0]["dec_deg"], "n": len(curve),
            "eta": None if np.isnan(eta) else eta, "v": None if np.isnan(v) else v,
            "variable": is_variable(eta, v, len(curve), cfg),
            "mean_flux_jy": float(np.mean(f))}
