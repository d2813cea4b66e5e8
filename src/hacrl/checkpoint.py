"""Joint, atomic checkpoints of a whole run.

A checkpoint is one directory `step-NNNNNN/` holding every agent (HF format + optimizer + RNG), the
coordinator's state (step, data position, capability tracker, counters) and a manifest with the SHA-256 of
every file. It is written into a temporary sibling directory and renamed into place only when complete, and
the manifest is written last: a directory without a valid manifest (a killed write) is never picked up.

A write that fails (a full disk, a read-only mount) removes its own temporary directory and raises one
`CheckpointWriteError` naming the path and the last good checkpoint, which it never touches. Temporary
directories are named `.tmp-step-N-PID@HOST`; the sweeper removes only its own and those of processes that
provably no longer exist (same host, pid gone), never the live write of another process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
OPTIMIZER_FILE = "optimizer.pt"
WORKER_STATE_FILE = "worker_state.pt"
"""Beside an agent's weights in its checkpoint directory: its optimizer state, and its sampling RNG and counters
(`AgentWorker.save`); training state, not part of the model (`hacrl export` leaves them out)."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""A LoRA agent's weights in its checkpoint directory: a peft adapter directory (peft's file names)."""
PREFIX = "step-"
_TMP = re.compile(r"^\.tmp-step-\d+-(?P<pid>\d+)(?:@(?P<host>.+))?$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or must not be loaded; the message says which file and what to do."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (e.g. no space left on device); the partial write has been removed."""


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
    tmp = root / f".tmp-{PREFIX}{step:06d}-{os.getpid()}@{socket.gethostname()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write(tmp)
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
        _fsync_tree(tmp)
        _publish(tmp, final)
        _fsync_dir(root)
    except Exception as exc:
        disk_full = is_disk_full(exc)
        if not disk_full and not isinstance(exc, OSError):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(root)
        what = "no space left on device" if disk_full else (getattr(exc, "strerror", None) or str(exc))
        good = f"the last good checkpoint is {last}" if last is not None else "there is no complete checkpoint yet"
        raise CheckpointWriteError(
            f"{what} while writing checkpoint {final} (partial {tmp.name} removed); {good}. "
            "Free space, then continue with --resume") from exc
    prune(root, keep_last)
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` (the same step saved again) is replaced only once the new
    one is in place, so at no moment is there no copy of that step."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


_DISK_FULL_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "unexpected pos")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means the disk or quota is full.

    Not every writer says ENOSPC: torch's zip writer reports a short write as `unexpected pos N vs M`, and
    safetensors' Rust writer as `No space left on device (os error 28)`, so the messages count too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current).lower() for text in _DISK_FULL_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


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
    """Keep the newest `keep_last` complete checkpoints; never delete the only complete one. Sweep this
    process's leftover temporary directories and those of dead processes on this host (`is_stale`)."""
    complete = [p for p in list_checkpoints(root) if is_complete(p, verify_checksums=False)]
    for old in complete[: max(len(complete) - max(keep_last, 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in [*root.glob(f".tmp-{PREFIX}*"), *root.glob(f".old-{PREFIX}*")]:
        if is_stale(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            logger.debug("leaving %s: it belongs to a live process", leftover)


def is_stale(name: str) -> bool:
    """A temporary checkpoint directory is removable when this process wrote it (a failed earlier save), or its
    writer's pid no longer exists on this host. A name from another host, or one that does not parse, is kept."""
    m = _TMP.match(name) or re.match(r"^\.old-step-\d+-(?P<pid>\d+)$", name)
    if m is None:
        return False
    host = m.groupdict().get("host")
    if host is not None and host != socket.gethostname():
        return False
    pid = int(m.group("pid"))
    if pid == os.getpid():
        return True
    from hacrl.rundir import pid_alive

    return not pid_alive(pid)


def read_state(path: Path, required: Sequence[str]) -> dict[str, Any]:
    """A checkpoint's JSON state file, with the keys a resume needs; anything else is a `CheckpointError`."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {str(path.parent)!r}: {path.name} is unreadable or not JSON "
                              f"({exc}); resume from an earlier checkpoint (--resume PATH) or start a new run") from exc
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"cannot resume from {str(path.parent)!r}: {path.name} lacks {', '.join(missing)}; "
                              "resume from an earlier checkpoint (--resume PATH) or start a new run")
    return state


def load_tensors(path: Path, *, map_location: Any = None) -> Any:
    """`torch.load(weights_only=True)` of optimizer/RNG state, refusing anything else with the right advice.

    A file hacrl wrote holds only tensors and plain containers; one that needs arbitrary unpickling was not
    written by hacrl (or was altered), and loading it with `weights_only=False` would run its code.
    """
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location=map_location)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing; resume from another checkpoint") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with contextlib.suppress(Exception):
            first = first.split(" Please file an issue")[0]
        raise CheckpointError(
            f"refused to load {str(path)!r}: it is not plain tensor state as hacrl writes it ({first[:160]}). "
            "It was altered or comes from elsewhere; do not load it with weights_only=False (that runs any code "
            "inside it) — resume from another checkpoint or start a new run") from None
