"""The run directory's rules in-process: the lock and stale locks, the sweeper, resume modes, whole-run time."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_run_config
from hacrl import checkpoint as ckpt
from hacrl.config import config_from_dict
from hacrl.rundir import LOCK_FILE, RunDirError, open_run_dir
from hacrl.trainer import Trainer
from test_trainer import graded_task

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b'{"pid": %d, "host": "elsewhere", "started": "then"}' % os.getpid())
print("held", flush=True)
time.sleep(60)
"""


def test_a_lock_held_by_a_live_process_refuses_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK_FILE)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"in use by another hacrl run \(pid {holder.pid} on host elsewhere"):
            open_run_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    run_dir = open_run_dir(tmp_path)  # the kernel dropped the dead holder's lock
    run_dir.release()


def test_a_stale_lock_is_taken_over_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
    with caplog.at_level(logging.INFO, logger="hacrl.rundir"):
        run_dir = open_run_dir(tmp_path)
    assert f"stale lock of pid {pid} on host {socket.gethostname()}" in caplog.text
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    run_dir.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # a clean release names nobody, so nothing looks stale later


def test_the_sweeper_removes_only_its_own_and_provably_stale_temp_dirs(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    try:
        names = {
            f".tmp-step-000003-{live.pid}@{host}": True,  # another process's write in progress
            f".tmp-step-000003-{int(dead.stdout)}@{host}": False,  # its writer is gone
            f".tmp-step-000003-{os.getpid()}@{host}": False,  # our own failed earlier write
            f".tmp-step-000003-{int(dead.stdout)}@some-other-host": True,  # cannot be checked from here
            f".tmp-step-000003-{int(dead.stdout)}": False,  # the old name format: this host
        }
        for name in names:
            (root / name).mkdir(parents=True)
        ckpt.save_checkpoint(root, 4, lambda tmp: (tmp / "a.txt").write_text("4"), keep_last=2)
        assert {name: (root / name).exists() for name in names} == names
        assert ckpt.latest_checkpoint(root) == root / "step-000004"
    finally:
        live.kill()
        live.wait()


def test_resume_modes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # --resume on a fresh directory: an error; auto: a fresh start
    with pytest.raises(RunDirError, match=r"nothing to resume .* there is no checkpoint; --resume auto starts fresh"):
        open_run_dir(tmp_path / "fresh", resume="latest")
    run_dir = open_run_dir(tmp_path / "fresh", resume="auto")
    assert run_dir.resume_from is None
    run_dir.release()
    # a run killed before its first checkpoint: auto restarts it only when config.yaml says it is this run
    used = tmp_path / "used"
    used.mkdir()
    (used / "metrics.jsonl").write_text('{"type": "eval", "step": 0, "agent": "a"}\n')
    config = {"seed": 0, "training": {"steps": 4}, "output_dir": str(used)}
    (used / "config.yaml").write_text(json.dumps(config | {"training": {"steps": 9}}))
    with caplog.at_level(logging.WARNING, logger="hacrl.rundir"):
        run_dir = open_run_dir(used, resume="auto", config=config)
    assert run_dir.resume_from is None and "earlier attempt of this run without a complete checkpoint" in caplog.text
    run_dir.release()
    with pytest.raises(RunDirError, match=r"its config\.yaml is not this run's; --overwrite replaces it"):
        open_run_dir(used, resume="auto", config=config | {"seed": 1})
    with pytest.raises(RunDirError, match=r"nothing to resume .* --overwrite starts again"):
        open_run_dir(used, resume=True)
    with pytest.raises(RunDirError, match=r"already holds a run \(metrics through step 0\)"):
        open_run_dir(used)
    with pytest.raises(RunDirError, match="exclude each other"):
        open_run_dir(used, resume=True, overwrite=True)
    # a damaged newest checkpoint is skipped; with none left, the error says why
    ckpt.save_checkpoint(used / "checkpoints", 1, lambda tmp: (tmp / "a.txt").write_text("1"), keep_last=2)
    (used / "checkpoints" / "step-000001" / "a.txt").write_text("flipped")
    with pytest.raises(RunDirError, match="step-000001 is incomplete or fails its checksums"):
        open_run_dir(used, resume=True)


def test_read_only_or_non_directory_output_dirs(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        open_run_dir(tmp_path / "file")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        open_run_dir(tmp_path / "file" / "sub")
    if os.geteuid() == 0:
        return  # root writes through permission bits; tests/test_faults.py covers a read-only mount
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="is not writable"):
            open_run_dir(ro)
    finally:
        ro.chmod(0o755)


def test_a_resumed_run_reports_the_whole_runs_time(tmp_path: Path) -> None:
    first = Trainer(config_from_dict(tiny_run_config(tmp_path, steps=2)), task=graded_task())
    done = first.run()
    first.close()
    assert done.sessions == 1 and done.eval_seconds > 0
    second = Trainer(config_from_dict(tiny_run_config(tmp_path, steps=4)), resume=True, task=graded_task())
    summary = second.run()
    second.close()
    assert summary.steps == 4 and summary.sessions == 2
    assert summary.wall_seconds > done.wall_seconds and summary.eval_seconds > done.eval_seconds
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["wall_seconds"] == summary.wall_seconds and saved["sessions"] == 2
