# Sourced by the GPU call scripts: strict variables, the log folder $OUT (made), J (the machine's
# cores), and el, the seconds since the script began (for progress lines).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
J=$(nproc)
T0=$(date +%s)
el() { echo "+$(( $(date +%s) - T0 )) s"; }
