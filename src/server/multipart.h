/* server/multipart.h — multipart/form-data bodies (RFC 7578), as the OpenAI Images API's edits
 * endpoint receives them: named parts, files with a filename and a content type.
 *
 *   sdw_multipart mp;
 *   if (sdw_multipart_parse(content_type, body, len, &mp, &err) != SDW_OK) return 400;
 *   const sdw_multipart_part *img = sdw_multipart_get(&mp, "image");
 *   ... sdw_multipart_deinit(&mp);
 *
 * The parts' data point into the body (borrowed: keep it alive); names are copies.
 * Thread safety: reentrant.
 */
#ifndef SDW_SERVER_MULTIPART_H
#define SDW_SERVER_MULTIPART_H

#include "core/common.h"

typedef struct sdw_multipart_part {
    char *name;         /* form field name (owned) */
    char *filename;     /* NULL unless a file (owned) */
    char *content_type; /* NULL if not given (owned) */
    const uint8_t *data;
    size_t len;
} sdw_multipart_part;

typedef struct sdw_multipart {
    int n;
    sdw_multipart_part *parts;
} sdw_multipart;

#define SDW_MULTIPART_MAX_PARTS 64

/* content_type: the request's Content-Type header (must be multipart/form-data with a boundary).
 * On failure *out is zeroed and err says what is malformed. */
sdw_status sdw_multipart_parse(const char *content_type, const void *body, size_t len,
                               sdw_multipart *out, sdw_error *err);
void sdw_multipart_deinit(sdw_multipart *mp); /* NULL or zeroed ok */

/* The first part with this name, or NULL. */
const sdw_multipart_part *sdw_multipart_get(const sdw_multipart *mp, const char *name);

#endif
