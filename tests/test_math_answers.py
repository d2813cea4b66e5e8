"""Math answer extraction and scoring: hard cases, wrong answers, timeouts, threads."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import signal
import threading
import time

import pytest

from hacrl.tasks import math_verify as m
from hacrl.tasks.base import Problem, Task
from hacrl.tasks.math import MathTask
from hacrl.tasks.math_answers import extract_answer, normalize_answer
from hacrl.tasks.math_verify import ScoreStats, score, score_many

# ---------------------------------------------------------------------------------------------- extraction

EXTRACT_CASES = [
    ("so the answer is $\\boxed{5}$.", "5"),
    ("first \\boxed{3}, on second thought \\boxed{4}", "4"),
    ("nested \\boxed{\\frac{\\sqrt{2}}{2}} end", "\\frac{\\sqrt{2}}{2}"),
    ("deep \\boxed{\\left\\{ \\frac{1}{2}, \\frac{3}{4} \\right\\}}",
     "\\left\\{ \\frac{1}{2}, \\frac{3}{4} \\right\\}"),
    ("escaped braces \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\fbox{7}", "7"),
    ("\\boxed 5$.", "5"),
    ("\\boxed {12}", "12"),
    ("$\\boxed{(-2,18)}$ and $\\boxed{(8,38)}$.", "(-2,18), (8,38)"),
    ("$\\boxed{2}$. Also $x = \\boxed{2}$", "2"),
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
    ("#### 1,000", "1,000"),
    ("The answer is 18.", "18"),
    ("The answer is 3.5 apples", "3.5 apples"),
    ("So the final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
    ("Final Answer: The final answer is $(1,2]$. I hope it is correct.", "(1,2]"),
    ("**Answer:** 7", "7"),
    ("The answer is $18.", "$18"),
    ("The answer is \\(x^2\\).", "x^2"),
    # no answer
    ("", None),
    ("   \n ", None),
    ("I think it's about 5 or so", None),
    ("the last box is cut off \\boxed{12", None),
    ("earlier \\boxed{3} but the final one is cut \\boxed{\\frac{1}{", None),
    ("\\boxed{}", None),
    ("so the answer is $\\boxed{}$.", None),
    ("The answer is", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_prefers_box_over_answer_is() -> None:
    assert extract_answer("The answer is 3. Actually \\boxed{4}") == "4"


def test_extract_answer_non_string() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]


def test_normalize_answer() -> None:
    assert normalize_answer("$\\dfrac{1}{2}$") == "\\frac{1}{2}"
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("1{,}000") == "1000"
    assert normalize_answer("1,\\!000") == "1000"
    assert normalize_answer("\\dfrac{1}{29,\\!322,\\!216}") == "\\frac{1}{29322216}"
    assert normalize_answer("1,3") == "1,3"  # a list, not a thousands separator
    assert normalize_answer("90^\\circ") == "90"
    assert normalize_answer("\\text{(E)},") == "\\text{(E)}"
    assert normalize_answer("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}") == "( 3, \\frac{\\pi}{2} )"


# ------------------------------------------------------------------------------------------------- scoring

RIGHT = [
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{0.5}", "\\frac12"),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\tfrac12}", "1/2"),
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}"),
    ("\\boxed{x=3}", "3"),
    ("\\boxed{3}", "x=3"),
    ("\\boxed{(1,2]}", "(1,2]"),
    ("\\boxed{\\left(-\\infty, 3\\right)}", "(-\\infty,3)"),
    ("\\boxed{-3, 2}", "2, -3"),
    ("\\boxed{\\{2,-3\\}}", "2,-3"),
    ("\\boxed{(2,7,13),(1,8,19),(4,5,7)}", "(1,8,19), (2,7,13), (4,5,7)"),
    ("\\boxed{5\\text{ cm}}", "5"),
    ("\\boxed{5 \\text{ cm}^2}", "5"),
    ("The answer is 18 dollars.", "18"),
    ("\\boxed{45 \\text{ minutes}}", "45"),
    ("\\boxed{21}", "21\\text{ dogs}"),
    ("\\boxed{90^\\circ}", "90"),
    ("\\boxed{90}", "90^\\circ"),
    ("\\boxed{50\\%}", "50"),
    ("\\boxed{\\$18.90}", "18.90"),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),
    ("The answer is Evelyn.", "\\text{Evelyn}"),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
    ("\\boxed{C}", "\\text{(C)}"),
    ("\\boxed{(C)}", "\\text{(C)}"),
    ("#### 1,000", "1000"),
    ("\\boxed{1000}", "1,000"),
    ("\\boxed{\\frac{1}{29322216}}", "\\dfrac{1}{29,\\!322,\\!216}"),
    ("\\boxed{11111111100}", "11,\\! 111,\\! 111,\\! 100"),
    ("\\boxed{\\$1,657}", "\\$1,\\!657"),
    ("\\boxed{27}", "27.0"),
    ("\\boxed{1+x^2}", "x^2+1"),
    ("\\boxed{\\frac{\\sqrt2}{2}}", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{10^{10}}", "10000000000"),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("Final Answer: The final answer is $\\frac{1}{2n+2}$. I hope it is correct.", "\\frac{1}{2 n+2}"),
    ("\\boxed{0.333333}", "\\frac13"),
    ("\\boxed{6 - 5i}", "6-5i"),
]

WRONG = [
    ("\\boxed{4}", "5"),
    ("\\boxed{-2}", "2"),
    ("\\boxed{100}", "1000"),
    ("\\boxed{0.33}", "\\frac13"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{2}"),
    ("\\boxed{(1,2)}", "[1,2]"),
    ("\\boxed{(1,2)}", "(1,2]"),
    ("\\boxed{2}", "2, 3"),  # half of a two-part answer
    ("\\boxed{2, 3}", "2"),  # hedging with an extra value
    ("\\boxed{x=2}", "3"),
    ("\\boxed{2x}", "2"),  # not a unit
    ("\\boxed{\\text{Bob}}", "\\text{Evelyn}"),
    ("\\boxed{A}", "\\text{(C)}"),
    ("\\boxed{\\text{odd}}", "\\text{even}"),
    ("The answer is 17.", "18"),
    ("#### 72", "27"),
    ("", "5"),
    ("no idea", "5"),
    ("cut off \\boxed{5", "5"),
    ("\\boxed{}", "5"),
    ("I think 5", "5"),  # not marked as the answer
]


@pytest.mark.parametrize(("response", "gold"), RIGHT)
def test_score_right(response: str, gold: str) -> None:
    assert score(response, gold) == 1.0


@pytest.mark.parametrize(("response", "gold"), WRONG)
def test_score_wrong(response: str, gold: str) -> None:
    assert score(response, gold) == 0.0


def test_score_rejects_empty_gold() -> None:
    with pytest.raises(ValueError, match="gold"):
        score("\\boxed{1}", "  ")


def test_score_many_and_stats() -> None:
    st = ScoreStats()
    got = score_many(["\\boxed{1}", "\\boxed{2}", "nothing", "\\boxed{\\frac{4}{2}}"], ["1", "3", "1", "2"], stats=st)
    assert got == [1.0, 0.0, 0.0, 1.0]
    assert st.calls == 4 and st.correct == 2 and st.no_answer == 1
    with pytest.raises(ValueError, match="2 responses but 1"):
        score_many(["a", "b"], ["1"])


def test_stats_belong_to_the_caller() -> None:
    a, b = ScoreStats(), ScoreStats()
    score_many(["\\boxed{1}", "nothing"], ["1", "1"], stats=a)
    score("\\boxed{2}", "2", stats=b)
    score("\\boxed{3}", "3")  # no stats: counted nowhere
    assert (a.calls, a.correct, a.no_answer) == (2, 1, 1)
    assert (b.calls, b.correct, b.no_answer) == (1, 1, 0)
    copy = pickle.loads(pickle.dumps(a))  # picklable (its lock is not part of it)
    assert copy == a and dataclasses.asdict(copy) == dataclasses.asdict(a)
    copy.add(b)
    assert copy.calls == 3 and a.calls == 2


def test_stats_shared_by_threads_add_up() -> None:
    st = ScoreStats()
    responses = ["\\boxed{1}", "\\boxed{2}", "none"]

    def run() -> None:
        for _ in range(20):
            score_many(responses, ["1", "2", "1"], stats=st)  # all decided without math-verify

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    got = st.snapshot()
    assert (got.calls, got.correct, got.no_answer, got.verifier_calls) == (240, 160, 80, 0)


def test_score_without_timeout() -> None:
    assert score("\\boxed{\\frac{3}{6}}", "0.5", timeout_s=None) == 1.0


# ------------------------------------------------------------------------------------------------ timeouts


def _busy_forever(pred: str, gold: str) -> bool:
    while True:
        time.sleep(0.001)


def test_timeout_main_thread_monkeypatched(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(m, "_mv_equal", _busy_forever)
    st = ScoreStats()
    handler_before = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="hacrl.tasks.math_verify"):
        assert score("\\boxed{\\frac{7}{9}}", "\\frac{14}{18}", timeout_s=0.3, stats=st) == 0.0
    assert time.monotonic() - t0 < 3
    assert st.timeouts == 1
    assert any("timed out" in r.getMessage() for r in caplog.records)
    assert signal.getsignal(signal.SIGALRM) is handler_before  # the caller's handler is restored


def test_timeout_pathological_expression_main_thread() -> None:
    m.clear_score_cache()
    st = ScoreStats()
    t0 = time.monotonic()
    assert score("\\boxed{2^{10^{10}}}", "3", timeout_s=0.5, stats=st) == 0.0
    assert time.monotonic() - t0 < 5
    after = st.snapshot()
    assert after.timeouts == 1
    # The same answer again is answered from the cache instead of timing out again.
    t1 = time.monotonic()
    assert score("\\boxed{2^{10^{10}}}", "3", timeout_s=0.5, stats=st) == 0.0
    assert time.monotonic() - t1 < 0.2
    assert st.cache_hits == after.cache_hits + 1


def test_outer_alarm_is_rearmed() -> None:
    fired: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        assert score("\\boxed{\\frac{5}{10}}", "0.5") == 1.0
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 0.3 or fired
        time.sleep(0.5)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_verifier_error_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(pred: str, gold: str) -> bool:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(m, "_mv_equal", boom)
    st = ScoreStats()
    assert score("\\boxed{\\frac{11}{13}}", "\\frac{22}{26}", stats=st) == 0.0
    assert st.errors == 1


def _in_thread(fn):  # type: ignore[no-untyped-def]
    out: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=run)
    th.start()
    th.join(60)
    assert not th.is_alive(), "score hung in a thread"
    if errors:
        raise errors[0]
    return out[0]


def test_score_in_thread_uses_helper_and_times_out() -> None:
    m.clear_score_cache()
    st = ScoreStats()
    results = _in_thread(lambda: score_many(
        ["\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{x=4}", "\\boxed{2^{10^{10}}}", "\\boxed{0.25}"],
        ["0.5", "4", "4", "3", "\\frac14"],
        timeout_s=1.0,
        stats=st,
    ))
    assert results == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert st.timeouts == 1
    assert m._POOL is not None  # the math-verify checks ran in a helper process
    # plain `score` works in a thread too
    assert _in_thread(lambda: score("\\boxed{\\dfrac{3}{4}}", "0.75")) == 1.0


def test_hung_helper_is_killed_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    # A helper that does not answer by timeout_s + grace is killed; a negative grace forces that path.
    m.clear_score_cache()
    monkeypatch.setattr(m, "_WORKER_GRACE_S", -0.7)
    st = ScoreStats()
    assert _in_thread(lambda: score("\\boxed{3^{10^{10}}}", "3", timeout_s=1.0, stats=st)) == 0.0
    assert st.timeouts == 1
    assert st.worker_restarts >= 1
    monkeypatch.setattr(m, "_WORKER_GRACE_S", 2.0)
    assert _in_thread(lambda: score("\\boxed{\\frac{6}{8}}", "0.75")) == 1.0


def test_score_many_from_several_threads() -> None:
    m.clear_score_cache()
    golds = [f"\\frac{{{k}}}{{{k + 1}}}" for k in range(1, 9)]
    responses = [f"\\boxed{{\\frac{{{2 * k}}}{{{2 * k + 2}}}}}" for k in range(1, 9)]
    results: dict[int, list[float]] = {}

    def run(i: int) -> None:
        results[i] = score_many(responses, golds)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert all(results[i] == [1.0] * 8 for i in range(3))


# ----------------------------------------------------------------------------------------------- MathTask


def _p(i: int, prompt: str, answer: str) -> Problem:
    return Problem(id=f"t/{i}", prompt=prompt, answer=answer, kind="t")


def test_math_task_protocol_and_score() -> None:
    train = [_p(0, "1+1?", "2"), _p(1, "half?", "\\frac12")]
    evaluation = [_p(2, "3*3?", "9")]
    task = MathTask(train, evaluation, name="tiny")
    assert isinstance(task, Task)
    assert task.name == "tiny"
    assert list(task.train_problems()) == train and list(task.eval_problems()) == evaluation
    got = task.score([train[0], train[1], evaluation[0]], ["\\boxed{2}", "The answer is 0.5.", "#### 8"])
    assert got == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 problems but 1"):
        task.score(train, ["x"])
    assert (task.stats.calls, task.stats.correct, task.stats.no_answer) == (3, 2, 0)


def test_math_task_rejects_overlap_and_empty() -> None:
    with pytest.raises(ValueError, match="also appear in the training set"):
        MathTask([_p(0, "1+1?", "2")], [_p(1, " 1+1? ", "2")])
    with pytest.raises(ValueError, match="training set is empty"):
        MathTask([], [_p(1, "q", "2")])
    with pytest.raises(ValueError, match="evaluation set is empty"):
        MathTask([_p(1, "q", "2")], [])
