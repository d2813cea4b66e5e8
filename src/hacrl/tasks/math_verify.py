"""Deciding whether a math answer equals the gold answer, under a deadline: `score_many` and `score`.

The reward for math RL is binary: 1.0 when the response's final answer is mathematically equivalent to the
gold answer, else 0.0. Both sides are extracted and normalised by `hacrl.tasks.math_answers` and accepted on
string equality; otherwise `math-verify` parses both (wrapped in `$...$`, because a bare `\\frac12` is not
extracted) and compares them symbolically and numerically.

Time limit. A model can write `2^{10^{10}}`, which sympy would evaluate for minutes, so every math-verify
call runs under a deadline (`timeout_s`, default 5 s). math-verify's own timeout uses `signal.alarm` and
raises ValueError outside the main thread, so it is always switched off and the deadline is enforced here:

* in the main thread (the coordinator, a Ray actor, a worker process's main thread): our own SIGALRM timer
  raises an exception that math-verify's `except Exception` cannot swallow. CPython checks signals inside
  long big-integer loops, so this also stops `2^{10^{10}}` (a thread-based deadline does not:
  `PyThreadState_SetAsyncExc` is not delivered while C code runs);
* in any other thread: the check is sent to a small pool of helper processes (`python -c` running
  `_worker_main`, started lazily, reused), which apply the same SIGALRM deadline in their own main thread;
  if a helper does not answer within `timeout_s + 2 s` it is killed and replaced;
* where neither works (no SIGALRM, e.g. Windows, or helpers cannot be started) the check runs in a daemon
  thread that is abandoned at the deadline (the score is still 0.0 and counted, the thread may run on).

A timeout scores 0.0, is logged, and is counted in the caller's `ScoreStats` (the `stats=` argument of
`score_many` / `score`; `MathTask.stats` for a task), so it is never silent. The counts belong to the
caller, not to this module, so two evaluations (or an evaluation and a training run) in one process each
report their own. The helper pool and the verdict cache are shared by all callers: they are resources, and a
verdict does not depend on who asked.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from hacrl.tasks.math_answers import comparable_pair, strings_equal

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
"""Deadline for one math-verify comparison (parse of both sides + verify)."""

_WORKER_GRACE_S = 2.0
"""How much longer than `timeout_s` a helper process may take before it is killed (IPC, GC, slow start)."""

_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------


@dataclass
class ScoreStats:
    """What happened in the `score_many` / `score` calls that were given this object (`stats=`).

    `timeouts` and `errors` score 0.0; they are counted so a reward that silently turns into noise is
    visible. `cache_hits` are comparisons answered from the verdict cache (a timed-out comparison is
    cached too, so a repeated pathological answer costs one timeout, not one per repeat).

    Thread-safe: one call adds its counts in one step under the object's lock, and `snapshot` reads them
    under it, so several threads may share one object. It pickles and copies without its lock.
    """

    calls: int = 0
    correct: int = 0
    no_answer: int = 0
    string_matches: int = 0
    verifier_calls: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    errors: int = 0
    worker_restarts: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: kept out of eq, repr, asdict

    def add(self, other: ScoreStats) -> None:
        """Add `other`'s counts to these."""
        counts = other.snapshot()
        with self._lock:
            for f in fields(self):
                setattr(self, f.name, getattr(self, f.name) + getattr(counts, f.name))

    def snapshot(self) -> ScoreStats:
        """A copy of the counts, read consistently."""
        with self._lock:
            return ScoreStats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# --------------------------------------------------------------------------------------------------------
# math-verify under a deadline
# --------------------------------------------------------------------------------------------------------

Verdict = Literal["match", "mismatch", "timeout", "error"]


class _Deadline(BaseException):
    """Raised by our SIGALRM handler. A BaseException, so `except Exception` in math-verify/sympy
    cannot swallow it (math-verify's own TimeoutException is caught inside `parse`/`verify`)."""


class _DropMathVerifyTimeoutWarning(logging.Filter):
    """math-verify warns once that its timeout is disabled; here the deadline is enforced by this module."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader", "math_verify.utils"):
    logging.getLogger(_name).addFilter(_DropMathVerifyTimeoutWarning())

_MV_LOCK = threading.Lock()
_MV: tuple[Callable[..., list[object]], Callable[..., bool]] | None = None


def _math_verify() -> tuple[Callable[..., list[object]], Callable[..., bool]]:
    """Import math-verify and warm it up once, outside any deadline.

    The first parse triggers lazy imports inside sympy/latex2sympy; an interrupt in the middle of an import
    could leave a half-initialised module behind, so that happens here, undisturbed.
    """
    global _MV
    if _MV is None:
        with _MV_LOCK:
            if _MV is None:
                from math_verify import parse, verify

                for g, p in (("\\frac12", "0.5"), ("x=3", "3"), ("(1,2]", "(1,2]"), ("1,2", "2,1")):
                    verify(parse(f"${g}$", parsing_timeout=None), parse(f"${p}$", parsing_timeout=None),
                           timeout_seconds=None)
                _MV = (parse, verify)
    return _MV


def _mv_equal(pred: str, gold: str) -> bool:
    """math-verify's judgement on two normalised answers (no timeout of its own: see the module doc)."""
    parse, verify = _math_verify()
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    if not gold_parsed:
        return False
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _signal_deadline_usable() -> bool:
    return hasattr(signal, "SIGALRM") and hasattr(signal, "setitimer") and (
        threading.current_thread() is threading.main_thread()
    )


def _call_with_alarm(fn: Callable[[], _T], timeout_s: float) -> tuple[bool, _T | None]:
    """Run fn() in the main thread under a SIGALRM deadline: (True, result) or (False, None) on timeout.

    The timer repeats every 0.1 s after it first fires, so an exception swallowed by a bare `except:` is
    raised again. A timer someone else had armed is re-armed afterwards with its remaining time (it fires
    late by at most the time spent here); their handler is restored.
    """
    active = [True]

    def on_alarm(signum: int, frame: object) -> None:
        if active[0]:
            raise _Deadline

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = 0.0, 0.0
    try:
        try:
            old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 1e-3), 0.1)
            result = fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            active[0] = False
        return True, result
    except _Deadline:
        return False, None
    finally:
        signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
        if old_delay > 0:
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - start), 1e-3), old_interval)


def _judge_in_main_thread(pred: str, gold: str, timeout_s: float | None) -> tuple[Verdict, str]:
    try:
        if timeout_s is None:
            return ("match" if _mv_equal(pred, gold) else "mismatch"), ""
        _math_verify()  # warm-up outside the deadline
        finished, equal = _call_with_alarm(lambda: _mv_equal(pred, gold), timeout_s)
    except Exception as exc:  # math-verify/sympy can raise anything on odd input; count it, score 0
        return "error", f"{type(exc).__name__}: {exc}"[:300]
    if not finished:
        return "timeout", ""
    return ("match" if equal else "mismatch"), ""


def _judge_in_abandoned_thread(pred: str, gold: str, timeout_s: float | None) -> tuple[Verdict, str]:
    """Last resort (no SIGALRM, no helper processes): a daemon thread, abandoned at the deadline."""
    box: list[tuple[Verdict, str]] = []

    def run() -> None:
        try:
            box.append(("match" if _mv_equal(pred, gold) else "mismatch", ""))
        except Exception as exc:
            box.append(("error", f"{type(exc).__name__}: {exc}"[:300]))

    th = threading.Thread(target=run, name="hacrl-math-verify", daemon=True)
    th.start()
    th.join(timeout_s)
    return box[0] if box else ("timeout", "")


class _WorkerDied(RuntimeError):
    pass


class _ScoreWorker:
    """One helper process that judges (pred, gold) pairs in its main thread, with the SIGALRM deadline.

    Protocol (JSON lines): the worker prints `{"ready": true}` once math-verify is imported; a request is
    `{"items": [[pred, gold], ...], "timeout": seconds}`; the worker answers one `{"v": verdict, "d": detail}`
    line per item, in order, so the parent can apply a per-item deadline and kill a worker that hangs.
    """

    def __init__(self, startup_timeout_s: float = 120.0) -> None:
        root = str(Path(__file__).resolve().parents[2])
        code = (
            "import sys; sys.path.insert(0, " + repr(root) + "); "
            "from hacrl.tasks.math_verify import _worker_main; _worker_main()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            close_fds=True,
        )
        self._buf = b""
        line = self._read_line(time.monotonic() + startup_timeout_s)
        if line is None or json.loads(line).get("ready") is not True:
            self.kill()
            raise _WorkerDied(f"math score helper did not start within {startup_timeout_s:.0f}s")

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, or None at the deadline; raises _WorkerDied on EOF."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied(f"math score helper exited (code {self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def judge(self, items: Sequence[tuple[str, str]], timeout_s: float) -> list[tuple[Verdict, str]]:
        """Verdicts for a prefix of `items`: all of them, or up to and including one that hung (after
        which this worker is dead and the caller resubmits the rest to a new one)."""
        assert self.proc.stdin is not None
        request = json.dumps({"items": [list(it) for it in items], "timeout": timeout_s}) + "\n"
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied(f"math score helper is gone: {exc}") from exc
        out: list[tuple[Verdict, str]] = []
        for _ in items:
            line = self._read_line(time.monotonic() + timeout_s + _WORKER_GRACE_S)
            if line is None:
                self.kill()
                out.append(("timeout", "helper killed"))
                return out
            msg = json.loads(line)
            out.append((msg["v"], msg.get("d", "")))
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if f is not None:
                    f.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        if self.alive():
            self.kill()


class _WorkerPool:
    """Helper processes for callers outside the main thread; at most `max_workers`, started on demand."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._idle: list[_ScoreWorker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.broken: str | None = None  # why helpers cannot be started, once that is known

    def _acquire(self) -> _ScoreWorker:
        with self._cond:
            while not self._idle and self._count >= self.max_workers:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _ScoreWorker()
        except Exception:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _ScoreWorker) -> None:
        with self._cond:
            if worker.alive():
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def judge(self, items: Sequence[tuple[str, str]], timeout_s: float,
              counts: ScoreStats) -> list[tuple[Verdict, str]]:
        out: list[tuple[Verdict, str]] = []
        failures = 0
        while len(out) < len(items):
            worker = self._acquire()
            try:
                got = worker.judge(items[len(out) :], timeout_s)
            except _WorkerDied as exc:
                worker.kill()
                failures += 1
                counts.worker_restarts += 1
                logger.warning("math score helper failed (%s); restarting it", exc)
                if failures >= 3:
                    raise
                continue
            finally:
                self._release(worker)
            out.extend(got)
            if got and got[-1][1] == "helper killed":
                counts.worker_restarts += 1
        return out

    def shutdown(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.close()


_POOL: _WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _WorkerPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _WorkerPool(max_workers=max(1, min(4, os.cpu_count() or 1)))
        return _POOL


def shutdown_score_workers() -> None:
    """Stop the helper processes (they are also stopped at exit, and restart on demand)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown()


def _forget_pool_in_child() -> None:
    # A forked child must not talk to its parent's helpers over inherited pipes; it starts its own.
    global _POOL, _POOL_LOCK, _CACHE_LOCK, _MV_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()
    _MV_LOCK = threading.Lock()
    _CACHE_LOCK = threading.Lock()


atexit.register(shutdown_score_workers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _judge_many(items: Sequence[tuple[str, str]], timeout_s: float | None,
                counts: ScoreStats) -> list[tuple[Verdict, str]]:
    """math-verify verdicts with the deadline mechanism that fits the calling thread (module doc)."""
    if not items:
        return []
    if timeout_s is None or _signal_deadline_usable():
        return [_judge_in_main_thread(p, g, timeout_s) for p, g in items]
    pool = _pool()
    if os.name == "posix" and pool.broken is None:
        try:
            return pool.judge(items, timeout_s, counts)
        except Exception as exc:  # cannot start helpers here (sandbox, fd limits): degrade, loudly
            pool.broken = f"{type(exc).__name__}: {exc}"
            logger.warning("math scoring: helper processes unavailable (%s); falling back to threads that "
                           "are abandoned at the deadline", pool.broken)
    return [_judge_in_abandoned_thread(p, g, timeout_s) for p, g in items]


def _worker_main() -> None:
    """Entry point of a helper process (see `_ScoreWorker`)."""
    proto = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by libraries must not corrupt the protocol
    _math_verify()
    proto.write(b'{"ready": true}\n')
    proto.flush()
    for raw in sys.stdin.buffer:
        if not raw.strip():
            continue
        req = json.loads(raw)
        for pred, gold in req["items"]:
            verdict, detail = _judge_in_main_thread(pred, gold, float(req["timeout"]))
            proto.write((json.dumps({"v": verdict, "d": detail}) + "\n").encode())
            proto.flush()


# --------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 65536


def clear_score_cache() -> None:
    """Forget cached verdicts (e.g. before timing `score`)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _cache_get(key: tuple[str, str]) -> Verdict | None:
    with _CACHE_LOCK:
        v = _CACHE.get(key)
        if v is not None:
            _CACHE.move_to_end(key)
        return v


def _cache_put(key: tuple[str, str], verdict: Verdict) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = verdict
        if len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)


_STRING_FAST_PATH = True
"""Diagnostics only (benchmarks/math_gold_agreement.py --verifier-only): False sends every pair to
math-verify, which shows how much of the agreement rests on math-verify alone."""


def _clip(s: str, n: int = 120) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def _prepare(response: str, gold: str, counts: ScoreStats) -> tuple[float | None, tuple[str, str] | None]:
    """Cheap part of scoring: (final score, None) when decided without math-verify, else (None, pair)."""
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"score: the gold answer must be a non-empty string, got {gold!r}")
    pair = comparable_pair(response, gold)
    if pair is None:
        counts.no_answer += 1
        return 0.0, None
    if _STRING_FAST_PATH and strings_equal(*pair):
        counts.string_matches += 1
        counts.correct += 1
        return 1.0, None
    return None, pair


def score_many(
    responses: Sequence[str],
    golds: Sequence[str],
    *,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    stats: ScoreStats | None = None,
) -> list[float]:
    """`score` for many pairs; in a non-main thread the math-verify checks go to a helper in one batch.

    `stats`: the caller's counters; this call's counts (answers, string matches, cache hits, timeouts,
    verifier errors, helper restarts) are added to it in one step when the call returns or raises. None
    counts nothing. The counts are per caller: nothing is counted in this module.
    """
    if len(responses) != len(golds):
        raise ValueError(f"score_many: {len(responses)} responses but {len(golds)} gold answers")
    counts = ScoreStats()  # this call's own; only this thread touches it
    try:
        return _score_many(responses, golds, timeout_s, counts)
    finally:
        if stats is not None:
            stats.add(counts)


def _score_many(responses: Sequence[str], golds: Sequence[str], timeout_s: float | None,
                counts: ScoreStats) -> list[float]:
    counts.calls += len(responses)
    scores: list[float | None] = []
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (resp, gold) in enumerate(zip(responses, golds, strict=True)):
        decided, pair = _prepare(resp, gold, counts)
        scores.append(decided)
        if pair is None:
            continue
        cached = _cache_get(pair)
        if cached is not None:
            counts.cache_hits += 1
            scores[i] = 1.0 if cached == "match" else 0.0
            counts.correct += int(cached == "match")
            continue
        todo.setdefault(pair, []).append(i)
    pairs = list(todo)
    verdicts = _judge_many(pairs, timeout_s, counts)
    counts.verifier_calls += len(pairs)
    for pair, (verdict, detail) in zip(pairs, verdicts, strict=True):
        idx = todo[pair]
        if verdict == "timeout":
            counts.timeouts += 1
            logger.warning("math answer check timed out after %ss (answer %r, gold %r): scored 0.0%s",
                           timeout_s, _clip(pair[0]), _clip(pair[1]), f" [{detail}]" if detail else "")
        elif verdict == "error":
            counts.errors += 1
            logger.warning("math answer check failed (answer %r, gold %r): %s; scored 0.0",
                           _clip(pair[0]), _clip(pair[1]), detail)
        if verdict != "error":
            _cache_put(pair, verdict)
        ok = verdict == "match"
        counts.correct += len(idx) if ok else 0
        for i in idx:
            scores[i] = 1.0 if ok else 0.0
    return [float(s) if s is not None else 0.0 for s in scores]


def score(response: str, gold: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S,
          stats: ScoreStats | None = None) -> float:
    """1.0 if the response's final answer equals the gold answer, else 0.0.

    `gold` is the bare gold answer (e.g. `\\frac{1}{2}`, `27`, `(1,2]`, `\\text{Evelyn}`); it may also be
    boxed or in `$...$`. Equal means: equal after `normalize_answer` (units after a number dropped when the
    gold is a plain number; case and `\\text{}` ignored for text answers), or equivalent for math-verify
    (fractions/decimals, `x=3` vs `3`, intervals, sets in any order, expressions). `timeout_s=None` disables
    the deadline (only for trusted input). Timeouts and verifier errors score 0.0 and are counted in
    `stats` when given (see `score_many`). Thread-safe.
    """
    return score_many([response], [gold], timeout_s=timeout_s, stats=stats)[0]


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ScoreStats",
    "clear_score_cache",
    "score",
    "score_many",
    "shutdown_score_workers",
]
