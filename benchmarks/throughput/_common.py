"""Helpers shared by the throughput benchmarks: machine description, result files, the shared tiny model.

Every benchmark measures its alternatives inside ONE process run with interleaved repetitions (A, B, A, B, ...)
so that drift of a shared machine (other users, thermal state) hits all alternatives alike, and reports
medians and ratios rather than absolute numbers alone.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from hacrl.machine import cpu_model as machine_cpu_model

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "docs" / "results"


def bench_recipe() -> str:
    """The shared tiny model: the zoo's (first) Llama recipe, a Llama with its own BPE tokenizer warm-started on
    arithmetic, saved as an ordinary Hugging Face directory that both hacrl and TRL load. Looked up by
    architecture rather than by name, so the benchmarks follow the zoo when its recipes are renamed."""
    from hacrl.models import zoo

    return next(name for name, r in zoo.RECIPES.items() if r.architecture == "llama" and r.tokenizer == "bpe")


def bench_model_dir() -> Path:
    """Build (once, cached) the shared tiny Llama + BPE agent and return its HF directory."""
    from hacrl.models import zoo

    return zoo.build(bench_recipe(), progress=False)


def describe_model(model_dir: Path) -> str:
    """'zoo:NAME (llama, 828,544 parameters, vocabulary 320)' for the reports."""
    meta = json.loads((model_dir / "hacrl_agent.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    return (f"zoo:{meta.get('name', model_dir.name)} ({meta.get('architecture', config.get('model_type'))}, "
            f"{meta.get('parameters', 0):,} parameters, vocabulary {config.get('vocab_size')})")


def cpu_model() -> str:
    return machine_cpu_model() or platform.processor() or "unknown"


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine(*packages: str) -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was (it may be shared)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in load],
            "platform": platform.platform(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "versions": versions(*packages), "git_commit": git_commit()}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    return " ".join(["python", *[_rel(a) for a in sys.argv]])


def _rel(arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(REPO))
    except ValueError:
        return arg


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleave(candidates: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each candidate, called round-robin `repeats` times after `warmup` unmeasured rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def write_json(path: str | Path | None, result: dict[str, Any]) -> None:
    text = json.dumps(result, indent=1)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    else:
        print(text)


def quiet() -> None:
    """No progress bars or info chatter from transformers / TRL / datasets in benchmark output."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
