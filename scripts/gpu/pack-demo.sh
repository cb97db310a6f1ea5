#!/usr/bin/env bash
# Packs `vqalab demo` for the GPU machine (no Node, no npm there) into DEST (default
# /work/main/.xfer/cudademo, which a GPU call carries as .xfer/cudademo): the native sources and
# cuda.mk (the addon is built there with the CUDA backend), nvcc objects from scripts/gpu/prebuild.sh
# when they are current, node-addon-api's headers, Node (.gpu/, as pack.sh packs it), the demo path
# bundled with esbuild (scripts/gpu/demo-entry.ts → demo.bundle.mjs, started by demo.mjs), and the packages esbuild must leave
# external because they load native or wasm parts: sharp (+ @img/sharp-linux-x64, libvips, and sharp's
# own dependencies) and parquet-wasm (its node build only). scripts/gpu/run-demo.sh runs it there.
# DEST must sit two folders below a checkout (as .xfer/cudademo does): the bundle finds the embedded
# model at ../../assets/tiny-qwen2-vl, as bin/vqalab.js does.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest=${1:-/work/main/.xfer/cudademo}
cd "$root"
rm -rf "$dest"
mkdir -p "$dest/napi" "$dest/native" "$dest/node_modules/@img" "$dest/node_modules/parquet-wasm"
cp -r native/src native/dev "$dest/native/"
mkdir -p "$dest/scripts" && cp -r scripts/gpu "$dest/scripts/"
pre=${PREBUILT:-native/build/prebuilt}
if [ -d "$pre" ] && [ -f "$pre/.stamp" ] && [ -z "$(find native/src native/dev -newer "$pre/.stamp" \( -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) | head -1)" ]; then
  mkdir -p "$dest/prebuilt" && cp "$pre"/cu_*.o "$dest/prebuilt/"
fi
napi=$(node -p "require('node-addon-api').include_dir")
cp "$napi"/napi.h "$napi"/napi-inl.h "$napi"/napi-inl.deprecated.h "$dest/napi/"
node_modules/.bin/esbuild scripts/gpu/demo-entry.ts --bundle --platform=node --format=esm --log-level=warning \
  --external:sharp --external:parquet-wasm \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$dest/demo.bundle.mjs"
# src/model/default.ts regenerates the embedded model when its module is the main script, which in a
# bundle is the bundle itself: start it from a separate file so that check stays false.
echo "await import('./demo.bundle.mjs');" > "$dest/demo.mjs"
cp -r node_modules/sharp node_modules/detect-libc node_modules/semver "$dest/node_modules/"
cp -r node_modules/@img/sharp-linux-x64 node_modules/@img/sharp-libvips-linux-x64 node_modules/@img/colour "$dest/node_modules/@img/"
rm -rf "$dest/node_modules/sharp/src" "$dest/node_modules/@img/sharp-libvips-linux-x64/include"
cp -r node_modules/parquet-wasm/package.json node_modules/parquet-wasm/node "$dest/node_modules/parquet-wasm/"
# the GPU call's carry is small (the checkout plus this folder < 64 MiB): the packages travel as
# one xz tarball (libvips alone is 18 MB) that run-demo.sh unpacks
tar -C "$dest" -cf - node_modules | xz -T0 -6 > "$dest/node_modules.tar.xz"
rm -rf "$dest/node_modules"
bash "$(dirname "$0")/pack-node.sh" "$dest"
du -sh "$dest"
