"""The arithmetic task: exact verifier, disjoint deterministic splits, worked reference solutions."""

from __future__ import annotations

from collections import Counter

import pytest

from hacrl.tasks.arithmetic import (
    KINDS,
    ArithmeticConfig,
    ArithmeticTask,
    extract_answer,
    reference_solution,
    verify,
)
from hacrl.tasks.base import Problem, Task


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask()


def _problem(prompt: str, answer: int, kind: str = "add") -> Problem:
    return Problem(id=f"{kind}:{prompt}", prompt=prompt, answer=str(answer), kind=kind)


# -- verifier ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("37+48=85\n85-19=66\nAnswer: 66", 1.0),
        ("Answer: 66", 1.0),
        ("Answer:66", 1.0),
        ("Answer: 66  \n", 1.0),
        ("Answer: 66\ntrailing text after the final answer line", 1.0),
        ("Answer: +66", 1.0),
        ("Answer: 066", 1.0),  # the verifier compares integer values
        ("Answer: 65", 0.0),
        ("66", 0.0),  # a bare number is not an answer
        ("", 0.0),
        ("Answer:", 0.0),
        ("Answer: ", 0.0),
        ("Answer: sixty-six", 0.0),
        ("Answer: 66.0", 0.0),
        ("Answer: 66abc", 0.0),
        ("Answer: 6 6", 0.0),
        ("answer: 66", 0.0),  # case matters: the format is part of what is learned
        ("\x00\xff garbage Answer", 0.0),
        ("Answer: 66\nAnswer: 65", 0.0),  # only the last answer counts
        ("Answer: 65\nAnswer: 66", 1.0),
        ("Answer: 66\nAnswer: oops", 0.0),  # a malformed last answer is not rescued by an earlier one
        ("Answer: " + "9" * 500, 0.0),  # absurdly long numbers are rejected, not parsed
    ],
)
def test_verifier_exact_cases(completion: str, expected: float) -> None:
    assert verify(_problem("37+48-19=", 66), completion) == expected


def test_verifier_negative_answers() -> None:
    problem = _problem("10-30=", -20)
    assert verify(problem, "10-30=-20\nAnswer: -20") == 1.0
    assert verify(problem, "Answer: 20") == 0.0
    assert extract_answer("Answer: -7") == -7


def test_score_matches_lengths(task: ArithmeticTask) -> None:
    problems = list(task.eval_problems()[:3])
    with pytest.raises(ValueError, match="3 problems but 2 completions"):
        task.score(problems, ["", ""])
    assert task.score(problems, ["", "Answer: x", reference_solution(problems[2])]) == [0.0, 0.0, 1.0]


# -- splits --------------------------------------------------------------------------------------------------


def test_is_a_task(task: ArithmeticTask) -> None:
    assert isinstance(task, Task)
    assert task.name == "arithmetic"


def test_eval_disjoint_from_train(task: ArithmeticTask) -> None:
    train_ids = {p.id for p in task.train_problems()}
    train_prompts = {p.prompt for p in task.train_problems()}
    assert not train_ids & {p.id for p in task.eval_problems()}
    assert not train_prompts & {p.prompt for p in task.eval_problems()}


def test_no_duplicates_and_sizes(task: ArithmeticTask) -> None:
    ev, tr = task.eval_problems(), task.train_problems()
    assert len({p.id for p in ev}) == len(ev) == 500
    assert len({p.id for p in tr}) == len(tr)
    # mul has 90*8 = 720 distinct problems: 250 go to eval, all the rest to training
    assert Counter(p.kind for p in tr) == {"add": 10_000, "mul": 720 - 250}


def test_kinds_balanced(task: ArithmeticTask) -> None:
    assert Counter(p.kind for p in task.eval_problems()) == {"add": 250, "mul": 250}
    odd = ArithmeticTask(ArithmeticConfig(n_eval=101, n_train=51))
    counts = Counter(p.kind for p in odd.eval_problems())
    assert abs(counts["add"] - counts["mul"]) <= 1 and sum(counts.values()) == 101


def test_train_pool_mixes_kinds_early(task: ArithmeticTask) -> None:
    assert {p.kind for p in task.train_problems()[:50]} == set(KINDS)


def test_splits_deterministic_for_a_seed() -> None:
    a, b = ArithmeticTask(ArithmeticConfig(seed=7)), ArithmeticTask(ArithmeticConfig(seed=7))
    assert a.eval_problems() == b.eval_problems()
    assert a.train_problems() == b.train_problems()
    c = ArithmeticTask(ArithmeticConfig(seed=8))
    assert [p.id for p in c.eval_problems()] != [p.id for p in a.eval_problems()]


def test_reference_solutions_verify_on_all_eval_problems(task: ArithmeticTask) -> None:
    problems = task.eval_problems()
    assert task.score(problems, [reference_solution(p) for p in problems]) == [1.0] * len(problems)


def test_reference_solutions_on_a_train_sample(task: ArithmeticTask) -> None:
    problems = task.train_problems()[:2000]
    assert all(verify(p, reference_solution(p)) == 1.0 for p in problems)


def test_worked_solution_shapes() -> None:
    assert reference_solution(_problem("37+48-19=", 66)) == "37+48=85\n85-19=66\nAnswer: 66"
    assert reference_solution(_problem("23*4=", 92, "mul")) == "23*4: 20*4=80, 3*4=12, 80+12=92\nAnswer: 92"
    assert reference_solution(_problem("305*6=", 1830, "mul")) == (
        "305*6: 300*6=1800, 0*6=0, 5*6=30, 1800+0+30=1830\nAnswer: 1830"
    )


def test_answers_match_prompts(task: ArithmeticTask) -> None:
    for p in list(task.eval_problems()) + list(task.train_problems()[:500]):
        assert p.prompt.endswith("=")
        assert int(p.answer) == eval(p.prompt[:-1])  # the prompt is a plain Python integer expression
        assert p.kind in KINDS


def test_no_negative_values_by_default(task: ArithmeticTask) -> None:
    for p in task.train_problems()[:3000]:
        assert "=-" not in reference_solution(p)


def test_allow_negative_produces_negatives() -> None:
    task = ArithmeticTask(ArithmeticConfig(allow_negative=True, kinds=("add",), n_train=2000))
    assert any(int(p.answer) < 0 for p in task.train_problems())
    assert all(verify(p, reference_solution(p)) == 1.0 for p in task.train_problems())


def test_difficulty_knobs() -> None:
    task = ArithmeticTask(ArithmeticConfig(add_terms=4, add_digits=3, mul_digits=3, n_eval=40, n_train=400))
    add = next(p for p in task.eval_problems() if p.kind == "add")
    mul = next(p for p in task.eval_problems() if p.kind == "mul")
    assert reference_solution(add).count("\n") == 3  # three operations, then the answer line
    assert len(mul.prompt.split("*")[0]) == 3
    assert task.space_size("mul") == 900 * 8


def test_small_spaces_enumerated_exactly() -> None:
    # 1-digit, 2 terms, '+' only: exactly 100 problems; 10 eval, everything else in training
    task = ArithmeticTask(ArithmeticConfig(kinds=("add",), add_digits=1, add_terms=2, add_ops="+",
                                           n_eval=10, n_train=10_000))
    assert len(task.eval_problems()) == 10
    assert len(task.train_problems()) == 90


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kinds": ("div",)},
        {"kinds": ()},
        {"kinds": ("add", "add")},
        {"add_terms": 1},
        {"add_ops": "*"},
        {"add_ops": "-"},
        {"mul_max_small": 1},
        {"n_eval": 1},
    ],
)
def test_bad_configs_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="ArithmeticConfig"):
        ArithmeticConfig(**kwargs)


def test_eval_larger_than_space_raises() -> None:
    task = ArithmeticTask(ArithmeticConfig(kinds=("mul",), mul_digits=1, n_eval=100, n_train=10))
    with pytest.raises(ValueError, match="only 80 distinct problems"):
        task.eval_problems()
