"""Typed run configuration, loaded from YAML and validated field by field.

Every error names the dotted field path and what is allowed (`training.steps: expected an integer >= 1,
got 'ten'`), unknown keys are refused with the closest valid name, and `--set a.b=value` overrides are
parsed as YAML scalars and validated the same way. Names follow TRL's GRPOConfig where the meaning is
the same (`num_generations`, `beta`, `epsilon` via eps_low/eps_high, `loss_type`, `temperature`, `top_p`).
"""

from __future__ import annotations

import difflib
import types
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from hacrl.algorithms.losses import GRPO_LOSS_TYPES
from hacrl.algorithms.presets import PRESETS, get_preset, is_known


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


ROLLOUT_BACKENDS = ("inprocess", "vllm")
VLLM_ONLY_FIELDS = ("gpu_memory_utilization", "max_num_seqs", "enforce_eager", "kv_cache_memory_bytes",
                    "max_model_len", "enable_sleep_mode")


@dataclass
class RolloutConfig:
    """Where an agent's responses come from (docs/vllm.md).

    `inprocess`: the training model itself samples (nothing to synchronise). `vllm`: a vLLM engine in the
    agent's own process samples and gets the learner's weights pushed in place before each generate. The other
    fields are vLLM's own engine arguments under vLLM's names; None leaves the choice to hacrl's per-device
    default (CPU: eager mode and a 256 MiB KV cache; CUDA: vLLM's defaults). Sleep mode is off unless asked
    for, and a no-op (noted once in the log) on a CPU.
    """

    backend: Literal["inprocess", "vllm"] = "inprocess"
    gpu_memory_utilization: float | None = None  # CUDA only: fraction of the GPU this engine may use
    max_num_seqs: int | None = None  # sequences decoded at once (vLLM's continuous batch)
    enforce_eager: bool | None = None  # None: True on CPU (no compilation), False on CUDA (CUDA graphs)
    kv_cache_memory_bytes: int | None = None  # explicit KV-cache size; None: 256 MiB on CPU, vLLM's on CUDA
    max_model_len: int | None = None  # None: the model's own context length
    enable_sleep_mode: bool | None = None  # CUDA: free the engines' GPU memory while the agents train
    # The old-policy log-probs of the agent's own responses (docs/vllm.md): "recompute" = the trainer's, from one
    # no-grad forward at the start of the step (a fresh self ratio is exactly 1); "engine" = the sampler's, with a
    # truncated importance-sampling weight min(pi_trainer / pi_engine, importance_sampling_cap) per response.
    # None: "recompute" for vllm, "engine" for inprocess (there the sampler is the training model itself).
    old_logprobs: Literal["recompute", "engine"] | None = None
    importance_sampling_cap: float | None = 2.0  # "engine" only; None: no correction


@dataclass
class AgentConfig:
    """One agent: a local Hugging Face directory or `zoo:RECIPE`, and its own optimiser settings."""

    name: str
    model: str
    lr: float = 1e-4
    weight_decay: float = 0.0
    device: str = "cpu"
    dtype: str = "auto"
    prompt_template: str | None = None
    use_chat_template: bool | None = None
    system_prompt: str | None = None
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    num_generations: int | None = None  # per-agent G_j (docs/method.md §1); None = training.num_generations
    threads: int | None = None  # torch threads for this agent's worker (Ray executor); None = executor default
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclass
class AlgorithmConfig:
    name: str = "hacpo"
    eps_low: float | None = None  # None: 3e-4 for GSPO/HACPO, 0.2 for GRPO
    eps_high: float | None = None  # None: 4e-4 for GSPO/HACPO, 0.28 for GRPO
    alpha: float = 1.0
    delta: float = 0.2
    delta_step: float = 0.025
    capability_window: int = 5
    ratio_bounds: list[float] = field(default_factory=lambda: [0.1, 10.0])
    max_reward: float = 1.0
    beta: float = 0.0
    loss_type: str = "dapo"
    # None: the preset's order (self_first for HACPO, peer_last for GRAFT and SGT)
    minibatch_order: Literal["self_first", "shuffle", "peer_last", "peer_first"] | None = None
    advantage_eps: float = 1e-6
    gate_delta: float = 0.8  # GRAFT: transferred responses need exp(lbar_receiver_old - lbar_source) > gate_delta
    nll_weight: float = 0.1  # SGT: weight (lambda) of the supervised term on correct peer responses


@dataclass
class TaskConfig:
    """`name`: arithmetic (built-in) or math (MATH-style benchmarks from local files); `options` go to the task."""

    name: str = "arithmetic"
    options: dict[str, Any] = field(default_factory=dict)
    # A TRL-style reward function `f(prompts, completions, **columns) -> list[float]` replacing the task's own
    # verifier: "package.module:function" or "path/to/file.py:function". The task still supplies the prompts.
    reward_fn: str | None = None
    max_reward_error_rate: float = 0.5
    # "test": the whole held-out split. "validation" / "test-holdout": its two kind-balanced halves; tune
    # hyperparameters on "validation", report on "test-holdout".
    eval_split: Literal["test", "validation", "test-holdout"] = "test"


@dataclass
class TrainingConfig:
    steps: int = 100
    prompts_per_step: int = 16
    num_generations: int = 8
    minibatch_size: int = 64  # fixed in responses (docs/method.md §2)
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = 0  # 0 or None: off
    max_grad_norm: float = 1.0
    max_completion_tokens: int | None = None  # cap for re-tokenised cross responses; None = 2 x max_new_tokens
    # Split each mini-batch into micro-batches of at most this many tokens (prompt + completion per response) and
    # accumulate their gradients into one optimizer step; the loss keeps the whole mini-batch's normaliser.
    # None: one forward/backward pass per mini-batch.
    max_tokens_per_microbatch: int | None = None
    eval_every: int = 25
    eval_limit: int | None = None
    eval_max_new_tokens: int | None = None
    max_nonfinite_updates: int = 3


@dataclass
class CheckpointConfig:
    every: int = 50
    keep_last: int = 2


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    progress: bool = True
    # Write every live agent's verified responses to OUTPUT_DIR/rollouts/ (text, mean log-prob, reward; see
    # hacrl.replay), so a later run can learn from this one as a replayed peer.
    record_rollouts: bool = False


@dataclass
class ReplayConfig:
    """A replayed peer: agent `agent` of the run recorded at `path` (its output_dir or its rollouts/ directory),
    joined to the pool as source `name`; neither loaded nor trained (hacrl.replay)."""

    name: str
    path: str
    agent: str


@dataclass
class RunConfig:
    agents: list[AgentConfig]
    run_name: str = "hacrl"
    seed: int = 0
    output_dir: str = "runs/hacrl"
    executor: Literal["sequential", "ray"] = "sequential"
    ray_address: str | None = None
    threads: int | None = None  # torch threads of the in-process executor; None = 1 (see README, Threads)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    replay: list[ReplayConfig] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_POSITIVE_INTS = {"training.steps", "training.prompts_per_step", "training.num_generations",
                  "training.minibatch_size", "training.max_new_tokens", "training.eval_every",
                  "training.max_nonfinite_updates", "checkpoint.every", "checkpoint.keep_last",
                  "algorithm.capability_window", "training.eval_limit", "training.eval_max_new_tokens",
                  "training.max_completion_tokens", "training.max_tokens_per_microbatch", "threads"}


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(value, inner[0], where)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number it is
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of fields, got {data!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{_join(where, str(key))}: unknown field{hint} (valid: {', '.join(known)})")
    kwargs = {}
    for name, f in known.items():
        path = _join(where, name)
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{path}: required field is missing")
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _validate(cfg: RunConfig) -> None:
    if not cfg.agents:
        raise ConfigError("agents: at least one agent is required")
    names = [a.name for a in cfg.agents]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"agents: duplicate agent name(s) {dupes}; each agent needs its own name")
    for i, agent in enumerate(cfg.agents):
        if not agent.name or "/" in agent.name:
            raise ConfigError(f"agents[{i}].name: must be non-empty and contain no '/', got {agent.name!r}")
        if not agent.lr > 0:
            raise ConfigError(f"agents[{i}].lr: must be > 0, got {agent.lr}")
        if agent.num_generations is not None and agent.num_generations < 1:
            raise ConfigError(f"agents[{i}].num_generations: must be >= 1, got {agent.num_generations}")
        if agent.threads is not None and agent.threads < 1:
            raise ConfigError(f"agents[{i}].threads: must be >= 1, got {agent.threads}")
        _validate_rollout(cfg, i)
    if not is_known(cfg.algorithm.name):
        raise ConfigError(f"algorithm.name: {cfg.algorithm.name!r} is not one of {', '.join(PRESETS)}, or "
                          "grpo_nK / gspo_nK (an independent baseline with K responses per prompt)")
    if cfg.algorithm.loss_type not in GRPO_LOSS_TYPES:
        raise ConfigError(f"algorithm.loss_type: {cfg.algorithm.loss_type!r} is not one of "
                          f"{', '.join(GRPO_LOSS_TYPES)}")
    preset = get_preset(cfg.algorithm.name)
    if preset.shares_rollouts and len(cfg.agents) + len(cfg.replay) < 2:
        raise ConfigError(f"algorithm.name: {preset.name!r} shares rollouts between agents and needs at least 2 "
                          f"agents (or a replayed peer), got {len(cfg.agents)}")
    for i, peer in enumerate(cfg.replay):
        if peer.name in names or [r.name for r in cfg.replay].count(peer.name) > 1:
            raise ConfigError(f"replay[{i}].name: {peer.name!r} is already the name of an agent or another replayed "
                              "peer")
        if not peer.name or "/" in peer.name:
            raise ConfigError(f"replay[{i}].name: must be non-empty and contain no '/', got {peer.name!r}")
    if cfg.replay and not preset.shares_rollouts:
        raise ConfigError(f"replay: {preset.name!r} trains each agent on its own responses only; a replayed peer "
                          "needs a sharing rule (graft, sgt or naive)")
    if cfg.replay and (preset.advantage == "capability" or preset.cross_weights == "omega"):
        raise ConfigError(f"replay: {preset.name!r} weighs peers by their capability, which a replayed peer has no "
                          "estimate of on steps its record lacks; use graft, sgt or naive")
    rb = cfg.algorithm.ratio_bounds
    if len(rb) != 2 or not (0 < rb[0] <= 1 <= rb[1]):
        raise ConfigError(f"algorithm.ratio_bounds: must be [low, high] with 0 < low <= 1 <= high, got {rb}")
    if not 0 <= cfg.algorithm.delta <= 1:
        raise ConfigError(f"algorithm.delta: must be in [0, 1] (cross lower bound 1 - delta), got "
                          f"{cfg.algorithm.delta}")
    if not 0 <= cfg.algorithm.gate_delta < 1:
        raise ConfigError(f"algorithm.gate_delta: must be in [0, 1) (transferred responses need a compatibility "
                          f"score above it), got {cfg.algorithm.gate_delta}")
    for name in ("alpha", "delta_step", "beta", "nll_weight"):
        if getattr(cfg.algorithm, name) < 0:
            raise ConfigError(f"algorithm.{name}: must be >= 0, got {getattr(cfg.algorithm, name)}")
    t = cfg.training
    if not t.temperature > 0:
        raise ConfigError(f"training.temperature: must be > 0, got {t.temperature}")
    if not 0 < t.top_p <= 1:
        raise ConfigError(f"training.top_p: must be in (0, 1], got {t.top_p}")
    if t.top_k is not None and t.top_k < 0:
        raise ConfigError(f"training.top_k: must be >= 0 (0 or null: off), got {t.top_k}")
    values = cfg.to_dict()
    for dotted in _POSITIVE_INTS:
        value: Any = values
        for part in dotted.split("."):
            value = value[part]
        if value is not None and value < 1:
            raise ConfigError(f"{dotted}: must be >= 1, got {value}")


def _validate_rollout(cfg: RunConfig, i: int) -> None:
    """What can be checked without loading anything: ranges, CUDA-only settings on a CPU agent, vLLM settings
    on the in-process backend, and sampling settings whose log-probs vLLM cannot report (docs/vllm.md)."""
    agent, where = cfg.agents[i], f"agents[{i}].rollout"
    r = agent.rollout
    if r.importance_sampling_cap is not None and not r.importance_sampling_cap >= 1:
        raise ConfigError(f"{where}.importance_sampling_cap: must be >= 1 (or null for no correction), got "
                          f"{r.importance_sampling_cap}")
    if r.backend != "vllm":
        used = [name for name in VLLM_ONLY_FIELDS if getattr(r, name) is not None]
        if used:
            raise ConfigError(f"{where}.{used[0]}: only used by the vllm backend, but {where}.backend is "
                              f"{r.backend!r}; remove it or set backend: vllm")
        return
    on_cuda = agent.device.startswith("cuda")
    if r.gpu_memory_utilization is not None and not 0 < r.gpu_memory_utilization <= 1:
        raise ConfigError(f"{where}.gpu_memory_utilization: must be in (0, 1], got {r.gpu_memory_utilization}")
    for name in ("max_num_seqs", "kv_cache_memory_bytes"):
        value = getattr(r, name)
        if value is not None and value < 1:
            raise ConfigError(f"{where}.{name}: must be >= 1, got {value}")
    if r.max_model_len is not None and r.max_model_len < 2:
        raise ConfigError(f"{where}.max_model_len: must be >= 2 (a prompt token and a new one), got "
                          f"{r.max_model_len}")
    if not on_cuda:
        if r.gpu_memory_utilization is not None:  # vLLM would read it as a fraction of the machine's RAM
            raise ConfigError(f"{where}.gpu_memory_utilization: a CUDA-only setting, but agents[{i}].device is "
                              f"{agent.device!r} (on a CPU set kv_cache_memory_bytes instead)")
    elif agent.device not in ("cuda", "cuda:0") and cfg.executor == "sequential":
        raise ConfigError(f"agents[{i}].device: a vLLM engine runs on its process's first GPU, so "
                          f"{agent.device!r} works only with executor: ray (one GPU per agent actor) or "
                          "CUDA_VISIBLE_DEVICES; use device: cuda here")
    t = cfg.training
    if t.temperature != 1.0 and (t.top_p < 1.0 or bool(t.top_k)):
        raise ConfigError(
            f"{where}.backend: vLLM cannot report log-probs of the full distribution at training.temperature "
            f"{t.temperature} with top-p/top-k truncation (its raw log-probs ignore the temperature, its processed "
            "ones are renormalised over the kept tokens); use temperature 1, or top_p 1 and top_k 0, or backend "
            "inprocess")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    cfg = _build(RunConfig, data, "")
    _validate(cfg)
    return cfg


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key.sub=value` pairs (value parsed as YAML: 10, 1e-4, true, [a, b]); `agents.0.lr=...` indexes lists."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. training.steps=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
        node: Any = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict | list):
                    raise ConfigError(f"--set {key}: {part!r} is not a section")
    return data


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{str(p)!r}: the top level must be a mapping of sections")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a YAML run configuration."""
    data = read_yaml_mapping(path)
    from hacrl.envvars import EnvVarError, expand_env

    data = apply_overrides(data, overrides or [])  # first, so a field set with --set never needs its variable
    try:
        data = expand_env(data)
    except EnvVarError as exc:
        raise ConfigError(str(exc)) from exc
    return config_from_dict(data)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
