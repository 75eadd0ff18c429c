/* core/cpu.c — the CPU's vector ISA level, name and flags (see cpu.h). */
#include "core/cpu.h"

#include "core/common.h"

#include <ctype.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static const char *const k_isa_names[] = {"baseline", "avx2", "avx512", "avx512_bf16", "amx"};

const char *sdw_isa_str(sdw_isa isa) {
    return (unsigned)isa < SDW_ARRAY_LEN(k_isa_names) ? k_isa_names[isa] : "?";
}

bool sdw_isa_parse(const char *s, sdw_isa *out) {
    for (unsigned i = 0; s && i < SDW_ARRAY_LEN(k_isa_names); i++)
        if (strcasecmp(s, k_isa_names[i]) == 0) {
            *out = (sdw_isa)i;
            return true;
        }
    return false;
}

/* What CPUID and XGETBV say, read once. */
typedef struct cpu_facts {
    sdw_isa hw, capped;
    bool fma, f16c, avx2, avx512f, avx512bw, avx512vl, avx512dq, avx512_bf16, amx_bf16, amx_tile;
    char name[64];
    char flags[160];
} cpu_facts;

static cpu_facts g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
/* XCR0: which register states the OS saves (AVX needs XMM|YMM, AVX-512 also opmask and the
 * upper ZMM halves, AMX the tile config and data). Read with the raw opcode: no target needed. */
static unsigned long long xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void read_cpuid(cpu_facts *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    f->fma = c & (1u << 12);
    f->f16c = c & (1u << 29);
    const unsigned long long x = osxsave ? xcr0() : 0;
    const bool os_avx = (x & 0x6) == 0x6, os_avx512 = (x & 0xe6) == 0xe6,
               os_amx = (x & 0x60000) == 0x60000;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f->avx2 = avx && os_avx && (b & (1u << 5));
        f->avx512f = os_avx512 && (b & (1u << 16));
        f->avx512dq = os_avx512 && (b & (1u << 17));
        f->avx512bw = os_avx512 && (b & (1u << 30));
        f->avx512vl = os_avx512 && (b & (1u << 31));
        f->amx_bf16 = os_amx && (d & (1u << 22));
        f->amx_tile = os_amx && (d & (1u << 24));
        const unsigned max_sub = a;
        if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
            f->avx512_bf16 = f->avx512f && (a & (1u << 5));
    }
    unsigned brand[12];
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000004u) {
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002u + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2],
                        &brand[4 * i + 3]);
        memcpy(f->name, brand, 48);
        f->name[48] = 0;
    }
}
#endif

/* A oneDNN ISA name (ONEDNN_MAX_CPU_ISA's values) as our level; false for ALL and unknowns. */
static bool onednn_isa(const char *s, sdw_isa *out) {
    static const struct {
        const char *name;
        sdw_isa isa;
    } map[] = {{"SSE41", SDW_ISA_BASELINE},
               {"AVX", SDW_ISA_BASELINE},
               {"AVX2", SDW_ISA_AVX2},
               {"AVX2_VNNI", SDW_ISA_AVX2},
               {"AVX512_CORE", SDW_ISA_AVX512},
               {"AVX512_CORE_VNNI", SDW_ISA_AVX512},
               {"AVX512_CORE_BF16", SDW_ISA_AVX512_BF16},
               {"AVX512_CORE_AMX", SDW_ISA_AMX}};
    for (size_t i = 0; i < SDW_ARRAY_LEN(map); i++)
        if (strcasecmp(s, map[i].name) == 0) {
            *out = map[i].isa;
            return true;
        }
    return false;
}

static void cpu_init(void) {
    cpu_facts *f = &g_cpu;
#if defined(__x86_64__)
    read_cpuid(f);
#endif
    /* the brand string is padded with spaces on some CPUs */
    char *s = f->name;
    while (*s == ' ')
        s++;
    memmove(f->name, s, strlen(s) + 1);
    for (size_t n = strlen(f->name); n && isspace((unsigned char)f->name[n - 1]); n--)
        f->name[n - 1] = 0;
    if (!f->name[0]) snprintf(f->name, sizeof f->name, "unknown CPU");

    f->hw = SDW_ISA_BASELINE;
    if (f->avx2 && f->fma && f->f16c) {
        f->hw = SDW_ISA_AVX2;
        if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq) {
            f->hw = SDW_ISA_AVX512;
            if (f->avx512_bf16) f->hw = SDW_ISA_AVX512_BF16;
            if (f->avx512_bf16 && f->amx_bf16 && f->amx_tile) f->hw = SDW_ISA_AMX;
        }
    }
    const struct {
        bool on;
        const char *name;
    } flags[] = {{f->avx2, "avx2"},         {f->fma, "fma"},
                 {f->f16c, "f16c"},         {f->avx512f, "avx512f"},
                 {f->avx512bw, "avx512bw"}, {f->avx512vl, "avx512vl"},
                 {f->avx512dq, "avx512dq"}, {f->avx512_bf16, "avx512_bf16"},
                 {f->amx_bf16, "amx_bf16"}, {f->amx_tile, "amx_tile"}};
    size_t len = 0;
    for (size_t i = 0; i < SDW_ARRAY_LEN(flags); i++)
        if (flags[i].on)
            len += (size_t)snprintf(f->flags + len, sizeof f->flags - len, "%s%s", len ? " " : "",
                                    flags[i].name);

    f->capped = f->hw;
    const char *env = getenv("SDW_MAX_ISA");
    sdw_isa cap;
    if (env && *env) {
        if (!sdw_isa_parse(env, &cap))
            SDW_WARN("SDW_MAX_ISA=%s: not one of baseline, avx2, avx512, avx512_bf16, amx: ignored",
                     env);
        else if (cap < f->capped)
            f->capped = cap;
    }
    /* oneDNN's own cap, when set instead, caps our kernels too: the program then runs as on a
     * CPU of that level, oneDNN's kernels and ours alike. */
    for (int i = 0; i < 2; i++) {
        env = getenv(i ? "DNNL_MAX_CPU_ISA" : "ONEDNN_MAX_CPU_ISA");
        if (env && *env && onednn_isa(env, &cap) && cap < f->capped) f->capped = cap;
    }
}

static const cpu_facts *facts(void) {
    pthread_once(&g_cpu_once, cpu_init);
    return &g_cpu;
}

sdw_isa sdw_cpu_isa(void) {
    return facts()->capped;
}

sdw_isa sdw_cpu_isa_hw(void) {
    return facts()->hw;
}

const char *sdw_cpu_name(void) {
    return facts()->name;
}

const char *sdw_cpu_flags(void) {
    return facts()->flags;
}
