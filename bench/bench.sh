#!/usr/bin/env bash
# Benchmark: full-size Stable Diffusion or FLUX.1 schnell with random weights at the real shapes
# (diffusers layout), txt2img. Stable Diffusion (f16 files) runs classifier-free guidance (UNet
# batch 2); FLUX runs no CFG (one transformer call of batch 1 per step; schnell takes no guidance
# at all). For each precision (f32 = the exact reference path, and the fast path) prints medians
# over RUNS runs of s/step (all steps, and steady: the steps after the first, which also pays the
# process's one-time costs), VAE decode, text encode, total wall time and peak RSS (FLUX also the
# model load time: the "loaded ... in X s" line of `sdw generate -v`), then the fast/f32 ratios
# of the same run. Runs of the two precisions alternate, so a machine shared with other work
# slows both alike and the ratios stay meaningful.
#
#   bench/bench.sh                    # SD 1.5 at 512x512 and 256x256: RUNS=3 STEPS=4 THREADS=all
#   bench/bench.sh sdxl               # SDXL base at 1024x1024 (two text encoders): RUNS=1 STEPS=2
#   bench/bench.sh flux               # FLUX.1 schnell at 512x512 and 1024x1024: RUNS=1 STEPS=1
#   PRECS=f32 SIZES=512 bench/bench.sh flux   # one precision, one size
#   RUNS=5 STEPS=10 bench/bench.sh
#   FAST=auto bench/bench.sh          # the fast path as --precision auto picks it on this CPU
#   PRECS=bf16 bench/bench.sh sdxl    # only some precisions
#   PROFILE=1 bench/bench.sh          # also print the per-op profile of one step at the first size
#   PRODUCTS=1 bench/bench.sh         # also time our products at SD 1.5's shapes (sdw_peak)
#   TTI=0 bench/bench.sh              # skip the cold time-to-image runs (20 steps each)
#   SDCPP=/path/to/sd-cli bench/bench.sh   # stable-diffusion.cpp on the same model in the same
#                                     # run (SD only; built outside the project): SDCPP_RUNS runs
#                                     # (default 1) of STEPS steps per size, then the ratios
#
# Every run also prints the machine's floor and how close a step comes to it: the measured peak
# of each multiply path the CPU has (sdw_peak: register-resident FMA / vdpbf16ps / AMX loops on
# all threads), the FLOP of one UNet / transformer step (from the run's own per-op profile,
# which counts every product's multiply-adds) and the fraction of the precision's peak a step
# sustains (FLOP/step / steady s/step / peak). SD 1.5 also gets a cold time-to-image: `sdw generate`
# from a fresh process (load, encode, 20 steps, decode) at the first size, once per precision
# (TTI_STEPS changes the step count; the page cache stays warm: "cold" is the process, not the
# disk).
#
# The weights are created once and cached in $SDW_BENCH_DIR (default ~/.cache/sdworker): SD 1.5
# 2.1 GB, SDXL 6.9 GB on disk. SDXL in f32 holds ~14 GB of weights in memory.
# FLUX.1 schnell: fp8 (E4M3) transformer (11.9 B parameters) and T5 v1.1 XXL (4.8 B), f16
# CLIP-L and VAE, 17 GB on disk (sdw_make_weights --arch flux-schnell --dtype f16 --fp8 e4m3;
# writing takes minutes). The fp8 weights stay 8-bit in memory in either precision. One FLUX
# step is ~21.5 TFLOP at 512x512 (the run's profile) and ~74 at 1024x1024 (1536 resp. 4608
# tokens; in the 19 double-stream blocks image and text tokens each go through their own half
# of the weights, in the 38 single-stream ones through all of theirs; plus attention): a minute
# or more per step on a few cores, hence one run of one step by
# default (schnell's own default is 4 steps; total s = load + encode + STEPS x s/step +
# decode). The T5 tokenizer is the fixtures' tiny-flux one (1000 pieces, not T5's 32000): the
# prompt is padded to the 512-token window either way, so the encoder's work is the same.
# Never run by ctest: timings are reported, not asserted. "cpu s" is the process's user + system
# time (all threads, load included): on a machine shared with other work, wall times stretch
# while cpu s stays put, so a wall/cpu ratio far above 1/THREADS means the run was starved.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:-sd15}
case "$ARCH" in
sd15) SIZES=${SIZES:-"512 256"}; DEF_RUNS=3; DEF_STEPS=4; NAME="SD 1.5" ;;
sdxl) SIZES=${SIZES:-"1024"}; DEF_RUNS=1; DEF_STEPS=2; NAME="SDXL base" ;;
flux) SIZES=${SIZES:-"512 1024"}; DEF_RUNS=1; DEF_STEPS=1; NAME="FLUX.1 schnell" ;;
*) echo "usage: bench/bench.sh [sd15|sdxl|flux]" >&2; exit 2 ;;
esac
RUNS=${RUNS:-$DEF_RUNS}
STEPS=${STEPS:-$DEF_STEPS}
THREADS=${THREADS:-$(nproc)}
FAST=${FAST:-bf16}
PRECS=${PRECS:-"f32 $FAST"}
FIXTURES=${SDW_FIXTURES:-../shared/fixtures}
CACHE=${SDW_BENCH_DIR:-$HOME/.cache/sdworker}
BIN=${SDW_BIN:-build/sdw}
MAKE_WEIGHTS=${SDW_MAKE_WEIGHTS:-build/sdw_make_weights}
PEAK=${SDW_PEAK:-build/sdw_peak}
TTI_STEPS=${TTI_STEPS:-20}
[ "$ARCH" = sd15 ] && TTI=${TTI:-1} || TTI=${TTI:-0}
if [ "$ARCH" = flux ]; then
    MODEL=$CACHE/flux-schnell-random-fp8
    WEIGHTS="random weights (fp8 transformer + T5, f16 CLIP-L + VAE), no CFG (transformer batch 1)"
    MAKE_ARGS=(--arch flux-schnell --dtype f16 --fp8 e4m3
               --t5-tokenizer "$FIXTURES/models/tiny-flux/tokenizer_2")
    DONE=transformer/diffusion_pytorch_model.safetensors # the tool writes it last
else
    MODEL=$CACHE/$ARCH-random-f16
    WEIGHTS="random f16 weights, CFG (UNet batch 2)"
    MAKE_ARGS=(--arch "$ARCH" --dtype f16)
    DONE=unet/diffusion_pytorch_model.safetensors
fi

[ -x "$BIN" ] && [ -x "$MAKE_WEIGHTS" ] && [ -x "$PEAK" ] || ./scripts/bootstrap.sh
if [ ! -f "$MODEL/$DONE" ]; then
    mkdir -p "$CACHE"
    "$MAKE_WEIGHTS" "${MAKE_ARGS[@]}" --out "$MODEL" --tokenizer "$FIXTURES/clip-tokenizer"
fi

median() { sort -g | awk '{a[NR]=$1} END {if (!NR) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# One generation: appends s/step, decode, encode, load, total, RSS and the step's GFLOP (its
# per-op profile: seconds x GFLOP/s of each product row of "one UNet step") to
# $TMP/<prec>-<size>.<field>.
run_one() {
    local prec=$1 size=$2 out t0 t1 f=$TMP/$1-$2
    t0=$(date +%s.%N)
    out=$(/usr/bin/time -f "cputime %U %S" "$BIN" generate -m "$MODEL" \
          -p "a photo of an astronaut riding a horse" -W "$size" -H "$size" --steps "$STEPS" -s 1 \
          --sampler euler -t "$THREADS" --precision "$prec" -o "$TMP/out.png" -v --profile 2>&1)
    t1=$(date +%s.%N)
    echo "$out" | awk '/^one UNet step/ {on = 1; next} on && !/^  / {on = 0}
        on && $NF ~ /^[0-9.]+$/ && $(NF-2) ~ /^[0-9.]+$/ {g += $(NF-2) * $NF}
        END {printf "%.1f\n", g}' >>"$f.gflop"
    echo "$out" | awk '/^cputime/ {print $2 + $3}' >>"$f.cpu"
    local timing
    timing=$(echo "$out" | grep 'timing:')
    echo "$out" | sed -nE 's/.*compute precision: ([a-z0-9]+).*/\1/p' | head -1 >"$f.resolved"
    echo "$timing" | sed -E 's/.*\(([0-9]+) calls, ([0-9.]+) s\/step.*/\2/' >>"$f.step"
    # steady s/step: the calls after the first (which also pays the process's one-time costs)
    echo "$timing" |
        sed -E 's/.*denoise ([0-9.]+) s \(([0-9]+) calls, .*first call ([0-9.]+) s.*/\1 \2 \3/' |
        awk '$2 > 1 {printf "%.3f\n", ($1 - $3) / ($2 - 1)}' >>"$f.steady"
    echo "$timing" | sed -E 's/.*decode ([0-9.]+) s.*/\1/' >>"$f.vae"
    echo "$timing" | sed -E 's/.*encode ([0-9.]+) s.*/\1/' >>"$f.text"
    echo "$timing" | sed -E 's/.*peak RSS ([0-9]+) MiB.*/\1/' >>"$f.rss"
    echo "$out" | sed -nE 's/.*loaded .* in ([0-9.]+) s$/\1/p' | head -1 >>"$f.load"
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >>"$f.total"
}

med() { median <"$TMP/$1-$2.$3"; }

# stable-diffusion.cpp on the same folder (it reads diffusers folders), same prompt, size, steps,
# sampler, CFG and threads; --eager-load keeps its loading out of its sampling and decode times.
# Its per-stage times come from its log: sampling / STEPS, decode_first_stage,
# get_learned_condition, the sum of its "loading tensors completed" lines.
run_sdcpp() {
    local size=$1 f=$TMP/sdcpp-$1 log=$TMP/sdcpp.log
    /usr/bin/time -f "maxrss %M" "$SDCPP" -m "$MODEL" -p "a photo of an astronaut riding a horse" \
        --sampling-method euler --cfg-scale 7 -s 1 -t "$THREADS" -W "$size" -H "$size" \
        --steps "$STEPS" --eager-load -o "$TMP/sdcpp.png" >"$log" 2>&1 || {
        echo "stable-diffusion.cpp failed:" >&2
        tail -5 "$log" >&2
        return 1
    }
    tr '\r' '\n' <"$log" >"$log.lines"
    # taking STAGE last|sum: the seconds after "taking" on its "STAGE completed" lines
    taking() {
        awk -v stage="$1 completed, taking" -v how="$2" 'index($0, stage) {
            for (i = 1; i <= NF; i++) if ($i == "taking") {v = $(i + 1) + 0; s += v}}
            END {print how == "sum" ? s + 0 : v + 0}' "$log.lines"
    }
    awk -v t="$(taking sampling last)" -v n="$STEPS" 'BEGIN {print t / n}' >>"$f.step"
    taking decode_first_stage last >>"$f.vae"
    taking get_learned_condition last >>"$f.text"
    taking "loading tensors" sum >>"$f.load"
    awk '/^maxrss/ {printf "%.0f\n", $2 / 1024}' "$log.lines" >>"$f.rss"
}

# The cold time-to-image: a fresh process from start to the written image, TTI_STEPS steps.
run_tti() {
    local prec=$1 size=$2 t0 t1
    t0=$(date +%s.%N)
    "$BIN" generate -m "$MODEL" -p "a photo of an astronaut riding a horse" -W "$size" -H "$size" \
        --steps "$TTI_STEPS" -s 1 --sampler euler -t "$THREADS" --precision "$prec" \
        -o "$TMP/tti.png" -q
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", b - a}' >"$TMP/$prec-$size.tti"
}

echo "sdworker bench: $NAME $WEIGHTS, $STEPS steps, $THREADS threads, median of $RUNS"
grep -m1 'model name' /proc/cpuinfo || true
echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|avx512_fp16|amx_bf16|amx_tile|amx_int8|avx2|fma)$' | tr '\n' ' ')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "measured peaks (GFLOP/s, $THREADS threads; a flop is a multiply or an add):"
"$PEAK" --threads "$THREADS" --peaks-only | tee "$TMP/peaks" | grep '^peak' | sed 's/^/  /'
PEAK_F32=$(awk '$1 == "peak" && $2 == "f32" {print $3}' "$TMP/peaks")
PEAK_BF16=$(awk '$1 == "peak" && $2 == "bf16" {print $3}' "$TMP/peaks")
if [ "${PRODUCTS:-0}" = 1 ]; then
    echo
    echo "our products at SD 1.5's shapes, 512x512 with CFG (sdw_peak):"
    "$PEAK" --threads "$THREADS" | sed -n '/^product/,$p'
fi
for _ in $(seq "$RUNS"); do
    for size in $SIZES; do
        for prec in $PRECS; do run_one "$prec" "$size"; done
    done
done

if [ "$TTI" = 1 ]; then
    for prec in $PRECS; do run_tti "$prec" "${SIZES%% *}"; done
fi
if [ -n "${SDCPP:-}" ] && [ "$ARCH" != flux ]; then
    for _ in $(seq "${SDCPP_RUNS:-1}"); do
        for size in $SIZES; do run_sdcpp "$size"; done
    done
fi

row() {
    printf "%-14s %-6s %8s %8s %9s %9s %7s %8s %9s %8s %9s %10s %7s\n" "$@"
}
echo
row precision size "s/step" "steady" "vae dec s" "text enc" "load s" "total s" "cold${TTI_STEPS} s" \
    "cpu s" "peak MiB" "GFLOP/step" "% peak"
for prec in $PRECS; do
    for size in $SIZES; do
        label="$prec"
        resolved=$(cat "$TMP/$prec-$size.resolved" 2>/dev/null || true)
        [ -n "$resolved" ] && [ "$resolved" != "$prec" ] && label="$prec($resolved)"
        step=$(med "$prec" "$size" step)
        steady=$(med "$prec" "$size" steady)
        gflop=$(med "$prec" "$size" gflop)
        pk=$PEAK_F32
        [ "${resolved:-$prec}" = bf16 ] && pk=$PEAK_BF16
        rate=$steady
        [ "$rate" = - ] && rate=$step # one step: no steady rate
        frac=$(awk -v g="$gflop" -v s="$rate" -v p="$pk" \
               'BEGIN {if (s > 0 && p > 0 && g > 0) printf "%.0f%%", 100 * g / s / p; else print "-"}')
        tti=$(cat "$TMP/$prec-$size.tti" 2>/dev/null || echo -)
        row "$label" "${size}²" "$step" "$steady" "$(med "$prec" "$size" vae)" \
            "$(med "$prec" "$size" text)" \
            "$(med "$prec" "$size" load)" "$(med "$prec" "$size" total)" "$tti" \
            "$(med "$prec" "$size" cpu)" "$(med "$prec" "$size" rss | cut -d. -f1)" \
            "$(echo "$gflop" | cut -d. -f1)" "$frac"
    done
done
echo "s/step: all of a run's steps; steady: its steps after the first, which also pays the \
process's one-time costs"
echo "% peak: FLOP/step / (steady s/step, or s/step for one step) / the measured peak of the \
step's precision ($PEAK_F32 f32, $PEAK_BF16 bf16 GFLOP/s)"
[ "$PRECS" = "f32 $FAST" ] && for size in $SIZES; do
    awk -v f="$FAST" -v s="$size" -v a="$(med "$FAST" "$size" step)" -v b="$(med f32 "$size" step)" \
        -v c="$(med "$FAST" "$size" vae)" -v d="$(med f32 "$size" vae)" \
        'BEGIN {printf "fast(%s)/f32 at %s²: s/step %.2f, vae decode %.2f (below 1 = fast path faster)\n", f, s, a / b, c / d}'
done
[ "$ARCH" = flux ] && for prec in $PRECS; do
    for size in $SIZES; do
        awk -v p="$prec" -v s="$size" -v m="$(med "$prec" "$size" rss)" \
            'BEGIN {printf "peak RSS %s at %s²: %.2f GiB (the FLUX target: under 20 GiB at 1024²)\n", p, s, m / 1024}'
    done
done
if [ -n "${SDCPP:-}" ] && [ "$ARCH" != flux ]; then
    echo
    echo "stable-diffusion.cpp ($SDCPP), same model, prompt, sampler, CFG and threads, median of \
${SDCPP_RUNS:-1}; its cold ${TTI_STEPS}-step time = load + text + ${TTI_STEPS} x s/step + decode:"
    row build size "s/step" "" "vae dec s" "text enc" "load s" "" "cold${TTI_STEPS} s" "" "peak MiB" \
        "" ""
    for size in $SIZES; do
        awk -v a="$(med sdcpp "$size" load)" -v b="$(med sdcpp "$size" text)" -v n="$TTI_STEPS" \
            -v c="$(med sdcpp "$size" step)" -v d="$(med sdcpp "$size" vae)" \
            'BEGIN {printf "%.1f\n", a + b + n * c + d}' >"$TMP/sdcpp-$size.tti"
        row sd.cpp "${size}²" "$(med sdcpp "$size" step)" "" "$(med sdcpp "$size" vae)" \
            "$(med sdcpp "$size" text)" "$(med sdcpp "$size" load)" "" "$(cat "$TMP/sdcpp-$size.tti")" \
            "" "$(med sdcpp "$size" rss | cut -d. -f1)" "" ""
    done
    for prec in $PRECS; do
        for size in $SIZES; do
            tti=$(cat "$TMP/$prec-$size.tti" 2>/dev/null || echo 0)
            awk -v p="$prec" -v s="$size" -v a="$(med sdcpp "$size" step)" -v b="$(med "$prec" "$size" step)" \
                -v c="$(cat "$TMP/sdcpp-$size.tti")" -v d="$tti" -v e="$(med sdcpp "$size" vae)" \
                -v f="$(med "$prec" "$size" vae)" \
                'BEGIN {printf "%s at %s²: %.1fx stable-diffusion.cpp per step, %.1fx its VAE decode", p, s, a / b, e / f;
                        if (d > 0) printf ", %.1fx its cold time-to-image", c / d; print ""}'
        done
    done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${PROFILE:-0}" = 1 ]; then
    echo
    echo "per-op profile, ${SIZES%% *}x${SIZES%% *}, 1 step, precision $FAST:"
    "$BIN" generate -m "$MODEL" -p "a photo of an astronaut riding a horse" -W "${SIZES%% *}" -H "${SIZES%% *}" \
        --steps 1 -s 1 --sampler euler -t "$THREADS" --precision "$FAST" -o "$TMP/out.png" \
        --profile 2>&1 | sed -n '/per-op profile/,$p'
fi
