/* nn/arena.c — see arena.h. */
#define _GNU_SOURCE
#include "nn/arena.h"

#include <string.h>
#include <sys/mman.h>

#define BIG ((size_t)1 << 20)  /* from here on: mapped, reused */
#define HUGE ((size_t)2 << 20) /* transparent huge page size on x86-64 */

typedef struct block {
    void *base;  /* mapping start (munmap) */
    size_t span; /* mapping length */
    void *p;     /* 2 MiB-aligned start handed out */
    size_t size; /* usable bytes from p */
    bool live;
} block;

struct sdw_arena {
    block *b;
    int n, cap;
    size_t mapped, peak; /* bytes mapped now, and at most */
    size_t live, live_peak; /* bytes handed out now, and at most (the bound on mapped) */
};

/* The calling thread's keep scope (sdw_arena_keep): on, and the arena parked for the next
 * sdw_arena_create, if any. */
static _Thread_local struct {
    bool on;
    sdw_arena *parked;
} t_keep;

sdw_arena *sdw_arena_create(void) {
    sdw_arena *a = t_keep.parked;
    t_keep.parked = NULL;
    return a ? a : sdw_xcalloc(1, sizeof(sdw_arena));
}

static void unmap(sdw_arena *a, int i) {
    munmap(a->b[i].base, a->b[i].span);
    a->mapped -= a->b[i].size;
    a->b[i] = a->b[--a->n];
}

static void release(sdw_arena *a) {
    while (a->n)
        unmap(a, a->n - 1);
    free(a->b);
    free(a);
}

void sdw_arena_destroy(sdw_arena *a) {
    if (!a) return;
    if (!t_keep.on || t_keep.parked) {
        release(a);
        return;
    }
    for (int i = 0; i < a->n; i++) /* every buffer free again, kept mapped */
        a->b[i].live = false;
    a->live = 0;
    t_keep.parked = a;
}

bool sdw_arena_keep(bool on) {
    const bool was = t_keep.on;
    t_keep.on = on;
    if (!on && t_keep.parked) {
        release(t_keep.parked);
        t_keep.parked = NULL;
    }
    return was;
}

static void *take(sdw_arena *a, int i) {
    a->b[i].live = true;
    a->live += a->b[i].size;
    if (a->live > a->live_peak) a->live_peak = a->live;
    return a->b[i].p;
}

void *sdw_arena_alloc(sdw_arena *a, size_t bytes) {
    SDW_ASSERT(a);
    if (bytes < BIG) {
        void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!p) SDW_ABORT("out of memory (%zu bytes of scratch)", bytes);
        return p;
    }
    int best = -1;
    for (int i = 0; i < a->n; i++)
        if (!a->b[i].live && a->b[i].size >= bytes && (best < 0 || a->b[i].size < a->b[best].size))
            best = i;
    if (best >= 0) return take(a, best);
    /* No free buffer is big enough (they are all smaller than this one). Keep them while the
     * arena stays within the most memory its caller has had live at once, counting this
     * buffer; past that, give back the smallest first (so the peak does not grow). Kept ones
     * are already faulted in: the next forward or block that needs them pays no page faults. */
    const size_t size = (bytes + HUGE - 1) & ~(HUGE - 1), span = size + HUGE;
    const size_t bound = SDW_MAX(a->live_peak, a->live + size);
    while (a->mapped + size > bound) {
        int small = -1;
        for (int i = 0; i < a->n; i++)
            if (!a->b[i].live && (small < 0 || a->b[i].size < a->b[small].size)) small = i;
        if (small < 0) break; /* cannot happen: mapped = live + free sizes */
        unmap(a, small);
    }
    void *base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) SDW_ABORT("out of memory (%zu bytes of scratch)", bytes);
    void *p = (void *)(((uintptr_t)base + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    (void)madvise(p, size, MADV_HUGEPAGE); /* advisory: fewer faults where THP is on */
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 32;
        a->b = realloc(a->b, sizeof *a->b * (size_t)a->cap);
        if (!a->b) SDW_ABORT("out of memory");
    }
    a->b[a->n++] = (block){.base = base, .span = span, .p = p, .size = size};
    a->mapped += size;
    if (a->mapped > a->peak) a->peak = a->mapped;
    return take(a, a->n - 1);
}

void sdw_arena_free(sdw_arena *a, void *p) {
    if (!p) return;
    for (int i = 0; i < a->n; i++)
        if (a->b[i].p == p) {
            SDW_ASSERT(a->b[i].live); /* double free */
            a->b[i].live = false;
            a->live -= a->b[i].size;
            return;
        }
    free(p); /* a small buffer */
}

size_t sdw_arena_peak(const sdw_arena *a) {
    return a->peak;
}
