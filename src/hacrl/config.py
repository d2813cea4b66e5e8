"""Typed run configuration, loaded from YAML and validated field by field.

Every error names the dotted field path and what is allowed (`training.steps: expected an integer >= 1,
got 'ten'`), unknown keys are refused with the closest valid name, and `--set a.b=value` overrides are
parsed as YAML scalars and validated the same way. Names follow TRL's GRPOConfig where the meaning is
the same (`num_generations`, `beta`, `epsilon` via eps_low/eps_high, `loss_type`, `temperature`, `top_p`).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import types
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from hacrl.algorithms.names import GRPO_LOSS_TYPES
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


LORA_ALL_LINEAR = "all-linear"
LORA_INSTALL_HINT = "pip install 'hacrl[lora]' (or pip install peft)"


@dataclass
class LoraConfig:
    """Train this agent through LoRA adapters (peft) instead of all its weights (docs/lora.md).

    Why LoRA: full-parameter AdamW holds weights, gradients and two moments per parameter, so a pair of
    billion-parameter agents does not fit on one GPU; with LoRA only the adapters have gradients and optimizer
    state. The names are hacrl's short ones; peft's `lora_alpha` and `lora_dropout` are accepted for them.
    """

    ALIASES: ClassVar[dict[str, str]] = {"lora_alpha": "alpha", "lora_dropout": "dropout"}

    r: int = 16  # adapter rank
    alpha: float | None = None  # peft's lora_alpha; the update is scaled by alpha / r. None: 2 * r
    # peft's lora_dropout. Must be 0: hacrl samples and recomputes log-probs without dropout so that a fresh
    # response's ratio is exactly 1 (GSPO/HACPO clip ratios at 3e-4; dropout would add noise to every ratio).
    dropout: float = 0.0
    # Leaf module names (peft matches `name` or `*.name`), or "all-linear": every Linear/Conv1D layer except the
    # output layer (peft's shorthand).
    target_modules: list[str] | str = LORA_ALL_LINEAR

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r


DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
"""Accepted `agents[i].dtype` values (auto: bf16 on CUDA, fp32 on CPU)."""


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
    lora: LoraConfig | None = None  # None: full-parameter training


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
    # TRL-style reward function(s) `f(prompts, completions, **columns) -> list[float | None]` replacing the task's
    # own verifier: "package.module:function" or "path/to/file.py:function", or a list of them combined with
    # `reward_weights` (TRL's reward_funcs / reward_weights; see hacrl.rewards). The task still supplies prompts.
    reward_fn: str | list[str] | None = None
    reward_weights: list[float] | None = None
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


def _type_name(tp: Any) -> str:
    if get_origin(tp) is list:
        return f"a list of {_type_name(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        errors = []
        for option in inner:  # `str | list[str]`: the first type the value fits
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(inner) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(o) for o in inner)}, got {value!r}")
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
    data = _resolve_aliases(cls, data, where)
    unknown = [k for k in data if k not in known]
    if unknown:
        key = unknown[0]
        aliases = list(getattr(cls, "ALIASES", {}))
        close = difflib.get_close_matches(str(key), [*known, *aliases], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        also = f"; also {', '.join(aliases)}" if aliases else ""
        raise ConfigError(f"{_join(where, str(key))}: unknown field{hint} (valid: {', '.join(known)}{also})")
    kwargs = {}
    for name, f in known.items():
        path = _join(where, name)
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{path}: required field is missing")
    return cls(**kwargs)


def _resolve_aliases(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Rename the other accepted names of a section's fields (`ALIASES`, e.g. peft's `lora_alpha`); giving both
    names of one field is an error."""
    aliases: dict[str, str] = getattr(cls, "ALIASES", {})
    if not any(k in aliases for k in data):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name in out:
            raise ConfigError(f"{_join(where, str(key))}: the same field as {_join(where, name)!r}; give only one")
        out[name] = value
    return out


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
        _validate_lora(agent.lora, f"agents[{i}].lora")
        if agent.dtype not in DTYPE_NAMES:
            raise ConfigError(f"agents[{i}].dtype: {agent.dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
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
    _validate_batches(cfg, preset)
    _validate_rewards(cfg.task)


def _validate_batches(cfg: RunConfig, preset: Any) -> None:
    """Group sizes that give a learning signal, and mini-batches that fit in a learner's batch.

    Advantages are normalised within each prompt's group, so a group of one response has advantage 0 and
    trains nothing (TRL refuses num_generations < 2 for the same reason). A mini-batch larger than the
    learner's batch would silently be the whole batch, one update per step instead of the configured count.
    Responses per prompt and mini-batch sizes follow `Objective.responses_per_prompt` / `minibatch_size`: a
    `grpo_nK` baseline samples K per prompt and scales the mini-batch by K / G, so its mini-batch fits exactly
    when the configured one fits G responses per prompt. Replayed peers add rows whose count is unknown here,
    so pooled batches with replayed peers are not checked.
    """
    t = cfg.training
    given = [a.num_generations or t.num_generations for a in cfg.agents]
    per_agent = [preset.num_generations or g * preset.rollout_multiplier for g in given]
    where = [f"agents[{i}].num_generations" if a.num_generations is not None else "training.num_generations"
             for i, a in enumerate(cfg.agents)]
    if preset.advantage == "source_group":
        for i, g in enumerate(per_agent):
            if g < 2:
                raise ConfigError(f"{where[i]}: must be >= 2 with {preset.name!r}, got {given[i]}: advantages are "
                                  "normalised within each prompt's group of an agent's responses, so a group of one "
                                  "has advantage 0 and trains nothing (TRL's GRPOTrainer refuses it too)")
    elif sum(per_agent) < 2 and not cfg.replay:
        raise ConfigError(f"training.num_generations: {preset.name!r} needs >= 2 responses per prompt over all agents, "
                          f"got {sum(per_agent)}: a group of one has advantage 0 and trains nothing")
    pooled = preset.rows == "pool"
    if pooled and cfg.replay:
        return
    for i, agent in enumerate(cfg.agents):
        # in the configured units (responses at G per prompt; see the docstring for grpo_nK)
        responses = given[i] * (1 if preset.num_generations else preset.rollout_multiplier)
        if pooled:
            responses = sum(g * (1 if preset.num_generations else preset.rollout_multiplier) for g in given)
        batch = t.prompts_per_step * responses
        if t.minibatch_size > batch:
            whose = "the shared pool of every agent" if pooled else "its own responses"
            raise ConfigError(
                f"training.minibatch_size: {t.minibatch_size} is larger than the batch of agent {agent.name!r}, "
                f"{batch} responses per step (training.prompts_per_step {t.prompts_per_step} x {responses} "
                f"responses per prompt, {whose}); set it to at most {batch}, or raise prompts_per_step / "
                "num_generations")


def _validate_rewards(task: TaskConfig) -> None:
    specs = [task.reward_fn] if isinstance(task.reward_fn, str) else list(task.reward_fn or [])
    if isinstance(task.reward_fn, list) and not specs:
        raise ConfigError("task.reward_fn: an empty list; name at least one function, or leave reward_fn out")
    if task.reward_weights is not None:
        if not specs:
            raise ConfigError("task.reward_weights: given without task.reward_fn")
        if len(task.reward_weights) != len(specs):
            raise ConfigError(f"task.reward_weights: {len(task.reward_weights)} weights for {len(specs)} reward "
                              "functions; give one weight per function (as TRL's reward_weights)")
        bad = [w for w in task.reward_weights if not math.isfinite(w)]
        if bad:
            raise ConfigError(f"task.reward_weights: {bad[0]} is not a finite number")
    if not 0 <= task.max_reward_error_rate <= 1:
        raise ConfigError(f"task.max_reward_error_rate: must be in [0, 1], got {task.max_reward_error_rate}")


def _validate_lora(lora: LoraConfig | None, where: str) -> None:
    """Ranges and types of a LoRA section, and that peft is installed; whether the target modules exist needs the
    model, so `hacrl.models.lora.apply_lora` checks that when the agent loads, before any training."""
    if lora is None:
        return
    if lora.r < 1:
        raise ConfigError(f"{where}.r: the adapter rank must be >= 1, got {lora.r}")
    if lora.alpha is not None and not (lora.alpha > 0 and math.isfinite(lora.alpha)):
        raise ConfigError(f"{where}.alpha: must be a number > 0 (the update is scaled by alpha / r), got {lora.alpha}")
    if lora.dropout != 0:
        raise ConfigError(f"{where}.dropout: must be 0, got {lora.dropout}: hacrl samples and recomputes log-probs "
                          "without dropout so that a fresh response's ratio is exactly 1; dropout would add noise to "
                          "every ratio, which GSPO/HACPO clip at 3e-4")
    targets = lora.target_modules
    if isinstance(targets, str):
        if targets != LORA_ALL_LINEAR:
            raise ConfigError(f"{where}.target_modules: a list of module names (e.g. [q_proj, v_proj]) or "
                              f"{LORA_ALL_LINEAR!r}, got {targets!r}")
    elif not targets or not all(t.strip() for t in targets):
        raise ConfigError(f"{where}.target_modules: name at least one module (no empty names), or "
                          f"{LORA_ALL_LINEAR!r}; got {targets!r}")
    if importlib.util.find_spec("peft") is None:
        raise ConfigError(f"{where}: LoRA agents need peft, which is not installed ({LORA_INSTALL_HINT})")


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
        raise ConfigError(f"config file {str(p)!r} does not exist" if not p.exists()
                          else f"config file {str(p)!r} is not a file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                          "save it as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
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
