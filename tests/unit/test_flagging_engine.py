"""engine.flagging on small raw subbands built here (not by the simulator)."""

import numpy as np

from engine import config
from engine.convert import ms_row_order
from engine.flagging import flag_subband


def _subband(seed=0, nant=6, nt=8, nchan=16):
    rng = np.random.default_rng(seed)
    a1, a2 = np.triu_indices(nant)  # autocorrelations included, as in the files
    nbl = a1.size
    ant1, ant2 = np.tile(a1, nt), np.tile(a2, nt)
    time_jd = np.repeat(2460951.0 + np.arange(nt) * 12.9 / 86400, nbl)
    vis = (2.0 + rng.normal(size=(nt * nbl, nchan, 2)) + 1j * rng.normal(
        size=(nt * nbl, nchan, 2))).astype(np.complex64)
    flags = np.zeros(vis.shape, bool)
    flags[ant1 == ant2] = True
    order = ms_row_order(time_jd, ant1, ant2)[0]
    return vis, flags, order, ant1, ant2, nt, nbl


def test_a_nan_does_not_kill_its_antennas():
    vis, flags, order, ant1, ant2, nt, nbl = _subband()
    row = np.flatnonzero((ant1 == 1) & (ant2 == 2))[3]
    vis[row, 5, 0] = np.nan
    stats = flag_subband(vis, flags, order, ant1, ant2, nt, nbl, config.load(None).flag)
    assert stats["dead_antennas"] == [] and stats["dead_pols"] == []
    assert flags[row, 5, 0] and stats["nonfinite"] == 1
    assert stats["flagged"] / stats["total"] < 0.01


def test_a_dead_antenna_and_a_dead_polarisation():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(1)
    vis[(ant1 == 4) | (ant2 == 4)] *= 1e-3
    vis[(ant1 == 2) | (ant2 == 2), :, 1] *= 1e-3
    stats = flag_subband(vis, flags, order, ant1, ant2, nt, nbl, config.load(None).flag)
    assert stats["dead_antennas"] == [4] and stats["dead_pols"] == [[2, 1]]
    cross = ant1 != ant2
    assert flags[cross & ((ant1 == 4) | (ant2 == 4))].all()
    assert flags[cross & ((ant1 == 2) | (ant2 == 2)), :, 1].all()
    # the other antennas' data stay (nearly) unflagged
    others = cross & ~np.isin(ant1, [2, 4]) & ~np.isin(ant2, [2, 4])
    assert flags[others].mean() < 0.01


def test_disabled_flags_nothing_more():
    vis, flags, order, ant1, ant2, nt, nbl = _subband(2)
    vis[(ant1 == 4) | (ant2 == 4)] *= 1e-3
    stats = flag_subband(vis, flags, order, ant1, ant2, nt, nbl,
                         config.load(None, {"flag.enabled": False}).flag)
    assert stats["flagged"] == stats["input"] == 0
    assert not flags[ant1 != ant2].any()


def test_the_array_vote_extends_a_cell_found_on_many_baselines():
    """A cell the search flagged on 30 % of the baselines is flagged on all; a cell flagged
    on one baseline (a false alarm) stays on that one, also where few baselines have data."""
    from engine.flagging import extend_across_baselines

    vis, flags, order, ant1, ant2, nt, nbl = _subband(nant=10)
    cross = ant1 != ant2
    before = flags.copy()
    rows_t3 = order[3 * nbl:4 * nbl]  # every baseline of integration 3
    cross_t3 = rows_t3[cross[rows_t3]]
    flags[cross_t3[: int(0.3 * cross_t3.size)], 7, :] = True
    rows_t5 = order[5 * nbl:6 * nbl]
    lone = rows_t5[cross[rows_t5]][4]
    flags[lone, 9, 1] = True
    extend_across_baselines(flags, before, order, nt, nbl, cross, 0.2)
    assert flags[cross_t3, 7, :].all()
    rows5 = rows_t5[cross[rows_t5]]
    assert flags[lone, 9, 1] and flags[rows5, 9, :].sum() == 1
    assert (flags[cross] & ~before[cross]).sum() == cross_t3.size * 2 + 1


def test_a_lone_flag_is_not_carried_where_few_baselines_have_data():
    from engine.flagging import extend_across_baselines

    vis, flags, order, ant1, ant2, nt, nbl = _subband(nant=10)
    cross = ant1 != ant2
    rows_t2 = order[2 * nbl:3 * nbl]
    rows_t2 = rows_t2[cross[rows_t2]]
    flags[rows_t2[3:], 5, :] = True  # only 3 baselines have data in this cell
    before = flags.copy()
    flags[rows_t2[0], 5, 0] = True  # one of them flags it: 1 / 3 >= 20 %, but alone
    extend_across_baselines(flags, before, order, nt, nbl, cross, 0.2)
    assert flags[rows_t2[:3], 5, :].sum() == 1
