#!/usr/bin/env bash
# Every learning-efficiency comparison of the built-in zoo: HACPO against GRPO, GSPO, GSPO x2 and Naive over three
# seeds for each heterogeneity type (state, size, model), the three-agent setting and the kind-balanced variants of
# the state and model pairs (state-balanced, model-balanced), then the HACPO ablations on the model pair. Resumable: rerun the same command after an interruption; finished runs are skipped and an
# interrupted one continues from its latest checkpoint.
#
#   benchmarks/learning_efficiency/run_all.sh                      # everything
#   SETTINGS="model" ABLATIONS="" benchmarks/learning_efficiency/run_all.sh
#   benchmarks/learning_efficiency/run_all.sh --set training.eval_limit=200   # extra args go to every compare
#
# Environment: SETTINGS (default "state size model trio state-balanced model-balanced"), ABLATIONS (settings to ablate, default "model";
# empty for none), SEEDS (default 0,1,2), RESULTS (default docs/results).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HERE=benchmarks/learning_efficiency
SETTINGS=${SETTINGS-state size model trio state-balanced model-balanced}
ABLATIONS=${ABLATIONS-model}
SEEDS=${SEEDS:-0,1,2}
RESULTS=${RESULTS:-docs/results}
ABLATION_ALGORITHMS=hacpo,hacpo-no-adv,hacpo-no-omega,hacpo-alpha0,hacpo-no-stepwise,hacpo-no-clip

for setting in $SETTINGS; do
  hacrl compare "$HERE/$setting.yaml" --seeds "$SEEDS" --out "$RESULTS/$setting" "$@"
done

for setting in $ABLATIONS; do
  out="$RESULTS/$setting-ablations"
  # The ablation table's HACPO rows are the same runs as the main table's: reuse them instead of retraining
  # (compare checks that the copied runs' configuration matches and skips or resumes them).
  if [ -d "$RESULTS/$setting/runs/hacpo" ] && [ ! -e "$out/runs/hacpo" ]; then
    mkdir -p "$out/runs"
    cp -r "$RESULTS/$setting/runs/hacpo" "$out/runs/hacpo"
  fi
  hacrl compare "$HERE/$setting.yaml" --algorithms "$ABLATION_ALGORITHMS" --seeds "$SEEDS" --out "$out" "$@"
done
