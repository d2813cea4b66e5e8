"""Run every agent in its own Ray actor, so n agents sample and learn side by side.

Why this works for HACPO: an agent's sampling and update touch only its own model; what crosses between
agents is small and picklable (prompt strings, `Sample`s, the pool with one advantage and one omega per
row, metric dicts). The coordinator (verification, capability tracking, advantages) stays in the driver
and talks to the actors through the same `call(AgentWorker.method, per-worker args)` as `SequentialExecutor`
(the method travels by reference: pickled as its qualified name), so the trainer and the algorithm code are the
same whichever executor runs the agents.

Resources. Each agent asks Ray for ``num_cpus = agent.threads or 1`` and ``num_gpus = 1`` when its
``device`` is CUDA (0 otherwise), and its actor sets ``torch.set_num_threads`` to the same number. One
thread per actor is the default because two processes with two threads each on a 2-core machine measured
erratic (README, "Threads"). Under Ray an actor sees only the GPU Ray assigned it, as
``cuda:0``: a device index in the config (``cuda:1``) is ignored there; Ray picks the GPU.

Local or cluster. Without an address, hacrl starts a private local Ray instance sized so that every agent's
actor fits (Ray's CPU count is a scheduling token: with more agents than cores the actors time-share the
cores, and a warning says so) and shuts it down in `close()`. With ``address`` (``ray_address`` in the run
config, e.g. ``ray://head:10001`` or ``auto``) it connects to an existing cluster and `close()` only removes
its own actors and disconnects, never stopping the cluster. If Ray is already initialised in this process, that
session is used and left open.

On a cluster: hacrl (and the models, unless given as ``zoo:`` names, which each node builds into its own
``HACRL_CACHE``) must be installed on every node, and ``output_dir`` must be on a filesystem that every node
and the driver share: the trainer sends each actor a checkpoint directory path (`save` / `load`), and the
actor writes or reads the weights, optimizer and RNG state there itself. Resuming therefore works exactly as
in-process: ``hacrl train config.yaml --resume`` loads every agent's state into its (new) actor. Ray >= 2.59
may require a token to join a cluster (Ray's token authentication): set it in the driver's environment.

Errors. A worker method that raises in an actor is re-raised in the driver as the same exception type with
the agent's name in front of the message (so `hacrl train` reports hacrl's own errors in one line, exactly as
in-process), with the remote traceback as a note; anything else, e.g. an actor killed for memory, becomes
an `AgentWorkerError` naming the agent and the method. Ray's own log chatter is kept out of the terminal
(`logging_level=ERROR`, no dashboard); warnings the agents log still reach it, prefixed with the actor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

try:
    import ray
    import ray.exceptions
except ImportError as _exc:  # the trainer turns this into a one-line ConfigError for `executor: ray`
    raise ImportError(f"Ray is not installed ({_exc}); install it with: pip install 'hacrl[ray]'") from _exc

from hacrl.config import AgentConfig, ConfigError
from hacrl.executors import check_arity
from hacrl.models.loading import ZOO_PREFIX, check_device, resolve_model_path
from hacrl.workers import AgentWorker, WorkerSettings

__all__ = ["AgentWorkerError", "RayConnectError", "RayExecutor", "agent_resources"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

STARTUP_WARN_SECONDS = 60.0
"""How long actor start-up may wait for resources before each warning that says what is missing."""


class RayConnectError(ConfigError):
    """`ray_address` names a cluster this process cannot join (wrong address, or missing credentials)."""


class AgentWorkerError(RuntimeError):
    """An agent's remote worker failed (an error that is not one of hacrl's own, or its actor died).

    The message names the agent, the worker method and the remote error; the remote traceback is kept in
    `remote_traceback` (and as a note on the exception) instead of Ray's internal frames.
    """

    def __init__(self, message: str, *, agent: str, method: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.agent = agent
        self.method = method
        self.remote_traceback = remote_traceback


def agent_resources(agent: AgentConfig, settings: WorkerSettings | None = None) -> dict[str, float]:
    """The Ray resources one agent's actor requests (also its torch thread count: `num_cpus`)."""
    threads = agent.threads or (settings.threads if settings is not None else None) or 1
    return {"num_cpus": float(threads), "num_gpus": 1.0 if agent.device.startswith("cuda") else 0.0}


class _AgentActor:
    """The body of one Ray actor: builds its `AgentWorker` in the actor's own process and forwards calls.

    Construction is a separate `setup` call (not `__init__`) so that a failure to load the agent comes back
    as an ordinary task error with the original exception, which `RayExecutor` turns into a clear message.
    """

    def __init__(self, threads: int) -> None:
        torch.set_num_threads(threads)
        self.worker: AgentWorker | None = None

    def setup(self, agent: AgentConfig, settings: WorkerSettings) -> dict[str, Any]:
        if agent.device.startswith("cuda") and agent.device not in ("cuda", "cuda:0"):
            # Ray exposes only the assigned GPU to this process, where it is cuda:0.
            agent = dataclasses.replace(agent, device="cuda:0")
        self.worker = AgentWorker(agent, settings)
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "device": agent.device}

    def call(self, method: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self.worker is None:
            raise RuntimeError("the agent worker was not set up")
        return method(self.worker, *args)


class RayExecutor:
    """One Ray actor per agent; `call` runs an `AgentWorker` method (by reference) on all of them at once,
    results in worker order.

    `address`: None (or "local") starts a local Ray instance that `close` stops; anything else (``auto``,
    ``ray://host:10001``, ``host:6379``) connects to that existing cluster, which `close` leaves running.
    """

    def __init__(self, agents: Sequence[AgentConfig], settings: Sequence[WorkerSettings], *,
                 address: str | None = None) -> None:
        if len(agents) != len(settings):
            raise ValueError(f"{len(agents)} agents but {len(settings)} worker settings")
        self.names = [a.name for a in agents]
        self.n_workers = len(agents)
        self.resources = [agent_resources(a, s) for a, s in zip(agents, settings, strict=True)]
        self._started_ray = False
        self._actors: list[Any] = []
        local = address in (None, "local") and not ray.is_initialized()
        if local:
            for agent in agents:  # fail here, not as an actor that waits forever for a GPU that is not there
                check_device(agent.device)
            _prebuild_zoo_agents(agents, progress=any(s.progress for s in settings))
            self._start_local_ray()
        elif not ray.is_initialized():
            env = {k: os.environ[k] for k in ("HACRL_CACHE",) if k in os.environ}
            try:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=True,
                         runtime_env={"env_vars": env} if env else None)
            except ConnectionError as exc:
                raise RayConnectError(
                    f"ray_address: cannot join the Ray cluster at {address!r} ({exc}). Check the address; a cluster "
                    "that uses Ray token authentication also needs its token in this process's environment (see "
                    "Ray's 'token authentication' docs)") from exc
            self._started_ray = True  # our connection: `close` disconnects; the cluster itself keeps running
        self._check_cluster_fits()
        try:
            self._start_actors(agents, settings)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- start-up

    def _start_local_ray(self) -> None:
        cores = os.cpu_count() or 1
        wanted = sum(r["num_cpus"] for r in self.resources)
        if wanted > cores:
            logger.warning("the agents ask for %g CPU threads in all but this machine has %d cores: their actors "
                           "will time-share the cores", wanted, cores)
        # Quiet: no dashboard, only Ray errors in the driver's log; actors' warnings still reach the terminal.
        ray.init(num_cpus=max(cores, int(wanted + 0.999)), include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=True)
        self._started_ray = True

    def _check_cluster_fits(self) -> None:
        """Warn early when the cluster, as it is now, cannot place every actor (an autoscaler may add nodes)."""
        total = ray.cluster_resources()
        for key, ray_key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            wanted = sum(r[key] for r in self.resources)
            if wanted > total.get(ray_key, 0.0):
                logger.warning("the agents ask for %g %s in all but the Ray cluster has %g; actors wait until "
                               "the cluster grows", wanted, ray_key, total.get(ray_key, 0.0))

    def _start_actors(self, agents: Sequence[AgentConfig], settings: Sequence[WorkerSettings]) -> None:
        remote_cls = ray.remote(_AgentActor)
        refs = []
        for agent, setting, res in zip(agents, settings, self.resources, strict=True):
            threads = int(res["num_cpus"])
            actor = remote_cls.options(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"],  # type: ignore[attr-defined]
                                       max_restarts=0).remote(threads)
            self._actors.append(actor)
            # The driver shows progress (zoo builds); remote progress bars would garble the driver's bar.
            worker_settings = dataclasses.replace(setting, threads=threads, progress=False)
            refs.append(actor.setup.remote(agent, worker_settings))
        waiting = set(range(len(refs)))
        while waiting:
            pending = [refs[i] for i in sorted(waiting)]
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=STARTUP_WARN_SECONDS)
            ready_ids = {r.hex() for r in ready}
            waiting = {i for i in waiting if refs[i].hex() not in ready_ids}
            if waiting:
                logger.warning("still starting agent(s) %s after %.0f s: they need %s; the cluster has %s available",
                               ", ".join(self.names[i] for i in sorted(waiting)), STARTUP_WARN_SECONDS,
                               [self.resources[i] for i in sorted(waiting)], ray.available_resources())
        self.actor_info = self._gather("setup", refs)
        for name, info, res in zip(self.names, self.actor_info, self.resources, strict=True):
            logger.info("agent %s: Ray actor pid %s, %d torch thread(s), device %s, %g GPU", name, info["pid"],
                        info["threads"], info["device"], res["num_gpus"])

    # ---------------------------------------------------------------- the Executor protocol

    def call(self, method: Callable[..., R], args: Sequence[tuple[Any, ...]]) -> list[R]:
        """`method(worker_i, *args[i])` in actor i for every i, all at once; results in worker order."""
        check_arity(method, args, self.n_workers)
        if not self._actors:
            raise RuntimeError("the Ray executor is closed")
        refs = [actor.call.remote(method, tuple(a)) for actor, a in zip(self._actors, args, strict=True)]
        return self._gather(method.__name__, refs)

    def close(self) -> None:
        """Remove this executor's actors, then end the Ray session this executor opened: a local instance is
        stopped, a connection to a cluster is closed (the cluster keeps running). A Ray session that was already
        open in this process when the executor was made is left as it is."""
        for actor in self._actors:
            with contextlib.suppress(Exception):  # an actor that is already gone is fine
                ray.kill(actor)
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- errors

    def _gather(self, method: str, refs: list[Any]) -> list[Any]:
        """Wait for every call (so no agent is left mid-update), then return results or the first failure."""
        ray.wait(refs, num_returns=len(refs))
        results: list[Any] = []
        failures: list[BaseException] = []
        for i, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                failures.append(_agent_error(self.names[i], method, exc))
        if failures:
            if len(failures) > 1:
                others = "; ".join(str(f) for f in failures[1:])
                failures[0].add_note(f"other agents failed too: {others}")
            raise failures[0] from None
        return results


def _agent_error(agent: str, method: str, exc: BaseException) -> BaseException:
    """Turn a Ray error into one that names the agent and shows the remote error, not Ray's internals.

    A remote exception whose type can be rebuilt from a message (hacrl's own errors, ValueError, ...) is
    re-raised as that type, so callers (the CLI) handle it exactly as if the agent had run in-process.
    """
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, Exception):
        cause = exc.cause
        trace = str(getattr(exc, "traceback_str", "") or "")
        message = f"agent {agent!r} ({method} in its Ray actor): {cause}"
        rebuilt: BaseException | None = None
        try:
            candidate = type(cause)(message)
            if type(candidate) is type(cause) and str(candidate) == message:
                rebuilt = candidate
        except Exception:
            rebuilt = None
        if rebuilt is None:
            rebuilt = AgentWorkerError(f"agent {agent!r} failed in {method}(): {type(cause).__name__}: {cause}",
                                       agent=agent, method=method, remote_traceback=trace)
        if trace:
            rebuilt.add_note(f"remote traceback of agent {agent!r}:\n{trace.rstrip()}")
        return rebuilt
    if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError
                  | ray.exceptions.OutOfMemoryError):
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = " ".join(lines[:3])[:600]
        return AgentWorkerError(f"agent {agent!r}: its Ray actor died during {method}() "
                                f"({type(exc).__name__}: {reason})", agent=agent, method=method)
    return AgentWorkerError(f"agent {agent!r} failed in {method}(): {type(exc).__name__}: {exc}",
                            agent=agent, method=method)


def _prebuild_zoo_agents(agents: Sequence[AgentConfig], *, progress: bool) -> None:
    """Build missing `zoo:` agents once in the driver (same filesystem as a local Ray), not once per actor."""
    for model in dict.fromkeys(a.model for a in agents):
        if model.startswith(ZOO_PREFIX):
            started = time.perf_counter()
            resolve_model_path(model, progress=progress)
            logger.debug("zoo agent %s ready in %.1f s", model, time.perf_counter() - started)
