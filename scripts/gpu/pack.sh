#!/usr/bin/env bash
# Packs what scripts/gpu/run-all.sh needs into DEST (default /work/main/.xfer/cuda, which a GPU call
# carries): the native sources, the GPU scripts, the torch reference, the engine's parity fixtures,
# node-addon-api's headers, bench/cuda-parity.ts and test/cuda/cuda.test.ts bundled with esbuild, and
# Node (.gpu/).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest=${1:-/work/main/.xfer/cuda}
cd "$root"
rm -rf "$dest"
mkdir -p "$dest/test/fixtures" "$dest/bench" "$dest/napi" "$dest/native"
cp -r native/src native/dev "$dest/native/"
cp -r scripts "$dest/"
# nvcc objects compiled here (scripts/gpu/prebuild.sh), if they are newer than every CUDA source
if [ -d native/build/prebuilt ] && [ -z "$(find native/src native/dev -newer native/build/prebuilt/.stamp -name '*.cu' -o -newer native/build/prebuilt/.stamp -name '*.h' -o -newer native/build/prebuilt/.stamp -name '*.cuh' | head -1)" ]; then
  mkdir -p "$dest/prebuilt" && cp native/build/prebuilt/*.o "$dest/prebuilt/"
fi
cp -r bench/torch "$dest/bench/"
cp -r test/fixtures/engine "$dest/test/fixtures/"
napi=$(node -p "require('node-addon-api').include_dir")
cp "$napi"/napi.h "$napi"/napi-inl.h "$napi"/napi-inl.deprecated.h "$dest/napi/"
npx esbuild bench/cuda-parity.ts --bundle --platform=node --format=esm --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$dest/parity.mjs"
# test/cuda (node:test) bundled the same way: run-all.sh runs it with VQALAB_ROOT pointing at the tree
npx esbuild test/cuda/cuda.test.ts --bundle --platform=node --format=esm --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$dest/cuda-test.mjs"
bash "$(dirname "$0")/pack-node.sh" "$dest"
du -sh "$dest"
