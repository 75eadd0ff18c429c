#!/usr/bin/env bash
# Benchmark: full-size SD 1.5 (random weights at the real shapes, diffusers layout, f16 file),
# txt2img with classifier-free guidance (UNet batch 2). Prints medians over RUNS runs of
# s/step at 512x512 and 256x256, VAE decode, text encode, total and peak RSS.
#
#   bench/bench.sh            # RUNS=3 STEPS=4 THREADS=all
#   RUNS=5 STEPS=10 bench/bench.sh
#
# The weights are created once and cached in $SDW_BENCH_DIR (default ~/.cache/sdworker).
# Never run by ctest: timings are reported, not asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
STEPS=${STEPS:-4}
THREADS=${THREADS:-$(nproc)}
FIXTURES=${SDW_FIXTURES:-../shared/fixtures}
CACHE=${SDW_BENCH_DIR:-$HOME/.cache/sdworker}
MODEL=$CACHE/sd15-random-f16

[ -x build/sdw ] || ./scripts/bootstrap.sh
if [ ! -f "$MODEL/unet/diffusion_pytorch_model.safetensors" ]; then
    mkdir -p "$CACHE"
    build/sdw_make_weights --out "$MODEL" --tokenizer "$FIXTURES/clip-tokenizer" --dtype f16
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

echo "sdworker bench: SD 1.5 random f16 weights, CFG (UNet batch 2), $STEPS steps, $THREADS threads, median of $RUNS"
grep -m1 'model name' /proc/cpuinfo || true
printf "%-8s %10s %12s %12s %10s %10s\n" size "s/step" "vae decode s" "text enc s" "total s" "peak MB"
run_size 512
run_size 256
