"""Run the real `hacrl` console script in a subprocess, as a user would, on the tiny test agents."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

import hacrl
from conftest import tiny_run_config

TESTS = Path(__file__).resolve().parent
SOURCE = Path(hacrl.__file__).resolve().parents[1]  # where the hacrl under test was imported from
HACRL = Path(sys.executable).with_name("hacrl")  # the console script; unlike `python -m` it does not add the cwd


def write_config(path: Path, out: Path, **training: Any) -> Path:
    """A tiny run config (test zoo agents, `rewards:graded` so untrained agents get a signal) at `path`."""
    data = tiny_run_config(out, **training)
    data["task"]["reward_fn"] = "rewards:graded"
    data["checkpoint"] = {"every": 1, "keep_last": 2}
    data["threads"] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def import_path(*first: Path) -> str:
    """A PYTHONPATH of `first`, then the sources of the hacrl this test process imported: a subprocess runs the
    code under test even where that is not the installed package (a git worktree put first with PYTHONPATH)."""
    return os.pathsep.join(str(p) for p in (*first, SOURCE))


def env(**extra: str) -> dict[str, str]:
    """The test environment: tests/ importable (for `rewards:graded`), one thread, the session's zoo cache."""
    return os.environ | {"PYTHONPATH": import_path(TESTS), "OMP_NUM_THREADS": "1"} | extra


def hacrl(*args: str, cwd: Path | None = None, timeout: float = 300, environ: dict[str, str] | None = None,
          prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`hacrl ARGS...`; stdout and stderr together in `.stdout`."""
    return subprocess.run([*prefix, str(HACRL), *args], cwd=cwd, env=environ or env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one `hacrl ...: error:` line of a failed run (and proof that there is exactly one and no trace)."""
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]
    lines = [line for line in proc.stdout.splitlines() if ": error: " in line]
    assert len(lines) == 1, proc.stdout[-3000:]
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes (the lock file excluded: it records who held it last)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".hacrl-lock"}


def namespaced_mount() -> tuple[str, ...] | None:
    """A command prefix that runs a shell in a private mount namespace (so a test can mount a tiny tmpfs that
    nobody else sees and that disappears with the process), or None where that is not permitted."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return None
    for prefix in ((unshare, "--mount"), (unshare, "--mount", "--map-root-user")):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                                "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, check=False)
        if probe.returncode == 0:
            return prefix
    return None
