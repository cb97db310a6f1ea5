#!/usr/bin/env bash
# One GPU call for the open GPU work, from a tree scripts/gpu/pack-trainer.sh made (it carries the
# CUDA sources, prebuilt objects, the fixture generators and the Trainer bench):
#   - in the background: the transformers fixtures (engine parity of qwen2_5_vl and qwen3_vl, and the
#     video inputs of the three families) into $OUT/fx/*.tgz;
#   - scripts/gpu/test-families.sh with FULL=1: the CUDA families against the CPU engine, and the
#     whole test_ops / test_model (nothing regressed) into $OUT/families;
#   - scripts/gpu/bench-trainer.sh with what is left of the call (SKIP_LORA / SKIP_LONG as given).
# FAMILIES_S, BENCH_S: time limits of the two stages.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/fx" "$OUT/families"
T0=$(date +%s)
( OUT=$OUT/fx FIXTURES_ONLY=1 FIXTURES=${FIXTURES:-qwen2_5_vl,qwen3_vl} VIDEO_FIXTURES=${VIDEO_FIXTURES:-1} \
    bash scripts/gpu/bench-trainer.sh > "$OUT/fx/run.log" 2>&1 ) &
FX=$!
OUT=$OUT/families FULL=${FULL:-1} timeout -k 5 "${FAMILIES_S:-240}" bash scripts/gpu/test-families.sh 2>&1 | tail -25
echo "families: +$(( $(date +%s) - T0 )) s"
FIXTURES= VIDEO_FIXTURES= timeout -k 5 "${BENCH_S:-300}" bash scripts/gpu/bench-trainer.sh 2>&1
wait $FX; cat "$OUT/fx/run.log" | tail -4; tail -3 "$OUT/fx/fixtures.log" "$OUT/fx/video-fixtures.log" 2>/dev/null
echo "session total +$(( $(date +%s) - T0 )) s"
