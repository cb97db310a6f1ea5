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
if [ -d native/build/prebuilt ] && [ -z "$(find native/src native/dev -newer native/build/prebuilt/.stamp -name '*.cu' -o -newer native/build/prebuilt/.stamp -name '*.h' | head -1)" ]; then
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
# Node for the GPU machine, as ../shared/tools/gpu-pack.sh packs it (that script assumes a plain
# checkout; a worktree's .git is a file): compressed binary, Node-API headers, with-node.sh
mkdir -p "$dest/.gpu/include"
node_bin=$(readlink -f "$(command -v node)")
cache=${TMPDIR:-/tmp}/gpu-pack-node-$(node -p process.version).xz
[ -s "$cache" ] || xz -T0 -6 -c "$node_bin" > "$cache"
cp "$cache" "$dest/.gpu/node.xz"
cp /usr/include/node/{js_native_api.h,js_native_api_types.h,node_api.h,node_api_types.h} "$dest/.gpu/include/"
sed -n '/^cat > .gpu\/with-node.sh <<.INNER.$/,/^INNER$/p' /work/shared/tools/gpu-pack.sh | sed '1d;$d' > "$dest/.gpu/with-node.sh"
chmod +x "$dest/.gpu/with-node.sh"
du -sh "$dest"
