#!/usr/bin/env bash
# The whole CUDA suite and the benchmarks on a GPU machine, in one command (issue 10):
#   build (nvcc + g++, no npm there); test/cuda through node:test (it runs the op tests and the model
#   checks against the CPU reference, and the engine's transformers parity cases on cuda in bf16);
#   the parity cases in fp32; the op throughput table; our GRPO step and rollout; the PyTorch +
#   transformers GRPO reference on the same card; a summary with the ratios.
# Run from a tree that holds native/, scripts/gpu/, bench/torch/, test/fixtures/engine/ and, for the
# addon and the node tests, .gpu/ (Node), napi/ (node-addon-api's headers), parity.mjs and
# cuda-test.mjs (bench/cuda-parity.ts and test/cuda/cuda.test.ts bundled): scripts/gpu/pack.sh makes
# such a tree. Logs and results go to $OUT (default ./gpu-out), 9 files:
#   build.log test_ops.log test_model.log cudatest.log parity.log torch_parity.log ours.log torch.log results.md
# SKIP_TORCH=1 leaves the reference out, SKIP_BENCH=1 every benchmark, SKIP_OPBENCH=1 the op throughput
# table, PROFILE=0 the profiled step, SKIP_TORCH_PARITY=1 transformers' own bf16 error on the fixtures; each stage has its own time limit (seconds, *_S variables).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
J=$(nproc)
T0=$(date +%s)
step() { echo; echo "=== $* ($(date +%T), +$(( $(date +%s) - T0 )) s)"; }
lim() { local s=$1; shift; timeout -k 5 "$s" "$@"; }
{
  step device
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nvcc --version | tail -2
  ls /usr/local/cuda/include/cublasLt.h /usr/local/cuda/lib64/libcublasLt.so* 2>&1 | head -3
  step build
  if [ -d prebuilt ]; then  # nvcc objects compiled on the dev machine (same nvcc 13.0): newer than their sources
    mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o
    echo "prebuilt objects: $(ls prebuilt | tr '\n' ' ')"
  fi
  NAPI=""
  [ -d napi ] && [ -d .gpu/include ] && NAPI="addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi"
  time make -f scripts/gpu/cuda.mk -j"$J" lib tests $NAPI 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "
  step built
} > "$OUT/build.log" 2>&1
echo "build: $(grep -c 'error' "$OUT/build.log") error lines; $(ls native/build/cuda/test_ops native/build/cuda/test_model native/build/cuda/bench_grpo native/build/Release/vqalab.node 2>/dev/null | wc -l)/4 targets (+$(( $(date +%s) - T0 )) s)"
grep -m5 "error" "$OUT/build.log"

have_node=0
[ -f native/build/Release/vqalab.node ] && [ -x .gpu/with-node.sh ] && have_node=1
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node VQALAB_ROOT=$PWD VQALAB_CUDA_TEST_LOGS=$OUT

# test/cuda: test_ops, test_model (their outputs land in $OUT/test_ops.log, test_model.log), parity bf16
if [ $have_node = 1 ] && [ -f cuda-test.mjs ]; then
  lim "${NODE_TEST_S:-300}" bash .gpu/with-node.sh node --test --test-reporter=spec cuda-test.mjs > "$OUT/cudatest.log" 2>&1
  echo "node test/cuda exit $? (+$(( $(date +%s) - T0 )) s)"
  grep -E "^[ ]*(✔|✖|﹣)|# (tests|pass|fail|skipped)|parity on cuda" "$OUT/cudatest.log" | cut -c1-200 | head -20
else
  echo "no node or addon: running the programs directly"
  lim 200 native/build/cuda/test_ops > "$OUT/test_ops.log" 2>&1
  lim 200 native/build/cuda/test_model > "$OUT/test_model.log" 2>&1
fi
echo "ops: $(grep '^ops:' "$OUT/test_ops.log"); model: $(grep '^model:' "$OUT/test_model.log")"
grep "^FAIL" "$OUT/test_ops.log" | cut -c1-200 | head -15
grep "^FAIL" "$OUT/test_model.log" | cut -c1-200 | head -10
# the engine's fused attention kernels failing their checks: measure the rest on the cuBLASLt tile path (the
# `attention: 'gemm'` option; the node tools and bench_grpo take it from VQALAB_CUDA_ATTN). A failing variant of
# native/dev/flash_variants.cu ("pipelined variant", "simple flash", the old per-head decode kernel) changes nothing
# the engine runs; the decode kernel failing at any of its tile layouts does.
if grep "^FAIL attention" "$OUT/test_ops.log" | grep "default kernels" | grep -q bf16 ||
   grep "^FAIL decode_attention" "$OUT/test_ops.log" | grep -vq "per-head kernel"; then
  export VQALAB_CUDA_ATTN=gemm
  echo "the fused attention kernels failed their op tests: everything below runs with VQALAB_CUDA_ATTN=gemm"
fi

if [ $have_node = 1 ] && [ -f parity.mjs ]; then
  {
    bash .gpu/with-node.sh node -e "const a=require(process.env.VQALAB_ADDON); console.log('addon _cuda():', JSON.stringify(a._cuda()))"
    VQALAB_CUDA_PRECISION=fp32 lim 150 bash .gpu/with-node.sh node parity.mjs test/fixtures/engine cuda
    echo "=== bf16"
    lim 150 bash .gpu/with-node.sh node parity.mjs test/fixtures/engine cuda
    echo "=== bf16, LoRA in one rounding (linear_lora_forward; loraSingleRounding on: VQALAB_CUDA_LORA_PAIRS=1)"
    VQALAB_CUDA_LORA_PAIRS=1 lim 150 bash .gpu/with-node.sh node parity.mjs test/fixtures/engine cuda
  } > "$OUT/parity.log" 2>&1
  grep "^parity\|^FAIL\|_cuda\|^===\|lora_logits" "$OUT/parity.log" | cut -c1-200 | head -24
fi

# transformers itself in bf16 against the fixtures' fp32 logits: the calibration of the bf16 tolerance
if [ "${SKIP_TORCH_PARITY:-0}" != 1 ]; then
  lim "${TORCH_PARITY_S:-120}" python3 bench/torch/lora_bf16_parity.py test/fixtures/engine > "$OUT/torch_parity.log" 2>&1
  echo "torch bf16 parity exit $? (+$(( $(date +%s) - T0 )) s)"
  grep "max_abs\|error" "$OUT/torch_parity.log" | cut -c1-160 | head -30
fi

if [ "${SKIP_BENCH:-0}" = 1 ]; then  # tests only
  echo "SKIP_BENCH=1: no benchmarks (total +$(( $(date +%s) - T0 )) s)"
  exit 0
fi
if [ -x native/build/cuda/test_ops ] && [ "${SKIP_OPBENCH:-0}" != 1 ]; then  # op throughput only (the checks ran above)
  { echo; echo "=== test_ops --bench"; lim 120 native/build/cuda/test_ops --bench no-checks; } >> "$OUT/test_ops.log" 2>&1
  sed -n '/^op throughput/,/^ops:/p' "$OUT/test_ops.log" | cut -c1-160
fi

if [ -x native/build/cuda/bench_grpo ]; then
  lim "${BENCH_S:-240}" native/build/cuda/bench_grpo > "$OUT/ours.log" 2>&1
  rc=$?
  echo "ours exit $rc (+$(( $(date +%s) - T0 )) s)"; grep -v '^{' "$OUT/ours.log" | tail -14 | cut -c1-250
  if [ $rc != 0 ] && [ "${VQALAB_CUDA_ATTN:-}" != gemm ] && grep -q "error in \(rollout\|step\)" "$OUT/ours.log" &&
     [ $(( $(date +%s) - T0 )) -lt "${FALLBACK_BEFORE_S:-330}" ]; then
    echo "again with the cuBLASLt attention path and no CUDA graphs"
    { echo; echo "=== VQALAB_CUDA_ATTN=gemm VQALAB_CUDA_GRAPH=0"; VQALAB_CUDA_ATTN=gemm VQALAB_CUDA_GRAPH=0 lim 200 native/build/cuda/bench_grpo; } >> "$OUT/ours.log" 2>&1
    grep -v '^{' "$OUT/ours.log" | tail -10 | cut -c1-250
  fi
fi

if [ -x native/build/cuda/bench_grpo ] && [ "${PROFILE:-1}" = 1 ]; then  # where the time goes (phase sums)
  { echo; echo "=== VQALAB_CUDA_PROFILE=1 bench_grpo 16 8 profile"; VQALAB_CUDA_PROFILE=1 lim 120 native/build/cuda/bench_grpo 16 8 profile; } >> "$OUT/ours.log" 2>&1
  sed -n '/^=== VQALAB_CUDA_PROFILE/,$p' "$OUT/ours.log" | grep -v '^{' | cut -c1-160
fi

if [ "${SKIP_TORCH:-0}" != 1 ]; then
  lim "${TORCH_S:-200}" python3 bench/torch/grpo_reference.py > "$OUT/torch.log" 2>&1
  echo "torch reference exit $? (+$(( $(date +%s) - T0 )) s)"; tail -4 "$OUT/torch.log" | cut -c1-300
fi
python3 scripts/gpu/summarize.py "$OUT" | tee "$OUT/results.md"
echo "total +$(( $(date +%s) - T0 )) s"
