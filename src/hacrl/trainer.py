"""The coordinator of a collaborative run: the only place that knows the order of things.

One step (HACPO.md §6):
  1. draw the next prompts;                                    (DataStream)
  2. every agent samples G_j responses per prompt;              (workers, via the executor)
  3. every response is verified once; the reward is shared;     (task.score)
  4. each agent's capability is updated with its own rewards;   (CapabilityTracker)
  5. for every learner: its rows of the pool, advantages and omegas are computed here, and the learner
     runs its mini-batches (self first, then cross) in its own worker;
  6. metrics per agent go to JSONL / TensorBoard / the progress bar.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hacrl import checkpoint as ckpt
from hacrl.algorithms import CapabilityTracker, capability_aware_advantages, get_preset, group_advantages
from hacrl.config import ConfigError, RunConfig, dump_config
from hacrl.executors import Executor, SequentialExecutor
from hacrl.pool import Trajectory
from hacrl.preflight import check_models
from hacrl.rewards import bind_trainer_state, score_with_ids
from hacrl.rollout.sampler import Sample, SamplingParams
from hacrl.rundir import RunDir, open_run_dir
from hacrl.tasks.base import Problem, Task
from hacrl.tasks.registry import make_task
from hacrl.tracking import Tracker, format_table
from hacrl.workers import UpdatePlan, WorkerSettings

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_RESUME_KEYS = ("agents", "algorithm", "task", "seed", "prompts_per_step", "num_generations")


class ResumeError(ValueError):
    """A checkpoint that belongs to a different run configuration."""


class DataStream:
    """Training problems in a seeded order, epoch after epoch; `position` is all the state it has."""

    def __init__(self, n: int, seed: int, position: int = 0) -> None:
        if n < 1:
            raise ValueError("the task has no training problems")
        self.n, self.seed, self.position = n, seed, position
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def _order_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=gen)
        return self._order

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, offset = divmod(self.position, self.n)
            out.append(int(self._order_of(epoch)[offset]))
            self.position += 1
        return out


@dataclass
class AgentTotals:
    rollouts: int = 0
    generated_tokens: int = 0
    updates: int = 0
    sample_seconds: float = 0.0
    train_seconds: float = 0.0


@dataclass
class RunSummary:
    agents: list[str]
    steps: int
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    totals: dict[str, dict[str, float]]
    wall_seconds: float
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    eval_seconds: float = 0.0  # greedy held-out evaluation, over the whole run (wall_seconds is training steps)
    sessions: int = 1  # processes that worked on this run (1 + resumes)

    def table(self) -> str:
        rows = []
        for name in self.agents:
            b, a, t = self.before.get(name, {}), self.after.get(name, {}), self.totals[name]
            kinds = sorted(k for k in a if k != "accuracy")
            per_kind = ", ".join(f"{k} {b.get(k, float('nan')):.3f}->{a[k]:.3f}" for k in kinds)
            rows.append([name, b.get("accuracy", float("nan")), a.get("accuracy", float("nan")), per_kind,
                         int(t["rollouts"]), int(t["generated_tokens"]), int(t["updates"])])
        return format_table(["agent", "acc before", "acc after", "per kind (before->after)", "rollouts",
                             "gen. tokens", "updates"], rows)


def _fingerprint(cfg: RunConfig) -> dict[str, Any]:
    return {
        "agents": [[a.name, a.model] for a in cfg.agents],
        "algorithm": cfg.algorithm.name,
        "task": asdict(cfg.task),
        "seed": cfg.seed,
        "prompts_per_step": cfg.training.prompts_per_step,
        "num_generations": [a.num_generations or cfg.training.num_generations for a in cfg.agents],
    }


class Trainer:
    def __init__(self, cfg: RunConfig, *, resume: bool | str = False, overwrite: bool = False, task: Task | None = None,
                 executor: Executor | None = None, run_dir: RunDir | None = None) -> None:
        """`task` overrides `cfg.task` (e.g. a `FunctionRewardTask` around a TRL-style reward function).

        `resume`: False (the output directory must not hold a run), True/"latest" (continue from its newest
        complete checkpoint; an error when there is none), "auto" (resume when possible), or a checkpoint path.
        `overwrite`: move a run already in the output directory aside and start fresh (`hacrl.rundir`).
        `run_dir`: the output directory already opened with those settings (the CLI opens it before torch loads).
        """
        self.cfg = cfg
        self.preset = get_preset(cfg.algorithm.name)
        # the output directory, the lock and the model paths are checked before any data or model is loaded
        self.run_dir = run_dir or open_run_dir(cfg.output_dir, resume=resume, overwrite=overwrite, config=cfg.to_dict())
        check_models(cfg.agents)
        self.task = task if task is not None else make_task(cfg.task)
        bind_trainer_state(self.task, lambda: self.step, cfg.training.steps)
        self.train_problems: list[Problem] = list(self.task.train_problems())
        eval_problems = list(self.task.eval_problems())
        if cfg.training.eval_limit is not None:
            eval_problems = balanced_prefix(eval_problems, cfg.training.eval_limit)
        if not self.train_problems:
            raise ConfigError(f"task {self.task.name!r} has no training problems")
        if not eval_problems:
            raise ConfigError(f"task {self.task.name!r} has no evaluation problems")
        self.eval_problems = eval_problems
        self.out = Path(cfg.output_dir)
        self.names = [a.name for a in cfg.agents]
        self.n = len(cfg.agents)
        t = cfg.training
        self.generations = [(a.num_generations or t.num_generations) * self.preset.rollout_multiplier
                            for a in cfg.agents]
        self.executor = executor or self._make_executor()
        self.train_problems = self._fitting(self.train_problems, "training", t.max_new_tokens)
        self.eval_problems = self._fitting(self.eval_problems, "evaluation",
                                           t.eval_max_new_tokens or t.max_new_tokens)
        self.capability = CapabilityTracker(self.n, window=cfg.algorithm.capability_window,
                                            ratio_bounds=tuple(cfg.algorithm.ratio_bounds))  # type: ignore[arg-type]
        self.stream = DataStream(len(self.train_problems), cfg.seed)
        self.step = 0
        self.totals = {name: AgentTotals() for name in self.names}
        self.evaluations: list[dict[str, Any]] = []
        self.wall_seconds = 0.0
        self.eval_seconds = 0.0
        self.sessions = 1
        self._stop_requested = False
        resume_from = self.run_dir.resume_from
        if resume_from is not None:
            self._load(resume_from)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_config(cfg))
        self.tracker = Tracker(self.out, tensorboard=cfg.logging.tensorboard,
                               resume_step=self.step if resume_from is not None else None)

    # ---------------------------------------------------------------- construction

    def _settings(self) -> list[WorkerSettings]:
        t, cfg = self.cfg.training, self.cfg
        sampling = SamplingParams(temperature=t.temperature, top_p=t.top_p, max_new_tokens=t.max_new_tokens)
        return [
            WorkerSettings(index=i, seed=cfg.seed, sampling=sampling, algorithm=cfg.algorithm, preset=self.preset,
                           minibatch_size=t.minibatch_size, max_grad_norm=t.max_grad_norm,
                           max_completion_tokens=t.max_completion_tokens or 2 * t.max_new_tokens,
                           max_nonfinite_updates=t.max_nonfinite_updates, threads=a.threads,
                           progress=cfg.logging.progress)
            for i, a in enumerate(cfg.agents)
        ]

    def _make_executor(self) -> Executor:
        if self.cfg.executor == "ray":
            try:
                from hacrl.ray_executor import RayExecutor
            except ImportError as exc:
                raise ConfigError(f"executor: 'ray' needs the ray extra (pip install 'hacrl[ray]'): {exc}") from exc
            return RayExecutor(self.cfg.agents, self._settings(), address=self.cfg.ray_address)
        return SequentialExecutor(self.cfg.agents, self._settings(), threads=self.cfg.threads or 1)

    def _fitting(self, problems: list[Problem], split: str, max_new_tokens: int) -> list[Problem]:
        """Drop (count and log) prompts that do not fit some agent's context with `max_new_tokens` to spare."""
        prompts = [p.prompt for p in problems]
        fits = self.executor.map("prompts_that_fit", [(prompts, max_new_tokens)] * self.n)
        keep = [all(f[i] for f in fits) for i in range(len(problems))]
        for name, f in zip(self.names, fits, strict=True):
            too_long = len(f) - sum(f)
            if too_long:
                logger.warning("%d of %d %s prompts do not fit agent %s's context with %d new tokens; skipped",
                               too_long, len(f), split, name, max_new_tokens)
        kept = [p for p, k in zip(problems, keep, strict=True) if k]
        self.skipped_prompts = getattr(self, "skipped_prompts", {}) | {split: len(problems) - len(kept)}
        if not kept:
            raise ConfigError(f"no {split} prompt fits every agent's context with {max_new_tokens} new tokens; "
                              "lower training.max_new_tokens or use shorter prompts")
        return kept

    # ---------------------------------------------------------------- one step

    def _sample(self, problems: list[Problem]) -> list[Trajectory]:
        prompts = [p.prompt for p in problems]
        results: list[tuple[list[Sample], float]] = self.executor.map(
            "generate", [(prompts, g) for g in self.generations])
        flat: list[tuple[int, int, Sample]] = []  # (agent, prompt index, sample)
        for agent, (samples, seconds) in enumerate(results):
            g = self.generations[agent]
            totals = self.totals[self.names[agent]]
            totals.sample_seconds += seconds
            totals.rollouts += len(samples)
            totals.generated_tokens += sum(len(s.completion_ids) for s in samples)
            flat += [(agent, k // g, s) for k, s in enumerate(samples)]
        rewards = score_with_ids(self.task, [problems[q] for _, q, _ in flat], [s.text for _, _, s in flat],
                                 [s.completion_ids for _, _, s in flat])
        return [Trajectory.from_sample(s, prompt_index=q, problem_id=problems[q].id, prompt=problems[q].prompt,
                                       source=agent, reward=r, kind=problems[q].kind)
                for (agent, q, s), r in zip(flat, rewards, strict=True)]

    def _plans(self, pool: list[Trajectory]) -> list[UpdatePlan]:
        algo = self.cfg.algorithm
        rewards = torch.tensor([t.reward for t in pool], dtype=torch.float64)
        groups = torch.tensor([t.prompt_index for t in pool])
        sources = torch.tensor([t.source for t in pool])
        plans = []
        joint = group_advantages(rewards, groups, eps=algo.advantage_eps) if self.preset.advantage == "joint" else None
        for k in range(self.n):
            if not self.preset.shares_rollouts:
                own = (sources == k).nonzero().flatten()
                adv = group_advantages(rewards[own], groups[own], eps=algo.advantage_eps)
                plans.append(UpdatePlan(self.step, [pool[i] for i in own.tolist()], adv.tolist(),
                                        [1.0] * len(own)))
                continue
            if self.preset.advantage == "capability":
                adv = capability_aware_advantages(
                    rewards, groups, sources, k, self.capability.capabilities(),
                    ratio_bounds=tuple(algo.ratio_bounds), max_reward=algo.max_reward,  # type: ignore[arg-type]
                    eps=algo.advantage_eps)
            else:
                assert joint is not None
                adv = joint
            omegas = self.capability.ratios_for(sources, k)
            plans.append(UpdatePlan(self.step, pool, adv.tolist(), omegas.tolist()))
        return plans

    def train_step(self) -> dict[str, dict[str, float]]:
        problems = [self.train_problems[i] for i in self.stream.take(self.cfg.training.prompts_per_step)]
        pool = self._sample(problems)
        sources = torch.tensor([t.source for t in pool])
        rewards = torch.tensor([t.reward for t in pool], dtype=torch.float64)
        self.capability.update(rewards, sources)
        caps = self.capability.capabilities()
        results = self.executor.map("update", [(plan,) for plan in self._plans(pool)])
        self.step += 1
        metrics: dict[str, dict[str, float]] = {}
        for k, name in enumerate(self.names):
            own = [t for t in pool if t.source == k]
            totals = self.totals[name]
            totals.train_seconds += results[k]["train_seconds"]
            totals.updates += int(results[k]["updates"])
            lengths = [len(t.completion_ids) for t in own]
            m = {
                "reward": sum(t.reward for t in own) / len(own),
                "accuracy": sum(t.reward >= self.cfg.algorithm.max_reward for t in own) / len(own),
                "capability": float(caps[k]),
                "omega_from_others": (sum(self.capability.ratio(j, k) for j in range(self.n) if j != k)
                                      / max(self.n - 1, 1)),
                "completion_tokens_mean": sum(lengths) / len(lengths),
                "truncated_frac": sum(t.truncated for t in own) / len(own),
                "rollouts_total": float(totals.rollouts),
                "generated_tokens_total": float(totals.generated_tokens),
                **results[k],
            }
            metrics[name] = m
            self.tracker.log("train", self.step, name, m)
        return metrics

    # ---------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Greedy accuracy of every agent on the held-out split, overall and per problem kind."""
        start = time.perf_counter()
        max_new = self.cfg.training.eval_max_new_tokens or self.cfg.training.max_new_tokens
        prompts = [p.prompt for p in self.eval_problems]
        texts = self.executor.map("greedy", [(prompts, max_new)] * self.n)
        out: dict[str, dict[str, float]] = {}
        for name, completions in zip(self.names, texts, strict=True):
            scores = self.task.score(self.eval_problems, completions)
            result = {"accuracy": sum(scores) / len(scores)}
            for kind in sorted({p.kind for p in self.eval_problems}):
                ks = [s for s, p in zip(scores, self.eval_problems, strict=True) if p.kind == kind]
                if len({p.kind for p in self.eval_problems}) > 1:
                    result[kind] = sum(ks) / len(ks)
            out[name] = result
            totals = self.totals[name]
            self.tracker.log("eval", self.step, name, {**result, "rollouts_total": float(totals.rollouts),
                                                       "wall_seconds": self.wall_seconds})
            self.evaluations.append({"step": self.step, "agent": name, **result,
                                     "rollouts": totals.rollouts, "wall_seconds": self.wall_seconds})
        self.eval_seconds += time.perf_counter() - start
        return out

    # ---------------------------------------------------------------- checkpoints

    def save(self) -> Path:
        def write(tmp: Path) -> None:
            self.executor.map("save", [(str(tmp / "agents" / name),) for name in self.names])
            state = {
                "format": 1, "step": self.step, "data_position": self.stream.position,
                "capability": self.capability.state_dict(), "fingerprint": _fingerprint(self.cfg),
                "totals": {n: asdict(t) for n, t in self.totals.items()}, "evaluations": self.evaluations,
                "wall_seconds": self.wall_seconds, "eval_seconds": self.eval_seconds, "sessions": self.sessions,
            }
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))

        return ckpt.save_checkpoint(self.out / "checkpoints", self.step, write, keep_last=self.cfg.checkpoint.keep_last)

    def _load(self, path: Path) -> None:
        state = ckpt.read_state(path / STATE_FILE, required=("step", "data_position", "capability", "fingerprint",
                                                             "totals", "evaluations", "wall_seconds"))
        saved, mine = state["fingerprint"], _fingerprint(self.cfg)
        diffs = [f"{k}: checkpoint {saved.get(k)!r} vs config {mine[k]!r}" for k in _RESUME_KEYS
                 if saved.get(k) != mine[k]]
        if diffs:
            raise ResumeError(f"cannot resume from {str(path)!r}: it was written by a different run configuration ("
                              + "; ".join(diffs) + "). Use a new output_dir to start a different run.")
        self.executor.map("load", [(str(path / "agents" / name),) for name in self.names])
        self.step = int(state["step"])
        self.stream.position = int(state["data_position"])
        self.capability.load_state_dict(state["capability"])
        self.totals = {n: AgentTotals(**t) for n, t in state["totals"].items()}
        self.evaluations = list(state["evaluations"])
        self.wall_seconds = float(state["wall_seconds"])
        self.eval_seconds = float(state.get("eval_seconds", 0.0))
        self.sessions = int(state.get("sessions", 1)) + 1
        logger.info("resumed from %s at step %d", path, self.step)

    # ---------------------------------------------------------------- the loop

    def _request_stop(self, signum: int, _frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self._stop_requested = True
        logger.warning("signal %d: finishing the current step, then writing a checkpoint", signum)

    def run(self) -> RunSummary:
        cfg, t = self.cfg, self.cfg.training
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        if _in_main_thread():
            for s in previous:
                signal.signal(s, self._request_stop)
        try:
            return self._loop(cfg, t)
        finally:
            if _in_main_thread():
                for s, handler in previous.items():
                    signal.signal(s, handler)
            self.tracker.close()

    def _loop(self, cfg: RunConfig, t: Any) -> RunSummary:
        if not self.evaluations:
            self.evaluate()
        before = {e["agent"]: _accuracies(e) for e in self.evaluations if e["step"] == 0}
        bar = tqdm(total=t.steps, initial=self.step, desc=f"{cfg.algorithm.name}", disable=not cfg.logging.progress,
                   dynamic_ncols=True)
        stopped_early = False
        while self.step < t.steps:
            start = time.perf_counter()
            metrics = self.train_step()
            self.wall_seconds += time.perf_counter() - start
            bar.update(1)
            bar.set_postfix({n: f"r={m['reward']:.2f} acc={m['accuracy']:.2f}" for n, m in metrics.items()})
            if self.step % t.eval_every == 0 and self.step < t.steps:
                accs = self.evaluate()
                bar.write(f"step {self.step}: " + ", ".join(f"{n} acc {a['accuracy']:.3f}" for n, a in accs.items()))
            if self._stop_requested:
                stopped_early = True
                break
            if self.step % cfg.checkpoint.every == 0 and self.step < t.steps:
                self.save()
        bar.close()
        after = self.evaluate() if not stopped_early else {
            e["agent"]: _accuracies(e) for e in self.evaluations[-self.n:]}
        self.save()
        summary = RunSummary(agents=self.names, steps=self.step, before=before, after=after,
                             totals={n: asdict(v) for n, v in self.totals.items()}, wall_seconds=self.wall_seconds,
                             stopped_early=stopped_early, eval_seconds=self.eval_seconds, sessions=self.sessions)
        (self.out / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
        return summary

    def close(self) -> None:
        try:
            self.executor.close()
        finally:
            self.run_dir.release()


def balanced_prefix(problems: list[Problem], limit: int) -> list[Problem]:
    """The first `limit` problems taken round-robin over kinds, so a quick evaluation still covers every kind."""
    by_kind: dict[str, list[Problem]] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p)
    out: list[Problem] = []
    queues = [list(reversed(v)) for v in by_kind.values()]
    while len(out) < limit and any(queues):
        for queue in queues:
            if queue and len(out) < limit:
                out.append(queue.pop())
    return out


def _accuracies(evaluation: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in evaluation.items() if k not in ("step", "agent", "rollouts", "wall_seconds")}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread() and os.name != "nt"
