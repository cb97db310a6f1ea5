#!/usr/bin/env bash
# Issue 14's acceptance on CPU: are the synthetic video questions learnable by the tiny recipe? The
# demo's method on the video set: an SFT warm start, then GRPO; held-out accuracy after each, and
# again with every question shown the next question's clip (a policy that reads the video falls to
# chance there, one that answers from the question alone does not).
#   bash bench/video-learn.sh [DIR]      (default /tmp/vqalab-video-learn; about 10 minutes on 2 cores)
# Needs `npm run build`. Prints the four accuracies; the runs' logs and metrics stay in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/vqalab-video-learn}
rm -rf "$dir" && mkdir -p "$dir"
v() { node bin/vqalab.js "$@"; }
v data synth-video --out "$dir/train" --videos 400 --seed 0 --show 0 > /dev/null
v data synth-video --out "$dir/val" --videos 100 --seed 1 --show 0 > /dev/null
# the control: each held-out question with the next one's clip
node --input-type=module -e "
import { VqaDataset } from './dist/src/data/dataset.js';
const all = [...(await VqaDataset.fromParquet('$dir/val/synth-video.parquet'))];
const swapped = all.map((s, i) => { const o = all[(i + 1) % all.length];
  return { ...s, id: s.id + '#video-of-' + o.id, imagePath: o.imagePath, videoPaths: o.videoPaths, videoFps: o.videoFps }; });
await VqaDataset.fromSamples(swapped).writeParquet('$dir/val-mismatched.parquet');
"
train=(--data-path "$dir/train/synth-video.parquet" --val-data-path "$dir/val/synth-video.parquet" --sft-steps 25 --quiet)
# the warm start alone: one GRPO step at a learning rate that moves nothing
echo '{"learningRate": 1e-12}' > "$dir/warm.json"
v train "${train[@]}" --max-steps 1 --config "$dir/warm.json" --out "$dir/warm" > "$dir/warm.log" 2>&1
echo '{"learningRate": 5e-4, "dynamicSampling": true}' > "$dir/grpo.json"
v train "${train[@]}" --max-steps 100 --config "$dir/grpo.json" --out "$dir/grpo" > "$dir/grpo.log" 2>&1
mismatched() {  # checkpoint, name
  v eval-policy --dataset "$dir/val-mismatched.parquet" --policy "local:$1" --max-tokens 8 > "$dir/$2-mismatched.log" 2>&1 || true
  # the table's last row: policy, overall, ...
  tail -1 "$dir/$2-mismatched.log" | awk '{print $2 "%"}'
}
echo "warm start:          $(grep -o 'val accuracy [0-9.]*%' "$dir/warm.log")"
echo "warm start, mismatched clips: $(mismatched "$(ls -d "$dir"/warm/checkpoints/checkpoint-* | tail -1)" warm)"
echo "after GRPO:          $(grep -o 'val accuracy [0-9.]*%' "$dir/grpo.log" | tail -1)"
echo "after GRPO, mismatched clips: $(mismatched "$(ls -d "$dir"/grpo/checkpoints/checkpoint-* | tail -1)" grpo)"
