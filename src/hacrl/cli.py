"""`hacrl` command line: train, demo, eval, zoo, compare, export.

Errors a user can fix (bad config, missing model directory, mismatched checkpoint, a used or read-only
output directory, a full disk) print one clear line and exit with status 2; a stack trace is reserved for
bugs (set HACRL_DEBUG=1 to see it anyway). Nothing here imports torch before a command needs it, so
`hacrl --help` and a config error answer in well under a second.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from importlib import resources
from pathlib import Path

from hacrl.config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config
from hacrl.preflight import check_model_paths
from hacrl.rewards import RewardFunctionError
from hacrl.rundir import RunDirError, open_run_dir

logger = logging.getLogger("hacrl")

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, RunDirError, RewardFunctionError)
_OS_USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR)
"""OSErrors that are the machine's state, not a bug: one line naming the file."""

DEMO_TIME = "about 2.5 min on 2 CPU cores; the agents are shipped, nothing is built first"
"""Measured (README, "What the demo shows"; docs/reliability.md, "Start-up and demo times"); keep them in step."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Looked up only after an error, and only in modules already imported (a class can only have been raised
    if its module was), so the fast paths never import torch."""
    errors = list(USER_ERRORS)
    for module, name in (("hacrl.models.loading", "AgentLoadError"), ("hacrl.rollout.sampler", "NonFiniteLogitsError"),
                         ("hacrl.trainer", "ResumeError"), ("hacrl.workers", "NonFiniteUpdateError"),
                         ("hacrl.checkpoint", "CheckpointError"), ("hacrl.learner", "MicrobatchBudgetError"),
                         ("hacrl.export", "ExportError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _os_error_line(exc: OSError) -> str:
    what = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return f"{what}: {exc.filename}" if exc.filename else what


def demo_config_dict() -> dict:
    import yaml

    text = resources.files("hacrl").joinpath("configs/demo.yaml").read_text()
    return dict(yaml.safe_load(text))


def _run_training(cfg: RunConfig, args: argparse.Namespace) -> int:
    args._output_dir = cfg.output_dir  # for the last-checkpoint note of a machine error
    # a read-only, non-directory, used or locked output_dir is refused before torch or any model loads
    check_model_paths(cfg.agents)
    run_dir = open_run_dir(cfg.output_dir, resume=args.resume, overwrite=args.overwrite, config=cfg.to_dict())
    from hacrl.trainer import Trainer

    try:
        trainer = Trainer(cfg, run_dir=run_dir)
    except BaseException:
        run_dir.abandon()
        raise
    try:
        tb = trainer.tracker.tensorboard_dir
        print(f"run directory: {trainer.out} (metrics.jsonl, checkpoints/)"
              + (f"; TensorBoard: tensorboard --logdir {tb}" if tb is not None else ""), flush=True)
        summary = trainer.run()
    finally:
        trainer.close()
    print()
    sessions = f", over {summary.sessions} sessions" if summary.sessions > 1 else ""
    print(f"{cfg.algorithm.name} on {', '.join(summary.agents)}: {summary.steps} steps; training "
          f"{summary.wall_seconds:.1f} s, evaluation {summary.eval_seconds:.1f} s (whole run{sessions}; held-out "
          f"greedy accuracy, {len(trainer.eval_problems)} problems)")
    print(summary.table())
    for name in summary.agents:
        t = summary.totals[name]
        steps = max(summary.steps, 1)
        print(f"  {name}: {t['sample_seconds'] / steps:.2f} s/step sampling, "
              f"{t['train_seconds'] / steps:.2f} s/step training")
    print(f"metrics: {trainer.out / 'metrics.jsonl'}  checkpoints: {trainer.out / 'checkpoints'}")
    if summary.stopped_early:
        print("stopped early on a signal; resume with --resume")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    return _run_training(cfg, args)


def cmd_demo(args: argparse.Namespace) -> int:
    data = apply_overrides(demo_config_dict(), list(args.set))
    if args.steps is not None:
        data.setdefault("training", {})["steps"] = args.steps
    if args.out is not None:
        data["output_dir"] = args.out
    cfg = config_from_dict(data)
    print(f"hacrl demo: {cfg.algorithm.name} with {', '.join(f'{a.name} ({a.model})' for a in cfg.agents)}; "
          f"{cfg.training.steps} steps ({DEMO_TIME})")
    return _run_training(cfg, args)


def cmd_zoo(args: argparse.Namespace) -> int:
    from hacrl.models import zoo
    from hacrl.tracking import format_table

    if args.action == "list":
        rows = zoo.list_recipes(include_tests=args.all)
        headers = list(rows[0]) if rows else []
        print(format_table(headers, [list(r.values()) for r in rows]))
        print("\npairs: " + "; ".join(f"{k}: {' + '.join(v)}" for k, v in zoo.PAIRS.items()))
        return 0
    names = args.names or (list(zoo.RECIPES) if args.all else [])
    if not names:
        raise ConfigError("zoo build: name one or more recipes, or pass --all (see `hacrl zoo list`)")
    for name in names:
        try:
            zoo.get_recipe(name)
        except ValueError as exc:
            raise ConfigError(f"zoo build: {exc}") from None
    for name in names:
        if args.ship:
            path = zoo.ship(name)
            print(f"{name}: shipped copy written to {path} (commit it with its {zoo.store.CHECKSUM_FILE})")
            continue
        path = zoo.build(name, force=args.force, use_shipped=False)
        print(f"{name}: {path}" + _shipped_note(zoo, name, path))
    return 0


def _shipped_note(zoo: object, name: str, built: Path) -> str:
    """Whether a rebuild reproduced the shipped agent bit for bit (it does on the CPU that built it; other CPUs'
    float kernels give other weights), and how to train on the rebuilt one."""
    shipped = zoo.shipped_dir(name)  # type: ignore[attr-defined]
    if shipped is None:
        return ""
    same = (shipped / "model.safetensors").read_bytes() == (built / "model.safetensors").read_bytes()
    return (" (bitwise the shipped agent)" if same else
            f" (differs from the shipped agent, which `zoo:{name}` loads; to train on this build, use its "
            "directory as the agent's model)")


def cmd_eval(args: argparse.Namespace) -> int:
    from hacrl.evaluation import run_eval_command

    return run_eval_command(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from hacrl.compare import run_compare_command

    return run_compare_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from hacrl.export import export_agent

    done = export_agent(args.run_dir, args.agent, args.out, merge=args.merge, checkpoint=args.checkpoint)
    what = {"full": "full weights", "lora-adapter": "LoRA adapters (peft)",
            "lora-merged": "LoRA adapters merged into the base weights"}[done.kind]
    print(f"exported agent {done.agent!r} ({what}) from {done.checkpoint} to {done.out}")
    if args.merge and done.kind == "full":
        print("  (a full-parameter agent: --merge changes nothing)")
    print(f"  load it with: {done.how_to_load()}")
    return 0


def _add_run_dir_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", nargs="?", const="latest", default=False, metavar="auto|CHECKPOINT",
                   help="continue the run in output_dir from its newest complete checkpoint (an error if there is "
                        "none); 'auto': resume if possible, else start fresh; or a checkpoint directory")
    p.add_argument("--overwrite", action="store_true",
                   help="output_dir holds an earlier run: move it aside (to <output_dir>.replaced-<time>) and start "
                        "fresh; without this (or --resume) a used output_dir is refused")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hacrl", description="Heterogeneous Agent Collaborative RL (HACPO)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train agents from a YAML config")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. training.steps=10 or agents.0.lr=1e-4")
    _add_run_dir_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help=f"train the built-in agent pair together with SGT ({DEMO_TIME})")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", default=None, help="output directory (default runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. training.eval_limit=100 for a quicker evaluation")
    _add_run_dir_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("zoo", help="the built-in tiny heterogeneous agents")
    p.add_argument("action", choices=["list", "build"])
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true", help="list test recipes too / build every recipe")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--ship", action="store_true",
                   help="maintainers: install the build as the shipped agent (src/hacrl/models/zoo/shipped/NAME)")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("eval", help="evaluate agents (greedy / sampled) on a task or benchmarks")
    p.add_argument("--agent", action="append", required=True, metavar="PATH_OR_ZOO",
                   help="a local HF model directory or zoo:RECIPE (repeatable)")
    p.add_argument("--task", default="arithmetic", help="arithmetic, or math with --benchmarks")
    p.add_argument("--benchmarks", default=None,
                   help="comma-separated benchmark names, 'paper' (the seven, default) or 'all' (math task)")
    p.add_argument("--data-dir", default=None, help="directory holding the benchmark files")
    p.add_argument("--k", type=int, default=1, help="samples per problem; k=1 is greedy, k>1 samples at --temperature")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 48 arithmetic / 1024 math")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each split/benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for results.json and results.md")
    p.add_argument("--batch-size", type=int, default=None, help="generation batch size (default 32)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest for tiny models)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip (count and log) benchmark rows without a question or gold answer instead of stopping")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="every sharing rule against independent training at equal cost and equal "
                                      "data, over seeds")
    p.add_argument("config")
    p.add_argument("--algorithms", default=None,
                   help="comma-separated presets, grpo_nK / gspo_nK baselines and RULE-stored arms (default: grpo, "
                        "grpo_n{n*G}, naive, hacpo, graft, sgt, graft-stored)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each in its own process with its agents' torch threads (default 1; on a "
                        "2-core machine 2 with 1 thread per agent); each run's output goes to its compare.log")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="write one agent of a run's checkpoint as a plain Hugging Face directory "
                                     "(full weights, or a LoRA agent's peft adapters)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the output_dir of a `hacrl train` run")
    p.add_argument("--agent", required=True, metavar="NAME", help="which agent (its name in the run's config)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory to write")
    p.add_argument("--merge", action="store_true",
                   help="LoRA agents: merge the adapters into the base weights (loads with transformers alone); "
                        "default: the peft adapter directory")
    p.add_argument("--checkpoint", default=None, metavar="PATH|STEP",
                   help="a checkpoint directory or step number (default: the newest complete checkpoint)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except Exception as exc:
        if os.environ.get("HACRL_DEBUG"):
            raise
        if isinstance(exc, _user_errors()):
            line = str(exc)
        elif isinstance(exc, OSError) and exc.errno in _OS_USER_ERRNOS:
            line = _os_error_line(exc) + _last_checkpoint_note(args)
        else:
            raise
        print(f"hacrl {args.command}: error: {' '.join(line.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hacrl {args.command}: interrupted", file=sys.stderr)
        return 130


def _last_checkpoint_note(args: argparse.Namespace) -> str:
    """For a run stopped by a machine error (a full disk while logging): where it can continue from."""
    out = getattr(args, "_output_dir", None)
    if out is None:
        return ""
    from hacrl.checkpoint import latest_checkpoint

    last = latest_checkpoint(Path(out) / "checkpoints")
    return (f"; the last good checkpoint is {last}; fix this, then continue with --resume" if last is not None
            else "; there is no complete checkpoint yet")


if __name__ == "__main__":
    sys.exit(main())

