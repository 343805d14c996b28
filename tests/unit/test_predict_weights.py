"""The model-prediction and imaging-weight kernels against numpy references and analytic cases."""

import numpy as np
import pytest

from kernels.predict import lmn_offsets, predict_model
from kernels.weights import image_noise

C = 299792458.0
rng = np.random.default_rng(3)


def _lmn_reference(ra, dec, ra0, dec0):
    """Direction cosines by rotating unit vectors (an independent route to l, m, n)."""
    s = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)
    out = []
    for a0, d0 in zip(ra0, dec0):
        east = np.array([-np.sin(a0), np.cos(a0), 0.0])
        north = np.array([-np.sin(d0) * np.cos(a0), -np.sin(d0) * np.sin(a0), np.cos(d0)])
        centre = np.cross(east, north)
        out.append(np.stack([s @ east, s @ north, s @ centre - 1.0], -1))
    return np.array(out)


def test_lmn_offsets_match_unit_vector_rotation():
    ra, dec = rng.uniform(0, 2 * np.pi, 9), rng.uniform(-1.2, 1.4, 9)
    ra0, dec0 = ra[:3] + 0.01, dec[:3] - 0.02
    np.testing.assert_allclose(lmn_offsets(ra, dec, ra0, dec0),
                               _lmn_reference(ra, dec, ra0, dec0), atol=1e-12)
    # at the phase centre: exactly zero, n - 1 without cancellation error
    assert np.all(lmn_offsets([1.0], [0.5], [1.0], [0.5]) == 0)
    tiny = lmn_offsets([1.0 + 1e-7], [0.5], [1.0], [0.5])[0, 0]
    assert tiny[2] < 0 and abs(tiny[2] + 0.5 * (tiny[0] ** 2 + tiny[1] ** 2)) < 1e-24


@pytest.mark.parametrize("ftype", [np.float32, np.float64])
@pytest.mark.parametrize("uniform", [True, False])
def test_predict_model_matches_numpy(ftype, uniform):
    nrow, nchan, nsrc, ntime, nfield = 60, 17, 3, 4, 2
    uvw = (rng.standard_normal((nrow, 3)) * 1500).astype(ftype)
    freqs = 1.31e9 + np.arange(nchan) * 1.2e6
    if not uniform:
        freqs = np.sort(freqs + rng.uniform(-3e5, 3e5, nchan))
    ti, fi = rng.integers(0, ntime, nrow), rng.integers(0, nfield, nrow)
    lmn = lmn_offsets(rng.uniform(0.99, 1.01, nsrc), rng.uniform(0.49, 0.51, nsrc),
                      np.array([1.0, 1.002]), np.array([0.5, 0.5]))
    flux = rng.uniform(0.1, 5, (ntime, nsrc, nchan)).astype(ftype)
    got = predict_model(uvw, freqs, ti, fi, lmn, flux, dtype=np.complex128)
    u = uvw.astype(float)
    phase = 2j * np.pi * np.einsum("rk,rsk->rs", u, lmn[fi])[:, :, None] * freqs / C
    ref = (flux.astype(float)[ti] * np.exp(phase)).sum(axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_predict_model_at_the_phase_centre_is_the_apparent_flux():
    """A source at the phase centre gives a real visibility equal to its flux on every row."""
    uvw = rng.standard_normal((20, 3)) * 1000
    flux = np.array([[[2.0, 1.5]], [[1.0, 0.5]]])  # (Ntime=2, Nsrc=1, Nchan=2)
    ti = np.arange(20) % 2
    got = predict_model(uvw, [1.4e9, 1.41e9], ti, np.zeros(20, int), np.zeros((1, 1, 3)), flux,
                        dtype=np.complex128)
    np.testing.assert_allclose(got, flux[ti, 0, :], atol=1e-12)


@pytest.mark.parametrize("per_channel", [False, True])
def test_predict_model_smearing_is_the_mean_over_the_channel(per_channel):
    """With channel widths, each channel's model is the mean of the unsmeared visibility
    over 2001 frequencies across the channel (numpy, flat spectrum): sources up to 3 deg
    out on baselines up to 2.6 km, 977 kHz channels (or widths from 0.2 to 3 MHz)."""
    nrow, nchan, nsrc = 200, 5, 3
    uvw = rng.uniform(-2600, 2600, (nrow, 3)) * np.array([1, 1, 0.05])
    freqs = 1.35e9 + np.arange(nchan) * 3.1e6
    width = rng.uniform(2e5, 3e6, nchan) if per_channel else np.full(nchan, 976562.5)
    ti, fi = np.zeros(nrow, int), np.zeros(nrow, int)
    lmn = lmn_offsets(1.0 + np.deg2rad([0.0, 1.0, 3.0]) / np.cos(0.9), [0.9, 0.91, 0.88],
                      [1.0], [0.9])
    flux = np.broadcast_to(np.array([1.0, 2.0, 0.5])[None, :, None], (1, nsrc, nchan))
    got = predict_model(uvw, freqs, ti, fi, lmn, flux, chan_width_hz=-width,
                        dtype=np.complex128)
    d = uvw @ lmn[0].T  # (Nrow, Nsrc) delays in metres
    x = np.linspace(-0.5, 0.5, 2001)
    ref = np.empty((nrow, nchan), complex)
    for c in range(nchan):
        f = freqs[c] + width[c] * x  # (Nsub,)
        terms = flux[0, :, c][None, :, None] * np.exp(2j * np.pi * d[:, :, None] * f / C)
        ref[:, c] = np.trapezoid(terms.sum(axis=1), x, axis=-1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    # and it matters: the 3 deg source loses a large part of its amplitude on long baselines
    plain = predict_model(uvw, freqs, ti, fi, lmn[:, 2:], flux[:, 2:], dtype=np.complex128)
    smeared = predict_model(uvw, freqs, ti, fi, lmn[:, 2:], flux[:, 2:], chan_width_hz=width,
                            dtype=np.complex128)
    assert np.abs(smeared).min() < 0.9 * np.abs(plain).min()


def test_predict_model_smearing_of_rephased_averaged_channels():
    """What conversion does to the correlator's channels, by brute force: each recorded
    channel (244 kHz) is the mean over its band of the visibility phased to the correlator's
    centre, then rotated at its centre frequency to the row's phase centre, and 4 of them
    are averaged. The model with ``average=4`` and the correlator centre's delay per row
    agrees; without that delay it would not (the correlator's frame is 0.6 deg away)."""
    nrow, k, rec = 300, 4, 244140.625
    uvw = rng.uniform(-2600, 2600, (nrow, 3)) * np.array([1, 1, 0.05])
    centre = 1.40e9
    fj = centre + (np.arange(k) - (k - 1) / 2) * rec  # recorded channel centres
    lmn = lmn_offsets([1.0 + np.deg2rad(2.5) / np.cos(0.9)], [0.9], [1.0], [0.9])
    corr = lmn_offsets([1.0 + np.deg2rad(0.6) / np.cos(0.9)], [0.9], [1.0], [0.9])
    d = uvw @ lmn[0, 0]  # (Nrow,) m
    dc = uvw @ corr[0, 0]
    x = np.linspace(-0.5, 0.5, 1001)
    ref = np.zeros(nrow, complex)
    for f in fj:
        band = f + rec * x
        recorded = np.trapezoid(np.exp(2j * np.pi * (d - dc)[:, None] * band / C), x, axis=1)
        ref += recorded * np.exp(2j * np.pi * dc * f / C) / k
    kw = dict(chan_width_hz=k * rec, average=k, dtype=np.complex128)
    one = np.ones((1, 1, 1))
    zero = np.zeros(nrow, int)
    got = predict_model(uvw, [centre], zero, zero, lmn, one, corr_delay_m=dc, **kw)[:, 0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    naive = predict_model(uvw, [centre], zero, zero, lmn, one, **kw)[:, 0]
    assert np.abs(naive - ref).max() > 1e-3
    # in the correlator's own frame (no rephasing) the product is one sinc of the MS width
    same = predict_model(uvw, [centre], zero, zero, lmn, one, corr_delay_m=np.zeros(nrow), **kw)
    np.testing.assert_allclose(np.abs(same[:, 0]), np.abs(np.sinc(k * rec * d / C)), atol=1e-9)


def test_predict_model_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        predict_model(np.zeros((3, 3)), [1e9], [0, 0, 0], [0, 0, 0], np.zeros((1, 2, 3)),
                      np.zeros((1, 3, 1)))
    with pytest.raises(ValueError):
        predict_model(np.zeros((3, 3)), [1e9], [0, 0, 5], [0, 0, 0], np.zeros((1, 1, 3)),
                      np.zeros((1, 1, 1)))


def _noise_reference(uv, freqs, valid, w, sig, cell, n, weighting, robust):
    """Imaging-weight noise by histogramming the uv points with numpy."""
    du = 1.0 / (n * cell)
    r, c = np.nonzero(valid)
    w = np.broadcast_to(w[:, None] if w.ndim == 1 else w, valid.shape)[r, c]
    sig = np.broadcast_to(sig[:, None] if sig.ndim == 1 else sig, valid.shape)[r, c]
    u = uv[r, 0] * freqs[c] / C / du
    v = uv[r, 1] * freqs[c] / C / du
    iu = np.floor(u + 0.5).astype(int) + n // 2
    iv = np.floor(v + 0.5).astype(int) + n // 2
    ju = np.floor(-u + 0.5).astype(int) + n // 2
    jv = np.floor(-v + 0.5).astype(int) + n // 2
    dens = np.zeros((n, n))
    for a, b in ((iu, iv), (ju, jv)):
        ok = (a >= 0) & (a < n) & (b >= 0) & (b < n)
        np.add.at(dens, (b[ok], a[ok]), w[ok])
    ok = (iu >= 0) & (iu < n) & (iv >= 0) & (iv < n)
    d = dens[iv[ok], iu[ok]]
    wk = w[ok]
    if weighting == "uniform":
        wk = wk / d
    elif weighting == "briggs":
        f2 = (5 * 10 ** -robust) ** 2 / ((dens ** 2).sum() / dens.sum())
        wk = wk / (1 + d * f2)
    return np.sqrt((wk ** 2 * sig[ok] ** 2).sum()) / wk.sum()


@pytest.mark.parametrize("per_vis", [False, True])
@pytest.mark.parametrize("weighting,robust", [("natural", 0), ("uniform", 0), ("briggs", 0.5),
                                              ("briggs", -1.0)])
def test_image_noise_matches_numpy(weighting, robust, per_vis):
    """Per-row weights and noise (WEIGHT) or per-visibility ones (WEIGHT_SPECTRUM)."""
    nrow, nchan = 300, 8
    uv = rng.standard_normal((nrow, 2)) * 800
    freqs = 1.3e9 + np.arange(nchan) * 2e7
    valid = rng.random((nrow, nchan)) > 0.1
    size = (nrow, nchan) if per_vis else nrow
    w = rng.uniform(0.5, 2, size)
    sig = rng.uniform(0.5, 1.5, size)
    args = (uv, freqs, valid, w, sig)
    kw = dict(cell_rad=np.deg2rad(10 / 3600), imsize=256)
    got = image_noise(*args, weighting=weighting, robust=robust, **kw)
    ref = _noise_reference(*args, kw["cell_rad"], kw["imsize"], weighting, robust)
    assert got == pytest.approx(ref, rel=1e-10)


def test_natural_noise_is_sigma_over_sqrt_n():
    """Equal weights and noise: sigma / sqrt(number of visibilities), whatever the uv."""
    nrow, nchan = 500, 4
    valid = np.ones((nrow, nchan), bool)
    got = image_noise(rng.standard_normal((nrow, 2)) * 100, 1.4e9 + np.arange(nchan) * 1e6,
                      valid, np.ones(nrow), np.full(nrow, 0.3), cell_rad=1e-4, imsize=64,
                      weighting="natural")
    assert got == pytest.approx(0.3 / np.sqrt(nrow * nchan), rel=1e-12)
