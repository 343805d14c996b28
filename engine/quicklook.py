"""Quick-look PNGs of images and mosaics: RA/Dec axes, a stretch for faint and bright sky,
the restoring beam, the catalogue's sources circled.

The stretch is asinh (Lupton et al. 1999): linear within a few times the noise, logarithmic
above, so a 5 sigma source and a 1000 sigma calibrator are both visible in one picture.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOFTENING_SIGMA = 3.0  # the asinh stretch turns from linear to logarithmic here (x rms)
FLOOR_SIGMA = 3.0  # black below -3 rms
DPI = 100  # screen pixels per inch of the PNG
MIN_CIRCLE_SCREEN_PX = 8  # a catalogue circle's smallest radius on the PNG


def robust_rms(data) -> float:
    """1.4826 x the median absolute deviation of the finite pixels (Jy/beam); 0 if none."""
    x = np.asarray(data, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def asinh_levels(data, rms: float) -> tuple[float, float, float]:
    """(vmin, vmax, a) of the stretch y = asinh(x / a) / asinh(1 / a), x = (d - vmin) /
    (vmax - vmin): vmin = -FLOOR_SIGMA rms, vmax the brightest pixel, a such that the
    stretch turns from linear to logarithmic at SOFTENING_SIGMA rms above zero (x = a)."""
    data = np.asarray(data)
    top = float(np.fmax.reduce(data, axis=None)) if data.size else np.nan  # skips NaN, no copy
    if not np.isfinite(top):  # all blank, or an infinity: the finite pixels' maximum
        finite = data[np.isfinite(data)]
        top = float(finite.max()) if finite.size else 1.0
    rms = rms if rms > 0 else max(abs(top), 1.0) * 1e-3
    vmin = -FLOOR_SIGMA * rms
    vmax = max(top, vmin + 10 * rms)
    return vmin, vmax, (FLOOR_SIGMA + SOFTENING_SIGMA) * rms / (vmax - vmin)


def stretch(values, vmin: float, vmax: float, a: float) -> np.ndarray:
    """The display level in [0, 1] of ``values`` (Jy/beam) under ``asinh_levels``."""
    x = np.clip((np.asarray(values, dtype=float) - vmin) / (vmax - vmin), 0.0, 1.0)
    return np.arcsinh(x / a) / np.arcsinh(1.0 / a)


def catalogue_marks(cfg) -> list[tuple[str, float, float]]:
    """(name, ra_deg, dec_deg) of the reference catalogue (``engine.photometry.catalogue``);
    empty, with a warning, when it cannot be read (a picture is no reason to fail)."""
    from engine.errors import EngineError
    from engine.photometry import catalogue

    try:
        return [(s.name, float(np.degrees(s.ra_rad)), float(np.degrees(s.dec_rad)))
                for s in catalogue(cfg)]
    except EngineError as exc:
        log.warning("quick-look without catalogue marks: %s", exc)
        return []


def display_pixels(data, screen_px: int):
    """``(array, extent)`` to draw a 2-D image (ny, nx) on about ``screen_px`` screen pixels
    across. A wide mosaic has several image pixels per screen pixel, and a plain resampling
    keeps one of each block: a source a few pixels wide may vanish. Blocks of f x f pixels
    (f = nx // screen_px, when >= 2) are shown by their value of largest magnitude (sign
    kept), so every source keeps its peak; blanks show only where a whole block is blank.
    ``extent`` places the reduced array on the original pixel grid (matplotlib imshow)."""
    ny, nx = data.shape
    f = nx // max(screen_px, 1)
    if f < 2:
        return data, None
    by, bx = ny // f, nx // f
    blocks = data[:by * f, :bx * f].reshape(by, f, bx, f).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(by, bx, f * f)
    mag = np.where(np.isfinite(blocks), np.abs(blocks), -1.0)
    pick = np.take_along_axis(blocks, mag.argmax(axis=2)[..., None], axis=2)[..., 0]
    return pick, (-0.5, bx * f - 0.5, -0.5, by * f - 0.5)


def render(data, header, png_path: Path, *, title: str, sources=(), circle_deg=None) -> Path:
    """Write a PNG of a 2-D image (Jy/beam) with the celestial WCS of ``header`` (see
    ``figure``), cropped to its content."""
    import matplotlib.pyplot as plt

    fig = figure(data, header, title=title, sources=sources, circle_deg=circle_deg)
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return png_path


def figure(data, header, *, title: str, sources=(), circle_deg=None):
    """The quick-look figure (matplotlib, Agg) of a 2-D image (Jy/beam) on RA/Dec axes.

    sources: (name, ra_deg, dec_deg) to circle where they fall on finite pixels, radius
    ``circle_deg`` (default two restoring beams, or 1 % of the field). The restoring beam
    (BMAJ, BMIN, BPA in degrees in the header) is drawn to scale in the lower left.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize
    from astropy.wcs import WCS, FITSFixedWarning
    from matplotlib.patches import Circle, Ellipse

    data = np.squeeze(np.asarray(data))  # float32 stays float32: half the bytes to scan
    data = data.astype(np.result_type(data.dtype, np.float32), copy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    ny, nx = data.shape
    step = max(1, int(np.sqrt(data.size / 4e6)))  # the noise from ~4 Mpixel is plenty
    rms = robust_rms(data[::step, ::step])
    vmin, vmax, a = asinh_levels(data, rms)
    # clip=False: with clip=True the normaliser maps blanks (masked NaN) to the top colour
    norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a), clip=False)
    aspect = ny / nx
    width = 7.0 if aspect >= 0.7 else 12.0  # inches of image; a strip gets a wide figure
    fig = plt.figure(figsize=(width + 1.5, max(2.5, width * aspect) + 1.0))
    ax = fig.add_subplot(projection=wcs)
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.25")
    # blanks (NaN: outside a mosaic's coverage) as masked, so they take the 'bad' grey
    shown, extent = display_pixels(data, int(width * DPI))
    im = ax.imshow(np.ma.masked_invalid(shown), origin="lower", cmap=cmap, norm=norm,
                   interpolation="nearest", extent=extent)
    ax.coords[0].set_axislabel("RA (J2000)")
    ax.coords[1].set_axislabel("Dec (J2000)")
    ax.coords[0].set_major_formatter("hh:mm")
    ax.coords[1].set_major_formatter("dd:mm")
    ax.set_title(f"{title}   rms {rms * 1e3:.2f} mJy/beam", fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("Jy/beam (asinh)")
    ticks = [t for t in (-FLOOR_SIGMA * rms, 0.0, 10 * rms, 100 * rms, 1000 * rms)
             if t < 0.8 * vmax] + [vmax]
    bar.set_ticks(ticks)
    bar.set_ticklabels([f"{t:.2g}" for t in ticks])
    cell = abs(float(np.mean(np.abs(np.diag(wcs.pixel_scale_matrix)))))  # deg per pixel
    bmaj, bmin, bpa = (header.get(k) for k in ("BMAJ", "BMIN", "BPA"))
    if bmaj and bmin and np.isfinite(bmaj) and cell > 0:
        pad = max(3.0, 1.5 * bmaj / cell)
        ax.add_patch(Ellipse((pad, pad), bmin / cell, bmaj / cell, angle=bpa or 0.0,
                             fc="none", ec="cyan", lw=1.2))
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    radius = circle_deg or (2 * bmaj if bmaj else 0.01 * max(nx, ny) * cell)
    if cell > 0:
        # a wide mosaic is shown several pixels per screen pixel: a circle of two beams
        # would shrink onto the source it marks and hide it, so none is drawn smaller than
        # MIN_CIRCLE_SCREEN_PX screen pixels (the axes' drawn width, after equal aspect)
        ax.apply_aspect()
        screen_px = ax.get_position().width * fig.get_figwidth() * DPI
        radius = max(radius, MIN_CIRCLE_SCREEN_PX * nx / screen_px * cell)
    if len(sources) and cell > 0:
        names, ra, dec = zip(*sources)
        x, y = wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        for name, xi, yi in zip(names, x, y):
            if not (np.isfinite(xi) and np.isfinite(yi)):
                continue  # the far side of the sky has no place in this projection
            i, j = int(round(yi)), int(round(xi))
            if 0 <= i < ny and 0 <= j < nx and np.isfinite(data[i, j]):
                ax.add_patch(Circle((xi, yi), radius / cell, fc="none", ec="lime", lw=0.8))
                ax.annotate(name, (xi, yi + radius / cell), color="lime", fontsize=6,
                            ha="center", va="bottom")
    return fig


def light_curve_png(name: str, curve: list[dict], stats: dict, png_path: Path) -> Path:
    """A source's light curve: flux density (Jy, primary-beam corrected) with its 1-sigma
    errors against the observation's MJD, the weighted mean as a line, eta and V in the
    title. curve: measurements in time order (mjd, flux_jy, err_jy). Written atomically
    (a reader never sees half a PNG)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mjd = np.array([m["mjd"] for m in curve])
    f = np.array([m["flux_jy"] for m in curve])
    e = np.array([m["err_jy"] for m in curve])
    w = 1 / np.maximum(e, 1e-12) ** 2
    mean = float(np.sum(w * f) / np.sum(w))
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    t0 = np.floor(mjd.min())
    ax.errorbar(mjd - t0, f, yerr=e, fmt="o", ms=4, capsize=2, color="C0")
    ax.axhline(mean, color="0.5", lw=0.8, ls="--", label=f"weighted mean {mean:.3g} Jy")
    ax.set_xlabel(f"MJD - {t0:.0f}")
    ax.set_ylabel("flux density (Jy)")
    eta, v = stats.get("eta"), stats.get("v")
    ax.set_title(f"{name}   n = {len(curve)}, eta = {eta:.3g}, V = {v:.3g}"
                 if eta is not None and v is not None else f"{name}   n = {len(curve)}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="best")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


def safe_name(name: str) -> str:
    """A source name as a file name: characters other than letters, digits, + - . _ -> _."""
    import re

    return re.sub(r"[^A-Za-z0-9+\-._]", "_", name) or "_"
