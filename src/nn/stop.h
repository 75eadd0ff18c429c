/* nn/stop.h — a run's stop flag (sdw_request.stop), polled inside long forward passes so that a
 * cancel takes effect between blocks of a denoiser call and between attention tiles, not only
 * after a whole step (which at large sizes takes minutes).
 *
 *   sdw_stop_ref prev = sdw_stop_attach((sdw_stop_ref){req->stop, SDW_STOP_CANCEL});
 *   ... forward passes: if (sdw_stop_requested()) skip the remaining blocks ...
 *   sdw_stop_attach(prev);
 *
 * The reference names the flag and the level from which a value stops the forwards: a run
 * polls any stop (level SDW_STOP_INTERRUPT) while denoising and only a cancel (level
 * SDW_STOP_CANCEL) while encoding and decoding, whose results an interrupt still needs.
 * Why a thread-local reference, as nn/profile.h's current profile: the forwards and ops are
 * called from the run's one thread, several layers below it, with signatures that carry no run
 * context. OpenMP workers do not share the calling thread's thread-locals: a parallel region
 * reads the reference once on the calling thread (sdw_stop_current) and polls that
 * (sdw_stop_hit). A forward that sees a stop skips its remaining work and leaves its output
 * undefined; its caller (the generation core) checks the flag after the call and drops it.
 * Thread safety: the flag is written by any thread (atomically), read by the run's threads.
 */
#ifndef SDW_NN_STOP_H
#define SDW_NN_STOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sdw_stop_ref {
    const atomic_int *flag; /* NULL = nothing stops the forwards */
    int level;              /* a flag value >= level stops them (>= 1) */
} sdw_stop_ref;

/* Makes r the calling thread's stop reference; returns the one it replaces, to attach again
 * when done. r.flag must stay valid while attached. */
sdw_stop_ref sdw_stop_attach(sdw_stop_ref r);
/* The calling thread's stop reference ({NULL, 0} when none): read it before a parallel region. */
sdw_stop_ref sdw_stop_current(void);

/* Whether r asks the forwards to stop. A relaxed load: a stop is noticed at the next poll,
 * nothing is ordered by it. */
static inline bool sdw_stop_hit(sdw_stop_ref r) {
    return r.flag && atomic_load_explicit(r.flag, memory_order_relaxed) >= r.level;
}
/* Whether the calling thread's run asks its forwards to stop. */
static inline bool sdw_stop_requested(void) { return sdw_stop_hit(sdw_stop_current()); }

#endif
