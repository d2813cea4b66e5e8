"""Recorded rollouts and replayed peers: what is written, learning from a record, and every bad record."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config
from hacrl.config import ConfigError, config_from_dict
from hacrl.replay import record_dir
from hacrl.trainer import Trainer

TASK_OPTIONS = {"n_train": 200, "n_eval": 20}


def config(out: Path, **extra: object) -> dict:
    cfg = tiny_run_config(out, algorithm="grpo", steps=2, prompts_per_step=4, minibatch_size=8)
    cfg["task"]["reward_fn"] = "rewards:coin"
    return cfg | extra


def train(cfg: dict, *, resume: bool = False) -> Trainer:
    trainer = Trainer(config_from_dict(cfg), resume=resume)
    try:
        trainer.run()
    finally:
        trainer.close()
    return trainer


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step independent GRPO run of the two test agents that records its rollouts."""
    out = tmp_path_factory.mktemp("replay") / "grpo"
    cfg = config(out)
    cfg["logging"]["record_rollouts"] = True
    train(cfg)
    return out


def lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh.read().splitlines() if line]


def replay_config(out: Path, record: Path, algorithm: str = "graft", steps: int = 2) -> dict:
    cfg = config(out, replay=[{"name": "peer", "path": str(record), "agent": "bpe"}])
    cfg["agents"] = cfg["agents"][:1]  # one live agent learning from the other's stored run
    cfg["algorithm"]["name"] = algorithm
    cfg["training"]["steps"] = steps
    return cfg


def test_a_record_holds_every_response_of_every_step(recorded: Path) -> None:
    directory = record_dir(recorded)
    assert sorted(p.name for p in directory.glob("step-*")) == ["step-000001.jsonl.gz", "step-000002.jsonl.gz"]
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["agents"] == ["char", "bpe"] and meta["task"] == {"name": "arithmetic", "options": TASK_OPTIONS}
    rows = lines(directory / "step-000001.jsonl.gz")
    assert len(rows) == 2 * 4 * 4  # agents x prompts x G
    assert {r["source"] for r in rows} == {"char", "bpe"} and {r["step"] for r in rows} == {1}
    assert all(r["reward"] in (0.0, 1.0) and isinstance(r["text"], str) and r["mean_logp"] <= 0 for r in rows)


@pytest.mark.parametrize("algorithm", ["graft", "sgt"])
def test_learning_from_a_stored_peer_and_resuming_exactly(recorded: Path, tmp_path: Path, algorithm: str) -> None:
    straight = train(replay_config(tmp_path / "straight", recorded, algorithm, steps=3))
    records = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in records if r["type"] == "train"]
    assert [r["agent"] for r in train_rows] == ["char"] * 3  # the peer is never trained
    # steps 1-2 match the record's steps; step 3 reuses the latest recorded occurrence or has no peer group
    assert all(r["replay/peer/responses"] + 4 * r["replay/peer/missing_problems"] == 16 for r in train_rows)
    assert train_rows[0]["replay/peer/responses"] == 16
    train(replay_config(tmp_path / "resumed", recorded, algorithm, steps=1))
    resumed = train(replay_config(tmp_path / "resumed", recorded, algorithm, steps=3), resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert resumed.step == straight.step == 3
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from hacrl.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None
    return load_file(str(ckpt / "agents" / "char" / "model.safetensors"))


def test_a_missing_problem_means_no_peer_group(recorded: Path, tmp_path: Path) -> None:
    record = tmp_path / "partial"
    shutil.copytree(record_dir(recorded), record)
    first = record / "step-000001.jsonl.gz"
    rows = lines(first)
    dropped = rows[0]["problem_id"]
    kept = [r for r in rows if r["problem_id"] != dropped]
    with gzip.open(first, "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in kept))
    for later in record.glob("step-000002*"):
        later.unlink()
    trainer = Trainer(config_from_dict(replay_config(tmp_path / "run", record, steps=1)))
    try:
        metrics = trainer.train_step()["char"]
    finally:
        trainer.close()
    assert metrics["replay/peer/missing_problems"] == 1.0 and metrics["replay/peer/responses"] == 12.0


def test_bad_records_are_refused_or_counted(recorded: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def refused(record: Path, message: str, **cfg_changes: object) -> None:
        cfg = replay_config(tmp_path / "run", record) | cfg_changes
        with pytest.raises(ConfigError, match=message):
            Trainer(config_from_dict(cfg))

    refused(tmp_path / "nowhere", "no meta.json")
    # another task: the recorded meta names other options
    other = tmp_path / "other-task"
    shutil.copytree(record_dir(recorded), other)
    meta = json.loads((other / "meta.json").read_text())
    meta["task"]["options"] = {"n_train": 100, "n_eval": 20}
    (other / "meta.json").write_text(json.dumps(meta))
    refused(other, "recorded for task")
    # problem ids that are not this task's training problems
    foreign = tmp_path / "foreign"
    shutil.copytree(record_dir(recorded), foreign)
    rows = lines(foreign / "step-000001.jsonl.gz")
    rows[0]["problem_id"] = "not-a-problem"
    with gzip.open(foreign / "step-000001.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    refused(foreign, "holds problem 'not-a-problem', which is not a training problem")
    # a truncated file is a clear error naming it
    truncated = tmp_path / "truncated"
    shutil.copytree(record_dir(recorded), truncated)
    data = (truncated / "step-000002.jsonl.gz").read_bytes()
    (truncated / "step-000002.jsonl.gz").write_bytes(data[: len(data) // 2])
    refused(truncated, "step-000002.jsonl.gz cannot be read .* corrupt or truncated")
    # an unknown agent
    cfg = replay_config(tmp_path / "run", recorded)
    cfg["replay"][0]["agent"] = "nobody"
    with pytest.raises(ConfigError, match="no agent 'nobody' in the record"):
        Trainer(config_from_dict(cfg))
    # a malformed line is skipped and counted
    broken = tmp_path / "broken"
    shutil.copytree(record_dir(recorded), broken)
    with gzip.open(broken / "step-000001.jsonl.gz", "at") as fh:
        fh.write('{"source": "bpe", "problem_id": \n')
    with caplog.at_level("WARNING"):
        Trainer(config_from_dict(replay_config(tmp_path / "run2", broken))).close()
    assert "1 malformed record line(s) skipped" in caplog.text


def test_replay_needs_a_rule_without_capability_weights(recorded: Path, tmp_path: Path) -> None:
    for algorithm, message in (("grpo", "trains each agent on its own responses only"),
                               ("hacpo", "weighs peers by their capability")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict(replay_config(tmp_path, recorded, algorithm))
    cfg = replay_config(tmp_path, recorded)
    cfg["replay"][0]["name"] = "char"
    with pytest.raises(ConfigError, match="already the name of an agent"):
        config_from_dict(cfg)
