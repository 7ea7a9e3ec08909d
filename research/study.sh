#!/usr/bin/env bash
# The ShapesWorld hacking study of docs/shapesworld-study.md: every arm, 5 seeds, on
# configs/toy_hack.yaml. Resumable: rerun the same command and finished runs are skipped.
# Two runs at a time with one torch thread each (a 2-core machine); about 4-6 min per run there (M).
#   bash research/study.sh [OUT] [part2]   (default OUT = runs/study; part2 = only part 2)
#   ONLY="part2_scale_L part2_hack_scale_L" bash research/study.sh runs/study part2   (only those steps)
set -euo pipefail
OUT=${1:-runs/study}
PART=${2:-all}
SLAS=${SLAS:-.venv/bin/slas}
LAM=${LAM:-4}  # part 2's toy_biased strength, from its probe
JOBS=${JOBS:-2}  # runs at a time in the two-at-a-time steps (a machine with more cores takes more)
# ONLY="part2_scale_L part2_hack_scale_L" runs just the steps that write those --out folders (the rest is skipped)
compare() {
  local args=("$@") out="" i
  for ((i = 0; i < ${#args[@]} - 1; i++)); do [ "${args[i]}" = --out ] && out=$(basename "${args[i + 1]}"); done
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $out "* ]]; then return 0; fi
  $SLAS compare "$@"
}
part2() {
  # Every part 2 arm: 5 seeds, 120 iterations of configs/toy_slas.yaml (the proxies: 60), 2 runs at a time x 1
  # thread: about 17 min per 120-iteration M run (S: less, L: twice). In the order they run; each line resumes or skips.
  local c2=(--config configs/toy_slas.yaml --seeds 5 --jobs "$JOBS" --threads 1)
  local biased=('reward.weights={toy_biased: 1.0}')
  # the proxy runs: toy_biased at the probe's strength, or toy_pref; 60 iterations, evaluated every 10
  local hack=("${biased[@]}" reward.options.toy_biased.lam="$LAM" train.iterations=60 eval.every=10)
  local pref=('reward.weights={toy_pref: 1.0}' train.iterations=60 eval.every=10)
  # 1. the gold reward: DanceGRPO's estimator against SLAS (gamma 1)
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_main"
  # 2. a hackable proxy: the strength probe (grpo, seed 0, 60 iterations: docs/shapesworld-study.md), then both
  #    arms at the chosen strength; 60 iterations (DanceGRPO has hacked by then) evaluated every 10, so the
  #    monitor's early-stop rule (3 evaluations in a row) can fire
  compare "${c2[@]}" --seeds 1 --methods grpo --sweep reward.options.toy_biased.lam=0.5,2,4,8 \
    --out "$OUT/part2_hack_probe" "${biased[@]}" train.iterations=60
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_hack" "${hack[@]}"
  # 3. scale: S on the gold reward (M is part2_main), then L
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_scale_S" model.checkpoint=toy_S
  # 2b. the learned preference proxy (the closest analogue of HPS)
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_pref" "${pref[@]}"
  # 2c. the step-size control under both proxies: DanceGRPO's estimator with r moving as far from 1/2 as SLAS's
  #     does (r_scale 5 -> 4; research/slas_options.py measured 1.24x). Two comparisons side by side, one run each
  local m1=(--config configs/toy_slas.yaml --seeds 5 --jobs 1 --threads 1 --methods grpo --sweep forward.r_scale=4)
  compare "${m1[@]}" --out "$OUT/part2_hack_matched" "${hack[@]}" &
  local first=$!
  compare "${m1[@]}" --out "$OUT/part2_pref_matched" "${pref[@]}"
  wait "$first"  # its failure stops the script too (set -e)
  # 1b. the step-size control on the gold reward
  compare "${c2[@]}" --methods grpo --sweep forward.r_scale=4 --out "$OUT/part2_matched"
  # 1c. the gamma sweep on the gold reward
  compare "${c2[@]}" --methods slas --sweep advantage.params.gamma=0.5,2 --out "$OUT/part2_gamma"
  # 1d. the other estimators on the gold reward
  compare "${c2[@]}" --methods drgrpo,grpo_global_std --out "$OUT/part2_estimators"
  # 4. SLAS's open details on the gold reward, one at a time against slas at its defaults (part2_main); each is one
  #    arm (5 runs), so two of them run side by side with one run each and no core waits on an odd run out
  local d1=(--config configs/toy_slas.yaml --seeds 5 --jobs 1 --threads 1 --methods slas)
  details() {  # details SWEEP_A OUT_A SWEEP_B OUT_B
    compare "${d1[@]}" --sweep "$1" --out "$OUT/$2" &
    local first=$!
    compare "${d1[@]}" --sweep "$3" --out "$OUT/$4"
    wait "$first"
  }
  details advantage.params.normalize=after part2_normalize advantage.params.batch_std_of=rewards part2_batch_std_of
  details advantage.params.recenter=true part2_recenter train.drop_zero_advantage=true part2_drop_zero
  # 2d. the proxy's other arms (as on the gold reward), and scale under the proxy
  compare "${c2[@]}" --methods drgrpo,grpo_global_std --out "$OUT/part2_hack_estimators" "${hack[@]}"
  compare "${c2[@]}" --methods slas --sweep advantage.params.gamma=0.5,2 --out "$OUT/part2_hack_gamma" \
    "${hack[@]}"
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_hack_scale_S" "${hack[@]}" model.checkpoint=toy_S
  # 5. the main arms under the other forward-process objective (AWM, which also learns: docs/performance.md); before
  #    L because the AWM comparison costs about half of an L one
  #    (with uniform levels, the recipe's before it took AWM's stratified ones)
  compare --config configs/toy_awm_slas.yaml --seeds 5 --jobs "$JOBS" --threads 1 --methods grpo,slas \
    --out "$OUT/part2_awm" forward.time_sampling=uniform
  # 3b. L (twice M's cost per run) on the gold reward and under the proxy
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_scale_L" model.checkpoint=toy_L
  compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_hack_scale_L" "${hack[@]}" model.checkpoint=toy_L
  # 3c. the step size on L's gold reward, seeds 0 and 1 (probes, paired with part2_scale_L's runs): does DanceGRPO's
  #     estimator at SLAS's step size (as part2_matched on M) fall back on L as slas does, and does SLAS at
  #     DanceGRPO's step size (r_scale 5 x 1.24) hold?
  local l2=(--config configs/toy_slas.yaml --seeds 2 --jobs "$JOBS" --threads 1)
  compare "${l2[@]}" --methods grpo --sweep forward.r_scale=4 --out "$OUT/part2_scale_L_matched" model.checkpoint=toy_L
  compare "${l2[@]}" --methods slas --sweep forward.r_scale=6.2 --out "$OUT/part2_scale_L_slas_step" \
    model.checkpoint=toy_L
  # 3d. which part of SLAS's shape breaks L: the batch std without the power (grpo_global_std), seeds 0 and 1
  compare "${l2[@]}" --methods grpo_global_std --out "$OUT/part2_scale_L_global_std" model.checkpoint=toy_L
}
if [ "$PART" = part2 ]; then part2; exit 0; fi
common=(--config configs/toy_hack.yaml --seeds 5 --jobs "$JOBS" --threads 1)
# 1. the four estimators (SLAS at its defaults: gamma 1, batch_std_of centered, normalize before, recenter false)
compare "${common[@]}" --methods slas,grpo,drgrpo,grpo_global_std --out "$OUT/main"
# 2. gamma (gamma 1 is the main comparison's slas arm; grpo_global_std is the linear end)
compare "${common[@]}" --methods slas --sweep advantage.params.gamma=0.5,2 --out "$OUT/gamma"
# 3. SLAS's options the paper leaves undetermined, one at a time against the defaults
compare "${common[@]}" --methods slas --sweep advantage.params.recenter=true --out "$OUT/recenter"
compare "${common[@]}" --methods slas --sweep advantage.params.normalize=after --out "$OUT/normalize"
compare "${common[@]}" --methods slas --sweep advantage.params.batch_std_of=rewards --out "$OUT/batch_std_of"
# 4. model scale: SLAS vs DanceGRPO with the same config on the shipped S and L (M is part 1)
compare "${common[@]}" --methods slas,grpo --out "$OUT/scale_S" model.checkpoint=toy_S
compare "${common[@]}" --methods slas,grpo --out "$OUT/scale_L" model.checkpoint=toy_L
# ---- part 2: the default recipe (DiffusionNFT, configs/toy_slas.yaml) on the strict gold reward, where training
# learns. `bash research/study.sh OUT part2` runs only this part; tables: research/study_tables.py OUT --part2
part2
