#!/usr/bin/env bash
# Every learning-efficiency comparison of the built-in zoo: HACPO against GRPO, GSPO, GSPO x2 and Naive over three
# seeds for each heterogeneity type (state, size, model), the three-agent setting and the kind-balanced variants of
# the state and model pairs (state-balanced, model-balanced), then the HACPO ablations on the model pair, then
# GSPO, GSPO x2 and HACPO of the pairs and the trio continued to 120 steps (SETTING-120). Resumable: rerun
# the same command after an interruption; finished runs are skipped and an interrupted one continues from its
# latest checkpoint.
#
#   benchmarks/learning_efficiency/run_all.sh                      # everything
#   SETTINGS="model" ABLATIONS="" LONG="" benchmarks/learning_efficiency/run_all.sh
#   benchmarks/learning_efficiency/run_all.sh --set training.eval_limit=200   # extra args go to every compare
#
# Environment: SETTINGS (default "state size model trio state-balanced model-balanced"), ABLATIONS (settings to
# ablate, default "model"; empty for none), LONG (settings to continue, default "state size model trio"; empty
# for none; the trio's 120 steps take about 90 run-minutes on 2 cores), LONG_STEPS (default 120),
# SEEDS (default 0,1,2), RESULTS (default docs/results).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HERE=benchmarks/learning_efficiency
SETTINGS=${SETTINGS-state size model trio state-balanced model-balanced}
ABLATIONS=${ABLATIONS-model}
LONG=${LONG-state size model trio}
LONG_STEPS=${LONG_STEPS:-120}
SEEDS=${SEEDS:-0,1,2}
RESULTS=${RESULTS:-docs/results}
ABLATION_ALGORITHMS=hacpo,hacpo-no-adv,hacpo-no-omega,hacpo-alpha0,hacpo-no-stepwise,hacpo-no-clip

# Reuse finished runs of one comparison in another instead of retraining them (compare checks that a copied run's
# configuration matches, then skips it, resumes it, or continues it to more steps): reuse_runs FROM TO ALGORITHM...
reuse_runs() {
  local from=$1 to=$2 algo
  shift 2
  for algo in "$@"; do
    if [ -d "$from/runs/$algo" ] && [ ! -e "$to/runs/$algo" ]; then
      mkdir -p "$to/runs"
      cp -r "$from/runs/$algo" "$to/runs/$algo"
    fi
  done
}

for setting in $SETTINGS; do
  hacrl compare "$HERE/$setting.yaml" --seeds "$SEEDS" --out "$RESULTS/$setting" "$@"
done

for setting in $ABLATIONS; do
  out="$RESULTS/$setting-ablations"
  # The ablation table's HACPO rows are the same runs as the main table's.
  reuse_runs "$RESULTS/$setting" "$out" hacpo
  hacrl compare "$HERE/$setting.yaml" --algorithms "$ABLATION_ALGORITHMS" --seeds "$SEEDS" --out "$out" "$@"
done

for setting in $LONG; do
  # The first 40 steps are the main table's runs (constant learning rate and exact resume: continuing one is a
  # longer run). Checkpoints are not committed: in a fresh clone these runs restart from step 0 (same result, 3x
  # the time).
  out="$RESULTS/$setting-$LONG_STEPS"
  reuse_runs "$RESULTS/$setting" "$out" gspo gspo_x2 hacpo
  hacrl compare "$HERE/$setting.yaml" --algorithms gspo,gspo_x2,hacpo --seeds "$SEEDS" --out "$out" \
    --set training.steps="$LONG_STEPS" "$@"
done
