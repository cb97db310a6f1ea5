#!/usr/bin/env bash
# Packs issue 15's multi-GPU measurements (bench/multi-gpu.ts) into DEST (default /work/main/.dev-h15multi)
# as pack-trainer.sh packs bench/trainer.ts: the native sources and scripts/gpu (the CUDA addon is built
# there), prebuilt nvcc objects when current, node-addon-api's headers, Node (.gpu/), the Qwen tokenizer
# package's tokenizer.json, bench/trainer.ts (make-model) and, bundled with esbuild into one folder (ES
# modules: a package.json of type module beside them), the three entry points a multi-GPU run needs:
# multi-gpu.js (the driver), worker-main.js (each rank: the launcher starts the file of that name beside
# the code that holds it) and multi-gpu-recipe.js (the ranks' recipe, loaded by path). Then
# scripts/gpu/bench-multi-gpu.sh runs there.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest=${1:-/work/main/.dev-h15multi}
cd "$root"
bash scripts/gpu/pack-trainer.sh "$dest"  # the native tree, headers, Node, tokenizer and trainer.mjs
stub=$(mktemp -d)/sharp.mjs
echo "export default function sharp() { throw new Error('sharp is not in this bundle (the bench feeds raw RGB)'); }" > "$stub"
bundle() {  # entry, output file
  node_modules/.bin/esbuild "$1" --bundle --platform=node --format=esm --log-level=warning \
    --alias:sharp="$stub" --external:parquet-wasm \
    --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
    --outfile="$dest/$2"
}
bundle bench/multi-gpu.ts multi-gpu.js
bundle src/distributed/worker-main.ts worker-main.js
bundle bench/multi-gpu-recipe.ts multi-gpu-recipe.js
[ -f "$dest/package.json" ] || echo '{ "type": "module" }' > "$dest/package.json"
du -sh "$dest"
