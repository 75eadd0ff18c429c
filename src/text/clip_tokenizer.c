/* text/clip_tokenizer.c — transformers' CLIPTokenizer (tokenization_clip.py) in C.
 *
 * Strings (vocabulary entries, merge parts and merge results) are interned once into a symbol
 * table; BPE then works on symbol indices, and each merge is a hash lookup of the pair of
 * symbol indices. The reference's result cache only saves time, so there is none: a loaded
 * tokenizer stays immutable and safe to share between threads. */
#include "text/clip_tokenizer.h"

#include "core/common.h"
#include "io/json_config.h"
#include "text/text_fix.h"

#include <jansson.h>
#include <string.h>
#include <utf8proc.h>

#define BOS_TEXT "<|startoftext|>"
#define EOS_TEXT "<|endoftext|>"
#define EOW "</w>"
/* CLIP reads merges.txt lines [1, 49152 - 256 - 2 + 1): at most 48894 merges. */
#define CLIP_MAX_MERGES (49152 - 256 - 2)

typedef struct sym {
    uint32_t off, len; /* bytes in pool */
    int32_t id;        /* vocabulary id, or -1 when the string is not in vocab.json */
} sym;

typedef struct merge {
    uint64_t key;    /* (left + 1) << 32 | right; 0 = empty slot */
    uint32_t rank;   /* line order in merges.txt: lower merges first */
    uint32_t result; /* symbol of left + right */
} merge;

typedef struct id_sym {
    int32_t id;
    uint32_t sym;
} id_sym;

/* A special token that transformers' tokenize() never splits: matched in the raw text before
 * any cleaning and emitted as its vocabulary id. */
#define MAX_SPECIAL_CHARS 64
typedef struct special {
    uint32_t cp[MAX_SPECIAL_CHARS];
    size_t len;
    int32_t id;
} special;

enum { SPECIAL_BOS, SPECIAL_EOS, SPECIAL_UNK, SPECIAL_PAD, N_SPECIAL_ROLES };
static const char *const k_special_roles[N_SPECIAL_ROLES] = {"bos_token", "eos_token", "unk_token",
                                                             "pad_token"};

struct sdw_clip_tokenizer {
    char *pool;
    size_t pool_len, pool_cap;
    sym *syms;
    uint32_t n_syms, syms_cap;
    uint32_t *slots; /* open addressing over syms: index + 1, 0 = empty */
    uint32_t slot_mask;
    merge *merges;
    uint32_t merge_mask, n_merges;
    uint32_t byte_sym[256], byte_eow_sym[256]; /* bytes_to_unicode(b) and that + "</w>" */
    id_sym *by_id; /* vocabulary sorted by id, for detokenize */
    int n_vocab;
    int32_t bos, eos, unk, pad;
    special specials[N_SPECIAL_ROLES]; /* distinct no-split tokens */
    int n_specials;
};

/* ---- bytes_to_unicode (GPT-2 / CLIP): printable Latin-1 bytes map to themselves, the other
 * 68 bytes to U+0100.. in increasing byte order, so no symbol is whitespace or a control. ---- */

static bool byte_is_printable(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* Byte -> code point, and the order bytes_to_unicode lists them in (CLIP's ids 0..255). */
static void bytes_to_unicode(uint32_t cp[256], int order[256]) {
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++)
        if (byte_is_printable(b)) { cp[b] = (uint32_t)b; order[k++] = b; }
    for (int b = 0; b < 256; b++)
        if (!byte_is_printable(b)) { cp[b] = 256u + (uint32_t)extra++; order[k++] = b; }
}

/* ---- symbol table ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint32_t *sym_slot(const sdw_clip_tokenizer *t, const char *s, size_t n) {
    for (uint64_t i = hash_bytes(s, n);; i++) {
        uint32_t *slot = &t->slots[i & t->slot_mask];
        if (!*slot) return slot;
        const sym *e = &t->syms[*slot - 1];
        if (e->len == n && !memcmp(t->pool + e->off, s, n)) return slot;
    }
}

static int64_t sym_find(const sdw_clip_tokenizer *t, const char *s, size_t n) {
    uint32_t v = *sym_slot(t, s, n);
    return v ? (int64_t)v - 1 : -1;
}

static void sym_rehash(sdw_clip_tokenizer *t, uint32_t n_slots) {
    free(t->slots);
    t->slots = sdw_xcalloc(n_slots, sizeof *t->slots);
    t->slot_mask = n_slots - 1;
    for (uint32_t i = 0; i < t->n_syms; i++)
        *sym_slot(t, t->pool + t->syms[i].off, t->syms[i].len) = i + 1;
}

/* Returns the symbol of s (interning it with id -1 when new). */
static uint32_t sym_intern(sdw_clip_tokenizer *t, const char *s, size_t n) {
    uint32_t *slot = sym_slot(t, s, n);
    if (*slot) return *slot - 1;
    if (t->n_syms == t->syms_cap) {
        t->syms_cap = t->syms_cap ? t->syms_cap * 2 : 1024;
        sym *ns = realloc(t->syms, t->syms_cap * sizeof *ns);
        if (!ns) SDW_ABORT("out of memory: %u tokenizer symbols", t->syms_cap);
        t->syms = ns;
    }
    if (t->pool_len + n > t->pool_cap) {
        while (t->pool_len + n > t->pool_cap) t->pool_cap = t->pool_cap ? t->pool_cap * 2 : 65536;
        char *np = realloc(t->pool, t->pool_cap);
        if (!np) SDW_ABORT("out of memory: %zu bytes of tokenizer strings", t->pool_cap);
        t->pool = np;
    }
    SDW_ASSERT(t->pool_len + n <= UINT32_MAX);
    memcpy(t->pool + t->pool_len, s, n);
    uint32_t idx = t->n_syms++;
    t->syms[idx] = (sym){(uint32_t)t->pool_len, (uint32_t)n, -1};
    t->pool_len += n;
    *slot = idx + 1;
    if ((uint64_t)t->n_syms * 2 > t->slot_mask + 1ull) sym_rehash(t, (t->slot_mask + 1) * 2);
    return idx;
}

/* ---- merge table ---- */

static merge *merge_slot(const sdw_clip_tokenizer *t, uint64_t key) {
    for (uint64_t i = key * 0x9E3779B97F4A7C15ull;; i++) {
        merge *m = &t->merges[(i ^ (i >> 32)) & t->merge_mask];
        if (!m->key || m->key == key) return m;
    }
}

static const merge *merge_find(const sdw_clip_tokenizer *t, uint32_t a, uint32_t b) {
    if (!t->merges) return NULL;
    const merge *m = merge_slot(t, ((uint64_t)a + 1) << 32 | b);
    return m->key ? m : NULL;
}

/* ---- construction ---- */

static sdw_clip_tokenizer *tokenizer_new(void) {
    sdw_clip_tokenizer *t = sdw_xcalloc(1, sizeof *t);
    sym_rehash(t, 1u << 17); /* CLIP: ~50k symbols, load stays under 1/2 without regrowing */
    return t;
}

/* Interns the 512 byte symbols; ids come from the vocabulary when they are in it. */
static void intern_byte_symbols(sdw_clip_tokenizer *t) {
    uint32_t cp[256];
    int order[256];
    bytes_to_unicode(cp, order);
    for (int b = 0; b < 256; b++) {
        size_t len;
        char *u8 = sdw_utf8_encode(&cp[b], 1, &len);
        char buf[16];
        memcpy(buf, u8, len);
        memcpy(buf + len, EOW, 4);
        t->byte_sym[b] = sym_intern(t, buf, len);
        t->byte_eow_sym[b] = sym_intern(t, buf, len + 4);
        free(u8);
    }
}

static int cmp_id_sym(const void *a, const void *b) {
    int32_t x = ((const id_sym *)a)->id, y = ((const id_sym *)b)->id;
    return (x > y) - (x < y);
}

/* Resolves the special tokens (texts[role], CLIP's defaults where NULL) to ids, records the
 * distinct ones as no-split tokens, and builds the id index. */
static sdw_status finish(sdw_clip_tokenizer *t, const char *const texts[N_SPECIAL_ROLES],
                         const char *vocab_name, sdw_error *err) {
    static const char *const k_defaults[N_SPECIAL_ROLES] = {BOS_TEXT, EOS_TEXT, EOS_TEXT, EOS_TEXT};
    int32_t ids[N_SPECIAL_ROLES];
    for (int r = 0; r < N_SPECIAL_ROLES; r++) {
        const char *txt = texts && texts[r] ? texts[r] : k_defaults[r];
        int64_t s = sym_find(t, txt, strlen(txt));
        if (s < 0 || t->syms[s].id < 0)
            return sdw_error_set(err, SDW_E_FORMAT, "%s: no entry for the %s \"%.64s\" (tokens "
                                 "added beyond the vocabulary are not supported)", vocab_name,
                                 k_special_roles[r], txt);
        ids[r] = t->syms[s].id;
        special sp = {.id = ids[r]};
        uint32_t *cps;
        size_t n;
        if (sdw_utf8_decode(txt, strlen(txt), &cps, &n, NULL) != SDW_OK)
            return sdw_error_set(err, SDW_E_FORMAT, "%s: %s is not UTF-8", vocab_name, k_special_roles[r]);
        if (n == 0 || n > MAX_SPECIAL_CHARS) {
            free(cps);
            return sdw_error_set(err, SDW_E_FORMAT, "%s: %s \"%.64s\" is empty or too long",
                                 vocab_name, k_special_roles[r], txt);
        }
        memcpy(sp.cp, cps, n * sizeof *cps);
        sp.len = n;
        free(cps);
        bool dup = false;
        for (int k = 0; k < t->n_specials; k++)
            dup |= t->specials[k].len == n && !memcmp(t->specials[k].cp, sp.cp, n * sizeof *sp.cp);
        if (!dup) t->specials[t->n_specials++] = sp;
    }
    t->bos = ids[SPECIAL_BOS];
    t->eos = ids[SPECIAL_EOS];
    t->unk = ids[SPECIAL_UNK];
    t->pad = ids[SPECIAL_PAD];
    t->by_id = sdw_xmalloc(((size_t)t->n_vocab + 1) * sizeof *t->by_id);
    int k = 0;
    for (uint32_t i = 0; i < t->n_syms; i++)
        if (t->syms[i].id >= 0) t->by_id[k++] = (id_sym){t->syms[i].id, i};
    SDW_ASSERT(k == t->n_vocab);
    qsort(t->by_id, (size_t)k, sizeof *t->by_id, cmp_id_sym);
    return SDW_OK;
}

void sdw_clip_tokenizer_destroy(sdw_clip_tokenizer *t) {
    if (!t) return;
    free(t->pool);
    free(t->syms);
    free(t->slots);
    free(t->merges);
    free(t->by_id);
    free(t);
}

/* ---- vocab.json: a flat JSON object of token -> id, read as Python's json.load does (jansson
 * checks the JSON, its escapes and its UTF-8; a repeated key keeps its last id). ---- */

static sdw_status load_vocab(sdw_clip_tokenizer *t, const char *path, sdw_error *err) {
    sdw_json_config vocab;
    sdw_status st = sdw_json_config_load(path, &vocab, err);
    if (st != SDW_OK) return st;
    if (json_object_size(vocab.root) == 0)
        st = sdw_error_set(err, SDW_E_FORMAT, "%s: empty vocabulary", path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab.root, key, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > INT32_MAX) {
            st = sdw_error_set(err, SDW_E_FORMAT,
                               "%s: the id of \"%.64s\" is not an integer in [0, 2^31)", path, key);
            break;
        }
        uint32_t s = sym_intern(t, key, strlen(key)); /* jansson refuses NUL in keys */
        if (t->syms[s].id < 0) t->n_vocab++;
        t->syms[s].id = (int32_t)id;
    }
    sdw_json_config_free(&vocab);
    return st;
}

/* Splits a merges.txt line into its two space-separated parts (as Python's str.split()). */
static bool split_merge_line(char *line, char **a, size_t *na, char **b, size_t *nb) {
    char *parts[3];
    size_t lens[3];
    int k = 0;
    for (char *p = line; *p;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\v' || *p == '\f') p++;
        if (!*p) break;
        char *s = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\v' && *p != '\f') p++;
        if (k == 3) return false;
        parts[k] = s;
        lens[k++] = (size_t)(p - s);
    }
    if (k != 2) return false;
    *a = parts[0], *na = lens[0], *b = parts[1], *nb = lens[1];
    return true;
}

static sdw_status load_merges(sdw_clip_tokenizer *t, const char *path, sdw_error *err) {
    char *buf = NULL;
    size_t len = 0;
    sdw_status st = sdw_read_file(path, &buf, &len, err);
    if (st != SDW_OK) return st;
    if (memchr(buf, 0, len)) {
        free(buf);
        return sdw_error_set(err, SDW_E_FORMAT, "%s: contains a NUL byte (not a text file)", path);
    }
    /* Like the reference: strip the file, split at '\n', drop the first (header) line. */
    char *p = buf, *end = buf + len;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\t' || end[-1] == '\r')) end--;
    *end = 0;
    char *nl = strchr(p, '\n');
    p = nl ? nl + 1 : end;
    uint32_t cap = 1024;
    while (cap < 2u * CLIP_MAX_MERGES) cap *= 2;
    t->merges = sdw_xcalloc(cap, sizeof *t->merges);
    t->merge_mask = cap - 1;
    char joined[1024];
    for (int line_no = 2; p < end && t->n_merges < CLIP_MAX_MERGES; line_no++) {
        char *line = p;
        nl = strchr(p, '\n');
        p = nl ? nl + 1 : end;
        if (nl) *nl = 0;
        char *a, *b;
        size_t na, nb;
        if (!split_merge_line(line, &a, &na, &b, &nb)) {
            st = sdw_error_set(err, SDW_E_FORMAT, "%s:%d: expected two space-separated symbols, "
                               "got \"%.64s\"", path, line_no, line);
            break;
        }
        if (na + nb > sizeof joined) {
            st = sdw_error_set(err, SDW_E_FORMAT, "%s:%d: merge longer than %zu bytes", path,
                               line_no, sizeof joined);
            break;
        }
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        uint32_t sa = sym_intern(t, a, na), sb = sym_intern(t, b, nb);
        uint32_t sr = sym_intern(t, joined, na + nb);
        merge *m = merge_slot(t, ((uint64_t)sa + 1) << 32 | sb);
        /* A repeated pair takes its later rank, as Python's dict(zip(merges, range(...))). */
        *m = (merge){((uint64_t)sa + 1) << 32 | sb, t->n_merges++, sr};
    }
    free(buf);
    return st;
}

/* Reads the optional special_tokens_map.json of a transformers tokenizer folder: each role is a
 * string or an object whose "content" is the string. texts[role] gets a new string or NULL. */
static sdw_status load_special_map(const char *path, char *texts[N_SPECIAL_ROLES], sdw_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return SDW_OK; /* absent: CLIP's defaults */
    fclose(f);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line,
                             jerr.text);
    sdw_status st = SDW_OK;
    for (int r = 0; r < N_SPECIAL_ROLES && st == SDW_OK; r++) {
        json_t *v = json_object_get(root, k_special_roles[r]);
        if (json_is_object(v)) v = json_object_get(v, "content");
        if (!v || json_is_null(v)) continue;
        if (!json_is_string(v))
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: %s is not a string or {\"content\": string}",
                               path, k_special_roles[r]);
        else
            texts[r] = sdw_xstrdup(json_string_value(v));
    }
    json_decref(root);
    return st;
}

sdw_status sdw_clip_tokenizer_load(const char *dir, sdw_clip_tokenizer **out, sdw_error *err) {
    return sdw_clip_tokenizer_load_ex(dir, NULL, out, err);
}

sdw_status sdw_clip_tokenizer_load_ex(const char *dir, const char *pad_token,
                                      sdw_clip_tokenizer **out, sdw_error *err) {
    SDW_ASSERT(dir && out);
    size_t n = strlen(dir) + 32;
    char *vocab_path = sdw_xmalloc(n), *merges_path = sdw_xmalloc(n), *map_path = sdw_xmalloc(n);
    char *texts[N_SPECIAL_ROLES] = {0};
    snprintf(vocab_path, n, "%s/vocab.json", dir);
    snprintf(merges_path, n, "%s/merges.txt", dir);
    snprintf(map_path, n, "%s/special_tokens_map.json", dir);
    sdw_clip_tokenizer *t = tokenizer_new();
    sdw_status st = load_vocab(t, vocab_path, err);
    if (st == SDW_OK) st = load_merges(t, merges_path, err);
    if (st == SDW_OK) st = load_special_map(map_path, texts, err);
    if (st == SDW_OK && pad_token) {
        free(texts[SPECIAL_PAD]);
        texts[SPECIAL_PAD] = sdw_xstrdup(pad_token);
    }
    if (st == SDW_OK) {
        intern_byte_symbols(t);
        st = finish(t, (const char *const *)texts, vocab_path, err);
    }
    if (st != SDW_OK) {
        sdw_error_prefix(err, "CLIP tokenizer");
        sdw_clip_tokenizer_destroy(t);
    } else {
        *out = t;
    }
    for (int r = 0; r < N_SPECIAL_ROLES; r++) free(texts[r]);
    free(vocab_path);
    free(merges_path);
    free(map_path);
    return st;
}

sdw_clip_tokenizer *sdw_clip_tokenizer_create_byte_level(void) {
    sdw_clip_tokenizer *t = tokenizer_new();
    uint32_t cp[256];
    int order[256];
    bytes_to_unicode(cp, order);
    intern_byte_symbols(t);
    for (int k = 0; k < 256; k++) {
        t->syms[t->byte_sym[order[k]]].id = k;
        t->syms[t->byte_eow_sym[order[k]]].id = 256 + k;
    }
    t->syms[sym_intern(t, BOS_TEXT, strlen(BOS_TEXT))].id = 512;
    t->syms[sym_intern(t, EOS_TEXT, strlen(EOS_TEXT))].id = 513;
    t->n_vocab = 514;
    sdw_status st = finish(t, NULL, "byte-level vocabulary", NULL);
    SDW_ASSERT(st == SDW_OK);
    return t;
}

int sdw_clip_tokenizer_vocab_size(const sdw_clip_tokenizer *t) { return t->n_vocab; }
int32_t sdw_clip_tokenizer_bos(const sdw_clip_tokenizer *t) { return t->bos; }
int32_t sdw_clip_tokenizer_eos(const sdw_clip_tokenizer *t) { return t->eos; }
int32_t sdw_clip_tokenizer_pad(const sdw_clip_tokenizer *t) { return t->pad; }

/* ---- text normalisation: whitespace_clean and str.lower() ---- */

/* The regex module's \s: the Unicode White_Space property. */
static bool is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static bool is_letter(uint32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static bool is_number(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* Python's _PyUnicode_IsCased, approximated from utf8proc: a cased letter category or a
 * character with a case mapping (misses the few Other_Lowercase symbols without one). */
static bool is_cased(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           utf8proc_islower((utf8proc_int32_t)c) || utf8proc_isupper((utf8proc_int32_t)c);
}

/* Unicode Case_Ignorable: Mn, Me, Cf, Lm, Sk, or Word_Break MidLetter/MidNumLet/Single_Quote. */
static bool is_case_ignorable(uint32_t c) {
    switch (c) {
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4: case 0x2018:
    case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07:
    case 0xFF0E: case 0xFF1A:
        return true;
    default:
        break;
    }
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* CPython's handle_capital_sigma: U+03A3 lowers to final sigma after a cased letter (skipping
 * case-ignorables) when no cased letter follows (again skipping case-ignorables). */
static uint32_t lower_sigma(const uint32_t *s, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(s[j - 1])) j--;
    bool final = j > 0 && is_cased(s[j - 1]);
    if (final) {
        j = i + 1;
        while (j < n && is_case_ignorable(s[j])) j++;
        final = j == n || !is_cased(s[j]);
    }
    return final ? 0x3C2 : 0x3C3;
}

/* whitespace_clean (\s+ -> " ", strip) followed by str.lower(). Returns a new array in *out. */
static size_t clean_and_lower(const uint32_t *in, size_t n, uint32_t **out) {
    uint32_t *ws = sdw_xmalloc((n + 1) * sizeof *ws);
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        if (!is_space(in[i])) { ws[m++] = in[i++]; continue; }
        while (i < n && is_space(in[i])) i++;
        ws[m++] = ' ';
    }
    size_t a = 0, b = m;
    while (a < b && ws[a] == ' ') a++;
    while (b > a && ws[b - 1] == ' ') b--;
    uint32_t *low = sdw_xmalloc((2 * (b - a) + 1) * sizeof *low); /* U+0130 lowers to 2 */
    size_t k = 0;
    for (size_t i = a; i < b; i++) {
        uint32_t c = ws[i];
        if (c < 0x80) low[k++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        else if (c == 0x130) { low[k++] = 'i'; low[k++] = 0x307; }
        else if (c == 0x3A3) low[k++] = lower_sigma(ws + a, b - a, i - a);
        else low[k++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
    }
    free(ws);
    *out = low;
    return k;
}

/* ---- pre-tokenizer ---- */

/* Matches literal lit at s[i..] the way the IGNORECASE regex does on lower-cased text: only
 * U+017F LONG S case-folds onto one of the literal's letters ('s'). */
static size_t match_literal(const uint32_t *s, size_t n, size_t i, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++) {
        if (i + k >= n) return 0;
        uint32_t c = s[i + k];
        if (c != (unsigned char)lit[k] && !(lit[k] == 's' && c == 0x17F)) return 0;
    }
    return k;
}

/* U+0345 COMBINING GREEK YPOGEGRAMMENI case-folds to a letter (iota), so under IGNORECASE the
 * regex module's [^\s\p{L}\p{N}] rejects it while [\p{L}] does not accept it either: no
 * alternative matches it, and findall skips it like whitespace. It is the only such character. */
static bool is_skipped(uint32_t c) { return c == 0x345 || is_space(c); }

/* Length of the regex match starting at s[i], or 0 where findall skips the character. */
static size_t pretoken_len(const uint32_t *s, size_t n, size_t i) {
    static const char *const k_literals[] = {BOS_TEXT, EOS_TEXT, "'s", "'t", "'re", "'ve",
                                             "'m", "'ll", "'d"};
    for (size_t k = 0; k < SDW_ARRAY_LEN(k_literals); k++) {
        size_t len = match_literal(s, n, i, k_literals[k]);
        if (len) return len;
    }
    if (is_letter(s[i])) {
        size_t j = i + 1;
        while (j < n && is_letter(s[j])) j++;
        return j - i;
    }
    if (is_number(s[i])) return 1;
    if (is_skipped(s[i])) return 0;
    size_t j = i + 1;
    while (j < n && !is_skipped(s[j]) && !is_letter(s[j]) && !is_number(s[j])) j++;
    return j - i;
}

/* ---- BPE ---- */

typedef struct idbuf {
    int32_t *v;
    size_t n, cap;
} idbuf;

static void id_push(idbuf *b, int32_t id) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        int32_t *v = realloc(b->v, b->cap * sizeof *v);
        if (!v) SDW_ABORT("out of memory: %zu token ids", b->cap);
        b->v = v;
    }
    b->v[b->n++] = id;
}

/* CLIPTokenizer.bpe on one pre-token (its UTF-8 bytes), appending the ids to out. */
static void bpe_word(const sdw_clip_tokenizer *t, const unsigned char *bytes, size_t n, uint32_t *w,
                     idbuf *out) {
    /* The reference's bpe() cache starts out holding these two literals as themselves. */
    if ((n == strlen(BOS_TEXT) && !memcmp(bytes, BOS_TEXT, n)) ||
        (n == strlen(EOS_TEXT) && !memcmp(bytes, EOS_TEXT, n))) {
        int64_t s = sym_find(t, (const char *)bytes, n);
        id_push(out, s >= 0 && t->syms[s].id >= 0 ? t->syms[s].id : t->unk);
        return;
    }
    for (size_t i = 0; i < n; i++) w[i] = i + 1 < n ? t->byte_sym[bytes[i]] : t->byte_eow_sym[bytes[i]];
    while (n > 1) {
        const merge *best = NULL;
        for (size_t i = 0; i + 1 < n; i++) {
            const merge *m = merge_find(t, w[i], w[i + 1]);
            if (m && (!best || m->rank < best->rank)) best = m;
        }
        if (!best) break;
        uint32_t a = (uint32_t)(best->key >> 32) - 1, b = (uint32_t)best->key;
        size_t j = 0;
        for (size_t i = 0; i < n;) {
            if (i + 1 < n && w[i] == a && w[i + 1] == b) { w[j++] = best->result; i += 2; }
            else w[j++] = w[i++];
        }
        n = j;
    }
    for (size_t i = 0; i < n; i++) id_push(out, t->syms[w[i]].id >= 0 ? t->syms[w[i]].id : t->unk);
}

/* CLIPTokenizer._tokenize on one piece of text between special-token literals. */
static void tokenize_piece(const sdw_clip_tokenizer *t, const uint32_t *in, size_t n, idbuf *out) {
    uint32_t *fixed, *low;
    size_t n_fixed;
    sdw_text_fix(in, n, &fixed, &n_fixed);
    size_t n_low = clean_and_lower(fixed, n_fixed, &low);
    free(fixed);
    size_t n_bytes;
    char *u8 = sdw_utf8_encode(low, n_low, &n_bytes);
    uint32_t *w = sdw_xmalloc((n_bytes + 1) * sizeof *w);
    size_t byte_pos = 0; /* UTF-8 offset of low[i] */
    for (size_t i = 0; i < n_low;) {
        size_t len = pretoken_len(low, n_low, i), blen = 0;
        if (!len) len = 1;
        for (size_t k = i; k < i + len; k++)
            blen += low[k] < 0x80 ? 1 : low[k] < 0x800 ? 2 : low[k] < 0x10000 ? 3 : 4;
        if (!is_skipped(low[i]))
            bpe_word(t, (const unsigned char *)u8 + byte_pos, blen, w, out);
        byte_pos += blen;
        i += len;
    }
    free(w);
    free(u8);
    free(low);
}

/* Finds the next no-split special token at or after i, the longest where several start at the
 * same place (transformers' added-token trie split); with bos_eos_only, only the BOS and EOS
 * literals count. Returns n when there is none. */
static size_t find_special(const sdw_clip_tokenizer *t, const uint32_t *s, size_t n, size_t i,
                           bool bos_eos_only, const special **found) {
    for (; i < n; i++) {
        const special *best = NULL;
        for (int k = 0; k < t->n_specials; k++) {
            const special *sp = &t->specials[k];
            if (bos_eos_only && sp->id != t->bos && sp->id != t->eos) continue;
            if (sp->len <= n - i && !memcmp(s + i, sp->cp, sp->len * sizeof *s) &&
                (!best || sp->len > best->len))
                best = sp;
        }
        if (best) {
            *found = best;
            return i;
        }
    }
    return n;
}

/* The ids of utf8: the pieces between special literals through tokenize_piece, each special
 * as its id; BOS and EOS around them when with_bos_eos. */
static sdw_status tokenize(const sdw_clip_tokenizer *t, const char *utf8, bool with_bos_eos,
                           bool bos_eos_only, int32_t **ids, int *n, sdw_error *err) {
    SDW_ASSERT(t && utf8 && ids && n);
    uint32_t *cp;
    size_t n_cp;
    sdw_status st = sdw_utf8_decode(utf8, strlen(utf8), &cp, &n_cp, err);
    if (st != SDW_OK) return st;
    idbuf out = {0};
    if (with_bos_eos) id_push(&out, t->bos);
    for (size_t pos = 0; pos < n_cp;) {
        const special *sp = NULL;
        size_t at = find_special(t, cp, n_cp, pos, bos_eos_only, &sp);
        if (at > pos) tokenize_piece(t, cp + pos, at - pos, &out);
        if (at == n_cp) break;
        id_push(&out, sp->id);
        pos = at + sp->len;
    }
    if (with_bos_eos) id_push(&out, t->eos);
    free(cp);
    if (out.n > INT32_MAX) {
        free(out.v);
        return sdw_error_set(err, SDW_E_INVALID_ARG, "prompt too long: %zu tokens", out.n);
    }
    if (!out.v) out.v = sdw_xmalloc(sizeof *out.v); /* an empty text: still a new array */
    *ids = out.v;
    *n = (int)out.n;
    return SDW_OK;
}

sdw_status sdw_clip_tokenize(const sdw_clip_tokenizer *t, const char *utf8, int32_t **ids, int *n,
                             sdw_error *err) {
    return tokenize(t, utf8, true, false, ids, n, err);
}

sdw_status sdw_clip_tokenize_text(const sdw_clip_tokenizer *t, const char *utf8, int32_t **ids,
                                  int *n, sdw_error *err) {
    return tokenize(t, utf8, false, true, ids, n, err);
}

sdw_status sdw_clip_tokenize_window(const sdw_clip_tokenizer *t, const char *utf8, int max_len,
                                    int32_t pad_id, int32_t *out, bool *truncated, sdw_error *err) {
    SDW_ASSERT(max_len >= 2 && out);
    int32_t *ids;
    int n;
    sdw_status st = sdw_clip_tokenize(t, utf8, &ids, &n, err);
    if (st != SDW_OK) return st;
    int n_tok = n - 2, keep = SDW_MIN(n_tok, max_len - 2);
    out[0] = t->bos;
    memcpy(out + 1, ids + 1, (size_t)keep * sizeof *out);
    out[keep + 1] = t->eos;
    for (int i = keep + 2; i < max_len; i++) out[i] = pad_id;
    if (truncated) *truncated = n_tok > keep;
    free(ids);
    return SDW_OK;
}

/* ---- decode ---- */

/* Python's bytes.decode("utf-8", "replace"): each maximal invalid subpart -> U+FFFD. */
static void decode_replace(const unsigned char *b, size_t n, idbuf *cps) {
    for (size_t i = 0; i < n;) {
        unsigned c = b[i];
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) { id_push(cps, (int32_t)c); i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; lo = c == 0xE0 ? 0xA0 : 0x80; hi = c == 0xED ? 0x9F : 0xBF; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; lo = c == 0xF0 ? 0x90 : 0x80; hi = c == 0xF4 ? 0x8F : 0xBF; }
        else { id_push(cps, 0xFFFD); i++; continue; }
        uint32_t v = c & (0x3F >> need);
        size_t j = i + 1;
        int got = 0;
        for (; got < need && j < n; got++, j++) {
            unsigned x = b[j];
            if (got == 0 ? (x < lo || x > hi) : (x & 0xC0) != 0x80) break;
            v = (v << 6) | (x & 0x3F);
        }
        id_push(cps, got == need ? (int32_t)v : 0xFFFD);
        i = j;
    }
}

char *sdw_clip_detokenize(const sdw_clip_tokenizer *t, const int32_t *ids, int n) {
    uint32_t cp_of[256];
    int order[256], byte_of[512]; /* bytes_to_unicode maps into U+0021..U+0143 */
    bytes_to_unicode(cp_of, order);
    for (int c = 0; c < 512; c++) byte_of[c] = -1;
    for (int b = 0; b < 256; b++) byte_of[cp_of[b]] = b;
    idbuf bytes = {0};
    for (int i = 0; i < n; i++) {
        bool special = false; /* skip_special_tokens */
        for (int k = 0; k < t->n_specials; k++) special |= ids[i] == t->specials[k].id;
        if (special) continue;
        id_sym key = {ids[i], 0};
        const id_sym *e = bsearch(&key, t->by_id, (size_t)t->n_vocab, sizeof key, cmp_id_sym);
        if (!e) continue;
        const sym *s = &t->syms[e->sym];
        uint32_t *cps;
        size_t m;
        if (sdw_utf8_decode(t->pool + s->off, s->len, &cps, &m, NULL) != SDW_OK) continue;
        for (size_t k = 0; k < m; k++) /* the reference raises KeyError on others; we skip */
            if (cps[k] < 512 && byte_of[cps[k]] >= 0) id_push(&bytes, byte_of[cps[k]]);
        free(cps);
    }
    unsigned char *raw = sdw_xmalloc(bytes.n + 1);
    for (size_t i = 0; i < bytes.n; i++) raw[i] = (unsigned char)bytes.v[i];
    idbuf cps = {0};
    decode_replace(raw, bytes.n, &cps);
    /* .replace("</w>", " ").strip(); str.strip() also strips U+001C..U+001F. */
    uint32_t *txt = sdw_xmalloc((cps.n + 1) * sizeof *txt);
    size_t k = 0;
    for (size_t i = 0; i < cps.n; i++) {
        if (i + 4 <= cps.n && cps.v[i] == '<' && cps.v[i + 1] == '/' && cps.v[i + 2] == 'w' &&
            cps.v[i + 3] == '>') {
            txt[k++] = ' ';
            i += 3;
        } else txt[k++] = (uint32_t)cps.v[i];
    }
    size_t a = 0, b = k;
    while (a < b && (is_space(txt[a]) || (txt[a] >= 0x1C && txt[a] <= 0x1F))) a++;
    while (b > a && (is_space(txt[b - 1]) || (txt[b - 1] >= 0x1C && txt[b - 1] <= 0x1F))) b--;
    char *s = sdw_utf8_encode(txt + a, b - a, NULL);
    free(txt);
    free(cps.v);
    free(raw);
    free(bytes.v);
    return s;
}
