"""Every fault of a working day through the real `hacrl` CLI: one clear line, exit status 2, nothing lost.

Each test names the fault it plays; docs/reliability.md lists the outcome of each. The checks that must
happen before any model loads run with an empty zoo cache: had a model been loaded, the zoo would have
started building it into that cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from clitools import HACRL, env, error_line, hacrl, namespaced_mount, snapshot, write_config


def _no_zoo_build(cache: Path) -> None:
    assert not (cache / "zoo").exists(), "a model was loaded (the zoo started building) before the error"


@pytest.fixture
def empty_cache(tmp_path: Path) -> dict[str, str]:
    return env(HACRL_CACHE=str(tmp_path / "empty-cache"))


# ------------------------------------------------------------------ caught before anything loads


def test_output_dir_that_is_a_file(tmp_path: Path, empty_cache: dict[str, str]) -> None:
    (tmp_path / "out").write_text("my notes")
    config = write_config(tmp_path / "run.yaml", tmp_path / "out")
    line = error_line(hacrl("train", str(config), environ=empty_cache))
    assert f"output_dir '{tmp_path / 'out'}' exists and is not a directory" in line
    assert (tmp_path / "out").read_text() == "my notes"
    line = error_line(hacrl("train", str(config), "--set", f"output_dir={tmp_path / 'out' / 'run'}",
                            environ=empty_cache))
    assert f"'{tmp_path / 'out'}' is a file, not a directory" in line
    _no_zoo_build(tmp_path / "empty-cache")


def test_read_only_output_dir(tmp_path: Path, empty_cache: dict[str, str]) -> None:
    """A real read-only filesystem (a tmpfs mounted `ro` in a private mount namespace): permission bits would
    prove nothing for root."""
    prefix = namespaced_mount()
    if prefix is None:
        pytest.skip("cannot mount a read-only tmpfs here (needs root or unprivileged user namespaces)")
    ro = tmp_path / "ro"
    ro.mkdir()
    config = write_config(tmp_path / "run.yaml", ro / "out")
    script = f"mount -t tmpfs -o ro,size=64k tmpfs {ro} && exec {HACRL} train {config}"
    proc = subprocess.run([*prefix, "sh", "-c", script], env=empty_cache, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
    assert f"output_dir '{ro / 'out'}' cannot be created: read-only file system" in error_line(proc)
    _no_zoo_build(tmp_path / "empty-cache")


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes(write_config(tmp_path / "ok.yaml", tmp_path / "out").read_bytes()
                       + "# r\u00e9sum\u00e9\n".encode("latin-1"))
    line = error_line(hacrl("train", str(config)))
    assert f"config file '{config}' is not UTF-8 text (byte 0xe9 on line" in line and "save it as UTF-8" in line


def test_unknown_zoo_name(tmp_path: Path, empty_cache: dict[str, str]) -> None:
    config = write_config(tmp_path / "run.yaml", tmp_path / "out")
    line = error_line(hacrl("train", str(config), "--set", "agents.1.model=zoo:test-llama-bep", environ=empty_cache))
    assert ("agents[1].model: agent 'bpe': unknown zoo recipe 'test-llama-bep'; did you mean 'zoo:test-llama-bpe'?"
            in line)
    _no_zoo_build(tmp_path / "empty-cache")  # checked before the first agent was built
    assert not (tmp_path / "out").exists()  # the refused run removed the output_dir it had created


def test_config_errors_never_import_torch(tmp_path: Path) -> None:
    """`hacrl --help`, a config typo, a used output_dir and a model path that does not exist are answered before
    torch/transformers load (the interpreter's own import log shows every module imported)."""
    config = write_config(tmp_path / "run.yaml", tmp_path / "out")
    profile = env(PYTHONPROFILEIMPORTTIME="1")
    typo = tmp_path / "typo.yaml"
    typo.write_text(config.read_text().replace("prompts_per_step", "prompts_per_stp"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.jsonl").write_text("")
    runs = {
        "help": hacrl("--help", environ=profile),
        "typo": hacrl("train", str(typo), environ=profile),
        "dtype": hacrl("train", str(config), "--set", "agents.0.dtype=bf17", environ=profile),
        "used": hacrl("train", str(config), environ=profile),
        "hub id": hacrl("train", str(config), "--set", "agents.0.model=Qwen/Qwen3-4B", environ=profile),
    }
    assert runs["help"].returncode == 0
    assert "training.prompts_per_stp: unknown field; did you mean 'prompts_per_step'?" in error_line(runs["typo"])
    assert "agents[0].dtype: 'bf17' is not one of auto, float32" in error_line(runs["dtype"])
    assert "already holds a run" in error_line(runs["used"])
    line = error_line(runs["hub id"])
    assert "model directory 'Qwen/Qwen3-4B' does not exist; if 'Qwen/Qwen3-4B' is a Hugging Face Hub id" in line
    assert "download it to a local directory first (`hf download Qwen/Qwen3-4B --local-dir models/Qwen3-4B`)" in line
    for name, proc in runs.items():
        imported = {line.split("|")[-1].strip() for line in proc.stdout.splitlines() if line.startswith("import time:")}
        assert "hacrl.cli" in imported, name
        heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "transformers", "numpy", "datasets"))
        assert not heavy, f"{name}: imported {heavy[:5]}"


# ------------------------------------------------------------------ during a run


def test_reward_function_returning_one_number(tmp_path: Path) -> None:
    """The first call is the evaluation before training (4 problems in the test config)."""
    (tmp_path / "scalar_reward.py").write_text("def reward(prompts, completions, **kwargs):\n    return 1.0\n")
    config = write_config(tmp_path / "run.yaml", tmp_path / "out")
    proc = hacrl("train", str(config), "--set", "task.reward_fn=scalar_reward.py:reward", cwd=tmp_path)
    line = error_line(proc)
    assert "reward function scalar_reward.py:reward returned a single number (1.0) for 4 completions" in line
    assert "one number per completion" in line


class _Payload:
    """What a tampered optimizer file carries: unpickling it would call print (it could be anything)."""

    def __reduce__(self) -> tuple:
        return (print, ("this ran inside torch.load",))


def _rewrite(checkpoint: Path, name: str, data: bytes) -> None:
    """Replace one file and fix the manifest's checksum, so only hacrl's own loader stands in the way."""
    path = checkpoint / name
    path.write_bytes(data)
    manifest = json.loads((checkpoint / "MANIFEST.json").read_text())
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (checkpoint / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    proc = hacrl("train", str(write_config(out.parent / "run.yaml", out)))
    assert proc.returncode == 0, proc.stdout[-3000:]
    return out


def _copy(run: Path, to: Path) -> tuple[Path, Path]:
    shutil.copytree(run, to)
    data = yaml.safe_load((run.parent / "run.yaml").read_text()) | {"output_dir": str(to)}
    (to.parent / "run.yaml").write_text(yaml.safe_dump(data))
    return to, to.parent / "run.yaml"


def test_corrupt_trainer_state(one_step_run: Path, tmp_path: Path) -> None:
    run, config = _copy(one_step_run, tmp_path / "run")
    _rewrite(run / "checkpoints" / "step-000001", "trainer_state.json", b'{"format": 1, "step": ')
    before = snapshot(run)
    line = error_line(hacrl("train", str(config), "--resume"))
    where = run / "checkpoints" / "step-000001"
    assert f"cannot resume from '{where}': trainer_state.json is unreadable or not JSON" in line
    assert "resume from an earlier checkpoint (--resume PATH) or start a new run" in line
    assert snapshot(run) == before


def test_tampered_optimizer_state_is_refused(one_step_run: Path, tmp_path: Path) -> None:
    run, config = _copy(one_step_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "step-000001"
    evil = tmp_path / "evil.pt"
    torch.save({"state": {}, "param_groups": [], "extra": _Payload()}, evil)
    _rewrite(ckpt, "agents/char/optimizer.pt", evil.read_bytes())
    proc = hacrl("train", str(config), "--resume")
    line = error_line(proc)
    assert f"refused to load '{ckpt / 'agents' / 'char' / 'optimizer.pt'}': it is not plain tensor state" in line
    assert "do not load it with weights_only=False (that runs any code inside it)" in line
    assert "this ran inside torch.load" not in proc.stdout


def test_disk_full_while_logging_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel's own ENOSPC: the metrics file handle is swapped for one on /dev/full (every write to it
    fails with ENOSPC), the rest of the run writes normally."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    import hacrl.tracking
    from hacrl.cli import main

    real_init = hacrl.tracking.Tracker.__init__

    def on_a_full_disk(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        self._file.close()
        self._file = open("/dev/full", "w")  # noqa: SIM115 -- closed by Tracker.close

    monkeypatch.setattr(hacrl.tracking.Tracker, "__init__", on_a_full_disk)
    config = write_config(tmp_path / "run.yaml", tmp_path / "out")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"hacrl train: error: no space left on device: {tmp_path / 'out' / 'metrics.jsonl'}; there is no " \
           "complete checkpoint yet" in err
    assert "Traceback" not in err
