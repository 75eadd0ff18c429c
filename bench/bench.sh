#!/usr/bin/env bash
# Benchmark: full-size Stable Diffusion with random weights at the real shapes (diffusers layout,
# f16 files), txt2img with classifier-free guidance (UNet batch 2). For each precision (f32 = the
# exact reference path, and the fast path) prints medians over RUNS runs of s/step, VAE decode,
# text encode, total wall time and peak RSS, then the fast/f32 ratios of the same run. Runs of the
# two precisions alternate, so a machine shared with other work slows both alike and the ratios
# stay meaningful.
#
#   bench/bench.sh                    # SD 1.5 at 512x512 and 256x256: RUNS=3 STEPS=4 THREADS=all
#   bench/bench.sh sdxl               # SDXL base at 1024x1024 (two text encoders): RUNS=1 STEPS=2
#   RUNS=5 STEPS=10 bench/bench.sh
#   FAST=auto bench/bench.sh          # the fast path as --precision auto picks it on this CPU
#   PRECS=bf16 bench/bench.sh sdxl    # only some precisions
#   PROFILE=1 bench/bench.sh          # also print the per-op profile of one step at the first size
#
# The weights are created once and cached in $SDW_BENCH_DIR (default ~/.cache/sdworker): SD 1.5
# 2.1 GB, SDXL 6.9 GB on disk. SDXL in f32 holds ~14 GB of weights in memory.
# Never run by ctest: timings are reported, not asserted. "cpu s" is the process's user + system
# time (all threads, load included): on a machine shared with other work, wall times stretch
# while cpu s stays put, so a wall/cpu ratio far above 1/THREADS means the run was starved.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:-sd15}
case "$ARCH" in
sd15) SIZES=${SIZES:-"512 256"}; DEF_RUNS=3; DEF_STEPS=4; NAME="SD 1.5" ;;
sdxl) SIZES=${SIZES:-"1024"}; DEF_RUNS=1; DEF_STEPS=2; NAME="SDXL base" ;;
*) echo "usage: bench/bench.sh [sd15|sdxl]" >&2; exit 2 ;;
esac
RUNS=${RUNS:-$DEF_RUNS}
STEPS=${STEPS:-$DEF_STEPS}
THREADS=${THREADS:-$(nproc)}
FAST=${FAST:-bf16}
PRECS=${PRECS:-"f32 $FAST"}
FIXTURES=${SDW_FIXTURES:-../shared/fixtures}
CACHE=${SDW_BENCH_DIR:-$HOME/.cache/sdworker}
MODEL=$CACHE/$ARCH-random-f16
BIN=${SDW_BIN:-build/sdw}

[ -x "$BIN" ] && [ -x build/sdw_make_weights ] || ./scripts/bootstrap.sh
if [ ! -f "$MODEL/unet/diffusion_pytorch_model.safetensors" ]; then
    mkdir -p "$CACHE"
    build/sdw_make_weights --arch "$ARCH" --out "$MODEL" --tokenizer "$FIXTURES/clip-tokenizer" \
        --dtype f16
fi

median() { sort -g | awk '{a[NR]=$1} END {if (!NR) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# One generation: appends s/step, decode, encode, total and RSS to $TMP/<prec>-<size>.<field>.
run_one() {
    local prec=$1 size=$2 out t0 t1 f=$TMP/$1-$2
    t0=$(date +%s.%N)
    out=$(/usr/bin/time -f "cputime %U %S" "$BIN" generate -m "$MODEL" \
          -p "a photo of an astronaut riding a horse" -W "$size" -H "$size" --steps "$STEPS" -s 1 \
          --sampler euler -t "$THREADS" --precision "$prec" -o "$TMP/out.png" -v 2>&1)
    t1=$(date +%s.%N)
    echo "$out" | awk '/^cputime/ {print $2 + $3}' >>"$f.cpu"
    local timing
    timing=$(echo "$out" | grep 'timing:')
    echo "$out" | sed -nE 's/.*compute precision: ([a-z0-9]+).*/\1/p' | head -1 >"$f.resolved"
    echo "$timing" | sed -E 's/.*\(([0-9]+) calls, ([0-9.]+) s\/step.*/\2/' >>"$f.step"
    echo "$timing" | sed -E 's/.*decode ([0-9.]+) s.*/\1/' >>"$f.vae"
    echo "$timing" | sed -E 's/.*encode ([0-9.]+) s.*/\1/' >>"$f.text"
    echo "$timing" | sed -E 's/.*peak RSS ([0-9]+) MiB.*/\1/' >>"$f.rss"
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$f.total"
}

med() { median <"$TMP/$1-$2.$3"; }

echo "sdworker bench: $NAME random f16 weights, CFG (UNet batch 2), $STEPS steps, $THREADS threads, median of $RUNS"
grep -m1 'model name' /proc/cpuinfo || true
echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|avx512_fp16|amx_bf16|amx_tile|amx_int8|avx2|fma)$' | tr '\n' ' ')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$RUNS"); do
    for size in $SIZES; do
        for prec in $PRECS; do run_one "$prec" "$size"; done
    done
done

printf "\n%-14s %-8s %10s %12s %12s %10s %10s %10s\n" precision size "s/step" "vae decode s" "text enc s" \
    "total s" "cpu s" "peak MiB"
for prec in $PRECS; do
    for size in $SIZES; do
        label="$prec"
        resolved=$(cat "$TMP/$prec-$size.resolved" 2>/dev/null || true)
        [ -n "$resolved" ] && [ "$resolved" != "$prec" ] && label="$prec($resolved)"
        printf "%-14s %-8s %10s %12s %12s %10s %10s %10s\n" "$label" "${size}²" \
            "$(med "$prec" "$size" step)" "$(med "$prec" "$size" vae)" "$(med "$prec" "$size" text)" \
            "$(med "$prec" "$size" total)" "$(med "$prec" "$size" cpu)" "$(med "$prec" "$size" rss)"
    done
done
echo
[ "$PRECS" = "f32 $FAST" ] && for size in $SIZES; do
    awk -v f="$FAST" -v s="$size" -v a="$(med "$FAST" "$size" step)" -v b="$(med f32 "$size" step)" \
        -v c="$(med "$FAST" "$size" vae)" -v d="$(med f32 "$size" vae)" \
        'BEGIN {printf "fast(%s)/f32 at %s²: s/step %.2f, vae decode %.2f (below 1 = fast path faster)\n", f, s, a / b, c / d}'
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${PROFILE:-0}" = 1 ]; then
    echo
    echo "per-op profile, ${SIZES%% *}x${SIZES%% *}, 1 step, precision $FAST:"
    "$BIN" generate -m "$MODEL" -p "a photo of an astronaut riding a horse" -W "${SIZES%% *}" -H "${SIZES%% *}" \
        --steps 1 -s 1 --sampler euler -t "$THREADS" --precision "$FAST" -o "$TMP/out.png" \
        --profile 2>&1 | sed -n '/per-op profile/,$p'
fi
