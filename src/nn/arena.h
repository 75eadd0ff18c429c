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
 * best fit; small ones go to malloc. When no free buffer fits a request, free ones are kept
 * while the arena stays within the most memory its caller has had live at one time, counting the
 * new buffer, and returned to the OS (smallest first) past that: the peak does not grow, and a
 * forward whose resolution goes down and up again reuses what it already faulted in.
 *
 * A run of many forwards (a sampler's steps) keeps their memory from one to the next:
 *
 *   const bool was = sdw_arena_keep(true);  // this thread: destroyed arenas are kept
 *   for (...) forward();                     // each creates and destroys its arena
 *   sdw_arena_keep(was);                     // off again: the kept one is unmapped
 *
 * While keeping is on, sdw_arena_destroy parks the arena (every buffer free, still mapped; one
 * parked arena per thread, a second is unmapped) and the next sdw_arena_create on that thread
 * takes it back: 300 MB of activations per SD 1.5 step were page-faulted in again every step
 * (on this project's VMs the qkv product ran at 245 instead of 360 GFLOP/s for it). The memory
 * stays bounded by the largest forward's and is held only until the run ends.
 * Thread safety: none — one arena per forward call, used by the thread running it (the ops'
 * own OpenMP threads never allocate from it); the keep scope is per thread.
 */
#ifndef SDW_NN_ARENA_H
#define SDW_NN_ARENA_H

#include "core/common.h"

typedef struct sdw_arena sdw_arena;

sdw_arena *sdw_arena_create(void);
/* NULL ok. Unmaps the big buffers, live ones too (or, in a keep scope, parks them: see above);
 * small (malloc'd) buffers are the caller's to sdw_arena_free before. */
void sdw_arena_destroy(sdw_arena *a);
/* A buffer of at least `bytes`, 64-byte aligned, contents undefined. Aborts on out-of-memory
 * (sizes come from the model's shapes, not from untrusted input). */
void *sdw_arena_alloc(sdw_arena *a, size_t bytes);
void sdw_arena_free(sdw_arena *a, void *p); /* NULL ok; p from this arena */
/* Bytes the arena had mapped at most (its big buffers), for memory reports. */
size_t sdw_arena_peak(const sdw_arena *a);
/* Turns the calling thread's keep scope on or off (see above); returns the previous setting,
 * for the caller to restore. Off releases the parked arena. */
bool sdw_arena_keep(bool on);

#endif
