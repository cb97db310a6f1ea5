#!/usr/bin/env bash
# Node for the GPU machine into DEST/.gpu, as ../shared/tools/gpu-pack.sh packs it (that script
# assumes a plain checkout; a worktree's .git is a file): the compressed binary (cached per Node
# version), the Node-API headers, with-node.sh. Used by pack.sh and pack-demo.sh.
#   bash scripts/gpu/pack-node.sh DEST
set -euo pipefail
dest=$1
mkdir -p "$dest/.gpu/include"
node_bin=$(readlink -f "$(command -v node)")
cache=${TMPDIR:-/tmp}/gpu-pack-node-$(node -p process.version).xz
[ -s "$cache" ] || xz -T0 -6 -c "$node_bin" > "$cache"
cp "$cache" "$dest/.gpu/node.xz"
cp /usr/include/node/{js_native_api.h,js_native_api_types.h,node_api.h,node_api_types.h} "$dest/.gpu/include/"
sed -n '/^cat > .gpu\/with-node.sh <<.INNER.$/,/^INNER$/p' /work/shared/tools/gpu-pack.sh | sed '1d;$d' > "$dest/.gpu/with-node.sh"
chmod +x "$dest/.gpu/with-node.sh"
