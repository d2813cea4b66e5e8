"""The output directory of a run: checked before anything heavy starts, locked while a run uses it, and never
reused by accident.

Why this module exists: a second `hacrl train` into a used `output_dir` used to truncate the first run's
`metrics.jsonl`, and its checkpoints were then pruned by the old run's higher step numbers; two processes on one
directory swept each other's temporary checkpoints. The rules here make every such case an explicit decision:

* `check_output_dir`: the directory is (or can be made) a writable directory. It runs before any model is loaded,
  so a read-only or misspelt path costs a second, not a model load.
* `RunLock`: an exclusive `flock` on `<output_dir>/.hacrl-lock`, holding the owner's pid, host and start time
  (emptied on a clean release). The kernel drops the lock when its process dies (SIGKILL, OOM), so a lock
  file that still names a holder but that nobody holds is stale by construction and is taken over with a log
  line; a live holder makes a second process refuse at once, before it writes anything.
* `open_run_dir`: a directory that holds a run (metrics, config, checkpoints, summary, TensorBoard) is only used
  again with `resume` (continue it) or `overwrite` (the old run is moved aside to a sibling
  `<name>.replaced-<time>` directory, and the caller is told where). `resume="latest"` (`--resume`) with nothing to
  resume is an error; `resume="auto"` resumes when it can and starts fresh when the directory holds no run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

LOCK_FILE = ".hacrl-lock"
CHECKPOINTS = "checkpoints"
RUN_FILES = ("metrics.jsonl", "config.yaml", "summary.json", "tensorboard", CHECKPOINTS)
"""What a run writes into its output directory; any of them present means the directory holds a run."""

# fields that may change between sessions of one run (how long it runs, how it is logged, where it executes)
_SESSION_FIELDS = {"training": ("steps",), "logging": ("tensorboard", "progress"), "checkpoint": ("every", "keep_last"),
                   "": ("executor", "ray_address", "threads")}


class RunDirError(ValueError):
    """The output directory cannot be used as asked; the message says why and what to do instead."""


# ------------------------------------------------------------------------------------------ checks


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` if needed and prove it is a writable directory; a `RunDirError` names the problem.

    Writability is probed by creating a file, because permission bits say nothing on a read-only mount or
    for root.
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output_dir {str(out)!r} exists and is not a directory; choose a directory path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"output_dir {str(out)!r}: {str(parent)!r} is a file, not a directory")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"output_dir {str(out)!r} cannot be created: {_reason(exc)}") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".hacrl-write-probe-", dir=out)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise RunDirError(f"output_dir {str(out)!r} is not writable: {_reason(exc)}") from exc
    return out


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    return exc.strerror or str(exc)


def run_contents(out: Path) -> list[str]:
    """The run files present in `out` (an empty `checkpoints/` does not count)."""
    present = []
    for name in RUN_FILES:
        p = out / name
        if name == CHECKPOINTS:
            if p.is_dir() and any(c.name.startswith("step-") for c in p.iterdir()):
                present.append(name)
        elif p.exists():
            present.append(name)
    return present


def _describe(out: Path) -> str:
    parts = []
    steps = _logged_steps(out / "metrics.jsonl")
    if steps is not None:
        parts.append(f"metrics through step {steps}")
    ckpts = sorted(p.name for p in (out / CHECKPOINTS).glob("step-*")) if (out / CHECKPOINTS).is_dir() else []
    if ckpts:
        parts.append(f"checkpoints {', '.join(ckpts)}")
    if not parts:
        parts.append(", ".join(run_contents(out)))
    return "; ".join(parts)


def _logged_steps(path: Path) -> int | None:
    if not path.is_file():
        return None
    last = None
    with contextlib.suppress(OSError), path.open("rb") as fh:
        for line in fh:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                last = max(last or 0, int(json.loads(line).get("step", 0)))
    return last


# ------------------------------------------------------------------------------------------ the lock


@dataclass(frozen=True)
class LockHolder:
    pid: int | None
    host: str | None
    started: str | None

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}"


def _read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(path.read_text())
        return LockHolder(data.get("pid"), data.get("host"), data.get("started"))
    except (OSError, ValueError, AttributeError):
        return LockHolder(None, None, None)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (EPERM means it exists and is someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: dict[str, tuple[int, int]] = {}
"""Locks this process holds: real path -> (fd, users). Two Trainers of one process may share a directory
(tests resume a run in the same process); the lock keeps other processes out."""


class RunLock:
    """An exclusive, process-lifetime lock on one output directory (see the module docstring)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self._key = os.path.realpath(self.path)
        self._released = False
        if self._key in _HELD:
            fd, users = _HELD[self._key]
            _HELD[self._key] = (fd, users + 1)
        else:
            _HELD[self._key] = (self._acquire(), 1)
        self._finalizer = weakref.finalize(self, _release, self._key)

    def _acquire(self) -> int:
        previous = _read_holder(self.path) if self.path.exists() else None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"cannot create the run lock {str(self.path)!r}: {_reason(exc)}") from exc
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(self.path)
            raise RunDirError(
                f"output_dir {str(self.path.parent)!r} is in use by another hacrl run ({holder}); wait for it to "
                "finish or use another output_dir") from None
        except (ImportError, OSError) as exc:  # no flock here (e.g. some network filesystems): pid check only
            self._fallback_check(previous, exc)
        if previous is not None and previous.pid is not None and previous.pid != os.getpid():
            # a clean release empties the file, so a holder still named here ended without releasing it
            logger.info("output_dir %s: stale lock of %s (that process ended without releasing it); taking it over",
                        self.path.parent, previous)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return fd

    def _fallback_check(self, previous: LockHolder | None, exc: BaseException) -> None:
        if previous is None or previous.pid is None:
            return
        same_host = previous.host == socket.gethostname()
        if same_host and not pid_alive(previous.pid):
            return
        if same_host and previous.pid == os.getpid():
            return
        raise RunDirError(f"output_dir {str(self.path.parent)!r} may be in use by another hacrl run ({previous}); "
                          f"this filesystem has no file locks ({exc}), so that cannot be checked: delete "
                          f"{str(self.path)!r} if that run is over") from None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._finalizer()


def _release(key: str) -> None:
    fd, users = _HELD.get(key, (-1, 0))
    if users > 1:
        _HELD[key] = (fd, users - 1)
        return
    _HELD.pop(key, None)
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # released cleanly: nobody is named (the file itself stays; deleting it would race)
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor drops the flock


# ------------------------------------------------------------------------------------------ opening a run


@dataclass
class RunDir:
    """A locked output directory and what the run in it should do (resume from a checkpoint or start fresh)."""

    path: Path
    lock: RunLock
    resume_from: Path | None = None
    replaced: Path | None = None
    notes: list[str] = field(default_factory=list)
    created: bool = False
    """Whether opening the run created `path` (it did not exist before)."""

    def release(self) -> None:
        self.lock.release()

    def abandon(self) -> None:
        """Release the lock of a run that failed before it started (an unknown zoo recipe, a model that does not
        load); a directory it created and left empty is removed, so a refused run leaves nothing behind."""
        self.release()
        if self.created:
            _remove_if_only_lock(self.path)


def open_run_dir(path: str | os.PathLike[str], *, resume: bool | str | None = False, overwrite: bool = False,
                 config: dict[str, Any] | None = None) -> RunDir:
    """Check, lock and classify the output directory (module docstring); `config` is the run's `to_dict()`,
    used by `resume="auto"` to recognise an earlier attempt of the same run that left no checkpoint."""
    from hacrl import checkpoint as ckpt

    if overwrite and resume:
        raise RunDirError("--resume and --overwrite exclude each other: resume the run in output_dir, or replace it")
    created = not Path(path).expanduser().exists()
    out = check_output_dir(path)
    lock = RunLock(out)
    try:
        if overwrite:
            return _overwrite(out, lock, created=created)
        used = run_contents(out)
        if not resume:
            if used:
                raise RunDirError(
                    f"output_dir {str(out)!r} already holds a run ({_describe(out)}); continue it with --resume, "
                    "replace it with --overwrite (the old run is moved aside, not deleted), or choose another "
                    "output_dir")
            return RunDir(out, lock, created=created)
        root = out / CHECKPOINTS
        if isinstance(resume, str) and resume not in ("auto", "latest"):
            explicit = Path(resume).expanduser()
            if not ckpt.is_complete(explicit):
                raise RunDirError(f"--resume {resume!r} is not a complete checkpoint directory (no valid "
                                  f"{ckpt.MANIFEST}, or a file fails its checksum)")
            inside = explicit.resolve().parent == root.resolve()
            if used and not inside:
                raise RunDirError(f"output_dir {str(out)!r} already holds another run ({_describe(out)}); resume "
                                  f"{str(explicit)!r} into a new output_dir, or pass that run's own checkpoint")
            return RunDir(out, lock, resume_from=explicit)
        latest = ckpt.latest_checkpoint(root)
        if latest is not None:
            return RunDir(out, lock, resume_from=latest)
        skipped = [p.name for p in ckpt.list_checkpoints(root)]
        why = ("there is no checkpoint" if not skipped else
               f"{skipped[0]} is incomplete or fails its checksums" if len(skipped) == 1 else
               f"{', '.join(skipped)} are incomplete or fail their checksums")
        if resume == "auto":
            if not used:
                logger.info("--resume auto: %s holds no run; starting from scratch", out)
                return RunDir(out, lock, created=created)
            if config is not None and _same_run(out, config):
                note = (f"--resume auto: {out} holds an earlier attempt of this run without a complete checkpoint "
                        f"({why}); starting it again from step 0 (its records are rewritten)")
                logger.warning(note)
                return RunDir(out, lock, notes=[note])
            raise RunDirError(f"--resume auto: output_dir {str(out)!r} holds a run ({_describe(out)}) but {why}, and "
                              "its config.yaml is not this run's; --overwrite replaces it (moved aside, not deleted)")
        hint = ("; --overwrite starts again (the old files are moved aside)" if used
                else "; --resume auto starts fresh when there is nothing to resume")
        raise RunDirError(f"--resume: nothing to resume in {str(root)!r}: {why}{hint}")
    except BaseException:
        lock.release()
        if created:
            _remove_if_only_lock(out)
        raise


def _remove_if_only_lock(out: Path) -> None:
    """Undo the creation of `out` by a run that was refused (e.g. `--resume` with nothing to resume): a refused
    run leaves nothing behind, not an empty directory with a lock file in it."""
    with contextlib.suppress(OSError):
        if [p.name for p in out.iterdir()] == [LOCK_FILE]:
            (out / LOCK_FILE).unlink()
            out.rmdir()


def _same_run(out: Path, config: dict[str, Any]) -> bool:
    saved_path = out / "config.yaml"
    try:
        saved = yaml.safe_load(saved_path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(saved, dict) and _identity(saved) == _identity(config)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    ident = json.loads(json.dumps(config, default=str))
    for section, names in _SESSION_FIELDS.items():
        node = ident if not section else ident.get(section, {})
        if isinstance(node, dict):
            for name in names:
                node.pop(name, None)
    ident.pop("output_dir", None)
    return ident


def _overwrite(out: Path, lock: RunLock, *, created: bool) -> RunDir:
    """Move the run in `out` aside (sibling directory), recreate `out` and lock it; nothing is deleted."""
    if not run_contents(out):
        return RunDir(out, lock, created=created)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = out.with_name(f"{out.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    try:
        os.rename(out, target)  # the lock file moves with it; our descriptor keeps holding it until released
    except OSError as exc:
        raise RunDirError(f"--overwrite: cannot move the old run {str(out)!r} aside to {str(target)!r}: "
                          f"{_reason(exc)}; move or delete it yourself") from exc
    out.mkdir()
    new_lock = RunLock(out)
    lock.release()
    note = f"--overwrite: moved the previous run in {out} to {target} (delete it when you no longer need it)"
    logger.warning(note)
    return RunDir(out, new_lock, replaced=target, notes=[note])
