"""The mosaic's direct SIN-to-SIN reprojection against astropy's WCS (the reference)."""

import numpy as np
import pytest
from astropy.wcs import WCS

from engine.sinproject import footprint, frames, is_plain_sin
from kernels.mosaic import accumulate, accumulate_sin

rng = np.random.default_rng(7)


def _grid(ra, dec, cell_arcsec, shape, rot_deg=0.0, crpix=None, ctype="SIN", radesys="ICRS"):
    w = WCS(naxis=2)
    w.wcs.ctype = [f"RA---{ctype}", f"DEC--{ctype}"]
    w.wcs.crval = [ra, dec]
    w.wcs.cdelt = [-cell_arcsec / 3600, cell_arcsec / 3600]
    w.wcs.crpix = crpix or [shape[1] / 2 + 1, shape[0] / 2 + 1]
    c, s = np.cos(np.deg2rad(rot_deg)), np.sin(np.deg2rad(rot_deg))
    w.wcs.pc = [[c, -s], [s, c]]
    w.wcs.radesys = radesys
    if radesys == "FK5":
        w.wcs.equinox = 2000.0
    return w


def _astropy_reference(w_out, shape_out, w_in, img, res, pb, weight, vweight):
    """The five sums by the reference route: astropy maps every output pixel, then the
    flat accumulation; where the image has no value the member adds nothing."""
    yy, xx = np.mgrid[0:shape_out[0], 0:shape_out[1]]
    world = w_out.pixel_to_world(xx.ravel(), yy.ravel())
    xi, yi = (np.asarray(a) for a in w_in.world_to_pixel(world))
    n = xx.size
    ref = [np.zeros(n) for _ in range(5)]
    accumulate(*ref[:3], img, pb, weight, xi, yi, lanczos=3)
    xi, yi = (np.where(ref[1] > 0, a, np.nan) for a in (xi, yi))
    accumulate(ref[3], np.zeros(n), np.zeros(n), res, pb, weight, xi, yi, lanczos=3)
    accumulate(ref[4], np.zeros(n), np.zeros(n), pb, pb, vweight, xi, yi)
    return ref


@pytest.mark.parametrize("ra,dec,rot", [(150.0, 54.6, 0.0), (359.7, 20.0, 0.0),
                                        (0.2, -30.0, 7.0), (200.0, 85.0, 0.0)])
def test_sin_kernel_matches_astropy_mapping(ra, dec, rot):
    """Every output pixel sampled where astropy's pixel_to_world -> world_to_pixel says, to
    1e-9 of the values: through 0 h, a rotated member, near the pole; residual and thermal
    sums included; the footprint box loses no pixel astropy maps into the image."""
    shape_in, shape_out = (120, 160), (260, 300)
    w_in = _grid(ra, dec, 3.0, shape_in, rot)
    w_out = _grid((ra + 0.06) % 360, dec - 0.03, 2.5, shape_out, crpix=[130.3, 140.7])
    img, res = rng.standard_normal(shape_in), rng.standard_normal(shape_in)
    pb = rng.uniform(0.1, 1, shape_in)
    img[50, 60] = res[70, 20] = np.nan  # Lanczos falls back to bilinear near them
    sums = [np.zeros(shape_out) for _ in range(5)]
    box = footprint(w_in, shape_in, w_out, shape_out)
    accumulate_sin(*sums[:3], img, pb, 2.0, frames(w_out, w_in), box, lanczos=3,
                   resid=res, rnum=sums[3], var=sums[4], vweight=0.5)
    ref = _astropy_reference(w_out, shape_out, w_in, img, res, pb, 2.0, 0.5)
    for got, want in zip(sums, ref):
        np.testing.assert_allclose(got.ravel(), want, rtol=0, atol=1e-9)
    assert (sums[1] > 0).sum() > 0.2 * sums[1].size
    # members as the mosaic reads them (float32 FITS): the same sums to float32 rounding
    s32 = [np.zeros(shape_out) for _ in range(5)]
    f32 = [a.astype(np.float32) for a in (img, pb, res)]
    accumulate_sin(*s32[:3], f32[0], f32[1], 2.0, frames(w_out, w_in), box, lanczos=3,
                   resid=f32[2], rnum=s32[3], var=s32[4], vweight=0.5)
    for got, want in zip(s32, ref):
        np.testing.assert_allclose(got.ravel(), want, rtol=0, atol=1e-5)


def test_frames_refuses_what_it_cannot_map_exactly():
    sin = _grid(10.0, 40.0, 3.0, (10, 10))
    assert is_plain_sin(sin)
    assert frames(sin, _grid(10.0, 40.0, 3.0, (10, 10), ctype="TAN")) is None
    assert frames(sin, _grid(10.0, 40.0, 3.0, (10, 10), radesys="FK5")) is None
    slant = _grid(10.0, 40.0, 3.0, (10, 10))
    slant.wcs.set_pv([(2, 1, 0.01)])
    assert frames(sin, slant) is None
    far = _grid(190.0, -40.0, 3.0, (10, 10))  # the antipode: nothing of it on the grid
    assert footprint(far, (10, 10), sin, (10, 10)) is None


def test_a_member_on_another_projection_is_mapped_through_astropy():
    """A TAN member (not mapped by the kernel) lands where astropy maps it, within its
    footprint box, residual and noise sums included."""
    from engine.mosaic import _add_member

    shape_in, shape_out = (80, 90), (150, 170)
    w_in = _grid(83.6, 22.0, 3.0, shape_in, 4.0, ctype="TAN")
    w_out = _grid(83.62, 21.99, 2.5, shape_out)
    img, res, pb = (rng.standard_normal(shape_in), rng.standard_normal(shape_in),
                    rng.uniform(0.1, 1, shape_in))
    sums = [np.zeros(shape_out) for _ in range(5)]
    _add_member(w_out, sums[:3], img, pb, w_in, 3.0,
                dict(resid=res, rnum=sums[3], var=sums[4], vweight=0.25))
    ref = _astropy_reference(w_out, shape_out, w_in, img, res, pb, 3.0, 0.25)
    for got, want in zip(sums, ref):
        np.testing.assert_allclose(got.ravel(), want, rtol=0, atol=1e-9)
    assert (sums[1] > 0).sum() > 0.1 * sums[1].size
