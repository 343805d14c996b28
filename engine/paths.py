"""Path safety: every stage and product path is confined to its root."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from engine.errors import PathSafetyError, StaleProductError


def confine(path, root) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside ``root``; else PathSafetyError.

    Relative paths are taken relative to ``root``. ``..`` components and symlinks that lead
    out of the root are rejected.
    """
    root = Path(root).resolve()
    p = Path(path)
    if ".." in p.parts:
        raise PathSafetyError(f"{path}: '..' is not allowed in a stage or product path")
    full = (p if p.is_absolute() else root / p).resolve()
    try:
        full.relative_to(root)
    except ValueError:
        raise PathSafetyError(f"{path}: resolves to {full}, outside {root}") from None
    return full


LEAF_BYTES = 64 << 20


HASH_BLOCK = 1 << 20


def _hash_range(path: Path, offset: int = 0, n: int | None = None):
    """sha256 object of ``n`` bytes of ``path`` from ``offset`` (to the end when None).

    Read into one reused 1 MB buffer, not a new bytes object per block: the driver hashes
    every MS it uses, and a stream of fresh multi-MB blocks fragments a long-lived
    process's heap (issue 17)."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(HASH_BLOCK))
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        left = float("inf") if n is None else n
        while left > 0 and (k := fh.readinto(buf[:int(min(HASH_BLOCK, left))])):
            h.update(buf[:k])
            left -= k
    return h


def digest(path) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory tree.

    A single file: the plain sha256 of its bytes (what ``sha256sum`` prints). A directory
    (a Measurement Set): sha256 over, file by file in sorted order, the relative name and
    the file's sha256 taken over 64 MB leaves; the leaves are hashed in parallel threads
    (hashlib and file reads release the GIL), which halves the time on two cores.
    """
    p = Path(path)
    if p.is_file():
        return _hash_range(p).hexdigest(), p.stat().st_size
    # casacore rewrites table.lock whenever a table is opened: not part of the content
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.name != "table.lock")
    jobs = []  # (file index, offset, length)
    sizes = []
    for i, f in enumerate(files):
        size = f.stat().st_size
        sizes.append(size)
        jobs += [(i, off, min(LEAF_BYTES, size - off))
                 for off in range(0, max(size, 1), LEAF_BYTES)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        leaves = list(pool.map(lambda j: _hash_range(files[j[0]], j[1], j[2]).digest(),
                               jobs))
    per_file = [hashlib.sha256() for _ in files]
    for (i, _, _), leaf in zip(jobs, leaves):
        per_file[i].update(leaf)
    h = hashlib.sha256()
    for f, fh in zip(files, per_file):
        h.update(str(f.relative_to(p)).encode())
        h.update(fh.digest())
    return h.hexdigest(), sum(sizes)


def verify(path, *, sha256: str, size: int, root) -> Path:
    """Check a product against its manifest before anyone uses it (exists, size, sha256)."""
    p = confine(path, root)
    if not p.exists():
        raise StaleProductError(f"{p}: recorded product is missing on disk")
    got_sha, got_size = digest(p)
    if got_size != size or got_sha != sha256:
        raise StaleProductError(f"{p}: on disk size {got_size} sha256 {got_sha[:12]} differs "
                                f"from manifest size {size} sha256 {sha256[:12]}")
    return p


def commit_dir(work, out_dir, names: dict) -> dict:
    """Replace ``out_dir`` by the finished ``work`` folder; describe its files.

    ``names`` maps a kind to a file name inside the folder. Returns ``{kind: {path, sha256,
    size}}`` for the task's manifest, computed where the files now are.
    """
    import shutil

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(work, out_dir)
    files = {}
    for kind, name in names.items():
        sha, size = digest(out_dir / name)
        files[kind] = {"path": str(out_dir / name), "sha256": sha, "size": size}
    return files


def atomic_move(src, dst) -> Path:
    """Rename ``src`` to ``dst``; across file systems copy, fsync, then rename."""
    import shutil

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # a rename cannot cross file systems
            raise
        tmp = dst.with_name(dst.name + ".incoming")
        if src.is_dir():
            shutil.copytree(src, tmp, dirs_exist_ok=False)
        else:
            shutil.copy2(src, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dst)
        shutil.rmtree(src) if src.is_dir() else src.unlink()
    return dst


@contextmanager
def work_folder(out_dir):
    """A fresh ``<out_dir>.tmp`` folder for a task to write into, removed if the task fails.

    The task finishes by :func:`commit_dir` (work folder -> ``out_dir``, one rename), so a
    reader never sees a half-written ``out_dir`` and a failed task leaves nothing in stage.
    """
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
