"""`hacrl eval`: avg@k, pass@k (and best@k for AIME) of one or more agents on a task's held-out problems.

Every agent is loaded with `load_agent` exactly as training loads it, so its own prompt rendering is used (the
chat template when its tokenizer has one), and completions are decoded and scored by the one evaluator
(`hacrl.evaluator`) that training-time evaluation and the zoo's warm-start measurement use. What is measured,
per benchmark and agent, over the problems whose rendered prompt fits the model (see "skipped"):

* k = 1: greedy decoding, one completion per problem; avg@1 = pass@1 = best@1 = greedy accuracy.
* k > 1: k completions per problem sampled at `temperature` / `top_p` from a generator seeded with
  (`seed`, benchmark name), so a rerun reproduces the numbers and adding a benchmark does not change the
  others. avg@k, pass@k (Chen et al.'s unbiased estimator at n = k, i.e. "any of k correct") and best@k (AIME
  only, where the paper reports it: the best of the k sample columns) are defined in `hacrl.evaluator`. (A
  paper that uses "best@k" for the per-problem "any of k correct" means our pass@k, which is reported too.)

Skipped prompts: a problem whose rendered prompt plus `max_new_tokens` exceeds the model's context
(`max_position_embeddings`) is not generated for; it is counted in `skipped_too_long` for that agent and
benchmark, logged, and excluded from the denominators (never silently dropped, never silently scored 0).

Defaults: `max_new_tokens` 48 for arithmetic (its worked solutions are ~40 tokens) and 1024 for math
(enough for most MATH-500 / GSM8K chains of thought of small models; the paper trained with 4096 —
pass `--max-new-tokens 4096` to evaluate like it).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from hacrl.config import ConfigError
from hacrl.evaluator import aggregate, context_limit, decode, pass_at_k, score_completions
from hacrl.models.loading import stop_token_ids
from hacrl.tasks.base import Problem

if TYPE_CHECKING:
    from hacrl.tasks.math_verify import ScoreStats

logger = logging.getLogger(__name__)

TASKS = ("arithmetic", "math")
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {"arithmetic": 48, "math": 1024}
PAPER_BENCHMARKS: tuple[str, ...] = ("math500", "math", "gsm8k", "aime2025", "amc23", "minerva", "olympiadbench")
"""The paper's seven evaluation benchmarks (the default for `--task math`; `--benchmarks paper` names them)."""
DEFAULT_BATCH_SIZE = 32
"""Sequences decoded together; bounds memory (a KV cache of batch x (prompt + max_new_tokens) positions)."""

Scorer = Callable[[Sequence[Problem], Sequence[str]], list[float]]


def wants_best_at_k(benchmark: str) -> bool:
    """best@k is reported for AIME (the paper's convention for its 30-problem, high-variance benchmark)."""
    return benchmark.startswith("aime")


# ----------------------------------------------------------------------------------------------------------
# What to evaluate on


@dataclass
class Suite:
    """One benchmark (or the arithmetic held-out split): its problems, how to score them, row counts.

    `stats`: the answer-check counts that `score` adds to (math suites; None where nothing can time out).
    """

    name: str
    problems: list[Problem]
    score: Scorer
    rows_in_file: int | None
    path: str | None = None
    stats: ScoreStats | None = None

    def answer_check_timeouts(self) -> int:
        """Answer checks of this suite's `score` that ran out of time so far (0 without `stats`)."""
        return self.stats.snapshot().timeouts if self.stats is not None else 0

    @property
    def best(self) -> bool:
        return wants_best_at_k(self.name)


def parse_benchmarks(benchmarks: str | Iterable[str] | None) -> list[str]:
    """Benchmark names from a comma-separated string or a list; `paper` = the paper's seven, `all` = every
    loader (train splits included). None -> the paper's seven. Unknown names are a ConfigError."""
    from hacrl.tasks.benchmarks import BENCHMARK_FILES

    if benchmarks is None:
        return list(PAPER_BENCHMARKS)
    raw = benchmarks.split(",") if isinstance(benchmarks, str) else list(benchmarks)
    names: list[str] = []
    for item in (str(x).strip() for x in raw):
        if not item:
            continue
        expanded = {"paper": list(PAPER_BENCHMARKS), "all": list(BENCHMARK_FILES)}.get(item, [item])
        for name in expanded:
            if name not in BENCHMARK_FILES:
                raise ConfigError(f"--benchmarks: unknown benchmark {name!r}; valid: {', '.join(BENCHMARK_FILES)} "
                                  "(or 'paper' for the paper's seven, 'all' for every loader)")
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError("--benchmarks names no benchmark")
    return names


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """`data_dir`, else $HACRL_MATH_DATA; a ConfigError saying how to fix it when neither points anywhere."""
    from hacrl.tasks.benchmarks import DATA_ENV, default_data_dir

    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.exists():
            raise ConfigError(f"--data-dir {str(path)!r} does not exist")
        return path
    path_env = default_data_dir()
    if path_env is None:
        raise ConfigError(f"--task math needs the benchmark files: pass --data-dir DIR (a directory holding "
                          f"math500_test.jsonl, gsm8k_test.jsonl, ...) or set ${DATA_ENV}")
    if not path_env.exists():
        raise ConfigError(f"${DATA_ENV} points at {str(path_env)!r}, which does not exist")
    return path_env


def _count_rows(path: Path) -> int | None:
    """Non-empty lines of a .jsonl file (cheap: no JSON parsing); None for other formats."""
    if path.suffix != ".jsonl":
        return None
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def load_suites(task: str, benchmarks: str | Iterable[str] | None, data_dir: str | Path | None,
                limit: int | None, *, skip_bad_rows: bool = False) -> tuple[list[Suite], Path | None]:
    """The problem sets to evaluate on, and the data directory used (None for arithmetic)."""
    if task == "arithmetic":
        if benchmarks is not None:
            raise ConfigError("--benchmarks applies to --task math; the arithmetic task has one held-out split")
        from hacrl.tasks.arithmetic import ArithmeticTask
        from hacrl.tasks.splits import balanced_prefix

        arithmetic = ArithmeticTask()
        problems = list(arithmetic.eval_problems())
        total = len(problems)
        if limit is not None:  # round-robin over kinds: the split is grouped by kind, a plain prefix is one kind
            problems = balanced_prefix(problems, limit)
        return [Suite("arithmetic", problems, arithmetic.score, total)], None
    if task != "math":
        raise ConfigError(f"--task: {task!r} is not one of {', '.join(TASKS)}")
    from hacrl.tasks.benchmarks import BENCHMARK_FILES, BenchmarkDataError, load_benchmark
    from hacrl.tasks.math_verify import ScoreStats, score_many

    def math_scorer(stats: ScoreStats) -> Scorer:
        def math_score(problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
            return score_many(list(completions), [p.answer for p in problems], stats=stats)

        return math_score

    names = parse_benchmarks(benchmarks)
    base = resolve_data_dir(data_dir)
    suites = []
    for name in names:
        try:
            problems = load_benchmark(name, base, limit=limit, skip_bad_rows=skip_bad_rows)
        except BenchmarkDataError as exc:
            raise ConfigError(str(exc)) from exc
        file = base / BENCHMARK_FILES[name] if base.is_dir() else base
        rows = len(problems) if limit is None else (_count_rows(file) if file.is_file() else None)
        stats = ScoreStats()
        suites.append(Suite(name, problems, math_scorer(stats), rows, str(file) if file.is_file() else None,
                            stats=stats))
    return suites, base


# ----------------------------------------------------------------------------------------------------------
# Generation


def _suite_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _display_names(specs: Sequence[str]) -> list[str]:
    """`zoo:NAME` -> NAME; a path -> its last component; repeats get `#2`, `#3` so rows stay distinct."""
    names: list[str] = []
    for spec in specs:
        base = spec.split(":", 1)[1] if spec.startswith("zoo:") else (Path(spec).expanduser().name or spec)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}#{n}"
        names.append(name)
    return names


def _evaluate_suite(agent: Any, suite: Suite, *, k: int, params: Any, seed: int, batch_size: int,
                    stop_ids: list[int], limit_ctx: int | None, progress: bool,
                    samples_out: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Decode k completions per fitting problem (hacrl.evaluator.decode) and score them (score_completions)."""
    from hacrl.rollout.backend import InProcessBackend

    max_new = params.max_new_tokens
    ids = [agent.encode_prompt(p.prompt) for p in suite.problems]
    kept = [i for i, x in enumerate(ids) if limit_ctx is None or len(x) + max_new <= limit_ctx]
    skipped = len(ids) - len(kept)
    if skipped:
        logger.warning("agent %s, %s: %d of %d prompts do not fit the context (%s tokens) with %d new tokens; "
                       "skipped and counted", agent.name, suite.name, skipped, len(ids), limit_ctx, max_new)
    problems = [suite.problems[i] for i in kept]
    backend = InProcessBackend(agent.model, agent.tokenizer, stop_ids)
    device = next(agent.model.parameters()).device
    start = time.perf_counter()
    with tqdm(total=len(kept) * k, desc=f"{agent.name} {suite.name}", unit="seq", disable=not progress, leave=False,
              dynamic_ncols=True) as bar:
        samples = decode(backend, [ids[i] for i in kept for _ in range(k)], params,
                         seed=_suite_seed(seed, suite.name), batch_size=batch_size, device=device,
                         on_batch=bar.update)
    seconds = time.perf_counter() - start
    timeouts_before = suite.answer_check_timeouts()
    scored = score_completions(problems, samples, suite.score, k=k, best=suite.best)
    timeouts = suite.answer_check_timeouts() - timeouts_before
    if samples_out is not None:
        for i, (p, row) in enumerate(zip(problems, scored.matrix, strict=True)):
            for j, correct in enumerate(row):
                samples_out.append({"agent": agent.name, "benchmark": suite.name, "id": p.id, "sample": j,
                                    "gold": p.answer, "correct": correct, "completion": samples[i * k + j].text})
    return {
        "agent": agent.name, "benchmark": suite.name, "problems": len(suite.problems), "scored": len(problems),
        "skipped_too_long": skipped, "k": k, **scored.metrics,
        "per_kind_avg_at_k": scored.per_kind,
        "truncated_frac": scored.truncated_frac,
        "mean_completion_tokens": scored.mean_completion_tokens,
        "answer_check_timeouts": timeouts,
        "seconds": round(seconds, 3),
    }


# ----------------------------------------------------------------------------------------------------------
# The library entry point


def evaluate_agents(
    agents: Sequence[str],
    *,
    task: str = "arithmetic",
    benchmarks: str | Iterable[str] | None = None,
    data_dir: str | Path | None = None,
    k: int = 1,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str = "auto",
    threads: int | None = None,
    progress: bool = True,
    keep_samples: bool = False,
    skip_bad_rows: bool = False,
) -> dict[str, Any]:
    """Evaluate every agent (a local HF directory or `zoo:NAME`) on the task; returns the report dict.

    The report holds `settings` (decoding, k, temperature/top_p when sampling, max_new_tokens, limit, seed,
    batch size, device), `agents` (spec, resolved path, architecture, parameters, prompt template, context,
    stop tokens), `benchmarks` (rows evaluated and rows in the file), `results` (one record per agent and
    benchmark, module doc), `date` and versions; with `keep_samples`, also `samples` (every completion with
    its score). Agents are loaded and evaluated one at a time (one model in memory). `threads` sets torch's
    CPU threads for the call (restored afterwards): on a small shared machine one thread is several times
    faster for small models than the default. Bad arguments, missing data or a bad model directory raise
    ConfigError / AgentLoadError with a one-line message.
    """
    from hacrl.rollout.sampler import SamplingParams

    if not agents:
        raise ConfigError("--agent: name at least one agent (a model directory or zoo:NAME)")
    for flag, value in (("--k", k), ("--limit", limit), ("--max-new-tokens", max_new_tokens),
                        ("--batch-size", batch_size), ("--threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{flag}: must be an integer >= 1, got {value!r}")
    if task not in TASKS:
        raise ConfigError(f"--task: {task!r} is not one of {', '.join(TASKS)}")
    max_new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    try:
        params = (SamplingParams(max_new_tokens=max_new, greedy=True) if k == 1 else
                  SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new))
    except ValueError as exc:
        raise ConfigError(f"sampling settings (k = {k} > 1 samples; --k 1 decodes greedily): {exc}") from exc
    batch = batch_size or DEFAULT_BATCH_SIZE
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    suites, base = load_suites(task, benchmarks, data_dir, limit, skip_bad_rows=skip_bad_rows)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(agents, task, suites, base, k=k, params=params, temperature=temperature, top_p=top_p, limit=limit,
                    seed=seed, batch=batch, device=device, dtype=dtype, progress=progress, keep_samples=keep_samples)
    finally:
        torch.set_num_threads(previous_threads)


def _run(agents: Sequence[str], task: str, suites: list[Suite], base: Path | None, *, k: int, params: Any,
         temperature: float, top_p: float, limit: int | None, seed: int, batch: int, device: str, dtype: str,
         progress: bool, keep_samples: bool) -> dict[str, Any]:
    """Load each agent in turn, evaluate it on every suite, and assemble the report (see `evaluate_agents`)."""
    from hacrl.models.loading import load_agent

    max_new = params.max_new_tokens
    names = _display_names(agents)
    agent_info: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] | None = [] if keep_samples else None
    started = time.perf_counter()
    for name, spec in zip(names, agents, strict=True):
        agent = load_agent(name, spec, device=device, dtype=dtype, progress=progress)
        try:
            limit_ctx = context_limit(agent.model.config)
            stops = stop_token_ids(agent.tokenizer, agent.model)
            agent_info.append({
                "name": name, "spec": spec, "path": str(agent.path.resolve()),
                "architecture": type(agent.model).__name__, "model_type": agent.model.config.model_type,
                "parameters": sum(p.numel() for p in agent.model.parameters()),
                "vocab_size": len(agent.tokenizer),
                "prompt_template": "chat template" if agent.template.use_chat_template else agent.template.plain,
                "context": limit_ctx, "stop_token_ids": stops, "device": device,
                "dtype": str(next(agent.model.parameters()).dtype).replace("torch.", ""),
            })
            for suite in suites:
                results.append(_evaluate_suite(agent, suite, k=k, params=params, seed=seed, batch_size=batch,
                                               stop_ids=stops, limit_ctx=limit_ctx, progress=progress,
                                               samples_out=samples))
        finally:
            del agent
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    import transformers

    import hacrl

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": task,
        "settings": {
            "k": k, "decoding": "greedy" if params.greedy else "sampling",
            "temperature": None if params.greedy else temperature, "top_p": None if params.greedy else top_p,
            "max_new_tokens": max_new, "limit": limit, "seed": seed, "batch_size": batch, "device": device,
            "dtype": dtype, "threads": torch.get_num_threads(),
        },
        "data_dir": str(base.resolve()) if base is not None else None,
        "agents": agent_info,
        "benchmarks": {s.name: {"rows": len(s.problems), "rows_in_file": s.rows_in_file, "file": s.path,
                                "best_at_k": s.best} for s in suites},
        "results": results,
        "seconds": round(time.perf_counter() - started, 2),
        "versions": {"hacrl": hacrl.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    if samples is not None:
        report["samples"] = samples
    return report


# ----------------------------------------------------------------------------------------------------------
# Reporting


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _template_kind(template: str | None) -> str:
    return "chat template" if template == "chat template" else "plain template"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown: settings, one row per agent x benchmark, and (several benchmarks) a
    paper-style summary of avg@k per benchmark with the unweighted mean over benchmarks. Numbers in %."""
    s = report["settings"]
    k = s["k"]
    decoding = ("greedy" if s["decoding"] == "greedy"
                else f"sampling, temperature {s['temperature']}, top-p {s['top_p']}, seed {s['seed']}")
    out = [
        f"# hacrl eval: task {report['task']}",
        "",
        f"k = {k} ({decoding}); max_new_tokens {s['max_new_tokens']}; limit {s['limit'] or 'none'}; "
        f"device {s['device']}; {report['date']}",
        "",
        "Agents: " + "; ".join(f"{a['name']} = {a['spec']} ({a['architecture']}, {a['parameters']:,} params, "
                               f"{_template_kind(a['prompt_template'])})" for a in report["agents"]),
        "",
    ]
    any_best = any("best_at_k" in r for r in report["results"])
    headers = ["agent", "benchmark", "problems", "scored", "skipped (too long)", f"avg@{k} %", f"pass@{k} %"]
    if any_best:
        headers.append(f"best@{k} %")
    rows = []
    for r in report["results"]:
        row = [r["agent"], r["benchmark"], str(r["problems"]), str(r["scored"]), str(r["skipped_too_long"]),
               _pct(r["avg_at_k"]), _pct(r["pass_at_k"])]
        if any_best:
            row.append(_pct(r["best_at_k"]) if "best_at_k" in r else "")
        rows.append(row)
    out.append(_md_table(headers, rows))
    benches = list(report["benchmarks"])
    if len(benches) > 1:
        by = {(r["agent"], r["benchmark"]): r for r in report["results"]}
        wide = []
        for a in report["agents"]:
            vals = [by[(a["name"], b)]["avg_at_k"] for b in benches]
            known = [v for v in vals if v is not None]
            mean = sum(known) / len(known) if len(known) == len(vals) else None
            wide.append([a["name"], *(_pct(v) for v in vals), _pct(mean)])
        out += ["", f"avg@{k} (%) per benchmark:", "", _md_table(["agent", *benches, "average"], wide)]
    skipped = sum(r["skipped_too_long"] for r in report["results"])
    timeouts = sum(r["answer_check_timeouts"] for r in report["results"])
    if skipped or timeouts:
        out += ["", f"Note: {skipped} prompt(s) skipped as too long for the model context (excluded from the "
                    f"denominators); {timeouts} answer check(s) timed out (scored 0)."]
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """results.json (everything but the samples), results.md, and samples.jsonl when samples were kept."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    body = {k: v for k, v in report.items() if k != "samples"}
    paths["json"].write_text(json.dumps(body, indent=1) + "\n")
    paths["md"].write_text(markdown_report(report))
    if "samples" in report:
        paths["samples"] = out / "samples.jsonl"
        with paths["samples"].open("w") as f:
            for rec in report["samples"]:
                f.write(json.dumps(rec) + "\n")
    return paths


def run_eval_command(args: argparse.Namespace) -> int:
    """`hacrl eval`: evaluate, print the Markdown report, write it (and the JSON) under --out."""
    report = evaluate_agents(
        list(args.agent), task=args.task, benchmarks=args.benchmarks, data_dir=args.data_dir, k=args.k,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, limit=args.limit,
        seed=args.seed, batch_size=getattr(args, "batch_size", None), device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None) or "auto", threads=getattr(args, "threads", None),
        progress=not getattr(args, "no_progress", False),
        keep_samples=args.out is not None, skip_bad_rows=getattr(args, "skip_bad_rows", False),
    )
    print(markdown_report(report), end="")
    if args.out is not None:
        paths = write_report(report, args.out)
        print(f"\nwrote {paths['json']}, {paths['md']}" + (f", {paths['samples']}" if "samples" in paths else ""))
    return 0


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "PAPER_BENCHMARKS",
    "Suite",
    "aggregate",
    "context_limit",
    "evaluate_agents",
    "load_suites",
    "markdown_report",
    "parse_benchmarks",
    "pass_at_k",
    "resolve_data_dir",
    "run_eval_command",
    "stop_token_ids",
    "wants_best_at_k",
    "write_report",
]
