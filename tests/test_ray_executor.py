"""The Ray executor: same weights as in-process, exact resume through Ray, clear errors.

The end-to-end test starts Ray twice (about 15 s each on a 2-core machine: Ray itself, then one actor
process per agent importing torch and transformers), so it is one test that covers the whole life cycle:
start -> train -> compare -> remote error -> close (Ray stopped) -> start again -> resume -> compare.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config
from hacrl.algorithms import resolve_objective
from hacrl.config import AgentConfig, AlgorithmConfig, ConfigError, config_from_dict
from hacrl.models.loading import AgentLoadError
from hacrl.rollout.sampler import SamplingParams
from hacrl.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from hacrl.tasks.base import FunctionRewardTask
from hacrl.trainer import Trainer
from hacrl.workers import AgentWorker, WorkerSettings

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'hacrl[ray]'); CI installs "
                                                   "only .[dev]")


def _weights(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    if hasattr(trainer.executor, "workers"):
        return [w.state_tensors() for w in trainer.executor.workers]  # type: ignore[attr-defined]
    return trainer.executor.call(AgentWorker.state_tensors, [()] * trainer.n)


def _assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]], what: str) -> None:
    assert len(a) == len(b)
    for agent, (wa, wb) in enumerate(zip(a, b, strict=True)):
        assert wa.keys() == wb.keys()
        different = [k for k in wa if not torch.equal(wa[k], wb[k])]
        assert not different, f"{what}: agent {agent} differs in {different[:5]}"


def _config(out: Path, steps: int, executor: str) -> dict:
    # One torch thread in-process too: the actors run one thread each, and matching thread counts keep CPU
    # kernels' summation order (hence the bits) the same.
    return tiny_run_config(out, steps=steps) | {"executor": executor, "threads": 1}


def graded_task() -> FunctionRewardTask:
    """Arithmetic prompts with a reward that varies between responses, so the untrained test agents get a
    gradient (with 0/1 arithmetic rewards they score 0 everywhere and nothing would change)."""
    arithmetic = ArithmeticTask(ArithmeticConfig(n_train=200, n_eval=20))

    def reward(prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        return [(len(c) % 7) / 6 for c in completions]

    return FunctionRewardTask("graded", arithmetic.train_problems(), arithmetic.eval_problems(), reward)


def _run(cfg: dict, *, resume: bool = False) -> tuple[Trainer, list[dict[str, torch.Tensor]]]:
    trainer = Trainer(config_from_dict(cfg), resume=resume, task=graded_task())
    try:
        trainer.run()
        return trainer, _weights(trainer)
    finally:
        trainer.close()


@needs_ray
def test_ray_matches_in_process_and_resumes_exactly(tmp_path: Path) -> None:
    import ray

    assert not ray.is_initialized()
    _, in_process_2 = _run(_config(tmp_path / "seq2", 2, "sequential"))
    straight, in_process_4 = _run(_config(tmp_path / "seq4", 4, "sequential"))
    assert any(not torch.equal(in_process_2[0][k], in_process_4[0][k]) for k in in_process_2[0]), \
        "training did not change the weights between step 2 and 4; the comparison would prove nothing"

    ray_cfg = _config(tmp_path / "ray", 2, "ray")
    trainer = Trainer(config_from_dict(ray_cfg), task=graded_task())
    try:
        assert type(trainer.executor).__name__ == "RayExecutor"
        assert ray.is_initialized()
        info = trainer.executor.actor_info  # type: ignore[attr-defined]
        assert [i["threads"] for i in info] == [1, 1]
        assert len({i["pid"] for i in info}) == 2  # one process per agent
        trainer.run()
        _assert_same(_weights(trainer), in_process_2, "Ray vs in-process after 2 steps")
        # a failing remote call names the agent and keeps the remote error type and text
        with pytest.raises(ValueError, match=r"agent 'char' \(load in its Ray actor\): checkpoint .* does not match"):
            trainer.executor.call(AgentWorker.load, [(str(tmp_path / "no-such-checkpoint"),)] * 2)
    finally:
        trainer.close()
    assert not ray.is_initialized(), "close() must stop the Ray instance that hacrl started"

    resumed, resumed_weights = _run(_config(tmp_path / "ray", 4, "ray"), resume=True)  # fresh actors
    assert resumed.step == 4
    _assert_same(resumed_weights, in_process_4, "Ray resumed at step 2 vs in-process straight to step 4")
    assert resumed.capability.state_dict() == straight.capability.state_dict()
    assert resumed.totals["bpe"].rollouts == straight.totals["bpe"].rollouts
    assert not ray.is_initialized()


@needs_ray
def test_a_lora_agent_on_ray_matches_in_process(tmp_path: Path) -> None:
    """A LoRA agent's adapters are initialised from its own seed, not from whatever the process's global RNG holds,
    so its actor builds (and trains) the same agent as the in-process executor."""
    configs = {executor: _config(tmp_path / executor, 2, executor) for executor in ("sequential", "ray")}
    for cfg in configs.values():
        cfg["agents"][1]["lora"] = {"r": 4}
    _, in_process = _run(configs["sequential"])
    _, on_ray = _run(configs["ray"])
    assert any("lora_B" in k and bool(v.abs().sum() > 0) for k, v in in_process[1].items())  # the adapters learned
    _assert_same(on_ray, in_process, "LoRA agent on Ray vs in-process after 2 steps")


def _settings() -> WorkerSettings:
    return WorkerSettings(index=0, seed=0, sampling=SamplingParams(max_new_tokens=4),
                          objective=resolve_objective(AlgorithmConfig(name="gspo"), max_completion_length=4),
                          minibatch_size=4, max_grad_norm=1.0, max_completion_tokens=8, max_nonfinite_updates=3)


@needs_ray
def test_cuda_without_gpu_fails_before_ray_starts() -> None:
    import ray

    from hacrl.ray_executor import RayExecutor

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    agent = AgentConfig(name="gpu-agent", model="zoo:test-gpt2-char", device="cuda")
    with pytest.raises(AgentLoadError, match="no CUDA GPU"):
        RayExecutor([agent], [_settings()])
    assert not ray.is_initialized()


@needs_ray
def test_remote_errors_name_the_agent_without_ray_internals() -> None:
    import ray.exceptions

    from hacrl.ray_executor import AgentWorkerError, _agent_error, agent_resources
    from hacrl.workers import NonFiniteUpdateError

    trace = "Traceback (most recent call last):\n  File \"workers.py\", line 1, in update\nNonFiniteUpdateError: x"
    task_error = ray.exceptions.RayTaskError("call", trace, NonFiniteUpdateError("3 consecutive updates had NaN"))
    err = _agent_error("bpe", "update", task_error)
    assert type(err) is NonFiniteUpdateError  # the CLI still reports it as a user error, in one line
    assert str(err) == "agent 'bpe' (update in its Ray actor): 3 consecutive updates had NaN"
    assert any("workers.py" in note for note in err.__notes__)

    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"odd {a} {b}")

    err = _agent_error("char", "generate", ray.exceptions.RayTaskError("call", "", Odd(1, 2)))
    assert isinstance(err, AgentWorkerError) and err.agent == "char"
    assert str(err) == "agent 'char' failed in generate(): Odd: odd 1 2"

    died = _agent_error("char", "update", ray.exceptions.ActorDiedError())
    assert isinstance(died, AgentWorkerError) and "its Ray actor died during update()" in str(died)

    assert agent_resources(AgentConfig(name="a", model="m")) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert agent_resources(AgentConfig(name="a", model="m", threads=2, device="cuda:1")) == {
        "num_cpus": 2.0, "num_gpus": 1.0}


def test_missing_ray_gives_an_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    monkeypatch.delitem(sys.modules, "hacrl.ray_executor", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'hacrl\[ray\]'"):
        importlib.import_module("hacrl.ray_executor")
    with pytest.raises(ConfigError, match=r"pip install 'hacrl\[ray\]'"):
        Trainer(config_from_dict(_config(tmp_path, 1, "ray")))
