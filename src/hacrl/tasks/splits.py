"""Problem-set helpers every task shares: kind-balanced prefixes and the two halves of a held-out split."""

from __future__ import annotations

from collections.abc import Sequence

from hacrl.tasks.base import FixedSplits, Problem, Task

__all__ = ["HeldOutHalf", "balanced_prefix"]


def balanced_prefix(problems: Sequence[Problem], limit: int) -> list[Problem]:
    """The first `limit` problems taken round-robin over kinds, so a quick evaluation still covers every kind
    (held-out splits are grouped by kind: a plain prefix would be one kind)."""
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


class HeldOutHalf(FixedSplits):
    """One half of a task's held-out split, balanced over problem kinds.

    `validation` is every other held-out problem of each kind; `test-holdout` is the rest. Tune
    hyperparameters on `validation` and report on `test-holdout`: both are unseen in training (and by the
    zoo's warm start, which draws only from the training problems), and neither informs the other.
    """

    def __init__(self, task: Task, half: str) -> None:
        by_kind: dict[str, list[Problem]] = {}
        for p in task.eval_problems():
            by_kind.setdefault(p.kind, []).append(p)
        parity = 0 if half == "validation" else 1
        chosen = {p.id for ps in by_kind.values() for i, p in enumerate(ps) if i % 2 == parity}
        evaluation = [p for p in task.eval_problems() if p.id in chosen]
        if not evaluation:
            raise ValueError(f"{half!r} is empty: the held-out split has too few problems")
        super().__init__(f"{task.name}[{half}]", task.train_problems(), evaluation)
        self._task = task
        self.stats = getattr(task, "stats", None)  # the wrapped task's answer-check counts, when it keeps them

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return self._task.score(problems, completions)
