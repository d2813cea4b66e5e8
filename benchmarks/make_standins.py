"""Write the two stand-in Hugging Face checkpoints (Qwen2- and Llama-3-style, random weights) to OUT_DIR.

    python benchmarks/make_standins.py OUT_DIR [--size tiny|small|medium] [--seed 0] [--data-dir DIR]

OUT_DIR/qwen2 and OUT_DIR/llama are ordinary model directories (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, chat_template.jinja, generation_config.json). Their byte-level BPE tokenizers are
trained on MATH train text from --data-dir or $HACRL_MATH_DATA when it is there (synthetic MATH-style text
otherwise). Prints the `export` lines that configs/paper/standin-smoke.yaml expects.
"""

from __future__ import annotations

import argparse
import json

import torch

from hacrl.models.standins import STANDIN_META_FILE, build_standin_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="directory with math_train.jsonl (tokenizer corpus)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = build_standin_pair(args.out_dir, seed=args.seed, size=args.size, data_dir=args.data_dir)
    for kind, path in paths.items():
        meta = json.loads((path / STANDIN_META_FILE).read_text())
        print(f"{kind}: {path}  ({meta['architecture']}, {meta['parameters']:,} parameters, vocabulary "
              f"{meta['vocab_size']}, EOS {meta['eos_token']}; tokenizer trained on {meta['tokenizer_corpus']})")
    print(f"\nexport HACRL_STANDIN_QWEN2={paths['qwen2'].resolve()} HACRL_STANDIN_LLAMA={paths['llama'].resolve()}")


if __name__ == "__main__":
    main()
