#!/usr/bin/env bash
# Installs the build dependencies (Debian 12 packages) when missing, then builds into build/.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential cmake pkg-config libdnnl-dev libpng-dev libjpeg62-turbo-dev libwebp-dev libjansson-dev clang libclang-rt-dev libomp-dev libutf8proc-dev
      libmicrohttpd-dev libsentencepiece-dev redis-server libhiredis-dev"
# The real-client tests (tests/e2e, run by ctest) drive Debian's chromium; node and npm run them.
PKGS="$PKGS chromium"
command -v npm >/dev/null || PKGS="$PKGS nodejs npm"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
