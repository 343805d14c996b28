"""Transient errors: which errors a retry may cure, and where the retry counts come from."""

import errno

import pytest

from engine import config, faults, raytasks
from engine.errors import StorageError, TransientError
from engine.states import Step


def test_every_task_type_has_its_retries_in_the_config():
    cfg = config.load(None, {f"ray.retries_{s}": i + 3 for i, s in enumerate(Step)})
    assert [raytasks.retries(cfg, s) for s in Step] == [3, 4, 5, 6]
    with pytest.raises(Exception, match="retries_image"):
        config.load(None, {"ray.retries_image": -1})


@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT])
def test_io_errors_of_shared_file_systems_become_transient(code):
    @raytasks.transient_io
    def task():
        raise OSError(code, "flaky NFS", "/stage/x.ms")

    with pytest.raises(TransientError, match="task: .*flaky NFS"):
        task()


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 OSError(errno.EACCES, "Permission denied"),
                                 FileNotFoundError(errno.ENOENT, "gone"),
                                 StorageError("stage full")])
def test_other_errors_fail_at_once(exc):
    @raytasks.transient_io
    def task():
        raise exc

    with pytest.raises(type(exc)):
        task()


def test_injected_transient_fault_fails_once_per_key(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    monkeypatch.setenv(faults.VAR, f"image.start@obs-*=transient:{marks}")
    for key in ("obs-1", "obs-2"):
        with pytest.raises(TransientError, match=f"image.start for {key}"):
            faults.check("image.start", key)
        faults.check("image.start", key)  # the second attempt goes through
    faults.check("image.start", "other")  # not matched: never fails
    faults.check("convert.subband", "obs-1")
    assert len(list(marks.iterdir())) == 2
