/* io/json_config.h — typed reads of a model config file (diffusers config.json,
 * scheduler_config.json, transformers config.json), one implementation for every component.
 *
 *   sdw_json_config c;
 *   if (sdw_json_config_load("unet/config.json", &c, &err)) return err.code;
 *   int layers = 2;                                   // the default stays when the key is absent
 *   if (sdw_json_config_int(&c, "layers_per_block", 1, 64, &layers, &err)) goto fail;
 *   sdw_json_config_free(&c);
 *
 * Python writes NaN / Infinity / -Infinity literals (diffusers' "lambda_min_clipped": -Infinity)
 * that strict JSON refuses: they are read as numbers (parsing quotes them, so the strings "NaN",
 * "Infinity" and "-Infinity" read as those numbers too; a string getter sees them as strings).
 * A key that is absent or JSON null leaves *out untouched (diffusers treats null as "unset"), so
 * callers preset the default. Every error names the file and the key, and says what was wanted:
 * SDW_E_FORMAT for a wrong JSON type or an array of the wrong length, SDW_E_INVALID_ARG for a
 * number out of range (or not integral where an integer is wanted), SDW_E_UNSUPPORTED for an
 * unknown enum value. On failure *out is untouched. Plain data; a loaded config is read-only
 * (safe from many threads).
 */
#ifndef SDW_IO_JSON_CONFIG_H
#define SDW_IO_JSON_CONFIG_H

#include "core/common.h"

#include <stdbool.h>

typedef struct sdw_json_config {
    void *root;     /* json_t * object (owned) */
    char what[256]; /* the file's path (or label) for messages */
} sdw_json_config;

/* Reads and parses path; the top level must be an object. SDW_E_IO when unreadable,
 * SDW_E_FORMAT with line and column when malformed. *c is zeroed on failure. */
sdw_status sdw_json_config_load(const char *path, sdw_json_config *c, sdw_error *err);
/* The same over text of len bytes; label names it in messages. */
sdw_status sdw_json_config_parse(const char *text, size_t len, const char *label,
                                 sdw_json_config *c, sdw_error *err);
/* Wraps an already parsed json_t object (borrowed: a new reference is taken and dropped by
 * sdw_json_config_free), e.g. the "text_config" member of a CLIPModel config. */
sdw_status sdw_json_config_wrap(void *json_object, const char *label, sdw_json_config *c,
                                sdw_error *err);
void sdw_json_config_free(sdw_json_config *c); /* NULL ok; zeroes it */

bool sdw_json_config_has(const sdw_json_config *c, const char *key); /* present and not null */

/* What a JSON value is, for messages: "an object", "an array", "a string", "an integer",
 * "a number", "a boolean", "null" ("nothing" for NULL). json_value is a json_t * (borrowed). */
const char *sdw_json_type_name(const void *json_value);

/* An integer in [lo, hi] (a JSON integer, or a real with an integral value). */
sdw_status sdw_json_config_int(const sdw_json_config *c, const char *key, long long lo,
                               long long hi, int *out, sdw_error *err);
/* A number in [lo, hi] (NaN never passes; infinities pass when the range admits them). */
sdw_status sdw_json_config_number(const sdw_json_config *c, const char *key, double lo, double hi,
                                  double *out, sdw_error *err);
sdw_status sdw_json_config_float(const sdw_json_config *c, const char *key, double lo, double hi,
                                 float *out, sdw_error *err);
sdw_status sdw_json_config_bool(const sdw_json_config *c, const char *key, bool *out,
                                sdw_error *err);
/* A string (borrowed: valid while c is loaded). */
sdw_status sdw_json_config_string(const sdw_json_config *c, const char *key, const char **out,
                                  sdw_error *err);
/* A string that must be one of names[0..n) (*out = its index). */
sdw_status sdw_json_config_enum(const sdw_json_config *c, const char *key, const char *const *names,
                                int n, int *out, sdw_error *err);
/* An array of 1..max integers, each in [lo, hi]: *n_out = its length. */
sdw_status sdw_json_config_int_list(const sdw_json_config *c, const char *key, int max,
                                    long long lo, long long hi, int *out, int *n_out,
                                    sdw_error *err);
/* An array of 1..max strings (borrowed): *n_out = its length. */
sdw_status sdw_json_config_string_list(const sdw_json_config *c, const char *key, int max,
                                       const char **out, int *n_out, sdw_error *err);

#endif
