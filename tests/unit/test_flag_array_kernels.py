"""kernels.flag_deterministic and kernels.flag_antennas against numpy references written
here from their rules, and the antenna search's claims on known subbands: sqrt(N - 1) more
sensitive to an emitter every antenna receives, a line one baseline alone sees is found, a
clean subband is left alone."""

import numpy as np
import pytest

from kernels.flag_antennas import LEVEL_SAMPLES, antenna_search, extend_vote
from kernels.flag_deterministic import (antenna_row_medians, deterministic_flags,
                                        flag_station_pols, flagged_per_row)
from kernels.flagging import flag_plane, flag_rows

PARAMS = dict(chi1=6.0, rho=1.5, iterations=3, max_m_freq=32, max_m_time=16, eta=0.2,
              ht=2, hf=3, sigma_floor=0.01)


def _subband(seed=0, nant=12, nt=10, nchan=16, noise=1.0, level=0.0):
    """Raw rows in MS order (time-major, autocorrelations included), complex Gaussian noise
    of ``noise`` per component plus a constant ``level``."""
    rng = np.random.default_rng(seed)
    a1, a2 = np.triu_indices(nant)
    nbl = a1.size
    ant1, ant2 = np.tile(a1, nt).astype(np.int64), np.tile(a2, nt).astype(np.int64)
    vis = (level + noise * (rng.normal(size=(nt * nbl, nchan, 2))
                            + 1j * rng.normal(size=(nt * nbl, nchan, 2)))).astype(np.complex64)
    return vis, np.zeros(vis.shape, bool), np.arange(nt * nbl), ant1, ant2, nt, nbl


def _shuffled(vis, flags, order, ant1, ant2, seed):
    """The same subband with its raw rows in a random order (as a file may hold them):
    ``order`` then maps each MS-order cell to where its row went."""
    perm = np.random.default_rng(seed).permutation(vis.shape[0])  # new row i = old perm[i]
    where = np.empty_like(perm)
    where[perm] = np.arange(perm.size)
    return vis[perm], flags[perm], where[order], ant1[perm], ant2[perm]


def test_deterministic_flags_match_numpy():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(1)
    rng = np.random.default_rng(2)
    cells = rng.random(vis.shape)
    vis[cells < 0.01] = np.nan
    vis[(cells > 0.01) & (cells < 0.03)] = 0
    vis[(cells > 0.03) & (cells < 0.04)] *= 100
    flags[cells > 0.99] = True
    cross = ant1 != ant2
    ref = flags.copy()
    x = cross[:, None, None]
    n_input = int((ref & x).sum())
    nonfinite = ~np.isfinite(vis) & ~ref & x
    ref |= nonfinite | ~x
    zeros = (vis == 0) & ~ref
    ref |= zeros
    clip = (np.abs(vis) > 20.0) & ~ref
    ref |= clip
    ok = ~ref
    amp = np.where(ok, np.abs(vis), 0.0)
    counts, amp_sum, n_ok = deterministic_flags(vis, flags, cross, True, 20.0)
    assert (flags == ref).all()
    assert counts.tolist() == [n_input, int(nonfinite.sum()), int(zeros.sum()),
                               int(clip.sum())]
    np.testing.assert_allclose(amp_sum, amp.sum(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(n_ok, ok.sum(axis=1))
    np.testing.assert_array_equal(flagged_per_row(flags, cross),
                                  np.where(cross[:, None], flags.sum(axis=1), 0))


def test_antenna_row_medians_and_dead_pols_match_numpy():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(3)
    cross = ant1 != ant2
    rng = np.random.default_rng(4)
    row_mean = rng.random((ant1.size, 2))
    has = rng.random((ant1.size, 2)) > 0.2
    has[(ant1 == 5) | (ant2 == 5), 1] = False  # nothing left for station 5's second pol
    got = antenna_row_medians(row_mean, has, ant1, ant2, cross, 12)
    for a in range(12):
        for p in range(2):
            sel = cross & ((ant1 == a) | (ant2 == a)) & has[:, p]
            want = np.median(row_mean[sel, p]) if sel.any() else np.nan
            np.testing.assert_equal(got[a, p], want)
    dead = np.zeros((12, 2), bool)
    dead[3, :] = dead[7, 1] = True
    n = flag_station_pols(flags, ant1, ant2, cross, dead)
    want = np.zeros(flags.shape, bool)
    hit3 = cross & ((ant1 == 3) | (ant2 == 3))
    hit7 = cross & ((ant1 == 7) | (ant2 == 7))
    want[hit3] = True
    want[hit7, :, 1] = True
    assert (flags == want).all() and n == want.sum()


def _antenna_reference(vis, flags, order, nt, nbl, ant1, ant2, nst, clip_sigma, vote):
    """antenna_search written out with numpy on a subband small enough that every cell sets
    the level (n_ok <= LEVEL_SAMPLES), each antenna plane through kernels.flagging."""
    flags = flags.copy()
    nchan = vis.shape[1]
    ant_sum = np.zeros((nst, nt, nchan))
    ant_cnt = np.zeros((nst, nt, nchan), int)
    for b in range(nbl):
        rows = order[b::nbl][:nt]
        a, e = ant1[rows[0]], ant2[rows[0]]
        if a == e:
            continue
        f = flags[rows]
        ok = ~f
        k = ok.sum(axis=2)
        amp = np.where(k > 0, np.where(ok, np.abs(vis[rows]), 0).sum(axis=2)
                       / np.maximum(k, 1), 0.0)
        has = k > 0
        assert has.sum() <= LEVEL_SAMPLES
        med = np.median(amp[has])
        sigma = max(1.4826 * np.median(np.abs(amp[has] - med)), 0.01 * med)
        n_t = has.sum(axis=0)
        cm = np.where(n_t > 0, np.where(has, amp, 0).sum(axis=0) / np.maximum(n_t, 1), np.nan)
        v = cm[n_t > 0]
        if v.size >= 8:
            cmed = np.median(v)
            cs = max(1.4826 * np.median(np.abs(v - cmed)), 0.01 * abs(cmed))
            bad_c = np.nan_to_num(cm, nan=-np.inf) > cmed + clip_sigma * cs
            flags[np.ix_(rows, np.flatnonzero(bad_c))] = True
            has &= ~bad_c[None, :]
        hot = has & (amp > med + clip_sigma * sigma)
        flags[rows] |= hot[:, :, None]
        use = has & ~hot
        for s in (a, e):
            ant_sum[s] += np.where(use, amp / med, 0)
            ant_cnt[s] += use
    added = np.zeros((nst, nt, nchan), bool)
    for s in range(nst):
        if ant_cnt[s].any():
            plane = np.where(ant_cnt[s] > 0, ant_sum[s] / np.maximum(ant_cnt[s], 1), 0.0)
            added[s] = flag_plane(plane, ant_cnt[s] == 0, *PARAMS.values())
    n_found = added.sum(axis=0)
    voted = (n_found >= 2) & (n_found >= vote * (ant_cnt > 0).sum(axis=0))
    for b in range(nbl):
        rows = order[b::nbl][:nt]
        a, e = ant1[rows[0]], ant2[rows[0]]
        if a != e:
            flags[rows] |= (added[a] | added[e] | voted)[:, :, None]
    return flags, added


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_antenna_search_matches_the_reference(seed):
    vis, flags, order, ant1, ant2, nt, nbl = _subband(seed, level=3.0)
    rng = np.random.default_rng(seed)
    cross = ant1 != ant2
    flags[~cross] = True
    flags[rng.random(flags.shape) < 0.02] = True
    vr = vis.reshape(nt, nbl, 16, 2)
    vr[int(rng.integers(nt)), :, :, :] += 4.0  # a burst every baseline sees
    vr[:, :, int(rng.integers(16)), :] += 2.0  # an emitter's line
    a, e = 2, 9
    vr[:, np.flatnonzero((ant1[:nbl] == a) & (ant2[:nbl] == e)), 4, :] += 6.0  # cross-talk
    vr[rng.random((nt, nbl, 16, 2)) < 0.002] += 40.0  # strong single cells
    # the file's rows in another order: every kernel must go through ``order``
    vis, flags, order, ant1, ant2 = _shuffled(vis, flags, order, ant1, ant2, seed)
    want, want_added = _antenna_reference(vis, flags, order, nt, nbl, ant1, ant2, 12, 7.0,
                                          0.2)
    got = flags.copy()
    n_clip, n_search, n_vote, added = antenna_search(
        vis, got, order, nt, nbl, ant1, ant2, 12, 7.0, *PARAMS.values(), 0.2)
    assert (added == want_added).all()
    assert (got == want).all()
    assert n_clip + n_search + n_vote == (got & ~flags).sum()


def test_the_antenna_search_finds_what_no_baseline_can():
    """An emitter's line at 0.6 x the noise of one visibility on every baseline of 24
    antennas: the baseline search finds little of it, the antenna search all of it, and
    neither flags much else."""
    vis, flags, order, ant1, ant2, nt, nbl = _subband(8, nant=24, nt=24, nchan=48)
    cross = ant1 != ant2
    flags[~cross] = True
    vis.reshape(nt, nbl, 48, 2)[:, :, 20, :] += 0.6 * np.sqrt(2)
    line = np.zeros(flags.shape, bool)
    line[:, 20, :] = True
    line &= cross[:, None, None]
    by_ant = flags.copy()
    antenna_search(vis, by_ant, order, nt, nbl, ant1, ant2, 24, 7.0, *PARAMS.values(), 0.2)
    by_bl = flags.copy()
    flag_rows(vis, by_bl, order, nt, nbl, *PARAMS.values())
    assert by_ant[line].mean() == 1.0
    assert by_bl[line].mean() < 0.5
    rest = cross[:, None, None] & ~line
    assert by_ant[rest].mean() < 0.002 and by_bl[rest].mean() < 0.002


def test_a_line_one_baseline_sees_is_found_and_not_spread():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(9, nant=24, nt=24, nchan=48)
    cross = ant1 != ant2
    flags[~cross] = True
    hit = np.flatnonzero((ant1 == 3) & (ant2 == 17))
    vis[hit, 30, :] += 3.0 * np.sqrt(2)  # 3 x the noise: below a single-cell clip
    got = flags.copy()
    antenna_search(vis, got, order, nt, nbl, ant1, ant2, 24, 7.0, *PARAMS.values(), 0.2)
    assert got[hit, 30, :].all()
    others = cross & ~np.isin(np.arange(ant1.size), hit)
    assert got[others, 30, :].mean() < 0.01


def test_a_clean_subband_is_left_alone():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(10, nant=24, nt=24, nchan=48, level=2.0)
    cross = ant1 != ant2
    flags[~cross] = True
    got = flags.copy()
    antenna_search(vis, got, order, nt, nbl, ant1, ant2, 24, 7.0, *PARAMS.values(), 0.2)
    assert got[cross].mean() < 0.001


def test_extend_vote_matches_numpy():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(11, nant=10)
    cross = ant1 != ant2
    rng = np.random.default_rng(12)
    before = rng.random(flags.shape) < 0.05
    before[~cross] = True
    after = before | (rng.random(flags.shape) < 0.15)
    had = ~before.all(axis=2) & cross[:, None]
    new = (after & ~before).any(axis=2) & had
    n_had = had.reshape(nt, nbl, -1).sum(axis=1)
    n_new = new.reshape(nt, nbl, -1).sum(axis=1)
    hot = (n_new >= 0.2 * np.maximum(n_had, 1)) & (n_new >= 2)
    want = after.copy()
    want.reshape(nt, nbl, 16, 2)[:, :, :, :] |= (
        hot[:, None, :, None] & cross.reshape(nt, nbl)[:, :, None, None])
    got = after.copy()
    n = extend_vote(got, before, order, nt, nbl, cross, 0.2)
    assert hot.any() and (got == want).all() and n == (want & ~after).sum()
