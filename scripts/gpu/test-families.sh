#!/usr/bin/env bash
# The CUDA checks of the Qwen-VL families (issue 14) in one GPU call, from a pack of
# scripts/gpu/pack-families.sh (prebuilt/ beside native/) or from a checkout (native/build/prebuilt):
#   1. builds native/build/cuda/test_ops and test_model (make -f scripts/gpu/cuda.mk);
#   2. test_ops for the ops the families use (qwen3: residual_add, add_rows, position embeddings; act:
#      gelu_tanh and the others; rope: the interleaved M-RoPE table; norm: the per-head q/k norms' op);
#   3. test_model families: tiny Qwen2.5-VL and Qwen3-VL against the CPU engine in one process, fp32 and
#      bf16 (logits, log-probs, entropy, every gradient, a step, sampling, a GRPO loss and its gradients,
#      packing, checkpointing, sampling options, LoRA); a fresh seed each run (SEED=n repeats one;
#      SEEDS=n runs them for n seeds, SEEDS=a,b,c for those, with a line per seed at the end of the log);
#   4. FULL=1: the whole test_ops and test_model too (Qwen2-VL included: nothing regressed).
# Logs under $OUT (build.log, test_ops.log, test_model.log, summary.txt); exit 1 if a check failed.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "+$(( $(date +%s) - T0 )) s"; }
pre=prebuilt
[ -d "$pre" ] || pre=native/build/prebuilt
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -2
  if [ -d "$pre" ]; then  # nvcc objects compiled on the dev machine (same nvcc 13): newer than their sources
    mkdir -p native/build/cuda && cp "$pre"/*.o native/build/cuda/ && touch native/build/cuda/*.o
    echo "prebuilt: $(ls "$pre" | tr '\n' ' ')"
  fi
  time make -f scripts/gpu/cuda.mk -j"$(nproc)" native/build/cuda/test_ops native/build/cuda/test_model
} > "$OUT/build.log" 2>&1
echo "build: $(ls native/build/cuda/test_ops native/build/cuda/test_model 2>/dev/null | wc -l)/2 targets ($(el))"
grep -m10 "error" "$OUT/build.log"
rc=0
if [ -x native/build/cuda/test_ops ]; then
  : > "$OUT/test_ops.log"
  for f in ${OPS:-qwen3 act rope norm}; do
    { echo "=== test_ops $f"; timeout -k 5 "${OPS_S:-150}" native/build/cuda/test_ops "$f"; echo "exit $?"; } >> "$OUT/test_ops.log" 2>&1
  done
  if [ "${FULL:-0}" = 1 ]; then
    { echo "=== test_ops (all)"; timeout -k 5 300 native/build/cuda/test_ops; echo "exit $?"; } >> "$OUT/test_ops.log" 2>&1
  fi
  grep -q "^FAIL\|^exit [^0]" "$OUT/test_ops.log" && rc=1
  echo "test_ops: $(grep -c '^ok' "$OUT/test_ops.log") ok, $(grep -c '^FAIL' "$OUT/test_ops.log") FAIL ($(el))"
else
  rc=1
fi
if [ -x native/build/cuda/test_model ]; then
  export VQALAB_TEST_SEED=${SEED:-} VQALAB_TEST_SEEDS=${SEEDS:-}
  { timeout -k 5 "${MODEL_S:-300}" native/build/cuda/test_model families; echo "exit $?"; } > "$OUT/test_model.log" 2>&1
  if [ "${FULL:-0}" = 1 ]; then
    { echo "=== test_model (all)"; timeout -k 5 300 native/build/cuda/test_model; echo "exit $?"; } >> "$OUT/test_model.log" 2>&1
  fi
  grep -q "^FAIL\|^exit [^0]" "$OUT/test_model.log" && rc=1
  echo "test_model: $(grep -c '^ok' "$OUT/test_model.log") ok, $(grep -c '^FAIL' "$OUT/test_model.log") FAIL ($(el))"
  head -1 "$OUT/test_model.log"
  sed -n '/^families per seed:/,/^families: /p' "$OUT/test_model.log"
else
  rc=1
fi
{ grep -h "^FAIL" "$OUT/test_ops.log" "$OUT/test_model.log" 2>/dev/null; echo "exit $rc"; } > "$OUT/summary.txt"
cat "$OUT/summary.txt" | head -40
exit $rc
