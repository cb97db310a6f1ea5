#!/usr/bin/env bash
# Packs what scripts/gpu/test-families.sh needs into DEST (default /work/main/.dev-families, which a GPU
# call carries): the native sources (native/src, native/dev), scripts/gpu, and the nvcc objects of
# scripts/gpu/prebuild.sh when they are newer than every CUDA source (then only gemm.cu and the CPU
# engine compile there). No Node: the checks are native/dev/test_ops and test_model.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest=${1:-/work/main/.dev-families}
cd "$root"
rm -rf "$dest"
mkdir -p "$dest/native" "$dest/scripts"
cp -r native/src native/dev "$dest/native/"
cp -r scripts/gpu "$dest/scripts/"
pre=${PREBUILT:-native/build/prebuilt}
if [ -d "$pre" ] && [ -f "$pre/.stamp" ] &&
   [ -z "$(find native/src native/dev -newer "$pre/.stamp" \( -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) | head -1)" ]; then
  mkdir -p "$dest/prebuilt" && cp "$pre"/*.o "$dest/prebuilt/"
  echo "prebuilt objects: $(ls "$dest/prebuilt" | wc -l)"
else
  echo "no current prebuilt objects (run scripts/gpu/prebuild.sh after the last CUDA edit): everything compiles there"
fi
du -sh "$dest"
