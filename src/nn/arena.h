/* nn/arena.h — scratch memory for one forward pass: freed buffers are kept and handed out again.
 *
 *   sdw_arena *ar = sdw_arena_create();
 *   float *h = sdw_arena_alloc(ar, n * sizeof(float));   // 64-byte aligned
 *   ...
 *   sdw_arena_free(ar, h);                               // back to the arena, not the OS
 *   sdw_arena_destroy(ar);                               // everything goes back to the OS
 *
 * Why: a UNet step or a VAE decode allocates its activations (tens to hundreds of MB each) over
 * and over; from the OS each fresh buffer costs a page fault per 4 KiB and zeroing. Big buffers
 * (>= 1 MiB) are mapped on 2 MiB boundaries with transparent huge pages requested and reused by
 * best fit; small ones go to malloc. When no free buffer fits a request, the free ones are
 * returned to the OS first, so the arena never holds more than the most memory its caller had
 * live at one time (the peak does not grow).
 * Thread safety: none — one arena per forward call, used by the thread running it (the ops'
 * own OpenMP threads never allocate from it).
 */
#ifndef SDW_NN_ARENA_H
#define SDW_NN_ARENA_H

#include "core/common.h"

typedef struct sdw_arena sdw_arena;

sdw_arena *sdw_arena_create(void);
/* NULL ok. Unmaps the big buffers, live ones too; small (malloc'd) buffers are the caller's to
 * sdw_arena_free before. */
void sdw_arena_destroy(sdw_arena *a);
/* A buffer of at least `bytes`, 64-byte aligned, contents undefined. Aborts on out-of-memory
 * (sizes come from the model's shapes, not from untrusted input). */
void *sdw_arena_alloc(sdw_arena *a, size_t bytes);
void sdw_arena_free(sdw_arena *a, void *p); /* NULL ok; p from this arena */
/* Bytes the arena had mapped at most (its big buffers), for memory reports. */
size_t sdw_arena_peak(const sdw_arena *a);

#endif
