#!/usr/bin/env bash
# Issue 13 item 5 in one GPU call, from a tree scripts/gpu/pack-demo.sh made: does the GPU learn as
# the CPU does?
#   1. the tiny demo (`vqalab demo`, embedded model) on cuda for SEEDS, in PRECS (default: bf16, the
#      default, and fp32 by VQALAB_CUDA_PRECISION=fp32): is the gap to the CPU run bf16, or seed noise?
#   2. a larger random-init Qwen2-VL (LARGE="HIDDEN LAYERS INTER HEADS KV VDEPTH VDIM", default
#      768 12 2048 12 2 4 256: 75 M parameters) through `vqalab train` on the embedded synthetic data,
#      one run per recipe of RECIPES (';'-separated `vqalab train` flags), and with LARGE_DEMO (e.g.
#      "--sft-lr 5e-4 --grpo-lr 1e-4 --grpo-steps 150") through `vqalab demo --model` for the
#      mismatched-image control that `vqalab train` does not run.
# Order: LARGE_DEMO first (its mismatched-image control is the measurement still missing), then 1, then
# the RECIPES of 2 (RECIPES="" for none). Logs and each run's result.json/metrics.jsonl go under $OUT
# (one archive). Limits: *_S variables.
source "$(dirname "$0")/call-env.sh"  # set -u, OUT (made), J, T0, el
SEEDS=${SEEDS:-"0 1"}
LARGE=${LARGE:-"768 12 2048 12 2 4 256"}
LARGE_DIR=/tmp/vqalab-large
# The recipe that learned on an H100 (bench/results/trainer/h100-2026-12-07) and one that collapsed there.
RECIPES=${RECIPES:-"--sft-steps 25 --sft-lr 5e-4 --grpo-lr 1e-4 --dynamic;--sft-steps 25 --sft-lr 1e-3 --grpo-lr 2e-4 --dynamic"}
LARGE_DEMO=${LARGE_DEMO-"--sft-lr 5e-4 --grpo-lr 1e-4 --grpo-steps 150"}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; echo "prebuilt: $(ls prebuilt | tr '\n' ' ')"; fi
  [ -f node_modules.tar.xz ] && [ ! -d node_modules/sharp ] && xz -d -c node_modules.tar.xz | tar -xf - && echo "unpacked node_modules"
} > "$OUT/build.log" 2>&1
( bash .gpu/with-node.sh node demo.mjs make-model $LARGE_DIR $LARGE > "$OUT/make-model.log" 2>&1; echo "exit $?" >> "$OUT/make-model.log" ) &
MK=$!
{ time make -f scripts/gpu/cuda.mk -j"$J" addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "; } >> "$OUT/build.log" 2>&1
echo "build: $(ls native/build/Release/vqalab.node 2>/dev/null || echo 'NO ADDON') ($(el))"; grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
result() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in r if not isinstance(r[k], (dict, list))})" "$1" 2>/dev/null || echo "no result.json"; }
wait $MK; tail -2 "$OUT/make-model.log"
# The same model through `vqalab demo --model` (warm start, GRPO, and both again with every question
# shown another question's image: does the policy read the image?), for LARGE_DEMO's flags.
if [ -n "${LARGE_DEMO:-}" ]; then
  timeout -k 5 "${LARGE_S:-150}" bash .gpu/with-node.sh node demo.mjs demo --model $LARGE_DIR --device cuda --quiet \
    --out "$OUT/large-demo" $LARGE_DEMO > "$OUT/large-demo.log" 2>&1
  echo "large-demo ($LARGE_DEMO) exit $? ($(el)): $(result "$OUT/large-demo/result.json")"
fi
for seed in $SEEDS; do
  for prec in ${PRECS:-bf16 fp32}; do
    name=tiny-$prec-s$seed
    VQALAB_CUDA_PRECISION=$prec timeout -k 5 "${TINY_S:-60}" bash .gpu/with-node.sh node demo.mjs demo --device cuda --seed "$seed" --quiet --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    echo "$name exit $? ($(el)): $(result "$OUT/$name/result.json")"
  done
done
IFS=';' read -ra sets <<< "$RECIPES"; k=0
for r in "${sets[@]}"; do
  k=$((k + 1)); name=large-$k
  # --grpo-lr X and --dynamic become the trainer config (--config FILE); the rest are train flags
  lr=$(echo "$r" | sed -n 's/.*--grpo-lr \([^ ]*\).*/\1/p'); dyn=false; echo "$r" | grep -q -- --dynamic && dyn=true
  flags=$(echo "$r" | sed 's/--grpo-lr [^ ]*//; s/--dynamic//')
  echo "{\"learningRate\": ${lr:-1e-5}, \"dynamicSampling\": $dyn}" > "/tmp/$name.json"
  timeout -k 5 "${LARGE_S:-150}" bash .gpu/with-node.sh node demo.mjs train --model $LARGE_DIR --device cuda --max-steps "${STEPS:-100}" \
    --config "/tmp/$name.json" --out "$OUT/$name" --quiet $flags > "$OUT/$name.log" 2>&1
  echo "$name ($r) exit $? ($(el))"; grep -v "━\|steps/s\|^\s*$" "$OUT/$name.log" | tail -6 | cut -c1-300
done
# checkpoints stay behind: a run's weights and optimizer state would push the archive past what a call returns
( cd "$OUT" && items=$(ls -A | grep -v '^run.out$\|^runs.tgz$'); [ -n "$items" ] && tar --exclude=checkpoints -czf runs.tgz $items && rm -rf $items )
echo "total $(el)"
