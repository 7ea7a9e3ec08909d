#!/usr/bin/env bash
# The ShapesWorld hacking study of docs/shapesworld-study.md: every arm, 5 seeds, on
# configs/toy_hack.yaml. Resumable: rerun the same command and finished runs are skipped.
# Two runs at a time with one torch thread each (a 2-core machine); about 4-6 min per run there (M).
#   bash research/study.sh [OUT] [part2]   (default OUT = runs/study; part2 = only part 2)
set -euo pipefail
OUT=${1:-runs/study}
PART=${2:-all}
SLAS=${SLAS:-.venv/bin/slas}
part2() {
  local c2=(--config configs/toy_slas.yaml --seeds 5 --jobs 2 --threads 1)
  # 1. DanceGRPO's estimator against SLAS (gamma 1), then the other estimators and the gamma sweep
  $SLAS compare "${c2[@]}" --methods grpo,slas --out "$OUT/part2_main"
  $SLAS compare "${c2[@]}" --methods drgrpo,grpo_global_std --out "$OUT/part2_estimators"
  $SLAS compare "${c2[@]}" --methods slas --sweep advantage.params.gamma=0.5,2 --out "$OUT/part2_gamma"
}
if [ "$PART" = part2 ]; then part2; exit 0; fi
common=(--config configs/toy_hack.yaml --seeds 5 --jobs 2 --threads 1)
# 1. the four estimators (SLAS at its defaults: gamma 1, batch_std_of centered, normalize before, recenter false)
$SLAS compare "${common[@]}" --methods slas,grpo,drgrpo,grpo_global_std --out "$OUT/main"
# 2. gamma (gamma 1 is the main comparison's slas arm; grpo_global_std is the linear end)
$SLAS compare "${common[@]}" --methods slas --sweep advantage.params.gamma=0.5,2 --out "$OUT/gamma"
# 3. SLAS's options the paper leaves undetermined, one at a time against the defaults
$SLAS compare "${common[@]}" --methods slas --sweep advantage.params.recenter=true --out "$OUT/recenter"
$SLAS compare "${common[@]}" --methods slas --sweep advantage.params.normalize=after --out "$OUT/normalize"
$SLAS compare "${common[@]}" --methods slas --sweep advantage.params.batch_std_of=rewards --out "$OUT/batch_std_of"
# 4. model scale: SLAS vs DanceGRPO with the same config on the shipped S and L (M is part 1)
$SLAS compare "${common[@]}" --methods slas,grpo --out "$OUT/scale_S" model.checkpoint=toy_S
$SLAS compare "${common[@]}" --methods slas,grpo --out "$OUT/scale_L" model.checkpoint=toy_L
# ---- part 2: the default recipe (DiffusionNFT, configs/toy_slas.yaml) on the strict gold reward, where training
# learns. `bash research/study.sh OUT part2` runs only this part; tables: research/study_tables.py OUT --part2
part2
