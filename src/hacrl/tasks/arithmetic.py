"""The built-in synthetic verifiable task: integer arithmetic with worked solutions.

Why this task: it needs no download, its verifier is exact and cheap, and it has two *kinds* of problem
that need different skills, so two tiny agents warm-started on different mixes are complementary — the
setting in which HACPO's cross-agent learning should pay off (docs/method.md §1).

* ``add``: a chain of ``+``/``-`` on ``add_digits``-digit numbers, by default four 1-digit operands,
  e.g. ``7+8-3+9=``. Worked solution: one line per operation carrying the running value,
  ``7+8=15\\n15-3=12\\n12+9=21\\nAnswer: 21``. (Two-digit chains such as ``37+48-19=`` are one knob
  away, but a ~1M-parameter model reached only 6-14% on them after a 1-2 minute warm start.)
* ``mul``: a ``mul_digits``-digit number times a one-digit number, e.g. ``23*4=``. Worked solution: split
  the big factor by place value, ``23*4: 20*4=80, 3*4=12, 80+12=92\\nAnswer: 92``.

Responses are short worked solutions (tens of tokens) rather than bare numbers on purpose: with a bare
3-token answer a learner's length-normalised probability of its partner's correct answer is far below the
cross-agent clip, whereas in a worked solution most tokens are shared format and easy steps,
so a partner's solution is plausible enough to be learned from.

The verifier reads only the final answer: the LAST ``Answer:`` in the completion must be followed by an
integer (and nothing else on that line) equal to the gold answer; anything else scores 0.0.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from hacrl.tasks.base import Problem, check_same_length

KINDS = ("add", "mul")
"""Problem kinds this task knows, in their canonical order."""

_ANSWER_PREFIX = "Answer:"
# After the last "Answer:": optional blanks, an integer of bounded length (no giant ints), optional blanks,
# then the end of the line or of the text. Bounded so `int()` never meets Python's digit limit.
_ANSWER_BODY = re.compile(r"[ \t]*([+-]?\d{1,40})[ \t]*(?:\r?\n|$)")


@dataclass(frozen=True)
class ArithmeticConfig:
    """Difficulty knobs and split sizes. Every field enters the zoo's recipe key, so changing one retrains.

    `n_eval` and `n_train` are totals, split evenly over `kinds`; a kind whose problem space is smaller
    than its share of the training pool contributes all its remaining problems. With the defaults: ``add``
    draws 10,000 training chains from 45,785 valid ones (four 1-digit operands; running values stay >= 0),
    while ``mul`` (2-digit x 1-digit) has only 720 problems, so 470 train after 250 go to eval — enough
    for the sub-steps to generalise (the eval split is disjoint), but ``mul_digits=3`` (7,200 problems)
    is the knob for a pool too large to memorise, at about three times the warm-start cost.
    """

    kinds: tuple[str, ...] = KINDS
    add_terms: int = 4
    """Operands in an ``add`` chain (so ``add_terms - 1`` operations, one solution line each)."""
    add_digits: int = 1
    add_ops: str = "+-"
    allow_negative: bool = False
    """If False, a subtraction never takes the running value below zero (the operand is redrawn)."""
    mul_digits: int = 2
    """Digits of the big factor of a ``mul`` problem (the other factor is one digit, 2..mul_max_small)."""
    mul_max_small: int = 9
    n_eval: int = 500
    n_train: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))  # YAML gives lists; keep the config hashable
        unknown = [k for k in self.kinds if k not in KINDS]
        if not self.kinds or unknown or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"ArithmeticConfig.kinds={self.kinds!r}: use distinct kinds from {KINDS}")
        if self.add_terms < 2:
            raise ValueError(f"ArithmeticConfig.add_terms={self.add_terms}: need at least 2 operands")
        if not 1 <= self.add_digits <= 6 or not 1 <= self.mul_digits <= 6:
            raise ValueError("ArithmeticConfig.add_digits / mul_digits must be between 1 and 6")
        if not self.add_ops or set(self.add_ops) - set("+-"):
            raise ValueError(f"ArithmeticConfig.add_ops={self.add_ops!r}: use a non-empty subset of '+-'")
        if "+" not in self.add_ops and not self.allow_negative:
            raise ValueError("ArithmeticConfig.add_ops='-' needs allow_negative=True (chains stick at 0)")
        if not 2 <= self.mul_max_small <= 9:
            raise ValueError(f"ArithmeticConfig.mul_max_small={self.mul_max_small}: must be in 2..9")
        if self.n_eval < len(self.kinds) or self.n_train < len(self.kinds):
            raise ValueError("ArithmeticConfig.n_eval / n_train must give every kind at least one problem")


# --------------------------------------------------------------------------------------------------------
# Problem generation and worked solutions


def _digits_range(digits: int) -> tuple[int, int]:
    return (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1


def _add_problem(operands: Sequence[int], ops: Sequence[str]) -> Problem:
    expr = str(operands[0]) + "".join(op + str(x) for op, x in zip(ops, operands[1:], strict=True))
    value = operands[0]
    for op, x in zip(ops, operands[1:], strict=True):
        value = value + x if op == "+" else value - x
    return Problem(id=f"add:{expr}", prompt=f"{expr}=", answer=str(value), kind="add")


def _mul_problem(big: int, small: int) -> Problem:
    expr = f"{big}*{small}"
    return Problem(id=f"mul:{expr}", prompt=f"{expr}=", answer=str(big * small), kind="mul")


def _parse_expression(problem: Problem) -> tuple[list[int], list[str]]:
    """Operands and operators of a problem's prompt (``37+48-19=`` -> [37, 48, 19], ['+', '-'])."""
    body = problem.prompt.rstrip("=")
    tokens = re.findall(r"\d+|[+\-*]", body)
    operands = [int(t) for t in tokens[0::2]]
    ops = tokens[1::2]
    if "".join(tokens) != body or len(operands) != len(ops) + 1:
        raise ValueError(f"not an arithmetic-task prompt: {problem.prompt!r}")
    return operands, ops


def reference_solution(problem: Problem) -> str:
    """The worked solution the supervised warm start imitates (no trailing newline, no EOS).

    ``add``: one ``a op b = c`` line per operation, carrying the running value; ``mul``: the big factor
    split by place value (zeros kept, so every solution has the same shape), then the partial sum.
    Both end with ``Answer: <int>``.
    """
    operands, ops = _parse_expression(problem)
    if problem.kind == "add":
        lines = []
        value = operands[0]
        for op, x in zip(ops, operands[1:], strict=True):
            new = value + x if op == "+" else value - x
            lines.append(f"{value}{op}{x}={new}")
            value = new
        return "\n".join(lines) + f"\n{_ANSWER_PREFIX} {value}"
    if problem.kind == "mul":
        if ops != ["*"]:
            raise ValueError(f"not a mul prompt: {problem.prompt!r}")
        big, small = operands
        digits = str(big)
        parts = [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits)]
        products = [p * small for p in parts]
        steps = ", ".join(f"{p}*{small}={q}" for p, q in zip(parts, products, strict=True))
        total = "+".join(str(q) for q in products) + f"={big * small}"
        return f"{big}*{small}: {steps}, {total}\n{_ANSWER_PREFIX} {big * small}"
    raise ValueError(f"unknown problem kind {problem.kind!r}; known kinds: {KINDS}")


# --------------------------------------------------------------------------------------------------------
# Verification


def extract_answer(completion: str) -> int | None:
    """The integer after the LAST ``Answer:`` of a completion, or None if that last one is malformed.

    Only the last ``Answer:`` counts, so a completion cannot hedge by listing several answers; a
    malformed last answer is not rescued by an earlier well-formed one.
    """
    at = completion.rfind(_ANSWER_PREFIX)
    if at < 0:
        return None
    match = _ANSWER_BODY.match(completion, at + len(_ANSWER_PREFIX))
    return int(match.group(1)) if match else None


def verify(problem: Problem, completion: str) -> float:
    """1.0 if the completion's final answer equals the gold answer, else 0.0."""
    got = extract_answer(completion)
    return 1.0 if got is not None and got == int(problem.answer) else 0.0


# --------------------------------------------------------------------------------------------------------
# The task


class ArithmeticTask:
    """Two kinds of integer arithmetic with a fixed, disjoint, kind-balanced eval split.

    Splits are a pure function of the config (seeded by ``config.seed``): the eval split is drawn
    first, and the training pool is drawn with every eval problem excluded, so the two are disjoint by
    construction. Both are built lazily and cached on the instance.
    """

    def __init__(self, config: ArithmeticConfig | None = None) -> None:
        self.config = config or ArithmeticConfig()
        self.name = "arithmetic"

    # -- Task protocol ----------------------------------------------------------------------------------

    def train_problems(self) -> Sequence[Problem]:
        return self._splits[1]

    def eval_problems(self) -> Sequence[Problem]:
        return self._splits[0]

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        check_same_length(problems, completions)
        return [verify(p, c) for p, c in zip(problems, completions, strict=True)]

    # -- helpers ----------------------------------------------------------------------------------------

    reference_solution = staticmethod(reference_solution)

    def space_size(self, kind: str) -> int:
        """How many distinct problems of `kind` exist under this config (an upper bound for ``add``)."""
        cfg = self.config
        if kind == "add":
            lo, hi = _digits_range(cfg.add_digits)
            return (hi - lo + 1) ** cfg.add_terms * len(cfg.add_ops) ** (cfg.add_terms - 1)
        if kind == "mul":
            lo, hi = _digits_range(cfg.mul_digits)
            return (hi - lo + 1) * (cfg.mul_max_small - 1)
        raise ValueError(f"unknown problem kind {kind!r}; known kinds: {KINDS}")

    @cached_property
    def _splits(self) -> tuple[list[Problem], list[Problem]]:
        cfg = self.config
        n_kinds = len(cfg.kinds)
        eval_split: list[Problem] = []
        train_by_kind: list[list[Problem]] = []
        for i, kind in enumerate(cfg.kinds):
            n_eval = cfg.n_eval // n_kinds + (1 if i < cfg.n_eval % n_kinds else 0)
            n_train = cfg.n_train // n_kinds + (1 if i < cfg.n_train % n_kinds else 0)
            ev, tr = self._kind_splits(kind, n_eval, n_train)
            eval_split.extend(ev)
            train_by_kind.append(tr)
        # Eval grouped by kind (readable per kind); the training pool shuffled so any prefix mixes kinds.
        train = [p for group in train_by_kind for p in group]
        random.Random(f"arithmetic:{cfg.seed}:train-order").shuffle(train)
        return eval_split, train

    def _kind_splits(self, kind: str, n_eval: int, n_train: int) -> tuple[list[Problem], list[Problem]]:
        cfg = self.config
        space = self.space_size(kind)
        if n_eval >= space:
            raise ValueError(
                f"kind {kind!r} has only {space} distinct problems under this config; "
                f"an eval split of {n_eval} would leave nothing to train on"
            )
        rng_eval = random.Random(f"arithmetic:{cfg.seed}:{kind}:eval")
        rng_train = random.Random(f"arithmetic:{cfg.seed}:{kind}:train")
        if space <= 200_000:  # small space: enumerate, shuffle, cut (exact and exhaustive)
            everything = self._enumerate(kind)
            rng_eval.shuffle(everything)
            ev = sorted(everything[:n_eval], key=lambda p: p.id)
            rest = everything[n_eval:]
            rng_train.shuffle(rest)
            return ev, rest[:n_train]
        draw = self._sampler(kind)
        ev = _draw_unique(draw, rng_eval, n_eval, exclude=set())
        tr = _draw_unique(draw, rng_train, n_train, exclude={p.id for p in ev})
        return sorted(ev, key=lambda p: p.id), tr

    def _enumerate(self, kind: str) -> list[Problem]:
        cfg = self.config
        if kind == "mul":
            lo, hi = _digits_range(cfg.mul_digits)
            return [_mul_problem(b, s) for b in range(lo, hi + 1) for s in range(2, cfg.mul_max_small + 1)]
        lo, hi = _digits_range(cfg.add_digits)
        out = []
        for operands in itertools.product(range(lo, hi + 1), repeat=cfg.add_terms):
            for ops in itertools.product(cfg.add_ops, repeat=cfg.add_terms - 1):
                value = operands[0]
                for op, x in zip(ops, operands[1:], strict=True):
                    value = value + x if op == "+" else value - x
                    if value < 0 and not cfg.allow_negative:
                        break
                else:
                    out.append(_add_problem(operands, ops))
        return out

    def _sampler(self, kind: str) -> Callable[[random.Random], Problem]:
        cfg = self.config
        if kind == "add":
            lo, hi = _digits_range(cfg.add_digits)

            def draw_add(rng: random.Random) -> Problem:
                operands = [rng.randint(lo, hi)]
                ops: list[str] = []
                value = operands[0]
                for _ in range(cfg.add_terms - 1):
                    op = rng.choice(cfg.add_ops)
                    if op == "-" and not cfg.allow_negative:
                        # Keep the running value >= 0: subtract at most the value, or add if nothing fits.
                        if value >= lo:
                            x = rng.randint(lo, min(hi, value))
                        else:
                            op, x = "+", rng.randint(lo, hi)
                    else:
                        x = rng.randint(lo, hi)
                    value = value + x if op == "+" else value - x
                    operands.append(x)
                    ops.append(op)
                return _add_problem(operands, ops)

            return draw_add
        if kind == "mul":
            lo, hi = _digits_range(cfg.mul_digits)

            def draw_mul(rng: random.Random) -> Problem:
                return _mul_problem(rng.randint(lo, hi), rng.randint(2, cfg.mul_max_small))

            return draw_mul
        raise ValueError(f"unknown problem kind {kind!r}; known kinds: {KINDS}")


def _draw_unique(
    draw: Callable[[random.Random], Problem], rng: random.Random, n: int, exclude: set[str]
) -> list[Problem]:
    """`n` distinct problems not in `exclude`, in draw order (fewer only if the space runs out)."""
    seen = set(exclude)
    out: list[Problem] = []
    attempts = 0
    while len(out) < n and attempts < 50 * n + 1000:
        attempts += 1
        p = draw(rng)
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out
