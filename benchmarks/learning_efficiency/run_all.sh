#!/usr/bin/env bash
# The testbed comparison (docs/results/testbed.md): for each setting (state, size and model pairs, three agents),
# every sharing rule beside both independent baselines (hacrl compare's default: GRPO at G, GRPO at n x G, Naive,
# HACPO, GRAFT, SGT and GRAFT learning from the partners' stored GRPO runs) over three seeds, two runs at a time
# with one torch thread each; then the testbed figures (RL headroom, budget sensitivity, complementarity, cost)
# and the cross-setting headline table. Resumable: rerun the same command after an interruption; finished runs
# are skipped and an interrupted one continues from its latest checkpoint.
#
#   benchmarks/learning_efficiency/run_all.sh                      # everything (about 40-45 min a pair, 80 the trio)
#   SETTINGS="model" benchmarks/learning_efficiency/run_all.sh     # one setting
#   benchmarks/learning_efficiency/run_all.sh --set training.eval_every=50   # extra args go to every compare
#
# Environment: SETTINGS (default "state size model trio"), SEEDS (default 0,1,2), JOBS (runs at a time, default 2),
# RESULTS (default docs/results).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HERE=benchmarks/learning_efficiency
SETTINGS=${SETTINGS-state size model trio}
SEEDS=${SEEDS:-0,1,2}
JOBS=${JOBS:-2}
RESULTS=${RESULTS:-docs/results}

outs=()
for setting in $SETTINGS; do
  out="$RESULTS/testbed-$setting"
  hacrl compare "$HERE/$setting.yaml" --seeds "$SEEDS" --jobs "$JOBS" --out "$out" "$@"
  outs+=("$out")
done

python "$HERE/testbed_figures.py" "${outs[@]}" --json "$RESULTS/testbed-figures.json" \
  --markdown "$RESULTS/testbed-figures.md"
python "$HERE/summary.py" "${outs[@]/%//results.json}"
python "$HERE/summary.py" --paired "${outs[@]/%//results.json}"
