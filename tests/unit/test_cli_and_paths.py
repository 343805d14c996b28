import json
import os

import h5py
import numpy as np
import pytest

from engine.cli import main
from engine.errors import PathSafetyError
from engine.paths import confine


def test_simulate_cli_writes_files_and_truth(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--scale", "tiny", "--observations", "1", "--dec", "16.3",
                 "--seed", "9", "--start", "2025-11-01T10:00:00", "--out", str(out)]) == 0
    files = sorted(out.glob("*.hdf5"))
    assert len(files) == 16 and files[0].name.startswith("2025-11-01T")
    with h5py.File(files[0]) as f:
        assert np.isclose(np.rad2deg(f["Header/extra_keywords/phase_center_dec"][()]), 16.3)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["seed"] == 9 and len(truth["observations"]) == 1


def test_config_show_and_bad_key(capsys):
    assert main(["config", "show"]) == 0
    assert "nsubbands = 16" in capsys.readouterr().out
    assert main(["--set", "sim.nantz=3", "config", "show"]) == 2
    assert "sim.nantz" in capsys.readouterr().err


def test_paths_are_confined(tmp_path):
    root = tmp_path / "stage"
    root.mkdir()
    assert confine("a/b.ms", root) == root.resolve() / "a" / "b.ms"
    with pytest.raises(PathSafetyError):
        confine("../escape", root)
    with pytest.raises(PathSafetyError):
        confine("/etc/passwd", root)
    os.symlink(tmp_path, root / "link")
    with pytest.raises(PathSafetyError):
        confine("link/elsewhere", root)
