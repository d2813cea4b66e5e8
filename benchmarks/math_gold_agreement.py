"""Does `hacrl.tasks.math_verify.score` accept each benchmark's own gold solution? (and reject a wrong one?)

For every benchmark file, each row's reference response is scored against the row's gold answer as
`load_benchmark` reads it:

* a worked solution where the file has one (MATH train/test, MATH-500, Minerva: the `solution`; GSM8K: the
  `answer` rationale ending in `#### N`). For MATH-500 the gold is the separate `answer` field, so this
  checks two independent spellings of the same answer;
* otherwise the raw gold as the file stores it, boxed: AIME `\\boxed{70}`, AMC `\\boxed{27.0}` (a float),
  OlympiadBench `\\boxed{$69$,$84$}` (the `final_answer` strings joined, `$` kept).

Agreement must be >= 99% per file. `--verifier-only` skips the normalised-string shortcut, so every pair
is decided by math-verify (how robust the parse is on its own). With `--negatives` it also scores each
reference response against the NEXT row's gold (pairs whose golds are equal after normalisation are left
out) and counts accepts: false accepts unless the two golds are one answer written differently (`8`, `K=8`).

    python benchmarks/math_gold_agreement.py [--data-dir DIR] [--only math500,gsm8k] [--limit N] [--negatives]

Data dir: --data-dir, else $HACRL_MATH_DATA, else <repo>/../shared/data/math.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hacrl.tasks import math_verify
from hacrl.tasks.benchmarks import BENCHMARK_FILES, load_benchmark, reference_response
from hacrl.tasks.math_answers import extract_answer, normalize_answer
from hacrl.tasks.math_verify import ScoreStats, clear_score_cache, score_many


def _data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("HACRL_MATH_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared/data/math"


def _raw_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--only", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="first N rows per file")
    ap.add_argument("--negatives", action="store_true", help="also count false accepts vs the next row's gold")
    ap.add_argument("--show", type=int, default=30, help="exceptions to print per file")
    ap.add_argument("--verifier-only", action="store_true",
                    help="skip the normalised-string shortcut: every pair goes to math-verify (diagnostic)")
    args = ap.parse_args(argv)
    if args.verifier_only:
        math_verify._STRING_FAST_PATH = False

    data = _data_dir(args.data_dir)
    names = args.only.split(",") if args.only else list(BENCHMARK_FILES)
    print(f"data dir: {data}")
    print(f"{'benchmark':15} {'file':22} {'rows':>6} {'agree':>7} {'rate':>8} {'by str':>6} {'by m-v':>6} "
          f"{'rows/s':>8}" + (f" {'neg pairs':>9} {'false acc':>9} {'neg/s':>6}" if args.negatives else ""))
    worst = 1.0
    total_rows = 0
    total_time = 0.0
    report: list[str] = []
    for name in names:
        problems = load_benchmark(name, data, limit=args.limit)
        rows = _raw_rows(data / BENCHMARK_FILES[name])[: len(problems)]
        responses = [reference_response(name, r) for r in rows]
        golds = [p.answer for p in problems]
        clear_score_cache()
        stats = ScoreStats()
        t0 = time.perf_counter()
        scores = score_many(responses, golds, stats=stats)
        dt = time.perf_counter() - t0
        total_rows += len(scores)
        total_time += dt
        agree = sum(s == 1.0 for s in scores)
        rate = agree / len(scores)
        worst = min(worst, rate)
        # how the accepted rows were decided: normalised string equality, or math-verify
        by_mv = agree - stats.string_matches
        line = (f"{name:15} {BENCHMARK_FILES[name]:22} {len(scores):6d} {agree:7d} {rate:8.2%} "
                f"{stats.string_matches:6d} {by_mv:6d} {len(scores) / dt:8.0f}")
        if stats.timeouts or stats.errors:
            report.append(f"  {name}: {stats.timeouts} timeouts, {stats.errors} verifier errors")
        if args.negatives:
            neg_idx = [i for i in range(len(golds) - 1)
                       if normalize_answer(golds[i]) != normalize_answer(golds[i + 1])]
            nst = ScoreStats()
            t1 = time.perf_counter()
            neg = score_many([responses[i] for i in neg_idx], [golds[i + 1] for i in neg_idx], stats=nst)
            neg_dt = time.perf_counter() - t1
            false_acc = [i for i, s in zip(neg_idx, neg, strict=True) if s == 1.0]
            line += f" {len(neg_idx):9d} {len(false_acc):9d} {len(neg_idx) / neg_dt:6.0f}"
            if nst.timeouts or nst.errors:
                report.append(f"  {name} negatives: {nst.timeouts} timeouts, {nst.errors} verifier errors")
            for i in false_acc[: args.show]:
                report.append(f"  {name} ACCEPTED vs next row's gold {problems[i].id}: {golds[i + 1]!r} "
                              f"accepted for a response whose gold is {golds[i]!r} (false accept unless "
                              f"the two golds are the same answer)")
        print(line, flush=True)
        misses = [i for i, s in enumerate(scores) if s != 1.0]
        for i in misses[: args.show]:
            report.append(f"  {name} MISS {problems[i].id}: gold {golds[i]!r}, extracted "
                          f"{extract_answer(responses[i])!r}")
        if len(misses) > args.show:
            report.append(f"  {name}: ... {len(misses) - args.show} more misses")
    print(f"\nall files: {total_rows} rows in {total_time:.1f}s = {total_rows / total_time:.0f} rows/s "
          f"(single process, main thread, cache cleared per file)")
    print("exceptions:" if report else "exceptions: none")
    print("\n".join(report))
    ok = worst >= 0.99
    print(f"\nlowest agreement {worst:.2%}: {'OK (>= 99%)' if ok else 'BELOW 99%'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
