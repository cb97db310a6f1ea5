#!/usr/bin/env bash
# Trainer.step() through the TypeScript API at Qwen2-VL-2B dims (bench/trainer.ts) against the native
# bench_grpo (native/dev/bench_grpo.cu), same workload, same call (issue 13). Run from a tree that
# scripts/gpu/pack-trainer.sh made. Stages: build bench_grpo and the CUDA addon (cuda.mk) while Node
# writes the random-init Qwen2-VL-2B-shaped folder under /tmp; bench_grpo 16 8; the Trainer bench.
# Logs under $OUT: build.log make-model.log native.log trainer.log. Time limits: *_S variables.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
J=$(nproc)
T0=$(date +%s)
el() { echo "+$(( $(date +%s) - T0 )) s"; }
MODEL=/tmp/vqalab-qwen2-vl-2b-random
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; echo "prebuilt: $(ls prebuilt | tr '\n' ' ')"; fi
} > "$OUT/build.log" 2>&1
( bash .gpu/with-node.sh node trainer.mjs make-model $MODEL > "$OUT/make-model.log" 2>&1; echo "exit $?" >> "$OUT/make-model.log" ) &
MK=$!
{ time make -f scripts/gpu/cuda.mk -j"$J" native/build/cuda/bench_grpo addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "; } >> "$OUT/build.log" 2>&1
echo "build: $(ls native/build/cuda/bench_grpo native/build/Release/vqalab.node 2>/dev/null | wc -l)/2 targets ($(el))"; grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
if [ -x native/build/cuda/bench_grpo ]; then
  timeout -k 5 "${NATIVE_S:-150}" native/build/cuda/bench_grpo 16 8 > "$OUT/native.log" 2>&1
  echo "bench_grpo exit $? ($(el))"; grep -v '^{' "$OUT/native.log" | tail -12 | cut -c1-250; grep '^{' "$OUT/native.log" | tail -2 | cut -c1-400
fi
wait $MK; cat "$OUT/make-model.log"; echo "($(el))"; du -sh $MODEL
if [ -f native/build/Release/vqalab.node ]; then
  ( while sleep 1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$OUT/gpu-mem.log" 2>/dev/null &
  SMI=$!
  timeout -k 5 "${TRAINER_S:-300}" bash .gpu/with-node.sh node trainer.mjs bench $MODEL --device cuda ${TRAINER_ARGS:-} > "$OUT/trainer.log" 2>&1
  echo "trainer bench exit $? ($(el))"; tail -14 "$OUT/trainer.log" | cut -c1-400
  kill $SMI 2>/dev/null
  echo "nvidia-smi memory.used peak while the Trainer ran: $(sort -n "$OUT/gpu-mem.log" | tail -1) MiB"
fi
echo "total $(el)"
