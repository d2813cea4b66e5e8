"""`hacrl export`: one agent of a run's checkpoint as a plain Hugging Face directory.

Why: a checkpoint's agent directory also holds optimizer and RNG state, and a LoRA agent's holds only its
adapters, so neither is what a user deploys. The export is what `transformers` (full weights) or `transformers` +
`peft` (an adapter directory) load with nothing of hacrl installed:

* a full-parameter agent: its weights, config, generation config and tokenizer (`--merge` changes nothing);
* a LoRA agent: the peft adapter directory (`adapter_config.json`, `adapter_model.safetensors`) and the tokenizer,
  whose `base_model_name_or_path` names the base the adapters belong to; with `--merge`, the base with the
  adapters merged in (`peft`'s `merge_and_unload`), in the dtype the agent trained in.

Every export also gets `hacrl_export.json` (which run, checkpoint and base model it came from). The export
is written into a temporary sibling and renamed into place, so a failed export leaves nothing behind; an existing
non-empty `--out` is refused (nothing is ever overwritten).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from hacrl.checkpoint import ADAPTER_FILES, OPTIMIZER_FILE, WORKER_STATE_FILE, is_complete, latest_checkpoint
from hacrl.config import AgentConfig, ConfigError, RunConfig, config_from_dict, read_yaml_mapping
from hacrl.rundir import CHECKPOINTS

__all__ = ["EXPORT_NOTE", "ExportError", "Exported", "export_agent"]

EXPORT_NOTE = "hacrl_export.json"
_TRAINING_STATE = (OPTIMIZER_FILE, WORKER_STATE_FILE)

ExportKind = Literal["full", "lora-adapter", "lora-merged"]


class ExportError(ValueError):
    """An export that cannot be made; the message names the argument and what to do."""


@dataclass(frozen=True)
class Exported:
    out: Path
    agent: str
    kind: ExportKind
    checkpoint: Path
    base_model: str | None  # a LoRA agent's base model directory (None: full weights)

    def how_to_load(self) -> str:
        if self.kind == "lora-adapter":
            return (f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({self.base_model!r}), "
                    f"{str(self.out)!r})")
        return f"AutoModelForCausalLM.from_pretrained({str(self.out)!r})"


def export_agent(run_dir: str | Path, agent: str, out: str | Path, *, merge: bool = False,
                 checkpoint: str | Path | None = None) -> Exported:
    """Export agent `agent` of the run in `run_dir` (its newest complete checkpoint, or `checkpoint`: a
    checkpoint directory or a step number) to the new directory `out`."""
    run = Path(run_dir)
    cfg = _run_config(run)
    config = _agent_config(cfg, agent, run)
    source = _checkpoint(run, checkpoint) / "agents" / agent
    if not source.is_dir():
        raise ExportError(f"--agent: checkpoint {str(source.parent.parent)!r} holds no directory for agent "
                          f"{agent!r}; it is damaged or from another run")
    target = _check_out(Path(out))
    kind: ExportKind = "full" if config.lora is None else ("lora-merged" if merge else "lora-adapter")
    base = None if config.lora is None else _base_path(config)
    tmp = target.parent / f".{target.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if kind == "lora-merged":
            _write_merged(config, source, tmp)
        else:
            _copy_agent_files(source, tmp, skip=_TRAINING_STATE)
        note = {"agent": agent, "kind": kind, "run_dir": str(run.resolve()), "checkpoint": str(source.parent.parent),
                "base_model": config.model if config.lora is not None else None, "base_model_path": base,
                "lora": asdict(config.lora) if config.lora is not None else None}
        (tmp / EXPORT_NOTE).write_text(json.dumps(note, indent=1))
        if target.exists():  # an empty directory (checked above): replaced by the finished export
            target.rmdir()
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(target, agent, kind, source.parent.parent, base)


def _run_config(run: Path) -> RunConfig:
    if not run.is_dir():
        raise ExportError(f"RUN_DIR {str(run)!r} " + ("is not a directory" if run.exists() else "does not exist")
                          + "; give the output_dir of a `hacrl train` run")
    path = run / "config.yaml"
    if not path.is_file():
        raise ExportError(f"RUN_DIR {str(run)!r} is not a hacrl run directory (it has no config.yaml); give the "
                          "output_dir of a `hacrl train` run")
    try:
        return config_from_dict(read_yaml_mapping(path))
    except ConfigError as exc:
        raise ExportError(f"RUN_DIR {str(run)!r}: its config.yaml cannot be read: {exc}") from exc


def _agent_config(cfg: RunConfig, agent: str, run: Path) -> AgentConfig:
    for config in cfg.agents:
        if config.name == agent:
            return config
    raise ExportError(f"--agent: the run in {str(run)!r} has no agent {agent!r}; its agents are "
                      f"{', '.join(a.name for a in cfg.agents)}")


def _checkpoint(run: Path, checkpoint: str | Path | None) -> Path:
    root = run / CHECKPOINTS
    if checkpoint is None:
        latest = latest_checkpoint(root)
        if latest is None:
            raise ExportError(f"RUN_DIR {str(run)!r} has no complete checkpoint in {str(root)!r}; train (or resume) "
                              "until one is written, or name one with --checkpoint")
        return latest
    given = str(checkpoint)
    path = root / f"step-{int(given):06d}" if given.isdigit() else Path(given)
    if not path.is_dir():
        raise ExportError(f"--checkpoint: {str(path)!r} does not exist; the run's checkpoints are "
                          f"{', '.join(p.name for p in sorted(root.glob('step-*'))) or 'none'}")
    if not is_complete(path):
        raise ExportError(f"--checkpoint: {str(path)!r} is incomplete or fails its checksums; export another one")
    return path


def _check_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out: {str(out)!r} already exists and is not an empty directory; export into a new "
                          "directory (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _base_path(config: AgentConfig) -> str:
    from hacrl.models.loading import resolve_model_path

    return str(resolve_model_path(config.model, progress=False).resolve())


def _copy_agent_files(source: Path, target: Path, *, skip: tuple[str, ...]) -> None:
    """The agent directory's files into `target`, except `skip` and those `target` already has."""
    target.mkdir(exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in skip and not (target / path.name).exists():
            shutil.copy2(path, target / path.name)


def _write_merged(config: AgentConfig, source: Path, target: Path) -> None:
    """The base loaded as the agent trained it (its dtype, on the CPU), the saved adapters merged in by peft."""
    from peft import PeftModel

    from hacrl.models.loading import load_agent

    dtype = config.dtype
    if dtype == "auto":  # what "auto" meant on the agent's own device
        dtype = "bfloat16" if config.device.startswith("cuda") else "float32"
    base = load_agent(config.name, config.model, device="cpu", dtype=dtype, trust_remote_code=config.trust_remote_code,
                      progress=False)
    merged = PeftModel.from_pretrained(base.model, source).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    _copy_agent_files(source, target, skip=(*_TRAINING_STATE, *ADAPTER_FILES))
