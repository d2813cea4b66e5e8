"""Math answers: extract a response's final answer, decide whether it equals the gold answer, and the MathTask.

The reward for math RL is binary: 1.0 when the response's final answer is mathematically equivalent to the
gold answer, else 0.0. Two parts decide it:

* `extract_answer` finds the final answer in free text: the last top-level `\\boxed{...}` / `\\fbox{...}`
  (braces matched, escaped braces skipped), else GSM8K's `#### X`, else "The (final) answer is X" /
  "Answer: X". A response whose last box is never closed (cut off mid-answer) has no answer.
* `score` normalises both sides (dollar signs, `\\dfrac`, thousands separators, degrees, percent, units
  after a number) and accepts on string equality; otherwise `math-verify` parses both (wrapped in `$...$`,
  because a bare `\\frac12` is not extracted) and compares them symbolically and numerically.

Time limit. A model can write `2^{10^{10}}`, which sympy would evaluate for minutes, so every math-verify
call runs under a deadline (`timeout_s`, default 5 s). math-verify's own timeout uses `signal.alarm` and
raises ValueError outside the main thread, so it is always switched off and the deadline is enforced here:

* in the main thread (the coordinator, a Ray actor, a worker process's main thread): our own SIGALRM timer
  raises an exception that math-verify's `except Exception` cannot swallow. CPython checks signals inside
  long big-integer loops, so this also stops `2^{10^{10}}` (a thread-based deadline does not: measured,
  `PyThreadState_SetAsyncExc` is not delivered while C code runs);
* in any other thread: the check is sent to a small pool of helper processes (`python -c` running
  `_worker_main`, started lazily, reused), which apply the same SIGALRM deadline in their own main thread;
  if a helper does not answer within `timeout_s + 2 s` it is killed and replaced;
* where neither works (no SIGALRM, e.g. Windows, or helpers cannot be started) the check runs in a daemon
  thread that is abandoned at the deadline (the score is still 0.0 and counted, the thread may run on).

A timeout scores 0.0, is logged, and is counted in `score_stats()` so it is never silent.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from hacrl.tasks.base import FixedSplits, Problem, check_same_length

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
"""Deadline for one math-verify comparison (parse of both sides + verify)."""

_WORKER_GRACE_S = 2.0
"""How much longer than `timeout_s` a helper process may take before it is killed (IPC, GC, slow start)."""

_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_IS = re.compile(
    r"\banswer(?:\s*\*\*)?\s*(?:\bis\b\s*:?|:)(?:\s*\*\*)?\s*",
    re.IGNORECASE,
)
_GSM8K_MARK = re.compile(r"####")
# Words that may join two boxes that together make one answer ("$\boxed{1}$ and $\boxed{9}$").
_BOX_JOINER = re.compile(r"^\s*\$?\s*(?:,|,?\s*and|\\text\{\s*and\s*\}|,?\s*\\text\{\s*and\s*\})\s*\$?\s*$")


def _skip_group(text: str, i: int) -> int | None:
    """Index just past the brace group opening at text[i] == '{', or None if it never closes.

    A backslash escapes the next character, so `\\{`, `\\}` and `\\\\` never count as grouping braces.
    """
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


@dataclass(frozen=True)
class _Box:
    start: int
    end: int  # index past the box; for an unclosed box, len(text)
    content: str | None  # None: the box was opened but never closed


def _top_level_boxes(text: str) -> list[_Box]:
    """All `\\boxed`/`\\fbox` commands not nested in another box, in order.

    `\\boxed 5` (no braces, seen in MATH solutions) takes the next token up to whitespace or `$`.
    """
    boxes: list[_Box] = []
    pos = 0
    while True:
        m = _BOX_CMD.search(text, pos)
        if m is None:
            return boxes
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _skip_group(text, i)
            if end is None:
                boxes.append(_Box(m.start(), len(text), None))
                return boxes
            boxes.append(_Box(m.start(), end, text[i + 1 : end - 1]))
            pos = end
        else:
            tok = re.match(r"[^\s$]+", text[i:])
            if tok is None or i == m.end():  # `\boxed` at the end, or `\boxed$`: nothing boxed
                boxes.append(_Box(m.start(), i, ""))
                pos = max(i, m.end())
            else:
                boxes.append(_Box(m.start(), i + tok.end(), tok.group(0)))
                pos = i + tok.end()


def last_boxed(text: str) -> str | None:
    """Content of the last top-level box, joining boxes that only "and"/"," separate; None if none.

    MATH solutions sometimes box a two-part answer separately ("$\\boxed{(-2,18)}$ and $\\boxed{(8,38)}$");
    the answer is then the list "(-2,18), (8,38)". Empty boxes are ignored. If the last box is never
    closed the text was cut off mid-answer and there is no answer (None), rather than an earlier box.
    """
    boxes = _top_level_boxes(text)
    boxes = [b for b in boxes if b.content is None or b.content.strip()]
    if not boxes:
        return None
    last = boxes[-1]
    if last.content is None:
        return None
    parts = [last.content.strip()]
    k = len(boxes) - 1
    while k > 0:
        prev = boxes[k - 1]
        if prev.content is None or not _BOX_JOINER.match(text[prev.end : boxes[k].start]):
            break
        parts.append(prev.content.strip())
        k -= 1
    parts.reverse()
    # The same value boxed twice ("... = \boxed{2}$ and $\boxed{2}") is one answer.
    unique = list(dict.fromkeys(parts))
    return ", ".join(unique)


def _cut_inline_answer(rest: str) -> str:
    """The answer at the start of `rest` (text after "answer is"): a `$...$` / `\\(...\\)` span, else the
    line up to the end of the sentence."""
    rest = rest.lstrip()
    for opener, closer in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if rest.startswith(opener):
            j = rest.find(closer, len(opener))
            while closer == "$" and j > 0 and rest[j - 1] == "\\":  # `\$` inside math is a dollar sign
                j = rest.find(closer, j + 1)
            if j > 0:
                return rest[len(opener) : j]
            break
    line = rest.split("\n", 1)[0]
    # The sentence ends at a period followed by whitespace or the end, unless it is a decimal point.
    m = re.search(r"\.(?=\s|$)", line)
    if m is not None:
        line = line[: m.start()]
    return line


def _tidy_extracted(ans: str) -> str | None:
    ans = ans.strip().strip("*").strip()
    ans = re.sub(r"(?<!\\)[\s.,;:!]+$", "", ans)
    if ans.startswith("$") and ans.endswith("$") and len(ans) >= 2:
        ans = ans.strip("$").strip()
    if not _strip_delimiters(ans).strip("$ "):  # "$\boxed{}$", "\(\)": marks where no answer was given
        return None
    return ans or None


def extract_answer(text: str) -> str | None:
    """The final answer a response commits to, as a string; None when it gives none.

    Order: the last `\\boxed{}`/`\\fbox{}` (see `last_boxed`); else the text after the last GSM8K `####`;
    else the text after the last "answer is" / "answer:" (a `$...$` span, or the rest of the sentence),
    with trailing punctuation and `$` removed. No guessing from the last number: an answer the response
    does not mark is not rewarded.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    if _BOX_CMD.search(text):
        boxes = _top_level_boxes(text)
        if any(b.content is None or b.content.strip() for b in boxes):
            boxed = last_boxed(text)
            return _tidy_extracted(boxed) if boxed is not None else None
    marks = list(_GSM8K_MARK.finditer(text))
    if marks:
        line = text[marks[-1].end() :].strip().split("\n", 1)[0]
        got = _tidy_extracted(line.lstrip("#"))
        if got is not None:
            return got
    hits = list(_ANSWER_IS.finditer(text))
    for hit in reversed(hits):
        got = _tidy_extracted(_cut_inline_answer(text[hit.end() :]))
        if got is not None:
            return got
    return None


# --------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "mathrm", "mbox", "mathbf", "textnormal", "operatorname")
_TEXT_WRAP = re.compile(r"\\(?:" + "|".join(_TEXT_CMDS) + r")\s*\{([^{}]*)\}")
# Each token consumes a whole run of letters (the lookaheads), so a failed match cannot backtrack
# through the ways of splitting a long word into "units".
_UNIT_TOKEN = (
    r"(?:\\(?:text|mbox|mathrm|textrm)\s*\{[^{}]*\}|[A-Za-z]{2,}(?![A-Za-z])\.?|\^\s*\{?\d\}?"
    r"|/\s*[A-Za-z]+(?![A-Za-z]))"
)
_UNIT_TAIL = re.compile(
    r"^(?P<num>-?(?:\d+(?:\.\d*)?|\.\d+))(?P<sep>\s*)(?P<unit>" + _UNIT_TOKEN + r"(?:\s*" + _UNIT_TOKEN + r")*)$"
)


def _strip_delimiters(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for a, b in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$")):
            if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
                s = s[len(a) : -len(b)].strip()
                changed = True
        m = re.fullmatch(r"\\(?:boxed|fbox)\s*\{(.*)\}", s, re.DOTALL)
        if m and _skip_group(s, s.index("{")) == len(s):
            s = m.group(1).strip()
            changed = True
    return s


def normalize_answer(ans: str) -> str:
    """A canonical spelling of an answer string, for string comparison and for math-verify.

    Removes what does not change the value: math delimiters, `$` and `\\$`, `\\left`/`\\right`, spacing
    commands, `^\\circ`, `\\%`, a trailing period; `\\dfrac`/`\\tfrac` -> `\\frac`; `1{,}000` and `1,\\!000`
    -> `1000` anywhere, plain `1,000` -> `1000` only when the whole answer is one number (so a list like
    `1,3` or `(1,200)` is left alone).
    """
    s = _strip_delimiters(ans)
    s = s.replace("\\$", "")
    s = re.sub(r"(?<!\\)\$", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])\s*", "", s)
    s = re.sub(r"\\(?:bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\s*", "", s)
    # `,\!` and `{,}` between digits are unambiguous LaTeX thousands separators, wherever they are
    s = re.sub(r"(?<=\d)(?:,\s*\\!|\{,\})\s*(?=\d{3}(?!\d))", "", s)
    s = s.replace("\\!", "").replace("{,}", ",")
    # spacing commands -> a space; a LaTeX line break `\\` (matrix rows) is kept as it is
    s = re.sub(r"\\\\|\\[,;:> ]|~", lambda mt: mt.group(0) if mt.group(0) == "\\\\" else " ", s)
    s = re.sub(r"\\quad|\\qquad", " ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree", "", s)
    s = re.sub(r"\\?%", "", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(?<![\\.])\.$", "", s).strip()  # a sentence's period, not "..." or "\."
    s = re.sub(r"(?<!\\)[,;]+$", "", s).strip()
    if _THOUSANDS.match(s.replace(" ", "")):
        s = s.replace(" ", "").replace(",", "")
    return s


def _strip_units(s: str) -> str:
    """`18 dollars`, `5\\text{ cm}^2`, `45 minutes` -> the number; anything else unchanged.

    Only used when the gold answer is a plain number, and a unit must be a `\\text{}`-like group or a
    word of two or more letters, so `2x` is never reduced to `2`.
    """
    m = _UNIT_TAIL.match(s)
    if m is None:
        return s
    unit = m.group("unit")
    if unit.startswith("\\") or (unit[0].isalpha() and m.group("sep")):
        return m.group("num")
    return s


def _is_plain_number(s: str) -> bool:
    return bool(_NUMBER.match(s.replace(" ", "")))


def _text_key(s: str) -> str:
    """Loose key for text answers ("\\text{Evelyn}" == "Evelyn", "\\text{(C)}" == "C")."""
    prev = None
    while prev != s:
        prev = s
        s = _TEXT_WRAP.sub(r"\1", s)
    s = re.sub(r"\s+", "", s).lower().rstrip(".")
    m = re.fullmatch(r"\(([a-z])\)", s)
    return m.group(1) if m else s


def _is_text_answer(gold: str) -> bool:
    return bool(_TEXT_WRAP.search(gold)) or bool(re.fullmatch(r"[A-Za-z][A-Za-z'\- ]*[A-Za-z]", gold))


# --------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------


@dataclass
class ScoreStats:
    """What happened in `score` since import (or the last `reset_score_stats`).

    `timeouts` and `errors` score 0.0; they are counted so a reward that silently turns into noise is
    visible. `cache_hits` are comparisons answered from the verdict cache (a timed-out comparison is
    cached too, so a repeated pathological answer costs one timeout, not one per repeat).
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


_STATS = ScoreStats()
_STATS_LOCK = threading.Lock()


def _bump(**deltas: int) -> None:
    with _STATS_LOCK:
        for k, v in deltas.items():
            setattr(_STATS, k, getattr(_STATS, k) + v)


def score_stats() -> ScoreStats:
    """A snapshot (copy) of the counters."""
    with _STATS_LOCK:
        return replace(_STATS)


def reset_score_stats() -> None:
    """Zero the counters (the verdict cache is kept; see `clear_score_cache`)."""
    global _STATS
    with _STATS_LOCK:
        _STATS = ScoreStats()


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

    The first parse triggers lazy imports inside sympy/latex2sympy (about 50 ms); an interrupt in the
    middle of an import could leave a half-initialised module behind, so that happens here, undisturbed.
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
            "from hacrl.tasks.math import _worker_main; _worker_main()"
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

    def judge(self, items: Sequence[tuple[str, str]], timeout_s: float) -> list[tuple[Verdict, str]]:
        out: list[tuple[Verdict, str]] = []
        failures = 0
        while len(out) < len(items):
            worker = self._acquire()
            try:
                got = worker.judge(items[len(out) :], timeout_s)
            except _WorkerDied as exc:
                worker.kill()
                failures += 1
                _bump(worker_restarts=1)
                logger.warning("math score helper failed (%s); restarting it", exc)
                if failures >= 3:
                    raise
                continue
            finally:
                self._release(worker)
            out.extend(got)
            if got and got[-1][1] == "helper killed":
                _bump(worker_restarts=1)
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
    global _POOL, _POOL_LOCK, _STATS_LOCK, _CACHE_LOCK, _MV_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()
    _MV_LOCK = threading.Lock()
    _STATS_LOCK = threading.Lock()
    _CACHE_LOCK = threading.Lock()


atexit.register(shutdown_score_workers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _judge_many(items: Sequence[tuple[str, str]], timeout_s: float | None) -> list[tuple[Verdict, str]]:
    """math-verify verdicts with the deadline mechanism that fits the calling thread (module doc)."""
    if not items:
        return []
    if timeout_s is None or _signal_deadline_usable():
        return [_judge_in_main_thread(p, g, timeout_s) for p, g in items]
    pool = _pool()
    if os.name == "posix" and pool.broken is None:
        try:
            return pool.judge(items, timeout_s)
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


def _prepare(response: str, gold: str) -> tuple[float | None, tuple[str, str] | None]:
    """Cheap part of scoring: (final score, None) when decided without math-verify, else (None, pair)."""
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"score: the gold answer must be a non-empty string, got {gold!r}")
    raw = extract_answer(response) if isinstance(response, str) else None
    if raw is None:
        _bump(no_answer=1)
        return 0.0, None
    gold_n = normalize_answer(gold)
    pred_n = normalize_answer(raw)
    if not pred_n:
        _bump(no_answer=1)
        return 0.0, None
    if _is_plain_number(gold_n):
        pred_n = _strip_units(pred_n)
    if not _STRING_FAST_PATH:
        return None, (pred_n, gold_n)
    if pred_n == gold_n or pred_n.replace(" ", "") == gold_n.replace(" ", ""):
        _bump(string_matches=1, correct=1)
        return 1.0, None
    if _is_text_answer(gold_n) and _text_key(pred_n) == _text_key(gold_n):
        _bump(string_matches=1, correct=1)
        return 1.0, None
    return None, (pred_n, gold_n)


def score_many(
    responses: Sequence[str], golds: Sequence[str], *, timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> list[float]:
    """`score` for many pairs; in a non-main thread the math-verify checks go to a helper in one batch."""
    if len(responses) != len(golds):
        raise ValueError(f"score_many: {len(responses)} responses but {len(golds)} gold answers")
    _bump(calls=len(responses))
    scores: list[float | None] = []
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (resp, gold) in enumerate(zip(responses, golds, strict=True)):
        decided, pair = _prepare(resp, gold)
        scores.append(decided)
        if pair is None:
            continue
        cached = _cache_get(pair)
        if cached is not None:
            _bump(cache_hits=1)
            scores[i] = 1.0 if cached == "match" else 0.0
            _bump(correct=int(cached == "match"))
            continue
        todo.setdefault(pair, []).append(i)
    pairs = list(todo)
    verdicts = _judge_many(pairs, timeout_s)
    _bump(verifier_calls=len(pairs))
    for pair, (verdict, detail) in zip(pairs, verdicts, strict=True):
        idx = todo[pair]
        if verdict == "timeout":
            _bump(timeouts=1)
            logger.warning("math answer check timed out after %ss (answer %r, gold %r): scored 0.0%s",
                           timeout_s, _clip(pair[0]), _clip(pair[1]), f" [{detail}]" if detail else "")
        elif verdict == "error":
            _bump(errors=1)
            logger.warning("math answer check failed (answer %r, gold %r): %s; scored 0.0",
                           _clip(pair[0]), _clip(pair[1]), detail)
        if verdict != "error":
            _cache_put(pair, verdict)
        ok = verdict == "match"
        _bump(correct=len(idx) if ok else 0)
        for i in idx:
            scores[i] = 1.0 if ok else 0.0
    return [float(s) if s is not None else 0.0 for s in scores]


def score(response: str, gold: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> float:
    """1.0 if the response's final answer equals the gold answer, else 0.0.

    `gold` is the bare gold answer (e.g. `\\frac{1}{2}`, `27`, `(1,2]`, `\\text{Evelyn}`); it may also be
    boxed or in `$...$`. Equal means: equal after `normalize_answer` (units after a number dropped when the
    gold is a plain number; case and `\\text{}` ignored for text answers), or equivalent for math-verify
    (fractions/decimals, `x=3` vs `3`, intervals, sets in any order, expressions). `timeout_s=None` disables
    the deadline (only for trusted input). Timeouts and verifier errors score 0.0 and are counted in
    `score_stats()`. Thread-safe.
    """
    return score_many([response], [gold], timeout_s=timeout_s)[0]


# --------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------


class MathTask(FixedSplits):
    """A math task: problems with gold answers, scored by `score` (binary reward).

    The training and evaluation problems must not share a prompt: held-out accuracy is meaningless
    otherwise, so an overlap is an error rather than a warning.
    """

    def __init__(
        self,
        train: Sequence[Problem],
        evaluation: Sequence[Problem],
        *,
        name: str = "math",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(name, train, evaluation)
        train_prompts = {p.prompt.strip() for p in train}
        overlap = [p for p in evaluation if p.prompt.strip() in train_prompts]
        if overlap:
            raise ValueError(
                f"task {name!r}: {len(overlap)} evaluation problems also appear in the training set "
                f"(first: {overlap[0].id!r}); use disjoint splits"
            )
        self.timeout_s = timeout_s

    @classmethod
    def from_benchmarks(
        cls,
        train: str = "math_train",
        evaluation: str | Sequence[str] = "math500",
        *,
        data_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        max_train: int | None = None,
        max_eval: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        skip_bad_rows: bool = False,
    ) -> MathTask:
        """Build from benchmark names (see `BENCHMARK_FILES`) in `data_dir` (default: $HACRL_MATH_DATA).

        Several evaluation benchmarks are concatenated; `Problem.kind` tells them apart.
        """
        from hacrl.tasks.benchmarks import BENCHMARK_FILES, load_benchmark

        eval_names = [evaluation] if isinstance(evaluation, str) else list(evaluation)
        for n in [train, *eval_names]:  # all names checked before any file is read
            if n not in BENCHMARK_FILES:
                raise ValueError(f"unknown benchmark {n!r}; valid names: {', '.join(BENCHMARK_FILES)}")
        train_rows = load_benchmark(train, data_dir, limit=max_train, skip_bad_rows=skip_bad_rows)
        eval_rows = [p for n in eval_names
                     for p in load_benchmark(n, data_dir, limit=max_eval, skip_bad_rows=skip_bad_rows)]
        return cls(train_rows, eval_rows, name=name or f"{train}->{'+'.join(eval_names)}", timeout_s=timeout_s)

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_same_length(problems, completions)
        return score_many(list(completions), [p.answer for p in problems], timeout_s=self.timeout_s)


_OPTION_KEYS = ("train", "eval", "data_dir", "max_train", "max_eval", "timeout_s", "name", "skip_bad_rows")


def math_task_from_options(options: Mapping[str, Any]) -> MathTask:
    """A MathTask from a run config's `task.options` (all keys optional):

    `train` (benchmark name, default "math_train"), `eval` (a name, a comma-separated string or a list;
    default "math500"), `data_dir` (default $HACRL_MATH_DATA), `max_train` / `max_eval` (first N rows),
    `timeout_s` (per-answer deadline, default 5; null disables it), `name`, `skip_bad_rows` (skip, count and
    log rows without a question or gold answer instead of stopping; default false). Wrong keys or types raise
    ValueError / TypeError naming the option, so the config error points at the line to fix.
    """
    unknown = [k for k in options if k not in _OPTION_KEYS]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for the math task (valid: {', '.join(_OPTION_KEYS)})")
    train = options.get("train", "math_train")
    if not isinstance(train, str):
        raise TypeError(f"option 'train' must be a benchmark name, got {train!r}")
    ev = options.get("eval", "math500")
    if isinstance(ev, str):
        eval_names = [n.strip() for n in ev.split(",") if n.strip()]
    elif isinstance(ev, list | tuple) and all(isinstance(n, str) for n in ev):
        eval_names = list(ev)
    else:
        raise TypeError(f"option 'eval' must be a benchmark name or a list of names, got {ev!r}")
    if not eval_names:
        raise ValueError("option 'eval' names no benchmark")
    limits: dict[str, int | None] = {}
    for key in ("max_train", "max_eval"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise TypeError(f"option {key!r} must be a positive integer, got {v!r}")
        limits[key] = v
    timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise TypeError(f"option 'timeout_s' must be a positive number of seconds or null, got {timeout!r}")
    data_dir = options.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise TypeError(f"option 'data_dir' must be a path, got {data_dir!r}")
    name = options.get("name")
    skip = options.get("skip_bad_rows", False)
    if not isinstance(skip, bool):
        raise TypeError(f"option 'skip_bad_rows' must be true or false, got {skip!r}")
    return MathTask.from_benchmarks(
        train, eval_names, data_dir=data_dir, name=str(name) if name is not None else None,
        max_train=limits["max_train"], max_eval=limits["max_eval"],
        timeout_s=float(timeout) if timeout is not None else None, skip_bad_rows=skip,
    )


# Re-exported so the public API lives in one place (imported last: benchmarks.py uses `last_boxed`).
from hacrl.tasks.benchmarks import (  # noqa: E402
    BENCHMARK_FILES,
    BenchmarkDataError,
    default_data_dir,
    load_benchmark,
)

__all__ = [
    "BENCHMARK_FILES",
    "DEFAULT_TIMEOUT_S",
    "BenchmarkDataError",
    "MathTask",
    "ScoreStats",
    "clear_score_cache",
    "default_data_dir",
    "extract_answer",
    "last_boxed",
    "load_benchmark",
    "math_task_from_options",
    "normalize_answer",
    "reset_score_stats",
    "score",
    "score_many",
    "score_stats",
    "shutdown_score_workers",
]
