#!/usr/bin/env bash
# Runs the whole test suite: the default build, then the same tests under ASan + UBSan.
# Fixtures come from ../shared/fixtures (override with SDW_FIXTURES=/path). The real-client tests
# (label e2e: node + headless chromium against sdw serve) run once, in the default build: they
# test the HTTP behaviour, which the sanitizer pass covers through the C server tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest runs two tests at once, each with the machine's threads: OpenMP threads that spin while
# they wait then fight over the cores (a CLI test took 3.4 min spinning, 36 s passive, on a
# loaded 2-core VM). No test times anything that depends on it.
export OMP_WAIT_POLICY=passive
./scripts/bootstrap.sh
ctest --test-dir build --output-on-failure -j2

cmake -S . -B build-asan -DSDW_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j2 -LE e2e

# The parsers' fuzz targets (clang + libFuzzer, ASan + UBSan: image decoders, safetensors,
# the three APIs' requests, multipart, CLIP and T5 tokenizer files, model configs): a short pass
# of each over the generated seed corpora (tests/fuzz/README.md: the long runs).
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSDW_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"
ctest --test-dir build-fuzz --output-on-failure
