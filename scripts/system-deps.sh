#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real: Jupyter's protocol test suite and
# notebook runner, the JupyterLab server, and Chromium for the browser tests. Skips apt entirely
# when everything is already there, so repeated `npm test` runs cost nothing.
set -euo pipefail
pkgs=(python3-jupyter-kernel-test python3-nbclient python3-nbconvert python3-jupyter-client
      python3-jupyter-server python3-jupyterlab-server python3-ipykernel chromium fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages: ${missing[*]} (run as root, or install them with apt-get)" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
