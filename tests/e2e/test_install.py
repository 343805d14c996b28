"""A non-editable install in a fresh virtual environment runs the demo (slow target).

The fresh environment gets the engine from a wheel built from this checkout, and its
dependencies (ray, casatools, ...) from the test environment's site-packages through a
path entry, which does not run that environment's .pth files: the editable install there
stays invisible, so every engine file and every shipped configuration comes from the wheel.
"""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_wheel_in_a_fresh_venv_runs_the_demo(tmp_path):
    # build from a copy: setuptools writes build/ into the tree it builds
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "demo-run", "bench-run"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(src)], check=True,
                   cwd=tmp_path)
    wheel = next(dist.glob("dsa110_engine-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    fresh_site = Path(subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "test_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    str(wheel)], check=True)
    out = subprocess.run(
        [str(py), "-c", "import json, engine, kernels, engine.config as c; "
         "print(json.dumps([engine.__file__, kernels.__file__, str(c.CONFIG_DIR)]))"],
        check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    for f in json.loads(out):
        assert Path(f).is_relative_to(fresh_site), f  # not the checkout, not the editable
    shipped = Path(json.loads(out)[2])
    for name in ("default.toml", "ci.toml", "dsa110.toml", "dsa110_stations.csv",
                 "calibrators.csv"):
        assert (shipped / name).is_file(), name
    assert (fresh_site / "engine" / "py.typed").exists()
    run = subprocess.run(
        [str(venv / "bin" / "dsa110-engine"), "--set", "sim.nobs=2", "--set",
         "image.max_imsize=128", "--set", "image.niter=10", "demo", "--scale", "tiny",
         "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "published products:            2" in run.stdout
    assert len(list((tmp_path / "demo" / "products").glob("*/*.image.fits"))) == 2
