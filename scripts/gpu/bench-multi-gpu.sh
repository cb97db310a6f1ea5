#!/usr/bin/env bash
# Issue 15's checks in one call on a host of 2 or 4 GPUs, from a tree that scripts/gpu/pack-multi-gpu.sh
# made: builds the CUDA addon (NCCL is loaded at run time: libnccl.so.2 must be findable, or
# VQALAB_NCCL_LIB set), makes the Qwen2-VL-2B random folder, then
#   1. the scaling table: 16·N prompts × G 8, 16-token completions, full fine-tune, N = 1, 2 (, 4);
#   2. the equivalence: fp32 (VQALAB_CUDA_PRECISION=fp32), 2 steps on N ranks against 1 rank;
#   3. the faults: a rank that crashes, a rank that hangs (named; every rank process gone).
# On a one-GPU machine only 1. (N = 1) and 2. with both ranks on the GPU (the cpu collective) run.
# Logs and the table under $OUT. GPUS (default: all visible) caps N; *_S variables bound each stage.
# Not run yet (no multi-GPU host was lent when it was written): expect to fix paths on the first call.
set -u
# NVLink multicast stays off (it can put a shared host's GPUs out of service): keep these set.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
J=$(nproc)
T0=$(date +%s)
el() { echo "+$(( $(date +%s) - T0 )) s"; }
MODEL=/tmp/vqalab-qwen2-vl-2b-random
NG=${GPUS:-$(nvidia-smi -L | wc -l)}
LIST=1; [ "$NG" -ge 2 ] && LIST=1,2; [ "$NG" -ge 4 ] && LIST=1,2,4
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  ldconfig -p | grep -m2 libnccl || echo "libnccl not in the linker cache (set VQALAB_NCCL_LIB)"
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; fi
} > "$OUT/build.log" 2>&1
head -4 "$OUT/build.log"
( bash .gpu/with-node.sh node trainer.mjs make-model $MODEL > "$OUT/make-model.log" 2>&1; echo "exit $?" >> "$OUT/make-model.log" ) &
MK=$!
make -f scripts/gpu/cuda.mk -j"$J" addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi >> "$OUT/build.log" 2>&1
echo "addon: $(ls native/build/Release/vqalab.node 2>/dev/null || echo missing) ($(el))"; grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
wait $MK; tail -1 "$OUT/make-model.log"
node_run() { timeout -k 5 "$1" bash .gpu/with-node.sh node "${@:2}"; }
node_run "${SCALING_S:-420}" multi-gpu.js scaling $MODEL --gpus $LIST --steps 3 > "$OUT/scaling.log" 2>&1
echo "scaling exit $? ($(el))"; grep '^|' "$OUT/scaling.log"
if [ "$NG" -lt 2 ]; then  # one GPU: the multi-rank path with both ranks on it (the cpu collective)
  VQALAB_CUDA_PRECISION=fp32 node_run "${EQUIV_S:-300}" multi-gpu.js equivalence $MODEL --gpus 2 --same-gpu > "$OUT/equivalence.log" 2>&1
  echo "equivalence (2 ranks on one GPU) exit $? ($(el))"; grep equivalence "$OUT/equivalence.log"
fi
if [ "$NG" -ge 2 ]; then
  VQALAB_CUDA_PRECISION=fp32 node_run "${EQUIV_S:-300}" multi-gpu.js equivalence $MODEL --gpus 2 > "$OUT/equivalence.log" 2>&1
  echo "equivalence exit $? ($(el))"; grep equivalence "$OUT/equivalence.log"
  node_run "${FAULT_S:-300}" multi-gpu.js fault $MODEL --gpus 2 > "$OUT/fault.log" 2>&1
  echo "fault exit $? ($(el))"; grep '"fault"' "$OUT/fault.log" | cut -c1-400
fi
