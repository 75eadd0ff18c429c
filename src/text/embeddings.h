/* text/embeddings.h — textual-inversion embeddings from a folder (`--embeddings-dir`), as
 * AUTOMATIC1111 loads them (modules/textual_inversion/textual_inversion.py): every
 * .safetensors file of the folder and its subfolders is one embedding whose token is the
 * file's stem ("easynegative.safetensors" -> easynegative).
 *
 *   sdw_embeddings *e;
 *   if (sdw_embeddings_load("embeddings", &e, &err)) return err.code;
 *   for (int i = 0; i < sdw_embeddings_count(e); i++) show(sdw_embeddings_info(e, i));
 *   ...sdw_clip_prompt_opts.embeddings = e...
 *   sdw_embeddings_destroy(e);
 *
 * What a file may hold (create_embedding_from_data):
 *   - one tensor, whatever its name (A1111's `emb_params`, a diffusers concept's token name):
 *     [n, width] vectors, or [width] for one vector — for a single CLIP encoder of that width;
 *   - `clip_l` [n, 768] and `clip_g` [n, 1280] (SDXL embeddings; other tensors beside them are
 *     ignored): each for the encoder of that role, both with the same n.
 * Files that do not (several unrelated tensors, no float data, non-finite values, more than
 * SDW_EMBEDDING_MAX_VECTORS vectors, a file larger than SDW_EMBEDDING_MAX_BYTES), pickles
 * (.pt, .bin, .ckpt, .pth: never unpickled), names that are not UTF-8 and a second file with
 * the same stem are kept in the list as skipped, with the reason, and are never used (A1111
 * prints an error and skips them too). Other files (preview images, notes) are ignored.
 *
 * The scan is bounded and stays inside the folder: hidden entries are skipped, subfolders are
 * read to SDW_EMBEDDINGS_MAX_DEPTH levels, at most SDW_EMBEDDINGS_MAX_ENTRIES entries are
 * looked at, a symbolic link is followed only to a regular file inside the folder (a link to a
 * folder, or out of the folder, is skipped with the reason), and nothing a request sends names
 * a path: prompts only ever name the stems found here.
 *
 * Thread safety: a loaded set is immutable; share it between threads freely.
 */
#ifndef SDW_TEXT_EMBEDDINGS_H
#define SDW_TEXT_EMBEDDINGS_H

#include "sdw/status.h"

#include <stdbool.h>

#define SDW_EMBEDDING_MAX_VECTORS 75         /* one prompt chunk: A1111 cannot place more */
#define SDW_EMBEDDING_MAX_BYTES (64u << 20)  /* an embedding is kilobytes; this is no embedding */
#define SDW_EMBEDDINGS_MAX_DEPTH 8
#define SDW_EMBEDDINGS_MAX_ENTRIES 100000

typedef struct sdw_embeddings sdw_embeddings;

/* Scans dir (see above). On success *out is a new set (possibly empty; destroy with
 * sdw_embeddings_destroy); a file that cannot be used is listed as skipped, not an error. On
 * failure (SDW_E_NOT_FOUND: dir is not a readable folder; SDW_E_INVALID_ARG: more entries than
 * the bound) *out is untouched. */
sdw_status sdw_embeddings_load(const char *dir, sdw_embeddings **out, sdw_error *err);
void sdw_embeddings_destroy(sdw_embeddings *e); /* NULL ok */

typedef struct sdw_embedding_info {
    const char *name;    /* the stem: the token prompts use */
    const char *file;    /* the path relative to the folder */
    int n_vectors;       /* tokens it stands for; 0 when skipped */
    int width;           /* features per vector (clip_l + clip_g for an SDXL file; A1111's
                          * "shape"); 0 when skipped */
    bool two_encoders;   /* clip_l + clip_g */
    const char *skipped; /* NULL when usable, else why not */
} sdw_embedding_info;

/* Entries sorted by name, then file: usable and skipped ones. Strings are borrowed from e. */
int sdw_embeddings_count(const sdw_embeddings *e);
sdw_embedding_info sdw_embeddings_info(const sdw_embeddings *e, int i);
/* The usable entry named name (exact, case-sensitive), or -1. */
int sdw_embeddings_find(const sdw_embeddings *e, const char *name);
/* Where entry i's first vector sits in the set's numbering of vectors: the sum of n_vectors
 * of the usable entries before it. A token for vector j of entry i gets the id
 * vocab + offset + j, as diffusers numbers tokens added in this order. */
int sdw_embeddings_offset(const sdw_embeddings *e, int i);

/* The vectors usable entry i has for one text encoder: key "clip_l" / "clip_g" names the
 * encoder's role in a two-encoder model (SDXL, SD3; FLUX's CLIP is "clip_l"), NULL a model with
 * one CLIP encoder. The encoder takes the file's tensor of its role, else the file's one
 * tensor; with key NULL, else the one tensor of the file whose width is the encoder's (an SDXL
 * file's clip_l on SD 1.x, as Forge does). On success *rows ([*n, width], borrowed from e) and
 * *n are set. SDW_E_INVALID_ARG naming the embedding, the widths and the role when it has
 * nothing for this encoder (an embedding made for another model). */
sdw_status sdw_embeddings_vectors(const sdw_embeddings *e, int i, const char *key, int width,
                                  const float **rows, int *n, sdw_error *err);

#endif
