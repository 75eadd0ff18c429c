/* sdw/rng.h — which random-number convention a seed means: the one enum every front end parses
 * and the sampler draws with (sampling/rng.h implements both).
 *
 *   sdw_rng_kind k;
 *   if (sdw_rng_kind_parse("philox", &k, &err) != SDW_OK) ...;   // --rng philox
 *   printf("%s\n", sdw_rng_kind_str(k));                         // "philox"
 *
 * Thread safety: pure functions.
 */
#ifndef SDW_RNG_H
#define SDW_RNG_H

#include "sdw/status.h"

typedef enum sdw_rng_kind {
    SDW_RNG_TORCH = 0, /* torch.randn on a CPU generator: diffusers (CPU), ComfyUI (default) */
    SDW_RNG_PHILOX = 1 /* torch.randn on a CUDA generator, as AUTOMATIC1111 reproduces it */
} sdw_rng_kind;

/* "torch" / "philox"; "?" for an out-of-range value. Never NULL. */
const char *sdw_rng_kind_str(sdw_rng_kind kind);

/* Parses "torch" or "philox" (case-sensitive). On failure returns SDW_E_INVALID_ARG with a
 * message naming the value and leaves *out untouched. name may not be NULL. */
sdw_status sdw_rng_kind_parse(const char *name, sdw_rng_kind *out, sdw_error *err);

#endif
