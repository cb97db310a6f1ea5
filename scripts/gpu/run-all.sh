#!/usr/bin/env bash
# The whole CUDA suite and the benchmarks on a GPU machine, in one command (issue 10):
#   build (nvcc + g++, no npm there), op tests against the CPU reference, the model against the CPU
#   engine, the engine's transformers parity cases on cuda (bf16 and fp32) through the addon, the
#   PyTorch + transformers GRPO reference, and our GRPO step and rollout on the same card.
# Run from a tree that holds native/, scripts/gpu/, bench/torch/, test/fixtures/engine/ and, for the
# addon, .gpu/ (../shared/tools/gpu-pack.sh), napi/ (node-addon-api's headers) and parity.mjs (this
# repo's bench/cuda-parity.ts bundled with esbuild): scripts/gpu/pack.sh makes such a tree.
# Logs and results go to $OUT (default ./gpu-out): at most 8 files.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
J=$(nproc)
step() { echo; echo "=== $* ($(date +%T))"; }
{
  step device
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nvcc --version | tail -2
  ls /usr/local/cuda/include/cublasLt.h /usr/local/cuda/lib64/libcublasLt.so* 2>&1 | head -3
  step build
  NAPI=""
  [ -d napi ] && [ -d .gpu/include ] && NAPI="addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi"
  time make -f scripts/gpu/cuda.mk -j"$J" lib tests $NAPI 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc " 
} > "$OUT/build.log" 2>&1
echo "build: $(tail -1 "$OUT/build.log")"

if [ -x native/build/cuda/test_ops ]; then
  native/build/cuda/test_ops --bench > "$OUT/ops.log" 2>&1; echo "ops exit $?: $(grep '^ops:' "$OUT/ops.log")"
  grep -A20 "^op throughput" "$OUT/ops.log"
  grep "^FAIL" "$OUT/ops.log" | head -20
fi
if [ -x native/build/cuda/test_model ]; then
  native/build/cuda/test_model > "$OUT/model.log" 2>&1; echo "model exit $?: $(tail -1 "$OUT/model.log")"
  grep "^FAIL" "$OUT/model.log" | head -20
fi
if [ -f native/build/Release/vqalab.node ] && [ -f parity.mjs ]; then
  {
    export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
    bash .gpu/with-node.sh node -e "const a=require(process.env.VQALAB_ADDON); console.log('addon _cuda():', JSON.stringify(a._cuda()))"
    bash .gpu/with-node.sh node parity.mjs test/fixtures/engine cuda
    VQALAB_CUDA_PRECISION=fp32 bash .gpu/with-node.sh node parity.mjs test/fixtures/engine cuda
    bash .gpu/with-node.sh node parity.mjs test/fixtures/engine cpu
  } > "$OUT/parity.log" 2>&1
  grep "^parity\|^FAIL\|^ok\|_cuda" "$OUT/parity.log" | cut -c1-220
fi

python3 bench/torch/grpo_reference.py > "$OUT/torch.log" 2>&1; echo "torch reference exit $?"; tail -8 "$OUT/torch.log" | cut -c1-300
if [ -x native/build/cuda/bench_grpo ]; then
  native/build/cuda/bench_grpo > "$OUT/ours.log" 2>&1; echo "ours exit $?"; grep -v '^{' "$OUT/ours.log" | tail -12
fi
python3 scripts/gpu/summarize.py "$OUT" | tee "$OUT/results.md"
