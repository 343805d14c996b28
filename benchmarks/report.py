"""Stamp a benchmark run (machine, versions, git commit) and write it as JSON, a markdown
table and a PNG plot under ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from engine.config import flatten

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HISTORY = RESULTS_DIR / "history.json"
PACKAGES = ("ray", "pyuvdata", "casatools", "casatasks", "python-casacore", "numpy", "numba",
            "zarr", "h5py", "astropy", "sqlite-utils")

# what the plot shows: (case, panel title, unit, [(label, dotted key)])
PANELS = (
    ("convert_vs_pyuvdata", "one observation to MS", "s",
     [("engine", "engine_run2.seconds"), ("engine, cold cache", "engine_cold.seconds"),
      ("pyuvdata", "pyuvdata.seconds"), ("disk floor", "io.floor_s"),
      ("page-cache copy", "io_page_cache.floor_s")]),
    ("kernels", "rephasing, one core", "1e6 vis/s",
     [("numba", "numba_vis_per_s"), ("numpy", "numpy_vis_per_s"),
      ("pyuvdata", "pyuvdata_vis_per_s")]),
    ("calibrate_image", "per observation, before / after", "s",
     [("calibrate before", "before.calibrate_s"), ("calibrate after", "after.calibrate_s"),
      ("tclean before", "before.tclean_s"), ("tclean after", "after.tclean_s"),
      ("WSClean before", "before.wsclean_s"), ("WSClean after", "after.wsclean_s")]),
    ("e2e", "end to end, 12 observations", "obs/hour",
     [("1 CPU", "1cpu.obs_per_hour"), ("2 CPUs", "2cpu.obs_per_hour")]),
    ("registry", "registry with a year (100k obs)", "ms",
     [("acquire_next", "acquire_next_median_ms"), ("status", "status_cli_ms"),
      ("mosaic plan", "mosaic_windows_ms"), ("scan new obs", "scan_new_obs_ms")]),
)


def _run(cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              cwd=RESULTS_DIR.parent.parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def stamp() -> dict:
    """Machine, package versions and git commit of this run."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    if shutil.which("wsclean"):
        versions["wsclean"] = (_run(["wsclean", "--version"]).splitlines() or [""])[0][:80]
    return {"machine": {"cpus": os.cpu_count(), "memory_gib": round(mem, 1),
                        "python": platform.python_version(), "platform": platform.platform(),
                        "processor": platform.processor() or platform.machine()},
            "versions": versions,
            "git_commit": _run(["git", "rev-parse", "HEAD"]),
            "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"]))}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(results: dict) -> str:
    s = results["stamp"]
    lines = [f"# Benchmark run {results['when']} ({results['scale']} scale)", "",
             f"- machine: {s['machine']['cpus']} CPUs, {s['machine']['memory_gib']} GiB, "
             f"{s['machine']['platform']}, Python {s['machine']['python']}",
             f"- commit: `{s['git_commit'][:12]}`"
             + (" (uncommitted changes)" if s["git_dirty"] else ""),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v),
             *([f"- settings over the scale's: {results['settings']}"]
               if results.get("settings") else []),
             "", "Timings are wall-clock on this machine, measured side by side in this run.",
             ""]
    for case, res in results["cases"].items():
        lines += [f"## {case}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in flatten(res).items()]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for case, title, unit, bars in PANELS:
        flat = flatten(results["cases"].get(case, {}))
        vals = [(label, flat[key]) for label, key in bars
                if isinstance(flat.get(key), (int, float))]
        if vals:
            panels.append((f"{case}: {title}", unit, vals))
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.6 + 1.4 * len(panels)),
                             squeeze=False)
    for ax, (title, unit, vals) in zip(axes[:, 0], panels):
        scale = 1e-6 if unit.startswith("1e6") else 1.0
        labels = [v[0] for v in vals]
        nums = [v[1] * scale for v in vals]
        ax.barh(labels, nums, color="tab:blue")
        for y, x in enumerate(nums):
            ax.text(x, y, f" {x:.3g}", va="center", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_xlim(0, max(nums) * 1.25 if max(nums) > 0 else 1)
    s = results["stamp"]
    fig.suptitle(f"DSA-110 engine benchmarks, {results['scale']} scale, {results['when']}\n"
                 f"{s['machine']['cpus']} CPUs, commit {s['git_commit'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict) -> dict:
    """Write ``<when>_<scale>.json/.md/.png`` and append to ``history.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"{results['when'].replace(':', '')}_{results['scale']}"
    paths = {"json": stem.with_suffix(".json"), "markdown": stem.with_suffix(".md"),
             "png": stem.with_suffix(".png")}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    paths["markdown"].write_text(markdown(results) + "\n")
    if not plot(results, paths["png"]):
        paths.pop("png")
    history = json.loads(HISTORY.read_text()) if HISTORY.exists() else []
    history.append(results)
    HISTORY.write_text(json.dumps(history, indent=1) + "\n")
    return paths
