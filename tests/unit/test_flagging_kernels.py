"""The flagging kernels against direct numpy/python references and on known planes."""

import math

import numpy as np
import pytest

from kernels.flagging import (flag_plane, robust_background, robust_sigma, sir_line,
                              sum_threshold_line)
from kernels.medians import sorting_network


def _sumthreshold_reference(x, mask, chi1, rho, max_m):
    """Offringa et al. (2010) SumThreshold, written out window by window."""
    mask = mask.copy()
    out = np.zeros(x.size, bool)
    m = 1
    while m <= max_m and m <= x.size:
        thr = chi1 / rho ** math.log2(m)
        new = np.zeros(x.size, bool)
        for start in range(x.size - m + 1):
            w = slice(start, start + m)
            good = ~mask[w]
            if good.any() and x[w][good].sum() > thr * good.sum():
                new[w] = True
        mask |= new
        out |= new
        m *= 2
    return out


def _sir_reference(mask, eta):
    n = mask.size
    out = mask.copy()
    for i in range(n):
        for y1 in range(0, i + 1):
            for y2 in range(i + 1, n + 1):
                if mask[y1:y2].mean() >= 1 - eta - 1e-12:
                    out[i] = True
    return out


@pytest.mark.parametrize("seed", range(5))
def test_sum_threshold_line_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    x[50:53] += 4.0  # a short strong burst
    x[120:150] += 1.5  # a long weak one: only the larger windows see it
    mask = rng.random(200) < 0.05
    out = np.zeros(200, bool)
    sum_threshold_line(x, mask.copy(), out, 6.0, 1.5, 64)
    ref = _sumthreshold_reference(x, mask, 6.0, 1.5, 64)
    np.testing.assert_array_equal(out, ref)
    assert out[50:53].all() and out[120:150].mean() >= 0.75


@pytest.mark.parametrize("seed", range(5))
def test_sir_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(40) < 0.3
    for eta in (0.1, 0.2, 0.4):
        got = mask.copy()
        sir_line(got, eta)
        np.testing.assert_array_equal(got, _sir_reference(mask, eta))


def test_robust_background_matches_the_reference():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(13, 21)) + np.linspace(0, 3, 21)[None, :]
    mask = rng.random(a.shape) < 0.2
    out = np.empty_like(a)
    robust_background(a, mask, 2, 3, out)
    spec = np.array([np.median(a[~mask[:, f], f]) for f in range(21)])
    s = np.array([np.median(spec[max(f - 3, 0):f + 4]) for f in range(21)])
    prof = np.array([np.median((a[t] - s)[~mask[t]]) for t in range(13)])
    tt = np.array([np.median(prof[max(t - 2, 0):t + 3]) for t in range(13)])
    np.testing.assert_allclose(out, s[None, :] + tt[:, None], atol=1e-12)


def test_background_is_not_lifted_by_a_block():
    """A block of interference over a quarter of the integrations and 10 channels leaves
    the background where the clean samples put it."""
    a = np.ones((24, 48))
    a[4:10, 10:20] = 50.0
    out = np.empty_like(a)
    robust_background(a, np.zeros(a.shape, bool), 2, 3, out)
    np.testing.assert_allclose(out, 1.0)


def test_robust_sigma_of_gaussian_noise():
    rng = np.random.default_rng(2)
    r = rng.normal(scale=3.0, size=(100, 100))
    mask = np.zeros(r.shape, bool)
    r[:10] = 1e6
    mask[:10] = True  # flagged samples do not count
    assert robust_sigma(r, mask) == pytest.approx(3.0, rel=0.03)


def _amplitude(rng, truth=None, rfi=0.0, nt=24, nf=48, sky=1.0, noise=1.0):
    """What the engine searches (kernels.flagging.flag_rows): the mean over XX and YY of
    |V|, V = a smooth sky (Jy) + complex Gaussian noise of ``noise`` Jy per component
    (the simulator's per-visibility noise) + interference of amplitude ``rfi`` with a
    random phase in the ``truth`` cells, in both polarisations."""
    t, f = np.meshgrid(np.arange(nt), np.arange(nf), indexing="ij")
    out = np.zeros((nt, nf))
    for _ in range(2):
        v = sky * (1 + 0.2 * np.sin(f / 9.0 + t / 7.0)) + noise * (
            rng.normal(size=(nt, nf)) + 1j * rng.normal(size=(nt, nf)))
        if truth is not None:
            v = v + rfi * np.exp(2j * np.pi * rng.random((nt, nf))) * truth
        out += 0.5 * np.abs(v)
    return out


ARGS = dict(chi1=6.0, rho=1.5, iterations=3, max_m_freq=32, max_m_time=16, eta=0.2,
            ht=2, hf=3)


def test_clean_planes_are_barely_flagged():
    rng = np.random.default_rng(3)
    flagged = total = 0
    for _ in range(200):
        a = _amplitude(rng)
        added = flag_plane(a, np.zeros(a.shape, bool), *ARGS.values())
        flagged += added.sum()
        total += added.size
    assert flagged / total < 0.005, flagged / total


@pytest.mark.parametrize("kind", ["narrowband", "burst", "intermittent", "block"])
def test_interference_at_five_sigma_is_found(kind):
    """Interference of 5 x the per-visibility noise, each kind: >= 95 % of it flagged."""
    rng = np.random.default_rng(4)
    found = total = 0
    for _ in range(50):
        truth = np.zeros((24, 48), bool)
        if kind == "narrowband":
            truth[:, 17] = True
        elif kind == "burst":
            truth[9, :] = True
        elif kind == "intermittent":  # on for 2 integrations in every 6 (as simulated)
            truth[np.arange(24) % 6 < 2, 30] = True
        else:
            truth[4:8, 10:20] = True
        a = _amplitude(rng, truth, 5.0)
        added = flag_plane(a, np.zeros(a.shape, bool), *ARGS.values())
        found += (added & truth).sum()
        total += truth.sum()
    assert found / total >= 0.95, found / total


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 12, 23, 24, 31, 32, 33, 48, 64, 70])
def test_sorting_network_sorts(n):
    """The pruned Batcher network sorts any n values, ties and infinities included."""
    rng = np.random.default_rng(n)
    pairs = sorting_network(n)
    assert (pairs[:, 0] < pairs[:, 1]).all() and (pairs < n).all()
    for trial in range(50):
        x = rng.normal(size=n)
        if trial % 3 == 0:
            x = np.round(x)  # ties
        if trial % 5 == 0 and n > 2:
            x[::3] = np.inf
        y = x.copy()
        for i, j in pairs:
            y[i], y[j] = min(y[i], y[j]), max(y[i], y[j])
        np.testing.assert_array_equal(y, np.sort(x))


def test_robust_sigma_ignores_a_burst_and_a_line():
    """A broadband burst in a few integrations and a narrowband line move the noise estimate
    by no more than the classic median absolute deviation of every sample would."""
    rng = np.random.default_rng(5)
    r = rng.normal(size=(24, 48))
    r[3:5] += 100.0
    r[:, 17] += 100.0
    mask = np.zeros(r.shape, bool)
    mad = 1.4826 * np.median(np.abs(r))
    assert abs(robust_sigma(r, mask) - 1.0) <= max(abs(mad - 1.0), 0.1)


@pytest.mark.parametrize("shape", [(24, 48), (12, 4), (30, 90), (70, 100)])
def test_robust_sigma_is_the_median_of_per_integration_mads(shape):
    """Against numpy, with random masks (lanes with and without flags; lines longer than
    64, where the selection replaces the rank count; an integration flagged throughout)."""
    rng = np.random.default_rng(shape[1])
    r = rng.normal(scale=2.0, size=shape)
    mask = rng.random(shape) < 0.2
    mask[1] = True
    ref = 1.4826 * np.median([np.median(np.abs(r[t][~mask[t]])) for t in range(shape[0])
                              if (~mask[t]).any()])
    assert robust_sigma(r, mask) == pytest.approx(ref, rel=1e-12)


def _plane_reference(amp, mask, chi1, rho, iters, mf, mt, eta, ht, hf):
    """The documented algorithm written plainly: background and sigma refitted at every
    iteration, thresholds chi1 x 2^(iters - 1 - k), SumThreshold window by window along
    frequency then time, then the rank operator. No shortcut."""
    work = mask.copy()
    added = np.zeros(mask.shape, bool)
    for k in range(iters):
        t_, f_ = amp.shape
        spec = np.array([np.median(amp[~work[:, f], f]) if (~work[:, f]).any() else np.nan
                         for f in range(f_)])
        s = np.array([np.nanmedian(spec[max(f - hf, 0):f + hf + 1])
                      if np.isfinite(spec[max(f - hf, 0):f + hf + 1]).any() else 0.0
                      for f in range(f_)])
        prof = np.array([np.median((amp[t] - s)[~work[t]]) if (~work[t]).any() else np.nan
                         for t in range(t_)])
        tt = np.array([np.nanmedian(prof[max(t - ht, 0):t + ht + 1])
                       if np.isfinite(prof[max(t - ht, 0):t + ht + 1]).any() else 0.0
                       for t in range(t_)])
        r = amp - (s[None, :] + tt[:, None])
        v = [np.median(np.abs(r[t][~work[t]])) for t in range(t_) if (~work[t]).any()]
        sigma = 1.4826 * np.median(v) if v else 0.0
        if sigma <= 0:
            break
        r = r / sigma
        chi = chi1 * 2.0 ** (iters - 1 - k)
        for t in range(t_):
            m = work[t].copy()
            added[t] |= _sumthreshold_reference(r[t], m, chi, rho, mf)
            work[t] |= added[t]
        for f in range(f_):
            m = work[:, f].copy()
            added[:, f] |= _sumthreshold_reference(r[:, f], m, chi, rho, mt)
            work[:, f] |= added[:, f]
    if eta > 0:
        full = mask | added
        for t in range(full.shape[0]):
            full[t] = _sir_reference(full[t], eta)
        for f in range(full.shape[1]):
            full[:, f] = _sir_reference(full[:, f], eta)
        added = full & ~mask
    return added


def test_flag_plane_matches_the_plain_algorithm():
    """The fast plane (clean-plane shortcut, refits only after new flags, sorting-network
    medians, prefix-sum windows) against the plain reference on random planes with lines,
    bursts, spikes and masks: identical flags."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        nt, nf = int(rng.integers(3, 16)), int(rng.integers(3, 30))
        a = 1 + 0.3 * rng.normal(size=(nt, nf))
        if rng.random() < 0.6:
            a[rng.integers(nt), :] += rng.uniform(0, 4)
        if rng.random() < 0.6:
            a[:, rng.integers(nf)] += rng.uniform(0, 4)
        if rng.random() < 0.3:
            a[rng.integers(nt), rng.integers(nf)] += rng.uniform(0, 10)
        mask = rng.random((nt, nf)) < rng.choice([0, 0.05, 0.3])
        if rng.random() < 0.2:
            mask[rng.integers(nt)] = True
        args = (3.0, 1.5, int(rng.integers(1, 4)), 16, 8, float(rng.choice([0, 0.2])), 2, 3)
        np.testing.assert_array_equal(flag_plane(a, mask.copy(), *args),
                                      _plane_reference(a, mask, *args))
