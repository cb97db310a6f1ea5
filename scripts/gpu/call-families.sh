#!/usr/bin/env bash
# Issue 14's GPU evidence in one call, from a tree that scripts/gpu/pack-trainer.sh made (prebuilt nvcc
# objects, the bundled bench/trainer.ts and bench/cuda-parity.ts, Node):
#   1. builds test_ops, test_model and the addon at once;
#   2. test_ops, every op (the decode attention kernel's layouts included) against the CPU reference;
#   3. test_model, every check (Qwen2-VL at fixed seeds; Qwen2.5-VL and Qwen3-VL, fp32 and bf16 on
#      bf16-representable weights, LoRA, the vision feature cache) for SEEDS seeds of the families;
#   4. scripts/gpu/bench-families.sh (qwen2.5-vl-3b, qwen3-vl-2b: reference and Trainer.step());
#   5. the transformers parity cases of the tree's test/fixtures/engine on cuda, fp32 then bf16.
# Logs under $OUT (test_ops.log, test_model.log, bench/, parity-*.log, summary.txt).
source "$(dirname "$0")/call-env.sh"  # set -u, OUT (made), J, T0, el
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; fi
  time make -f scripts/gpu/cuda.mk -j"$J" native/build/cuda/test_ops native/build/cuda/test_model addon \
    NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "
} > "$OUT/build.log" 2>&1
head -2 "$OUT/build.log"
echo "build: $(ls native/build/cuda/test_ops native/build/cuda/test_model native/build/Release/vqalab.node 2>/dev/null | wc -l)/3 targets ($(el))"
grep -m5 "error" "$OUT/build.log"
{ timeout -k 5 "${OPS_S:-120}" native/build/cuda/test_ops; echo "exit $?"; } > "$OUT/test_ops.log" 2>&1
echo "test_ops: $(grep -c '^ok' "$OUT/test_ops.log") ok, $(grep -c '^FAIL' "$OUT/test_ops.log") FAIL, $(tail -1 "$OUT/test_ops.log") ($(el))"
{ VQALAB_TEST_SEEDS=${SEEDS:-3} timeout -k 5 "${MODEL_S:-200}" native/build/cuda/test_model; echo "exit $?"; } > "$OUT/test_model.log" 2>&1
echo "test_model: $(grep -c '^ok' "$OUT/test_model.log") ok, $(grep -c '^FAIL' "$OUT/test_model.log") FAIL, $(tail -1 "$OUT/test_model.log") ($(el))"
head -1 "$OUT/test_model.log"
sed -n '/^families per seed:/,/^families: /p' "$OUT/test_model.log"
grep -h "^FAIL" "$OUT/test_ops.log" "$OUT/test_model.log" | head -20 | cut -c1-200
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  OUT=$OUT/bench BUILD=0 bash scripts/gpu/bench-families.sh 2>&1 | tail -40
fi
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
for prec in fp32 bf16; do
  VQALAB_CUDA_PRECISION=$prec timeout -k 5 "${PARITY_S:-100}" bash .gpu/with-node.sh node parity.mjs ../test/fixtures/engine cuda \
    "$OUT/parity-$prec.json" > "$OUT/parity-$prec.log" 2>&1
  echo "parity $prec exit $? ($(el))"; grep "^ok\|^FAIL\|^parity\|^  " "$OUT/parity-$prec.log" | cut -c1-220 | head -24
done
{ grep -h "^FAIL" "$OUT/test_ops.log" "$OUT/test_model.log" "$OUT"/parity-*.log 2>/dev/null; echo "total $(el)"; } > "$OUT/summary.txt"
echo "total $(el)"
