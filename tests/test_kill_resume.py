"""Kill, race and starve a real `hacrl train` process, and require that nothing is lost.

SIGKILL at 5 seeded random moments and SIGINT: resuming gives final weights identical to an uninterrupted run;
the same after a SIGKILL for GRAFT, SGT, a run that records its rollouts (the record too) and a replayed-peer run.
A second run started on the same output directory, a re-run without --resume, and a disk that fills up during
a checkpoint: each is refused or stopped with one clear line, the first run's files are untouched, and the run
still ends with the uninterrupted run's weights."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from clitools import HACRL, env, error_line, hacrl, namespaced_mount, snapshot
from conftest import tiny_run_config
from hacrl.checkpoint import is_complete, latest_checkpoint
from hacrl.models.zoo import build

STEPS = 6


def write_config(out: Path, *, reward: str = "rewards:graded", edit: Callable[[dict], None] | None = None,
                 **training: Any) -> Path:
    """A run config over the test agents, a checkpoint every step (`edit` changes the dict before it is saved)."""
    data = tiny_run_config(out, **{"steps": STEPS} | training)
    data["task"]["reward_fn"] = reward  # rewards:graded gives untrained agents a learning signal
    data["checkpoint"] = {"every": 1, "keep_last": 2}
    data["threads"] = 1
    if edit is not None:
        edit(data)
    path = out.parent / f"{out.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hacrl.cli", "train", str(config), *extra], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(config: Path, *extra: str) -> str:
    proc = start(config, *extra)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def final_weights(out: Path, steps: int = STEPS) -> dict[str, dict[str, torch.Tensor]]:
    final = latest_checkpoint(out / "checkpoints")
    assert final is not None and final.name == f"step-{steps:06d}"
    return {agent.name: {k: v for f in sorted(agent.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
            for agent in (final / "agents").iterdir()}  # a LoRA agent's file holds its adapters


def assert_same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    assert a.keys() == b.keys()
    for agent in a:
        assert a[agent] and a[agent].keys() == b[agent].keys()
        for key in a[agent]:
            assert torch.equal(a[agent][key], b[agent][key]), f"{agent}: {key} differs"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, float]:
    weights, duration, _ = straight_run(tmp_path_factory)
    return weights, duration


_STRAIGHT: dict[bool, tuple[dict, float, Path]] = {}


def straight_run(tmp_path_factory: pytest.TempPathFactory, *, lora: bool = False) -> tuple[dict, float, Path]:
    """The uninterrupted reference run (once per module and kind): final weights, wall time, output directory."""
    if lora not in _STRAIGHT:
        build("test-gpt2-char")
        build("test-llama-bpe")  # built once here, not raced by the subprocesses
        out = tmp_path_factory.mktemp("kill") / ("straight-lora" if lora else "straight")
        begin = time.perf_counter()
        finish(write_config(out, edit=lora_agent if lora else None))
        _STRAIGHT[lora] = (final_weights(out), time.perf_counter() - begin, out)
    return _STRAIGHT[lora]


def test_sigkill_at_five_random_moments_then_resume(straight: tuple[dict, float], tmp_path: Path) -> None:
    reference, duration = straight
    rng = random.Random(1234)
    for attempt in range(5):
        out = tmp_path / f"run{attempt}"
        config = write_config(out)
        proc = start(config)
        delay = rng.uniform(0.3, 0.95) * duration
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        latest = latest_checkpoint(out / "checkpoints")
        print(f"kill {attempt}: after {delay:.1f}s of {duration:.1f}s, last checkpoint "
              f"{latest.name if latest else 'none'}")
        finish(config, "--resume", "auto")  # a kill before the first checkpoint leaves nothing to resume
        assert_same(reference, final_weights(out))


def lora_agent(data: dict) -> None:
    """The Llama + BPE test agent trains LoRA adapters beside the full GPT-2 + character-tokenizer agent."""
    data["agents"][1]["lora"] = {"r": 4}


def test_a_lora_agent_beside_a_full_one_resumes_exactly_after_sigkill_and_both_export(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The issue's done-when: a LoRA agent and a full agent with different tokenizers train, checkpoint, are
    killed, resume to identical weights, and export to directories that plain transformers loads."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reference, _, _ = straight_run(tmp_path_factory, lora=True)
    assert all("lora_A" in k or "lora_B" in k for k in reference["bpe"])  # adapters only, never the base
    assert any(k.endswith("wte.weight") for k in reference["char"])  # the full agent's whole model
    out = tmp_path / "run"
    config = write_config(out, edit=lora_agent)
    kill_after_checkpoint(config, out, 2, last=STEPS)
    finish(config, "--resume")
    assert_same(reference, final_weights(out))

    final = out / "checkpoints" / f"step-{STEPS:06d}" / "agents"
    ids = torch.tensor([[3, 5, 7, 9, 11, 13]])
    for agent, extra in (("char", ()), ("bpe", ("--merge",))):
        proc = hacrl("export", str(out), "--agent", agent, "--out", str(tmp_path / agent), *extra)
        assert proc.returncode == 0, proc.stdout[-3000:]
        with torch.no_grad():
            exported = AutoModelForCausalLM.from_pretrained(tmp_path / agent)(input_ids=ids).logits
            if agent == "char":
                trained = AutoModelForCausalLM.from_pretrained(final / agent)(input_ids=ids).logits
            else:
                base = json.loads((final / agent / "adapter_config.json").read_text())["base_model_name_or_path"]
                trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                                    final / agent)(input_ids=ids).logits
        assert float((exported - trained).abs().max()) < 1e-5, agent


def test_sigint_finishes_the_step_checkpoints_and_resumes(straight: tuple[dict, float], tmp_path: Path) -> None:
    reference, _ = straight
    out = tmp_path / "interrupted"
    config = write_config(out)
    proc = start(config)
    deadline = time.time() + 120
    while latest_checkpoint(out / "checkpoints") is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]
    if "stopped early on a signal" in text:  # the usual case: stopped before the last step
        stopped = latest_checkpoint(out / "checkpoints")
        assert stopped is not None and stopped.name < f"step-{STEPS:06d}"
        finish(config, "--resume")
    assert_same(reference, final_weights(out))


# ------------------------------------------------------------------ a used output directory, and two runs at once


def test_a_rerun_into_a_used_output_dir_is_refused_and_overwrite_moves_it_aside(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    _, _, used = straight_run(tmp_path_factory)
    run = tmp_path / "run"
    shutil.copytree(used, run)
    config = write_config(run)
    before = snapshot(run)

    line = error_line(hacrl("train", str(config)))  # the mistake of the issue: same command again, no --resume
    assert f"output_dir '{run}' already holds a run (metrics through step {STEPS}; checkpoints" in line
    assert "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before  # not one byte of the old run changed

    proc = hacrl("train", str(config), "--overwrite", "--set", "training.steps=1")
    assert proc.returncode == 0, proc.stdout[-3000:]
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and f"moved the previous run in {run} to {moved[0]}" in proc.stdout
    assert snapshot(moved[0]) == before  # the old run, complete, beside the new one
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]
    steps = {json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert steps == {0, 1}  # the new run's own records only


def test_resume_with_nothing_to_resume_is_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fresh")
    line = error_line(hacrl("train", str(config), "--resume"))
    assert f"--resume: nothing to resume in '{tmp_path / 'fresh' / 'checkpoints'}'" in line
    assert "--resume auto starts fresh" in line
    assert not (tmp_path / "fresh").exists()  # a refused run leaves nothing behind, not even its lock file


def test_a_second_run_on_the_same_output_dir_is_refused_and_the_first_loses_nothing(
        straight: tuple[dict, float], tmp_path: Path) -> None:
    reference, _ = straight
    out = tmp_path / "shared"
    config = write_config(out)
    first = start(config)
    deadline = time.time() + 120
    while not (out / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # frozen mid-run: alive and holding its lock, however fast the machine
    try:
        for extra in ((), ("--resume",), ("--resume", "auto"), ("--overwrite",)):
            line = error_line(hacrl("train", str(config), *extra))
            assert f"output_dir '{out}' is in use by another hacrl run (pid {first.pid} on host " in line, line
    finally:
        first.send_signal(signal.SIGCONT)
    text, _ = first.communicate(timeout=300)
    assert first.returncode == 0, text[-3000:]
    assert_same(reference, final_weights(out))
    raw = (out / "metrics.jsonl").read_bytes()
    assert b"\0" not in raw
    keys = [(r["type"], r["step"], r["agent"]) for r in map(json.loads, raw.decode().splitlines())]
    assert len(keys) == len(set(keys)) and max(k[1] for k in keys) == STEPS
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000005", "step-000006"]


# ------------------------------------------------------------------ a disk that fills up during a checkpoint


def _allocated(directory: Path) -> int:
    """Bytes a directory's files take on a tmpfs (whole 4 KiB pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in directory.rglob("*") if p.is_file())


def test_a_full_disk_during_a_checkpoint_stops_cleanly_and_resume_loses_nothing(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A real ENOSPC: the run directory lives on a tmpfs (in a private mount namespace, so nothing leaks)
    sized for two checkpoints and a half. The third checkpoint cannot be written; afterwards the tmpfs is
    grown and the run resumed."""
    prefix = namespaced_mount()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (needs root or unprivileged user namespaces)")
    reference, _, used = straight_run(tmp_path_factory)
    size = int(2.5 * _allocated(used / "checkpoints" / f"step-{STEPS:06d}")) + 64 * 1024
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    disk.mkdir()
    config = write_config(disk / "out")
    moved_config = tmp_path / "run.yaml"
    shutil.move(config, moved_config)  # the config lives outside the small disk
    script = f"""
        set -u
        mount -t tmpfs -o size={size} tmpfs {disk}
        {HACRL} train {moved_config} > {tmp_path}/full.log 2>&1; echo $? > {tmp_path}/full.rc
        cp -a {disk}/out {saved}
        mount -o remount,size={8 * size} {disk}
        {HACRL} train {moved_config} --resume > {tmp_path}/resumed.log 2>&1; echo $? > {tmp_path}/resumed.rc
        cp -a {disk}/out {tmp_path}/final
    """
    subprocess.run([*prefix, "sh", "-c", script], env=env(),
                   timeout=600, check=True)
    full_log = (tmp_path / "full.log").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "2", full_log[-3000:]
    assert "Traceback" not in full_log, full_log[-3000:]
    line = next(line for line in full_log.splitlines() if ": error: " in line)
    ckpts = saved / "checkpoints"
    assert ("no space left on device while writing checkpoint " + str(disk / "out" / "checkpoints" / "step-000003")
            in line), line
    assert f"the last good checkpoint is {disk / 'out' / 'checkpoints' / 'step-000002'}" in line
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000001", "step-000002"]  # partial temp dir removed
    assert is_complete(ckpts / "step-000002")
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert (tmp_path / "resumed.rc").read_text().strip() == "0", resumed_log[-3000:]
    assert_same(reference, final_weights(tmp_path / "final"))


# ------------------------------------------------------------------ sharing rules, a recording run and a replayed peer

RULE_STEPS = 10


def rule_config(out: Path, algorithm: str, edit: Callable[[dict], None] | None = None) -> Path:
    """`algorithm` on a 0/1 reward (all-fail and mixed groups both occur, so GRAFT and SGT transfer)."""
    def change(data: dict) -> None:
        data["algorithm"]["name"] = algorithm
        if edit is not None:
            edit(data)

    return write_config(out, reward="rewards:coin", edit=change, steps=RULE_STEPS, prompts_per_step=8,
                        minibatch_size=8)


def kill_after_checkpoint(config: Path, out: Path, step: int, *, last: int = RULE_STEPS) -> None:
    """Start a run and SIGKILL it as soon as it has written checkpoint `step`, wherever it is then (sampling, an
    update, recording rollouts, the next checkpoint): frozen at once with SIGSTOP, however fast the machine."""
    proc = start(config)
    deadline = time.time() + 300
    wanted = f"step-{step:06d}"
    while proc.poll() is None and time.time() < deadline and not any(
            p.name >= wanted for p in (out / "checkpoints").glob("step-*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {text[-3000:]}"
    latest = latest_checkpoint(out / "checkpoints")
    assert latest is not None and latest.name < f"step-{last:06d}"


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def recorded_rollouts(out: Path) -> dict[str, bytes]:
    """Every step file of a run's rollout record, decompressed (gzip headers carry a time stamp)."""
    return {p.name: gzip.decompress(p.read_bytes()) for p in sorted((out / "rollouts").glob("step-*.jsonl.gz"))}


def _record(data: dict) -> None:
    data["logging"]["record_rollouts"] = True


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted GRPO run of both test agents that records its rollouts (the peer the replay test reads)."""
    out = tmp_path_factory.mktemp("record") / "grpo"
    finish(rule_config(out, "grpo", _record))
    return out


@pytest.mark.parametrize("algorithm", ["graft", "sgt"])
def test_graft_and_sgt_resume_exactly_after_sigkill(algorithm: str, tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(rule_config(straight, algorithm))
    train = [r for r in records(straight) if r["type"] == "train"]
    assert sum(r["share/transferred_rows" if algorithm == "graft" else "share/sgt_pairs"] for r in train) > 0
    config = rule_config(killed, algorithm)
    kill_after_checkpoint(config, killed, 2)
    finish(config, "--resume")
    assert_same(final_weights(straight, RULE_STEPS), final_weights(killed, RULE_STEPS))


def test_a_recording_run_resumes_exactly_after_sigkill(recording: Path, tmp_path: Path) -> None:
    """The rollouts a killed run recorded after its checkpoint are written again, identically, on resume."""
    config = rule_config(tmp_path / "killed", "grpo", _record)
    kill_after_checkpoint(config, tmp_path / "killed", 2)
    finish(config, "--resume")
    assert_same(final_weights(recording, RULE_STEPS), final_weights(tmp_path / "killed", RULE_STEPS))
    assert recorded_rollouts(tmp_path / "killed") == recorded_rollouts(recording)
    assert len(recorded_rollouts(recording)) == RULE_STEPS


def test_a_replay_run_resumes_exactly_after_sigkill(recording: Path, tmp_path: Path) -> None:
    """One live agent learning with GRAFT from the recorded responses of the other (never loaded)."""
    def replay(data: dict) -> None:
        data["agents"] = data["agents"][:1]
        data["replay"] = [{"name": "peer", "path": str(recording), "agent": "bpe"}]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(rule_config(straight, "graft", replay))
    assert sum(r["replay/peer/responses"] for r in records(straight) if r["type"] == "train") > 0
    config = rule_config(killed, "graft", replay)
    kill_after_checkpoint(config, killed, 2)
    finish(config, "--resume")
    assert_same(final_weights(straight, RULE_STEPS), final_weights(killed, RULE_STEPS))
