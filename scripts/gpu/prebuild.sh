#!/usr/bin/env bash
# Compiles the nvcc objects that need no cuBLASLt header (all but gemm.cu) on this machine (nvcc 13,
# no GPU) into native/build/prebuilt/, for pack.sh to carry: the GPU call then skips those compiles.
# Same flags as scripts/gpu/cuda.mk. Run after the last edit of native/src/cuda or native/dev.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
out=${PREBUILT_OUT:-native/build/prebuilt}
mkdir -p "$out"
flags="-std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -Inative/src -Xcompiler -fPIC -Xcompiler -Wall -diag-suppress 3357 --expt-relaxed-constexpr"
touch "$out/.stamp.new"
# every .cu of native/src/cuda but gemm.cu, J at a time (default: nproc)
for src in native/src/cuda/*.cu; do
  f=$(basename "$src" .cu)
  [ "$f" = gemm ] && continue
  while [ "$(jobs -rp | wc -l)" -ge "${J:-$(nproc)}" ]; do wait -n; done
  nvcc $flags -c "$src" -o "$out/cu_$f.o" &
done
wait
for f in test_ops test_model bench_grpo flash_variants; do nvcc $flags -c native/dev/$f.cu -o "$out/dev_$f.o" & done
wait
mv "$out/.stamp.new" "$out/.stamp"
ls -la "$out"
