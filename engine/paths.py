"""Path safety: every stage and product path is confined to its root."""

from __future__ import annotations

import hashlib
import os
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


def digest(path) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory tree (relative names + contents)."""
    p = Path(path)
    h = hashlib.sha256()
    total = 0
    # casacore rewrites table.lock whenever a table is opened: not part of the content
    files = [p] if p.is_file() else sorted(
        q for q in p.rglob("*") if q.is_file() and q.name != "table.lock")
    for f in files:
        if f != p:
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
                total += len(chunk)
    return h.hexdigest(), total


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
        if exc.errno != 18:  # EXDEV: different file systems
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
