/* io/json_config.c — typed reads of model config files over jansson.
 *
 * jansson reads strict JSON only, so Python's NaN / Infinity / -Infinity literals are quoted
 * before parsing (they become the strings "NaN", "Infinity", "-Infinity", which the number
 * getters read back as numbers) and a parse error's column is mapped back to the text as
 * written. */
#include "io/json_config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

/* What json.dumps writes for float('-inf'), float('inf') and float('nan'); "-Infinity" first so
 * that it is not read as '-' followed by "Infinity". */
static const char *const python_literals[] = {"-Infinity", "Infinity", "NaN"};

/* ---- relaxed parsing ---- */

/* Finds the next Python literal outside strings in text[*at..len): returns its length and sets
 * *at to where it starts, or returns 0 at the end. *in_string carries the scanner's state from
 * one call to the next (start with false). */
static size_t next_literal(const char *text, size_t len, size_t *at, bool *in_string) {
    for (size_t i = *at; i < len; i++) {
        if (*in_string) {
            if (text[i] == '\\')
                i++; /* the escaped character, '"' included */
            else if (text[i] == '"')
                *in_string = false;
            continue;
        }
        if (text[i] == '"') {
            *in_string = true;
            continue;
        }
        if (text[i] != '-' && text[i] != 'I' && text[i] != 'N') continue; /* the common case */
        for (size_t w = 0; w < SDW_ARRAY_LEN(python_literals); w++) {
            size_t n = strlen(python_literals[w]);
            if (len - i >= n && memcmp(text + i, python_literals[w], n) == 0) {
                *at = i;
                return n;
            }
        }
    }
    *at = len;
    return 0;
}

/* text with every literal quoted, into buf (room for 2 * len: each literal is >= 3 bytes and
 * grows by 2). Returns the length written. */
static size_t quote_literals(const char *text, size_t len, char *buf) {
    size_t o = 0, from = 0, at = 0, n;
    bool in_string = false;
    while ((n = next_literal(text, len, &at, &in_string)) != 0) {
        memcpy(buf + o, text + from, at - from);
        o += at - from;
        buf[o++] = '"';
        memcpy(buf + o, text + at, n);
        o += n;
        buf[o++] = '"';
        at += n;
        from = at;
    }
    memcpy(buf + o, text + from, len - from);
    return o + len - from;
}

/* The line and column (characters, as jansson counts them) in the text as written of a parse
 * error jansson reported at byte pos of the quoted text: the quotes added before pos are taken
 * out (one when pos falls inside a quoted literal). */
static void source_position(const char *text, size_t len, size_t pos, int *line, int *column) {
    size_t at = 0, added = 0, n;
    bool in_string = false;
    while ((n = next_literal(text, len, &at, &in_string)) != 0 && at + added < pos) {
        added += pos >= at + added + n + 2 ? 2 : 1;
        at += n;
    }
    size_t end = SDW_MIN(pos - SDW_MIN(added, pos), len);
    *line = 1;
    *column = 0;
    for (size_t i = 0; i < end; i++) {
        if (text[i] == '\n') {
            ++*line;
            *column = 0;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) { /* not a UTF-8 continuation */
            ++*column;
        }
    }
}

/* ---- load ---- */

sdw_status sdw_json_config_parse(const char *text, size_t len, const char *label,
                                 sdw_json_config *c, sdw_error *err) {
    memset(c, 0, sizeof *c);
    size_t cap;
    if (!sdw_size_mul(len, 2, &cap) || !sdw_size_add(cap, 1, &cap))
        return sdw_error_set(err, SDW_E_NOMEM, "%s: JSON text too large", label);
    char *buf = malloc(cap);
    if (!buf)
        return sdw_error_set(err, SDW_E_NOMEM, "%s: out of memory for %zu bytes of JSON", label,
                             len);
    json_error_t je;
    json_t *root = json_loadb(buf, quote_literals(text, len, buf), 0, &je);
    free(buf);
    if (!root) {
        int line, column;
        source_position(text, len, je.position > 0 ? (size_t)je.position : 0, &line, &column);
        return sdw_error_set(err, SDW_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", label,
                             line, column, je.text);
    }
    sdw_status st = sdw_json_config_wrap(root, label, c, err);
    json_decref(root); /* c holds its own reference on success */
    return st;
}

sdw_status sdw_json_config_load(const char *path, sdw_json_config *c, sdw_error *err) {
    memset(c, 0, sizeof *c);
    char *text = NULL;
    size_t len = 0;
    sdw_status st = sdw_read_file(path, &text, &len, err);
    if (st != SDW_OK) return st;
    st = sdw_json_config_parse(text, len, path, c, err);
    free(text);
    return st;
}

sdw_status sdw_json_config_wrap(void *json_object, const char *label, sdw_json_config *c,
                                sdw_error *err) {
    memset(c, 0, sizeof *c);
    json_t *o = json_object;
    if (!json_is_object(o))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: want a JSON object, got %s", label,
                             sdw_json_type_name(o));
    c->root = json_incref(o);
    snprintf(c->what, sizeof c->what, "%s", label);
    return SDW_OK;
}

void sdw_json_config_free(sdw_json_config *c) {
    if (!c) return;
    json_decref(c->root);
    memset(c, 0, sizeof *c);
}

const char *sdw_json_type_name(const void *json_value) {
    const json_t *v = json_value;
    if (!v) return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* ---- values ---- */

/* The member, or NULL when absent or null. */
static json_t *member(const sdw_json_config *c, const char *key) {
    json_t *v = json_object_get(c->root, key);
    return json_is_null(v) ? NULL : v;
}

bool sdw_json_config_has(const sdw_json_config *c, const char *key) {
    return member(c, key) != NULL;
}

/* A JSON number, or one of the strings a Python literal became. */
static bool number_of(const json_t *v, double *x) {
    if (json_is_number(v)) {
        *x = json_number_value(v);
        return true;
    }
    const char *s = json_string_value(v);
    if (!s) return false;
    static const double values[] = {-INFINITY, INFINITY, NAN}; /* as python_literals */
    for (size_t i = 0; i < SDW_ARRAY_LEN(python_literals); i++) {
        if (strcmp(s, python_literals[i]) == 0) {
            *x = values[i];
            return true;
        }
    }
    return false;
}

/* For messages: what v is, a literal's string counted as the number it stands for. */
static const char *kind(const json_t *v) {
    double x;
    return json_is_string(v) && number_of(v, &x) ? "a number" : sdw_json_type_name(v);
}

/* Sets err to "<file>: "<key>"[<index>]: <detail>" (no index when index < 0). */
static sdw_status fail(const sdw_json_config *c, const char *key, int index, sdw_status code,
                       sdw_error *err, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static sdw_status fail(const sdw_json_config *c, const char *key, int index, sdw_status code,
                       sdw_error *err, const char *fmt, ...) {
    char detail[SDW_ERROR_MSG_MAX], at[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (index >= 0) snprintf(at, sizeof at, "[%d]", index);
    return sdw_error_set(err, code, "%s: \"%s\"%s: %s", c->what, key, at, detail);
}

/* An integer in [lo, hi] from v (an integer, or a number with an integral value); key and
 * index name it in messages. */
static sdw_status int_value(const sdw_json_config *c, const char *key, int index, const json_t *v,
                            long long lo, long long hi, long long *out, sdw_error *err) {
    if (json_is_integer(v)) { /* exact, where a double would round above 2^53 */
        long long x = json_integer_value(v);
        if (x < lo || x > hi)
            return fail(c, key, index, SDW_E_INVALID_ARG, err,
                        "want an integer in [%lld, %lld], got %lld", lo, hi, x);
        *out = x;
        return SDW_OK;
    }
    double d;
    if (!number_of(v, &d))
        return fail(c, key, index, SDW_E_FORMAT, err, "want an integer, got %s", kind(v));
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
        return fail(c, key, index, SDW_E_INVALID_ARG, err,
                    "want an integer in [%lld, %lld], got %g", lo, hi, d);
    *out = (long long)d;
    return SDW_OK;
}

sdw_status sdw_json_config_int(const sdw_json_config *c, const char *key, long long lo,
                               long long hi, int *out, sdw_error *err) {
    SDW_ASSERT(lo >= INT_MIN && hi <= INT_MAX && lo <= hi); /* the result is an int */
    const json_t *v = member(c, key);
    if (!v) return SDW_OK;
    long long x;
    sdw_status st = int_value(c, key, -1, v, lo, hi, &x, err);
    if (st == SDW_OK) *out = (int)x;
    return st;
}

sdw_status sdw_json_config_number(const sdw_json_config *c, const char *key, double lo, double hi,
                                  double *out, sdw_error *err) {
    const json_t *v = member(c, key);
    if (!v) return SDW_OK;
    double x;
    if (!number_of(v, &x))
        return fail(c, key, -1, SDW_E_FORMAT, err, "want a number, got %s", kind(v));
    if (!(x >= lo && x <= hi)) /* NaN never passes */
        return fail(c, key, -1, SDW_E_INVALID_ARG, err, "want a number in [%g, %g], got %g", lo, hi,
                    x);
    *out = x;
    return SDW_OK;
}

sdw_status sdw_json_config_float(const sdw_json_config *c, const char *key, double lo, double hi,
                                 float *out, sdw_error *err) {
    if (!member(c, key)) return SDW_OK;
    double x = 0;
    sdw_status st = sdw_json_config_number(c, key, lo, hi, &x, err);
    if (st == SDW_OK) *out = (float)x;
    return st;
}

sdw_status sdw_json_config_bool(const sdw_json_config *c, const char *key, bool *out,
                                sdw_error *err) {
    const json_t *v = member(c, key);
    if (!v) return SDW_OK;
    if (!json_is_boolean(v))
        return fail(c, key, -1, SDW_E_FORMAT, err, "want true or false, got %s", kind(v));
    *out = json_is_true(v);
    return SDW_OK;
}

sdw_status sdw_json_config_string(const sdw_json_config *c, const char *key, const char **out,
                                  sdw_error *err) {
    const json_t *v = member(c, key);
    if (!v) return SDW_OK;
    if (!json_is_string(v))
        return fail(c, key, -1, SDW_E_FORMAT, err, "want a string, got %s", kind(v));
    *out = json_string_value(v);
    return SDW_OK;
}

sdw_status sdw_json_config_enum(const sdw_json_config *c, const char *key, const char *const *names,
                                int n, int *out, sdw_error *err) {
    const char *s = NULL;
    sdw_status st = sdw_json_config_string(c, key, &s, err);
    if (st != SDW_OK || !s) return st;
    for (int i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return SDW_OK;
        }
    }
    char list[SDW_ERROR_MSG_MAX] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", names[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
    return fail(c, key, -1, SDW_E_UNSUPPORTED, err, "\"%s\" is not supported (want one of %s)", s,
                list);
}

/* The member as an array of 1..max entries (NULL when absent or null: nothing to read). */
static sdw_status list_of(const sdw_json_config *c, const char *key, int max, const char *what,
                          const json_t **out, sdw_error *err) {
    SDW_ASSERT(max >= 1);
    const json_t *v = member(c, key);
    *out = NULL;
    if (!v) return SDW_OK;
    if (!json_is_array(v))
        return fail(c, key, -1, SDW_E_FORMAT, err, "want an array of 1 to %d %s, got %s", max, what,
                    kind(v));
    if (json_array_size(v) < 1 || json_array_size(v) > (size_t)max)
        return fail(c, key, -1, SDW_E_FORMAT, err, "want an array of 1 to %d %s, got %zu entries",
                    max, what, json_array_size(v));
    *out = v;
    return SDW_OK;
}

sdw_status sdw_json_config_int_list(const sdw_json_config *c, const char *key, int max,
                                    long long lo, long long hi, int *out, int *n_out,
                                    sdw_error *err) {
    SDW_ASSERT(lo >= INT_MIN && hi <= INT_MAX && lo <= hi);
    const json_t *v;
    sdw_status st = list_of(c, key, max, "integers", &v, err);
    if (st != SDW_OK || !v) return st;
    int n = (int)json_array_size(v);
    long long x;
    for (int i = 0; i < n; i++) /* all checked before any is written: *out untouched on failure */
        if ((st = int_value(c, key, i, json_array_get(v, (size_t)i), lo, hi, &x, err)) != SDW_OK)
            return st;
    for (int i = 0; i < n; i++) {
        int_value(c, key, i, json_array_get(v, (size_t)i), lo, hi, &x, NULL);
        out[i] = (int)x;
    }
    *n_out = n;
    return SDW_OK;
}

sdw_status sdw_json_config_string_list(const sdw_json_config *c, const char *key, int max,
                                       const char **out, int *n_out, sdw_error *err) {
    const json_t *v;
    sdw_status st = list_of(c, key, max, "strings", &v, err);
    if (st != SDW_OK || !v) return st;
    int n = (int)json_array_size(v);
    for (int i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_string(e))
            return fail(c, key, i, SDW_E_FORMAT, err, "want a string, got %s", kind(e));
    }
    for (int i = 0; i < n; i++)
        out[i] = json_string_value(json_array_get(v, (size_t)i));
    *n_out = n;
    return SDW_OK;
}
