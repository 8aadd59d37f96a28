#!/usr/bin/env bash
# The Debian packages the C++ runtime builds with: nlohmann-json, GoogleTest, OpenCV (the example and the
# pixel tests), GStreamer's app and video libraries (the appsink example), and ccache (make cpp-test's five builds then compile the header-independent sources once).
# Installs what is missing when run as root (CI); otherwise prints the command and fails.
set -euo pipefail
packages=(cmake nlohmann-json3-dev libgtest-dev libopencv-dev ccache libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "cpp/install-deps.sh: missing ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "cpp/install-deps.sh: no nvcc: the C++ runtime needs the CUDA toolkit (JetPack has it)" >&2
  exit 1
fi
