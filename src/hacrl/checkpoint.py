"""Joint, atomic checkpoints of a whole run.

A checkpoint is one directory `step-NNNNNN/` holding every agent (HF format + optimizer + RNG), the
coordinator's state (step, data position, capability tracker, counters) and a manifest with the SHA-256 of
every file. It is written into a temporary sibling directory and renamed into place only when complete, and
the manifest is written last: a directory without a valid manifest (a killed write) is never picked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
PREFIX = "step-"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def save_checkpoint(root: Path, step: int, write: Callable[[Path], None], *, keep_last: int) -> Path:
    """Write a checkpoint for `step` with `write(tmp_dir)`, then publish it atomically and prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".tmp-{PREFIX}{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune(root, keep_last)
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_complete(directory: Path, *, verify_checksums: bool = True) -> bool:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            return False
        if verify_checksums and _sha256(path) != digest:
            logger.warning("checkpoint %s: %s fails its checksum; ignoring this checkpoint", directory, name)
            return False
    return True


def list_checkpoints(root: Path) -> list[Path]:
    """Published checkpoint directories, oldest first (complete or not)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose manifest and checksums are intact."""
    for path in reversed(list_checkpoints(root)):
        if is_complete(path):
            return path
        logger.warning("skipping incomplete checkpoint %s", path)
    return None


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; never delete the only complete one."""
    complete = [p for p in list_checkpoints(root) if is_complete(p, verify_checksums=False)]
    for old in complete[: max(len(complete) - max(keep_last, 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".tmp-{PREFIX}*"):
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
