"""The coordinator of a collaborative run: the only place that knows the order of things.

One step (docs/method.md §2; `Trainer.train_step` reads in this order):
  1. draw the next prompts;                                          (DataStream)
  2. every agent samples G_j responses per prompt;                    (AgentWorker.generate, via the executor)
  3. every response is verified once; the reward is shared;           (task.score)
  4. each agent's capability is updated with its own rewards;         (CapabilityTracker)
  5. for every learner, the objective plans its rows of the pool with their advantages and weights
     (Objective.plan_rows), and the learner runs its mini-batches       (AgentWorker.learn -> hacrl.learner)
  6. metrics per agent go to JSONL / TensorBoard / the progress bar.    (Tracker)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hacrl import checkpoint as ckpt
from hacrl.algorithms import CapabilityTracker
from hacrl.algorithms.objective import Objective, resolve_objective
from hacrl.config import ConfigError, RunConfig, dump_config
from hacrl.evaluator import score_completions
from hacrl.executors import Executor, SequentialExecutor
from hacrl.learner import LearnRequest, LearnResult
from hacrl.pool import Trajectory
from hacrl.preflight import check_models
from hacrl.replay import ReplayedPeer, RolloutRecorder
from hacrl.rewards import bind_trainer_state, score_with_ids
from hacrl.rollout.sampler import SamplingParams
from hacrl.rundir import RunDir, open_run_dir
from hacrl.tasks.base import Problem, Task
from hacrl.tasks.registry import make_task
from hacrl.tasks.splits import balanced_prefix
from hacrl.tracking import Tracker, format_table
from hacrl.workers import AgentWorker, WorkerSettings

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_RESUME_KEYS = ("agents", "algorithm", "task", "seed", "prompts_per_step", "num_generations", "replay")


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
    trained_rows: int = 0
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
        # a LoRA agent's entry names its adapters too (full agents keep the entry of checkpoints before LoRA)
        "agents": [[a.name, a.model] + ([asdict(a.lora)] if a.lora is not None else []) for a in cfg.agents],
        "algorithm": cfg.algorithm.name,
        "task": asdict(cfg.task),
        "seed": cfg.seed,
        "prompts_per_step": cfg.training.prompts_per_step,
        "num_generations": [a.num_generations or cfg.training.num_generations for a in cfg.agents],
        "replay": [asdict(r) for r in cfg.replay],
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
        # the output directory, the lock and the model paths are checked before any data or model is loaded
        self.run_dir = run_dir or open_run_dir(cfg.output_dir, resume=resume, overwrite=overwrite, config=cfg.to_dict())
        check_models(cfg.agents)
        t = cfg.training
        self.objective: Objective = resolve_objective(cfg.algorithm, max_completion_length=t.max_new_tokens)
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
        self.generations = [self.objective.responses_per_prompt(a.num_generations or t.num_generations)
                            for a in cfg.agents]
        self.executor = executor or self._make_executor()
        self.train_problems = self._fitting(self.train_problems, "training", t.max_new_tokens)
        self.eval_problems = self._fitting(self.eval_problems, "evaluation",
                                           t.eval_max_new_tokens or t.max_new_tokens)
        self._check_microbatch_budget()
        self.capability = CapabilityTracker(self.n, window=cfg.algorithm.capability_window,
                                            ratio_bounds=tuple(cfg.algorithm.ratio_bounds))  # type: ignore[arg-type]
        self.stream = DataStream(len(self.train_problems), cfg.seed)
        self.replays = [ReplayedPeer(r, cfg.task, self.train_problems) for r in cfg.replay]
        self.source_names = self.names + [r.name for r in self.replays]  # pool sources: agents, then replayed peers
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
        self.recorder = (RolloutRecorder(self.out, cfg.task, self.names,
                                         resume_step=self.step if resume_from is not None else None)
                         if cfg.logging.record_rollouts else None)

    # ---------------------------------------------------------------- construction

    def _settings(self) -> list[WorkerSettings]:
        t, cfg = self.cfg.training, self.cfg
        sampling = SamplingParams(temperature=t.temperature, top_p=t.top_p, top_k=t.top_k,
                                  max_new_tokens=t.max_new_tokens)
        return [
            WorkerSettings(index=i, seed=cfg.seed, sampling=sampling, objective=self.objective,
                           minibatch_size=self.objective.minibatch_size(t.minibatch_size,
                                                                        a.num_generations or t.num_generations),
                           max_grad_norm=t.max_grad_norm,
                           max_completion_tokens=t.max_completion_tokens or 2 * t.max_new_tokens,
                           max_nonfinite_updates=t.max_nonfinite_updates,
                           max_tokens_per_microbatch=t.max_tokens_per_microbatch, threads=a.threads,
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
        fits = self.executor.call(AgentWorker.prompts_that_fit, [(prompts, max_new_tokens)] * self.n)
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

    def _check_microbatch_budget(self) -> None:
        """Refuse a micro-batch budget smaller than the longest response a learner can meet, before training."""
        t = self.cfg.training
        budget = t.max_tokens_per_microbatch
        if budget is None:
            return
        completion = t.max_new_tokens
        if self.objective.shares_rollouts:
            completion = max(completion, t.max_completion_tokens or 2 * t.max_new_tokens)
        prompts = [p.prompt for p in self.train_problems]
        longest = self.executor.call(AgentWorker.longest_prompt, [(prompts,)] * self.n)
        for name, prompt_tokens in zip(self.names, longest, strict=True):
            if prompt_tokens + completion > budget:
                raise ConfigError(
                    f"training.max_tokens_per_microbatch: {budget} is smaller than one response of agent {name!r}: "
                    f"its longest training prompt has {prompt_tokens} tokens and a response up to {completion}; "
                    f"raise it to at least {prompt_tokens + completion}")

    # ---------------------------------------------------------------- one step

    def train_step(self) -> dict[str, dict[str, float]]:
        """One step for every agent (module docstring, steps 1-6); returns each agent's logged metrics."""
        problems = [self.train_problems[i] for i in self.stream.take(self.cfg.training.prompts_per_step)]
        pool, replayed = self._sample(problems)
        if self.recorder is not None:
            self.recorder.write(self.step + 1, pool, self.names)
        rewards = torch.tensor([t.reward for t in pool], dtype=torch.float64)
        groups = torch.tensor([t.prompt_index for t in pool])
        sources = torch.tensor([t.source for t in pool])
        live = sources < self.n
        self.capability.update(rewards[live], sources[live])
        plans = [self.objective.plan_rows(rewards=rewards, groups=groups, sources=sources, learner=k,
                                          capability=self.capability, n_live=self.n,
                                          seed=self.cfg.seed * 1_000_003 + self.step * 101 + k)
                 for k in range(self.n)]
        requests = [(LearnRequest(self.step, [pool[i] for i in p.indices], p.advantages, p.weights, p.supervised),)
                    for p in plans]
        results = self.executor.call(AgentWorker.learn, requests)
        self.step += 1
        return self._log_step(pool, results, [self._named(p.diagnostics) | replayed for p in plans])

    def _named(self, diagnostics: dict[str, float]) -> dict[str, float]:
        """Diagnostics with source indices (`share/from1/kept`, `gate/from1/pass_frac`) replaced by agent names."""
        out = {}
        for key, value in diagnostics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[1].startswith("from") and parts[1][4:].isdigit():
                key = f"{parts[0]}/from_{self.source_names[int(parts[1][4:])]}/{parts[2]}"
            out[key] = value
        return out

    def _sample(self, problems: list[Problem]) -> tuple[list[Trajectory], dict[str, float]]:
        """Every agent's responses to `problems` and any replayed peer's recorded ones, each verified once
        (steps 2-3); with per-peer counts of matched responses and of problems its record lacks."""
        prompts = [p.prompt for p in problems]
        results = self.executor.call(AgentWorker.generate, [(prompts, g) for g in self.generations])
        flat = []  # (agent, prompt index, sample)
        for agent, (samples, seconds) in enumerate(results):
            g = self.generations[agent]
            totals = self.totals[self.names[agent]]
            totals.sample_seconds += seconds
            totals.rollouts += len(samples)
            totals.generated_tokens += sum(len(s.completion_ids) for s in samples)
            flat += [(agent, k // g, s) for k, s in enumerate(samples)]
        replayed: list[Trajectory] = []
        counts: dict[str, float] = {}
        for i, peer in enumerate(self.replays):
            rows, missing = peer.trajectories(problems, self.step + 1, source=self.n + i)
            replayed += rows
            counts |= {f"replay/{peer.name}/responses": float(len(rows)),
                       f"replay/{peer.name}/missing_problems": float(missing)}
        rewards = score_with_ids(self.task,
                                 [problems[q] for _, q, _ in flat] + [problems[t.prompt_index] for t in replayed],
                                 [s.text for _, _, s in flat] + [t.completion for t in replayed],
                                 [s.completion_ids for _, _, s in flat] + [t.completion_ids for t in replayed])
        live = [Trajectory.from_sample(s, prompt_index=q, problem_id=problems[q].id, prompt=problems[q].prompt,
                                       source=agent, reward=r, kind=problems[q].kind)
                for (agent, q, s), r in zip(flat, rewards[:len(flat)], strict=True)]
        peers = [dataclasses.replace(t, reward=float(r)) for t, r in zip(replayed, rewards[len(flat):], strict=True)]
        return live + peers, counts

    def _log_step(self, pool: list[Trajectory], results: list[LearnResult],
                  planning: list[dict[str, float]]) -> dict[str, dict[str, float]]:
        caps = self.capability.capabilities()
        metrics: dict[str, dict[str, float]] = {}
        for k, (name, result) in enumerate(zip(self.names, results, strict=True)):
            own = [t for t in pool if t.source == k]
            totals = self.totals[name]
            totals.train_seconds += result.train_seconds
            totals.updates += result.stats.updates
            totals.trained_rows += result.trained_rows
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
                **self._verifier_counts(),
                **self._named(result.metrics()),
                **planning[k],
            }
            metrics[name] = m
            self.tracker.log("train", self.step, name, m)
        return metrics

    def _verifier_counts(self) -> dict[str, float]:
        """Answer checks that timed out or failed so far (scored 0.0), for tasks whose verifier counts them."""
        stats = getattr(self.task, "stats", None)
        if stats is None or not hasattr(stats, "timeouts"):
            return {}
        snap = stats.snapshot()
        return {"verify/timeouts_total": float(snap.timeouts), "verify/errors_total": float(snap.errors)}

    # ---------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Greedy accuracy of every agent on the held-out split, overall and per problem kind (hacrl.evaluator)."""
        start = time.perf_counter()
        max_new = self.cfg.training.eval_max_new_tokens or self.cfg.training.max_new_tokens
        prompts = [p.prompt for p in self.eval_problems]
        params = SamplingParams(max_new_tokens=max_new, greedy=True)
        completions = self.executor.call(AgentWorker.complete, [(prompts, params, 0)] * self.n)
        out: dict[str, dict[str, float]] = {}
        for name, samples in zip(self.names, completions, strict=True):
            scored = score_completions(self.eval_problems, samples, self.task.score)
            result = {"accuracy": float(scored.accuracy or 0.0), **scored.per_kind}
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
            self.executor.call(AgentWorker.save, [(str(tmp / "agents" / name),) for name in self.names])
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
        self.executor.call(AgentWorker.load, [(str(path / "agents" / name),) for name in self.names])
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


def _accuracies(evaluation: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in evaluation.items() if k not in ("step", "agent", "rollouts", "wall_seconds")}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread() and os.name != "nt"
