#!/usr/bin/env bash
# The ShapesWorld hacking study of docs/shapesworld-study.md: every arm, 5 seeds, on
# configs/toy_hack.yaml. Resumable: rerun the same command and finished runs are skipped.
# Two runs at a time with one torch thread each (a 2-core machine); about 4-6 min per run there (M).
#   bash research/study.sh [OUT]        (default OUT = runs/study)
set -euo pipefail
OUT=${1:-runs/study}
SLAS=${SLAS:-.venv/bin/slas}
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
