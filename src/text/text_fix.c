/* text/text_fix.c — ftfy.fix_text (default config, minus fix_encoding) on code points.
 * Each step names the ftfy function it mirrors; see text_fix.h for the list and the order. */
#include "text/text_fix.h"

#include "core/common.h"

#include <string.h>
#include <utf8proc.h>

/* ---- UTF-8 ---- */

sdw_status sdw_utf8_decode(const char *s, size_t len, uint32_t **out, size_t *n, sdw_error *err) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    uint32_t *cp = sdw_xmalloc((len + 1) * sizeof *cp);
    size_t k = 0;
    /* utf8proc_iterate is strict (no overlongs, surrogates, or values above U+10FFFF) and reads
     * a NUL byte as U+0000. */
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t used = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
        if (used < 0) {
            free(cp);
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "invalid UTF-8 at byte offset %zu (byte 0x%02X)", i, p[i]);
        }
        cp[k++] = (uint32_t)c;
        i += (size_t)used;
    }
    *out = cp;
    *n = k;
    return SDW_OK;
}

char *sdw_utf8_encode(const uint32_t *cp, size_t n, size_t *len) {
    char *s = sdw_xmalloc(4 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = cp[i];
        SDW_ASSERT(v <= 0x10FFFF && (v < 0xD800 || v > 0xDFFF));
        if (v < 0x80) {
            s[k++] = (char)v;
        } else if (v < 0x800) {
            s[k++] = (char)(0xC0 | (v >> 6));
            s[k++] = (char)(0x80 | (v & 0x3F));
        } else if (v < 0x10000) {
            s[k++] = (char)(0xE0 | (v >> 12));
            s[k++] = (char)(0x80 | ((v >> 6) & 0x3F));
            s[k++] = (char)(0x80 | (v & 0x3F));
        } else {
            s[k++] = (char)(0xF0 | (v >> 18));
            s[k++] = (char)(0x80 | ((v >> 12) & 0x3F));
            s[k++] = (char)(0x80 | ((v >> 6) & 0x3F));
            s[k++] = (char)(0x80 | (v & 0x3F));
        }
    }
    s[k] = 0;
    if (len) *len = k;
    return s;
}

/* ---- growable code point buffer ---- */

typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static void cp_reserve(cpbuf *b, size_t extra) {
    if (b->n + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 16;
    while (cap < b->n + extra) cap *= 2;
    uint32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v) SDW_ABORT("out of memory growing a %zu-code-point buffer", cap);
    b->v = v;
    b->cap = cap;
}
static void cp_push(cpbuf *b, uint32_t c) {
    cp_reserve(b, 1);
    b->v[b->n++] = c;
}
static void cp_append(cpbuf *b, const uint32_t *c, size_t n) {
    cp_reserve(b, n);
    if (n) memcpy(b->v + b->n, c, n * sizeof *c);
    b->n += n;
}

/* Windows-1252 for bytes 0x80..0x9F; the five bytes it leaves undefined map to themselves, as in
 * ftfy's "sloppy-windows-1252" and in Python's html._invalid_charrefs. */
static const uint16_t k_cp1252_c1[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

/* ---- unescape_html ---- */

typedef struct html_entity {
    const char *name;
    uint32_t cp[3];
} html_entity;

static const html_entity k_entities[] = {
#include "text/html_entities.inc"
};

static bool is_ascii_alnum(uint32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static const html_entity *find_entity(const char *name) {
    size_t lo = 0, hi = SDW_ARRAY_LEN(k_entities);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, k_entities[mid].name);
        if (c == 0) return &k_entities[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* html.unescape("&#<body>;") as ftfy uses it: the body must be all decimal digits or x/X plus
 * all hex digits (otherwise Python leaves a ';' behind and ftfy keeps the text). Writes the
 * replacement (0 or 1 code points) and returns false when the text is to be kept. */
static bool numeric_charref(const char *body, uint32_t *out, int *n_out) {
    int base = 10;
    const char *d = body;
    if (*d == 'x' || *d == 'X') { base = 16; d++; }
    if (!*d) return false;
    uint32_t num = 0;
    for (const char *q = d; *q; q++) {
        int v;
        if (*q >= '0' && *q <= '9') v = *q - '0';
        else if (base == 16 && *q >= 'a' && *q <= 'f') v = *q - 'a' + 10;
        else if (base == 16 && *q >= 'A' && *q <= 'F') v = *q - 'A' + 10;
        else return false;
        num = num > 0x10FFFF ? num : num * (uint32_t)base + (uint32_t)v; /* saturate */
    }
    uint32_t c;
    if (num == 0) c = 0xFFFD;
    else if (num == 0x0D) c = 0x0D;
    else if (num >= 0x80 && num <= 0x9F) c = k_cp1252_c1[num - 0x80];
    else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) c = 0xFFFD;
    else if ((num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F) ||
             num == 0x7F || (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE) {
        *n_out = 0; /* Python drops these code points */
        return true;
    } else c = num;
    if (c == ';') return false; /* ftfy: "the semicolon should be consumed" — it sees one left */
    out[0] = c;
    *n_out = 1;
    return true;
}

/* ftfy.fixes.unescape_html: replaces matches of &#?[0-9A-Za-z]{1,24}; that name an HTML5
 * entity (or its all-caps form) or a numeric character reference. */
static void unescape_html(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n;) {
        if (in[i] != '&') { cp_push(out, in[i++]); continue; }
        size_t j = i + 1;
        bool hash = j < n && in[j] == '#';
        if (hash) j++;
        size_t len = 0;
        while (j + len < n && len <= 24 && is_ascii_alnum(in[j + len])) len++;
        if (len < 1 || len > 24 || j + len >= n || in[j + len] != ';') {
            cp_push(out, in[i++]);
            continue;
        }
        char name[27];
        size_t k = 0;
        if (hash) name[k++] = '#';
        for (size_t q = 0; q < len; q++) name[k++] = (char)in[j + q];
        name[k] = 0;
        size_t end = j + len + 1; /* past ';' */
        const html_entity *e = find_entity(name);
        uint32_t rep[3];
        int n_rep = 0;
        bool replace = false;
        if (e) {
            for (n_rep = 0; n_rep < 3 && e->cp[n_rep]; n_rep++) rep[n_rep] = e->cp[n_rep];
            replace = true;
        } else if (hash) {
            replace = numeric_charref(name + 1, rep, &n_rep);
        }
        if (replace) cp_append(out, rep, (size_t)n_rep);
        else cp_append(out, in + i, end - i);
        i = end;
    }
}

/* ---- the per-character fixers ---- */

/* ftfy.fixes.fix_c1_controls: C1 controls decoded as (sloppy) Windows-1252. */
static void fix_c1_controls(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++)
        cp_push(out, in[i] >= 0x80 && in[i] <= 0x9F ? k_cp1252_c1[in[i] - 0x80] : in[i]);
}

/* ftfy.chardata.LIGATURES (fix_latin_ligatures). */
static const struct { uint32_t from, to[3]; } k_ligatures[] = {
    {0x0132, {'I', 'J'}},    {0x0133, {'i', 'j'}},    {0x0149, {0x02BC, 'n'}},
    {0x01C4, {'D', 0x017D}}, {0x01C5, {'D', 0x017E}}, {0x01C6, {'d', 0x017E}},
    {0x01C7, {'L', 'J'}},    {0x01C8, {'L', 'j'}},    {0x01C9, {'l', 'j'}},
    {0x01CA, {'N', 'J'}},    {0x01CB, {'N', 'j'}},    {0x01CC, {'n', 'j'}},
    {0x01F1, {'D', 'Z'}},    {0x01F2, {'D', 'z'}},    {0x01F3, {'d', 'z'}},
    {0xFB00, {'f', 'f'}},    {0xFB01, {'f', 'i'}},    {0xFB02, {'f', 'l'}},
    {0xFB03, {'f', 'f', 'i'}}, {0xFB04, {'f', 'f', 'l'}}, {0xFB05, {0x017F, 't'}},
    {0xFB06, {'s', 't'}},
};

static void fix_latin_ligatures(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        bool done = false;
        if ((c >= 0x0132 && c <= 0x01F3) || (c >= 0xFB00 && c <= 0xFB06)) {
            for (size_t k = 0; k < SDW_ARRAY_LEN(k_ligatures); k++) {
                if (k_ligatures[k].from != c) continue;
                for (int q = 0; q < 3 && k_ligatures[k].to[q]; q++) cp_push(out, k_ligatures[k].to[q]);
                done = true;
                break;
            }
        }
        if (!done) cp_push(out, c);
    }
}

/* ftfy.fixes.fix_character_width: U+3000 -> space; U+FF01..U+FFEF -> their NFKC form. */
static void fix_character_width(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == 0x3000) { cp_push(out, ' '); continue; }
        if (c < 0xFF01 || c > 0xFFEF) { cp_push(out, c); continue; }
        char *u8 = sdw_utf8_encode(&c, 1, NULL);
        utf8proc_uint8_t *nf = utf8proc_NFKC((const utf8proc_uint8_t *)u8);
        uint32_t *cps = NULL;
        size_t m = 0;
        if (!nf || sdw_utf8_decode((const char *)nf, strlen((const char *)nf), &cps, &m, NULL) != SDW_OK)
            SDW_ABORT("utf8proc_NFKC failed on U+%04X", (unsigned)c);
        cp_append(out, cps, m);
        free(cps);
        free(nf);
        free(u8);
    }
}

/* ftfy.fixes.uncurl_quotes (ftfy 6 also straightens U+02BC MODIFIER LETTER APOSTROPHE). */
static void uncurl_quotes(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
        else if (c >= 0x201C && c <= 0x201F) c = '"';
        cp_push(out, c);
    }
}

/* ftfy.fixes.fix_line_breaks: CRLF, CR, U+2028, U+2029, U+0085 -> LF. */
static void fix_line_breaks(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == '\r' && i + 1 < n && in[i + 1] == '\n') continue;
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
        cp_push(out, c);
    }
}

static bool is_unicode_digit(uint32_t c) {
    return c < 0x80 ? (c >= '0' && c <= '9') : utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND;
}

/* ftfy.fixes.remove_terminal_escapes: drops \033\[(\d|;)*[a-zA-Z] (\d: any Unicode digit). */
static void remove_terminal_escapes(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n;) {
        if (in[i] == 0x1B && i + 1 < n && in[i + 1] == '[') {
            size_t j = i + 2;
            while (j < n && (in[j] == ';' || is_unicode_digit(in[j]))) j++;
            if (j < n && ((in[j] >= 'a' && in[j] <= 'z') || (in[j] >= 'A' && in[j] <= 'Z'))) {
                i = j + 1;
                continue;
            }
        }
        cp_push(out, in[i++]);
    }
}

/* ftfy.chardata.CONTROL_CHARS (remove_control_chars). */
static void remove_control_chars(const uint32_t *in, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
            (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC))
            continue;
        cp_push(out, c);
    }
}

/* unicodedata.normalize("NFC", text). */
static void normalize_nfc(const uint32_t *in, size_t n, cpbuf *out) {
    size_t len;
    char *u8 = sdw_utf8_encode(in, n, &len);
    utf8proc_uint8_t *nf = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)u8, (utf8proc_ssize_t)len, &nf,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    uint32_t *cps = NULL;
    size_t m = 0;
    if (r < 0 || sdw_utf8_decode((const char *)nf, (size_t)r, &cps, &m, NULL) != SDW_OK)
        SDW_ABORT("utf8proc NFC failed: %s", r < 0 ? utf8proc_errmsg(r) : "bad output");
    cp_append(out, cps, m);
    free(cps);
    free(nf);
    free(u8);
}

/* ---- fix_text ---- */

typedef void (*fixer_fn)(const uint32_t *in, size_t n, cpbuf *out);

static void apply(fixer_fn f, cpbuf *cur, cpbuf *tmp) {
    tmp->n = 0;
    f(cur->v, cur->n, tmp);
    cpbuf t = *cur;
    *cur = *tmp;
    *tmp = t;
}

/* ftfy.fix_and_explain on one segment: every fixer in order, until nothing changes. */
static void fix_segment(const uint32_t *in, size_t n, bool unescape, cpbuf *out) {
    static const fixer_fn k_fixers[] = {
        fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes,
        fix_line_breaks, remove_terminal_escapes, remove_control_chars, normalize_nfc,
    };
    cpbuf cur = {0}, tmp = {0}, orig = {0};
    cp_append(&cur, in, n);
    for (;;) {
        orig.n = 0;
        cp_append(&orig, cur.v, cur.n);
        if (unescape) apply(unescape_html, &cur, &tmp);
        for (size_t k = 0; k < SDW_ARRAY_LEN(k_fixers); k++) apply(k_fixers[k], &cur, &tmp);
        if (cur.n == orig.n && (cur.n == 0 || !memcmp(cur.v, orig.v, cur.n * sizeof *cur.v))) break;
    }
    cp_append(out, cur.v, cur.n);
    free(cur.v);
    free(tmp.v);
    free(orig.v);
}

/* ftfy.fix_text: segments end after each '\n' (or every 10^6 code points, ftfy's
 * max_decode_length). unescape_html="auto" is switched off for good at the first segment that
 * holds a '<' (ftfy replaces its config and keeps the replacement for later segments). */
void sdw_text_fix(const uint32_t *in, size_t n, uint32_t **out, size_t *n_out) {
    const size_t max_decode_length = 1000000;
    cpbuf res = {0};
    bool unescape = true;
    for (size_t pos = 0; pos < n;) {
        size_t end = pos;
        while (end < n && in[end] != '\n') end++;
        end = end < n ? end + 1 : n;
        if (end - pos > max_decode_length) end = pos + max_decode_length;
        for (size_t i = pos; unescape && i < end; i++)
            if (in[i] == '<') unescape = false;
        fix_segment(in + pos, end - pos, unescape, &res);
        pos = end;
    }
    cp_reserve(&res, 1); /* never NULL */
    *out = res.v;
    *n_out = res.n;
}
