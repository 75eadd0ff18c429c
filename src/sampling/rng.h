/* sampling/rng.h — seeded normal noise that reproduces the reference tools' draws bit for bit.
 *
 *   sdw_rng rng;
 *   sdw_rng_init(&rng, SDW_RNG_TORCH, 42);
 *   sdw_rng_randn(&rng, latents, 1 * 4 * 64 * 64);   // == torch.randn((1,4,64,64), generator=g)
 *   sdw_rng_randn(&rng, noise, n);                   // the next draw from the same generator
 *
 * Two conventions users rely on:
 *   SDW_RNG_TORCH  torch.randn on a CPU generator (torch.Generator().manual_seed(seed)): what
 *                  diffusers with a CPU generator and ComfyUI draw. mt19937 seeded with the low
 *                  32 bits of the seed (as torch's CPUGeneratorImpl does), then torch's
 *                  normal_distribution: Box-Muller on blocks of 16 for n >= 16, the scalar
 *                  double path with a cached second value for n < 16.
 *   SDW_RNG_PHILOX torch.randn on a CUDA generator as AUTOMATIC1111 reproduces it on the CPU
 *                  (Philox4x32-10, counter = [offset, 0, index, 0], key = 64-bit seed, one
 *                  Box-Muller output per element, offset + 1 per draw), Box-Muller in float32.
 * One sdw_rng_randn call corresponds to ONE torch.randn call of n elements (C order); splitting
 * a draw into two calls gives different numbers, exactly as in torch.
 *
 * The state lives in caller storage and is passed explicitly; there is no global generator.
 * Thread safety: an sdw_rng must not be used by two threads at once; distinct ones are
 * independent.
 */
#ifndef SDW_SAMPLING_RNG_H
#define SDW_SAMPLING_RNG_H

#include "sdw/rng.h"
#include "sdw/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDW_MT19937_N 624

/* Plain data so callers can embed it; fields are private to rng.c. */
typedef struct sdw_rng {
    sdw_rng_kind kind;
    uint64_t seed;
    /* torch: mt19937 state and at::normal_distribution<double>'s cached second sample */
    uint32_t mt[SDW_MT19937_N];
    int mt_index;
    bool has_cached_normal;
    double cached_normal;
    /* philox: number of randn calls so far (the counter's high word) */
    uint64_t philox_offset;
} sdw_rng;

/* (Re)seeds r; any seed is valid (torch keeps only the low 32 bits, philox all 64). */
void sdw_rng_init(sdw_rng *r, sdw_rng_kind kind, uint64_t seed);

/* Fills out[0..n) with N(0,1) float32 values: one torch.randn call of n elements.
 * n == 0 draws nothing and leaves the state unchanged. */
void sdw_rng_randn(sdw_rng *r, float *out, size_t n);

/* A fresh random seed from /dev/urandom, for "seed -1". The value is below 2^32 so it means the
 * same to every tool (torch's CPU generator ignores higher bits) and survives JSON/JavaScript.
 * Returns SDW_E_IO (and leaves *out untouched) if /dev/urandom cannot be read. */
sdw_status sdw_rng_random_seed(uint64_t *out, sdw_error *err);

#endif
