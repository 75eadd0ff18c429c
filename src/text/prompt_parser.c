/* text/prompt_parser.c — see prompt_parser.h. parse_prompt_attention scans the prompt with one
 * regular expression whose alternatives, tried in order at each position, are: \( \) \[ \]
 * \\ (escapes), a lone backslash, '(', '[', ":<number>)", ')', ']', a run of anything else
 * but backslash, brackets and ':', and a lone ':'. Every byte matches one of them, so the scan
 * below is a plain left-to-right loop over bytes (UTF-8 continuation bytes are never one of
 * the ASCII markup characters). */
#include "text/prompt_parser.h"

#include "core/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* One entry of A1111's `res`: text [off, off + len) of the output buffer. Entries are appended
 * in order and their text is appended with them, so neighbours' texts are contiguous and
 * merging two entries only drops the boundary. */
typedef struct entry {
    size_t off, len;
    double weight;
    bool is_break;
} entry;

typedef struct parse {
    entry *v;
    size_t n, cap;
    char *buf;
    size_t len;
    size_t *round, *square; /* open brackets: the entry index they started at */
    size_t n_round, n_square;
} parse;

static void add_entry(parse *p, const char *text, size_t len, double weight, bool is_break) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->v = realloc(p->v, p->cap * sizeof *p->v);
        if (!p->v) SDW_ABORT("out of memory");
    }
    memcpy(p->buf + p->len, text, len); /* buf holds the whole prompt: text never grows */
    p->v[p->n++] = (entry){p->len, len, weight, is_break};
    p->len += len;
}

/* multiply_range: every entry from `from` on (a BREAK keeps weight 1: see the header). */
static void multiply_range(parse *p, size_t from, double m) {
    for (size_t i = from; i < p->n; i++)
        if (!p->v[i].is_break) p->v[i].weight *= m;
}

/* The code point at s[i] (n bytes available); invalid UTF-8 reads as U+FFFD (neither a space
 * nor a word character, as no valid prompt can hold it: the tokenizer rejects it). */
static int32_t cp_at(const char *s, size_t i, size_t n, size_t *len) {
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i),
                                          &c);
    *len = k > 0 ? (size_t)k : 1;
    return k > 0 ? c : 0xFFFD;
}

/* Python's str.isspace() (bidirectional class WS, B or S, or category Zs): what \s matches. */
static bool py_space(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* \w for str patterns: letters, numbers and '_'. */
static bool py_word(int32_t c) {
    if (c == '_') return true;
    if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return true;
    default:
        return false;
    }
}

/* Start of the code point before byte i of s (i > 0). */
static size_t prev_cp(const char *s, size_t i) {
    do i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

/* re.split(r"\s*\bBREAK\b\s*", run): the run's text pieces with BREAK entries between them. The
 * word boundaries are the run's own (its ends are boundaries next to a word character). */
static void split_breaks(parse *p, const char *run, size_t n) {
    size_t piece = 0; /* start of the current text piece */
    for (size_t i = 0; i + 5 <= n; i++) {
        if (memcmp(run + i, "BREAK", 5) != 0) continue;
        size_t len;
        if (i > 0 && py_word(cp_at(run, prev_cp(run, i), n, &len))) continue;
        if (i + 5 < n && py_word(cp_at(run, i + 5, n, &len))) continue;
        size_t start = i; /* \s* before: the whitespace run back to the current piece */
        while (start > piece) {
            size_t q = prev_cp(run, start); /* stray continuation bytes may reach past piece */
            if (q < piece || !py_space(cp_at(run, q, n, &len))) break;
            start = q;
        }
        size_t end = i + 5;
        while (end < n) {
            int32_t c = cp_at(run, end, n, &len);
            if (!py_space(c)) break;
            end += len;
        }
        add_entry(p, run + piece, start - piece, 1.0, false);
        add_entry(p, "", 0, 1.0, true);
        piece = end;
        i = end - 1;
    }
    add_entry(p, run + piece, n - piece, 1.0, false);
}

/* ':' [+-]? [.0-9]+ ')' at s: its length (0 = no match) and the number's span. */
static size_t weight_len(const char *s, const char **num, size_t *num_len) {
    size_t i = 1;
    if (s[i] == '+' || s[i] == '-') i++;
    size_t d = i;
    while (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) i++;
    if (i == d || s[i] != ')') return 0;
    *num = s + 1;
    *num_len = i - 1;
    return i + 1;
}

/* Python's float() on [+-]?[.0-9]+: digits with at most one '.', at least one digit. Converted
 * as "<digits>e<exponent>" so the result does not depend on the C locale's decimal point
 * (glibc's strtod rounds correctly, as Python does). */
static bool py_float(const char *s, size_t n, double *out) {
    char *buf = sdw_xmalloc(n + 32);
    size_t k = 0, i = 0, n_digits = 0;
    long frac = 0;
    bool dot = false;
    if (s[0] == '+' || s[0] == '-') buf[k++] = s[i++];
    for (; i < n; i++) {
        if (s[i] == '.') {
            if (dot) break;
            dot = true;
        } else {
            buf[k++] = s[i];
            n_digits++;
            frac += dot;
        }
    }
    bool ok = i == n && n_digits > 0 && frac <= 100000000;
    if (ok) {
        snprintf(buf + k, 32, "e-%ld", frac);
        *out = strtod(buf, NULL);
    }
    free(buf);
    return ok;
}

static sdw_status scan(parse *p, const char *s, size_t n, sdw_error *err) {
    static const double round_mult = 1.1, square_mult = 1 / 1.1; /* Python's doubles */
    for (size_t i = 0; i < n;) {
        const char c = s[i];
        const char *num;
        size_t num_len, wl;
        if (c == '\\') {
            const char e = i + 1 < n ? s[i + 1] : 0;
            if (e == '(' || e == ')' || e == '[' || e == ']' || e == '\\') {
                add_entry(p, s + i + 1, 1, 1.0, false);
                i += 2;
            } else { /* a lone backslash: text[1:] = "" */
                add_entry(p, "", 0, 1.0, false);
                i += 1;
            }
        } else if (c == '(') {
            p->round[p->n_round++] = p->n;
            i++;
        } else if (c == '[') {
            p->square[p->n_square++] = p->n;
            i++;
        } else if (c == ':' && (wl = weight_len(s + i, &num, &num_len)) && p->n_round) {
            double w;
            if (!py_float(num, num_len, &w))
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "prompt: emphasis weight '%.*s' at byte %zu is not a number",
                                     (int)SDW_MIN(num_len, 40), num, i + 1);
            multiply_range(p, p->round[--p->n_round], w);
            i += wl;
        } else if (c == ')' && p->n_round) {
            multiply_range(p, p->round[--p->n_round], round_mult);
            i++;
        } else if (c == ']' && p->n_square) {
            multiply_range(p, p->square[--p->n_square], square_mult);
            i++;
        } else {
            /* text: a whole weight with no '(' open, a lone ':', ')' or ']', or a run */
            size_t len = 1;
            if (c == ':') {
                if ((wl = weight_len(s + i, &num, &num_len))) len = wl;
            } else if (c != ')' && c != ']') {
                len = 0;
                while (i + len < n && !strchr("\\()[]:", s[i + len])) len++;
            }
            split_breaks(p, s + i, len);
            i += len;
        }
    }
    for (size_t k = 0; k < p->n_round; k++) multiply_range(p, p->round[k], round_mult);
    for (size_t k = 0; k < p->n_square; k++) multiply_range(p, p->square[k], square_mult);
    return SDW_OK;
}

sdw_status sdw_prompt_parse(const char *prompt, sdw_prompt_pieces *out, sdw_error *err) {
    const char *s = prompt ? prompt : "";
    const size_t n = strlen(s);
    parse p = {0};
    p.buf = sdw_xmalloc(n + 1);
    p.round = sdw_xmalloc((n + 1) * sizeof *p.round);
    p.square = sdw_xmalloc((n + 1) * sizeof *p.square);
    sdw_status st = scan(&p, s, n, err);
    free(p.round);
    free(p.square);
    if (st) {
        free(p.v);
        free(p.buf);
        return st;
    }
    if (p.n == 0) add_entry(&p, "", 0, 1.0, false);
    /* merge runs of identical weights (never across a BREAK) */
    size_t m = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (m && !p.v[i].is_break && !p.v[m - 1].is_break && p.v[m - 1].weight == p.v[i].weight)
            p.v[m - 1].len += p.v[i].len; /* contiguous: see entry */
        else
            p.v[m++] = p.v[i];
    }
    if (m > INT32_MAX) SDW_ABORT("prompt of more than 2^31 pieces");
    /* the pieces as NUL-terminated strings */
    char *storage = sdw_xmalloc(p.len + m);
    sdw_prompt_piece *v = sdw_xmalloc(m * sizeof *v);
    size_t at = 0;
    for (size_t i = 0; i < m; i++) {
        memcpy(storage + at, p.buf + p.v[i].off, p.v[i].len);
        storage[at + p.v[i].len] = 0;
        v[i] = (sdw_prompt_piece){storage + at, p.v[i].weight, p.v[i].is_break};
        at += p.v[i].len + 1;
    }
    free(p.v);
    free(p.buf);
    *out = (sdw_prompt_pieces){v, (int)m, storage};
    return SDW_OK;
}

void sdw_prompt_pieces_free(sdw_prompt_pieces *p) {
    if (!p) return;
    free(p->v);
    free(p->storage);
    memset(p, 0, sizeof *p);
}

char *sdw_prompt_pieces_text(const sdw_prompt_pieces *p) {
    size_t n = 1;
    for (int i = 0; i < p->n; i++) n += strlen(p->v[i].text) + 1;
    char *s = sdw_xmalloc(n), *w = s;
    for (int i = 0; i < p->n; i++) {
        const char *t = p->v[i].is_break ? " " : p->v[i].text;
        const size_t k = strlen(t);
        memcpy(w, t, k);
        w += k;
    }
    *w = 0;
    return s;
}

sdw_status sdw_emphasis_apply(float *z, int L, int W, const float *mult, sdw_error *err) {
    bool all_one = true;
    for (int i = 0; i < L; i++) all_one &= mult[i] == 1.0f;
    if (all_one) return SDW_OK; /* A1111: z * 1 * (mean / mean) = z exactly */
    const size_t n = (size_t)L * W;
    double before = 0, after = 0;
    for (int i = 0; i < L; i++) {
        double row = 0;
        for (int c = 0; c < W; c++) row += z[(size_t)i * W + c];
        before += row;
        after += row * mult[i];
    }
    /* The weighted values are float32 products in the reference; their sum in double differs
     * from sum(z_i) * m_i by rounding only. */
    const double ratio = before / after;
    if (!isfinite(ratio) || !isfinite(before) || !isfinite(after))
        return sdw_error_set(err, SDW_E_INVALID_ARG,
                             "prompt: the emphasis weights make the text encoding non-finite "
                             "(mean %g weighted to %g)",
                             before / (double)n, after / (double)n);
    /* check before writing: z stays untouched on failure */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < L; i++) {
            const float m = mult[i];
            for (int c = 0; c < W; c++) {
                float *v = &z[(size_t)i * W + c];
                const float x = (*v * m) * (float)ratio;
                if (pass) *v = x;
                else if (!isfinite(x))
                    return sdw_error_set(err, SDW_E_INVALID_ARG,
                                         "prompt: the emphasis weights make the text encoding "
                                         "non-finite (weight %g)",
                                         (double)m);
            }
        }
    return SDW_OK;
}
