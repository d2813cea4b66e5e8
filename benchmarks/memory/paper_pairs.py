"""Training-state memory per agent of the paper's model pairs: full-parameter vs LoRA (r = 16, 64), bf16 on a GPU.

Computed, not measured (no GPU and none of these checkpoints here): from each model's architecture as its published
`config.json` gives it, checked against its published parameter count. Per agent, with P its parameters and Q its
LoRA parameters (r x (d_in + d_out) summed over every linear layer of every transformer block: q, k, v, o, gate, up,
down; peft's "all-linear", hacrl's default):

* full, as hacrl trains it with `dtype: bf16`: weights, gradients and both AdamW moments in bf16 (torch's AdamW keeps
  its moments in the parameter's dtype): 8 P bytes;
* full, mixed precision (bf16 weights and gradients, fp32 master weights and moments, the usual recipe of verl /
  DeepSpeed, and the 16 bytes per parameter of issue 14): 16 P bytes;
* LoRA in hacrl: the frozen bf16 base (2 P) plus the adapters, which peft keeps in fp32 on a bf16 base, with fp32
  gradients and moments: 2 P + 16 Q bytes.

Left out (they add to every column): activations and the fp32 logits of a micro-batch (what
`training.max_tokens_per_microbatch` bounds: one fp32 copy of the logits is tokens x vocabulary x 4 bytes), the vLLM
engine's own copy of the weights (2 P) and its KV cache (`rollout.gpu_memory_utilization`), a KL reference model
(none in the paper presets), and the CUDA context and allocator slack.

    python benchmarks/memory/paper_pairs.py            # prints the markdown tables of docs/lora.md
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Architecture:
    name: str
    published: float  # parameters, as the model card states them
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool  # input embedding shared with the output layer

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(d_in, d_out) of the linear layers of one block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, m), (h, m), (m, h)]

    @property
    def parameters(self) -> int:
        """Embeddings, output layer (when untied), linear layers and norms (Qwen3's per-head q/k norms included)."""
        block = sum(i * o for i, o in self.linear_shapes()) + 2 * self.hidden
        if self.name.startswith("Qwen3"):
            block += 2 * self.head_dim
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * block + self.hidden

    def lora_parameters(self, rank: int) -> int:
        return rank * self.layers * sum(i + o for i, o in self.linear_shapes())


# From each model's published config.json (Hugging Face); "Base" and "Instruct" variants share the architecture.
MODELS = {m.name: m for m in (
    Architecture("Qwen3-1.7B", 1.7e9, 151_936, 2048, 28, 16, 8, 128, 6144, tied=True),
    Architecture("Qwen3-4B", 4.0e9, 151_936, 2560, 36, 32, 8, 128, 9728, tied=True),
    Architecture("Qwen3-8B", 8.2e9, 151_936, 4096, 36, 32, 8, 128, 12288, tied=False),
    Architecture("Llama-3.2-1B", 1.23e9, 128_256, 2048, 16, 32, 8, 64, 8192, tied=True),
    Architecture("Llama-3.2-3B", 3.21e9, 128_256, 3072, 28, 24, 8, 128, 8192, tied=True),
)}

PAIRS = [  # configs/paper/, in the order of docs/method.md §6
    ("Qwen3-4B", "Qwen3-4B"),  # Qwen3-4B-Base + Qwen3-4B-Instruct
    ("Qwen3-1.7B", "Qwen3-4B"),
    ("Qwen3-4B", "Qwen3-8B"),
    ("Llama-3.2-1B", "Llama-3.2-3B"),
    ("Qwen3-1.7B", "Llama-3.2-1B"),
    ("Qwen3-4B", "Llama-3.2-3B"),
]
RANKS = (16, 64)


def full_bf16(m: Architecture) -> float:
    return 8 * m.parameters / GB


def full_mixed(m: Architecture) -> float:
    return 16 * m.parameters / GB


def lora(m: Architecture, rank: int) -> float:
    return (2 * m.parameters + 16 * m.lora_parameters(rank)) / GB


def check_counts() -> None:
    for m in MODELS.values():
        if abs(m.parameters / m.published - 1) > 0.02:
            raise SystemExit(f"{m.name}: {m.parameters:,} computed parameters vs {m.published:,.0f} published")


def tables() -> str:
    check_counts()
    rows = ["| model | parameters (computed; published) | LoRA r=16 / r=64 parameters | full, bf16 (8 B/param) | "
            "full, mixed precision (16 B/param) | LoRA r=16 | LoRA r=64 |", "|---|---|---|---:|---:|---:|---:|"]
    for m in MODELS.values():
        rows.append(f"| {m.name} | {m.parameters / 1e9:.2f} B; {m.published / 1e9:.2f} B | "
                    f"{m.lora_parameters(16) / 1e6:.1f} M / {m.lora_parameters(64) / 1e6:.1f} M | "
                    f"{full_bf16(m):.1f} GB | {full_mixed(m):.1f} GB | {lora(m, 16):.1f} GB | {lora(m, 64):.1f} GB |")
    pairs = ["| pair (configs/paper) | full, bf16 | full, mixed precision | LoRA r=16 | LoRA r=64 | "
             "one agent LoRA r=16, the other full bf16 |", "|---|---:|---:|---:|---:|---:|"]
    for a, b in PAIRS:
        x, y = MODELS[a], MODELS[b]
        mixed = min(lora(x, 16) + full_bf16(y), full_bf16(x) + lora(y, 16))
        pairs.append(f"| {a} + {b} | {full_bf16(x) + full_bf16(y):.1f} GB | {full_mixed(x) + full_mixed(y):.1f} GB | "
                     f"{lora(x, 16) + lora(y, 16):.1f} GB | {lora(x, 64) + lora(y, 64):.1f} GB | {mixed:.1f} GB |")
    return "\n".join(rows) + "\n\n" + "\n".join(pairs)


if __name__ == "__main__":
    print(tables())
