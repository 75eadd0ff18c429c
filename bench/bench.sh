#!/usr/bin/env bash
# Benchmark: full-size Stable Diffusion with random weights at the real shapes (diffusers layout,
# f16 files), txt2img with classifier-free guidance (UNet batch 2). Prints medians over RUNS runs
# of s/step, VAE decode, text encode, total and peak RSS.
#
#   bench/bench.sh            # SD 1.5 at 512x512 and 256x256: RUNS=3 STEPS=4 THREADS=all
#   bench/bench.sh sdxl       # SDXL base at 1024x1024 (two text encoders, text_time): RUNS=1 STEPS=2
#   RUNS=5 STEPS=10 bench/bench.sh
#
# The weights are created once and cached in $SDW_BENCH_DIR (default ~/.cache/sdworker): SD 1.5
# 2.1 GB, SDXL 6.9 GB on disk. SDXL runs in f32 on the CPU: ~14 GB of weights in memory.
# Never run by ctest: timings are reported, not asserted.
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
FIXTURES=${SDW_FIXTURES:-../shared/fixtures}
CACHE=${SDW_BENCH_DIR:-$HOME/.cache/sdworker}
MODEL=$CACHE/$ARCH-random-f16

[ -x build/sdw ] && [ -x build/sdw_make_weights ] || ./scripts/bootstrap.sh
if [ ! -f "$MODEL/unet/diffusion_pytorch_model.safetensors" ]; then
    mkdir -p "$CACHE"
    build/sdw_make_weights --arch "$ARCH" --out "$MODEL" --tokenizer "$FIXTURES/clip-tokenizer" \
        --dtype f16
fi

median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

# One configuration: prints "size s/step vae text total rss" medians.
run_size() {
    local size=$1 out
    local f_step f_vae f_text f_total f_rss
    f_step=$(mktemp); f_vae=$(mktemp); f_text=$(mktemp); f_total=$(mktemp); f_rss=$(mktemp)
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(date +%s.%N)
        out=$(build/sdw generate -m "$MODEL" -p "a photo of an astronaut riding a horse" \
              -W "$size" -H "$size" --steps "$STEPS" -s 1 --sampler euler -t "$THREADS" \
              -o /tmp/sdw-bench.png -v 2>&1 | grep 'timing:')
        t1=$(date +%s.%N)
        echo "$out" | sed -E 's/.*\(([0-9]+) calls, ([0-9.]+) s\/step.*/\2/' >>"$f_step"
        echo "$out" | sed -E 's/.*decode ([0-9.]+) s.*/\1/' >>"$f_vae"
        echo "$out" | sed -E 's/.*encode ([0-9.]+) s.*/\1/' >>"$f_text"
        echo "$out" | sed -E 's/.*peak RSS ([0-9]+) MB.*/\1/' >>"$f_rss"
        awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$f_total"
    done
    printf "%-8s %10s %12s %12s %10s %10s\n" "${size}²" "$(median <"$f_step")" \
        "$(median <"$f_vae")" "$(median <"$f_text")" "$(median <"$f_total")" "$(median <"$f_rss")"
    rm -f "$f_step" "$f_vae" "$f_text" "$f_total" "$f_rss"
}

echo "sdworker bench: $NAME random f16 weights, CFG (UNet batch 2), $STEPS steps, $THREADS threads, median of $RUNS"
grep -m1 'model name' /proc/cpuinfo || true
printf "%-8s %10s %12s %12s %10s %10s\n" size "s/step" "vae decode s" "text enc s" "total s" "peak MB"
for size in $SIZES; do run_size "$size"; done
