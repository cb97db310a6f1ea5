#!/usr/bin/env bash
# `vqalab demo --device cuda` on a GPU machine, from a tree scripts/gpu/pack-demo.sh made (run it
# from that tree, e.g. `cd .xfer/cudademo && bash scripts/gpu/run-demo.sh`). Stages:
#   1. build the addon with the CUDA backend (cuda.mk: lib + addon); meanwhile write the larger
#      random-init Qwen2-VL model (demo.mjs make-model, the project's own writer) under /tmp;
#   2. the demo as shipped (embedded tiny model) on cuda;
#   3. the same recipe on the larger model (LARGE="HIDDEN LAYERS INTER HEADS KV VDEPTH VDIM",
#      LARGE_ARGS for its learning rates), SKIP_LARGE=1 leaves it out;
#   4. the demo on this host's CPU when time is left (SKIP_CPU=1 leaves it out); then
#      scripts/gpu/demo-summary.py's table of the runs.
# Logs, metrics.jsonl and result.json of each run go under $OUT. Time limits: *_S variables.
source "$(dirname "$0")/call-env.sh"  # set -u, OUT (made), J, T0, el
LARGE=${LARGE:-"1024 16 2816 16 2 4 256"}
LARGE_DIR=/tmp/vqalab-large
LARGE_ARGS=${LARGE_ARGS:-"--sft-lr 2e-4 --grpo-lr 2e-5"}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; echo "prebuilt: $(ls prebuilt | tr '\n' ' ')"; fi
  [ -f node_modules.tar.xz ] && [ ! -d node_modules ] && xz -d -c node_modules.tar.xz | tar -xf - && echo "unpacked node_modules: $(ls node_modules | tr '\n' ' ')"
} > "$OUT/build.log" 2>&1
if [ "${SKIP_LARGE:-0}" != 1 ]; then
  ( bash .gpu/with-node.sh node demo.mjs make-model $LARGE_DIR $LARGE > "$OUT/make-model.log" 2>&1; echo "exit $?" >> "$OUT/make-model.log" ) &
  MK=$!
fi
{ time make -f scripts/gpu/cuda.mk -j"$J" addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "; } >> "$OUT/build.log" 2>&1
echo "build: $(ls native/build/Release/vqalab.node 2>/dev/null || echo 'NO ADDON') ($(el))"; grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
bash .gpu/with-node.sh node -e "console.log('addon _cuda():', JSON.stringify(require(process.env.VQALAB_ADDON)._cuda()))" 2>&1 | tee -a "$OUT/build.log"

# 2. the demo as shipped, on cuda (SKIP_TINY=1 leaves it out)
if [ "${SKIP_TINY:-0}" != 1 ]; then
/usr/bin/time -v -o "$OUT/tiny-cuda.time" timeout -k 5 "${TINY_S:-200}" bash .gpu/with-node.sh node demo.mjs demo --device cuda --out "$OUT/tiny-cuda" > "$OUT/tiny-cuda.log" 2>&1
echo "tiny cuda demo exit $? ($(el))"; grep -v "^\s*$" "$OUT/tiny-cuda.log" | grep -v "━\|steps/s\|% |" | tail -12 | cut -c1-300
fi

# 3. the larger model, same recipe
if [ "${SKIP_LARGE:-0}" != 1 ]; then
  wait $MK; cat "$OUT/make-model.log"; echo "($(el))"
  # LARGE_ARGS: one or more argument sets separated by ';' (learning rates to try), one run each
  IFS=';' read -ra sets <<< "$LARGE_ARGS"; k=0
  for a in "${sets[@]}"; do
    k=$((k + 1)); name=large-cuda; [ ${#sets[@]} -gt 1 ] && name=large-cuda-$k
    timeout -k 5 "${LARGE_S:-200}" bash .gpu/with-node.sh node demo.mjs demo --device cuda --model $LARGE_DIR --out "$OUT/$name" $a > "$OUT/$name.log" 2>&1
    echo "$name ($a) exit $? ($(el))"; grep -v "^\s*$" "$OUT/$name.log" | grep -v "━\|steps/s\|% |" | tail -12 | cut -c1-300
  done
fi
# 4. the same recipe on this host's CPU, if the time allows (CPU_BEFORE_S: latest start, CPU_S: limit)
if [ "${SKIP_CPU:-0}" != 1 ] && [ $(( $(date +%s) - T0 )) -lt "${CPU_BEFORE_S:-230}" ]; then
  timeout -k 5 "${CPU_S:-100}" bash .gpu/with-node.sh node demo.mjs demo --device cpu --out "$OUT/tiny-cpu-host" > "$OUT/tiny-cpu-host.log" 2>&1
  echo "tiny cpu demo (this host, $(nproc) cores) exit $? ($(el))"; grep -v "━\|steps/s" "$OUT/tiny-cpu-host.log" | tail -3 | cut -c1-300
fi
python3 scripts/gpu/demo-summary.py "$OUT"/tiny-cpu-host "$OUT"/tiny-cuda "$OUT"/large-cuda* 2>&1 | tee "$OUT/summary.md"
# the runs' folders (metrics.jsonl, result.json) and logs in one archive: a GPU call brings back only
# a few files; run.out and summary.md stay beside it
( cd "$OUT" && items=$(ls -A | grep -v '^run.out$\|^summary.md$\|^runs.tgz$'); [ -n "$items" ] && tar -czf runs.tgz $items && rm -rf $items )
echo "total $(el)"
