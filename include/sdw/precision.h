/* sdw/precision.h — the compute precision a model runs its matrix products in.
 *
 *   sdw_load_options o = sdw_load_options_default();
 *   if (sdw_precision_parse("bf16", &o.precision) != SDW_OK) ...;  // --precision bf16
 *   printf("%s\n", sdw_precision_str(o.precision));                // "bf16"
 *
 * F32 is the reference path: every product in float32, bit-for-bit deterministic for a given
 * thread count, matching the reference implementation's float32 goldens. BF16 stores the
 * weights of convolutions and linear layers as bfloat16 (half the memory) and feeds those
 * products bfloat16 operands with float32 accumulation; norms, softmax, residual sums and
 * everything else stay float32. AUTO picks by measurement at load: the model's dominant products
 * are timed in both on this CPU and BF16 runs where it is at least 5% faster, the decision
 * remembered in the user's cache (nn/backend_cpu.h: sdw_nn_precision_resolve_model).
 * Thread safety: pure functions.
 */
#ifndef SDW_PRECISION_H
#define SDW_PRECISION_H

#include "sdw/status.h"

typedef enum sdw_precision {
    SDW_PRECISION_AUTO = 0, /* zero: the default of every options struct */
    SDW_PRECISION_F32,
    SDW_PRECISION_BF16,
} sdw_precision;

/* "auto", "f32", "bf16" (static strings); "?" for values outside the enum. */
const char *sdw_precision_str(sdw_precision p);
/* Parses one of the names above (case-sensitive); SDW_E_INVALID_ARG otherwise, *out untouched. */
sdw_status sdw_precision_parse(const char *s, sdw_precision *out);

#endif
