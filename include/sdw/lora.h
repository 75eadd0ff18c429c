/* sdw/lora.h — the LoRA files of a LoRA folder (sdw_load_options.lora_dir, `--lora-dir DIR`) and
 * the syntax requests name them with.
 *
 *   sdw_lora_entry *list; int n;
 *   if (sdw_lora_list("loras", &list, &n, &err) == SDW_OK) {      // /sdapi/v1/loras
 *       for (int i = 0; i < n; i++) printf("%s  %s\n", list[i].name, list[i].path);
 *       sdw_lora_list_free(list, n);
 *   }
 *   char *path;
 *   if (sdw_lora_resolve("loras", "styles/detail", &path, &err) == SDW_OK) ... free(path);
 *
 * A LoRA is named by its file's stem ("detail" for loras/styles/detail.safetensors, as
 * AUTOMATIC1111 does) or by its path relative to the folder ("styles/detail", with or without
 * the extension). A name never leads outside the folder: absolute names, ".." components and
 * symlinks resolving outside it are refused. Only .safetensors files are LoRAs (pickled
 * .pt/.ckpt files are never loaded).
 *
 * In a prompt, <lora:NAME> or <lora:NAME:M> (AUTOMATIC1111 / Forge syntax; <lyco:...> alike)
 * applies LoRA NAME with multiplier M (default 1) and is removed from the text the encoders see;
 * a name that does not resolve fails the request naming it.
 * Thread safety: every function is reentrant (the folder is read each call).
 */
#ifndef SDW_LORA_H
#define SDW_LORA_H

#include "sdw/status.h"

#include <stddef.h>
#include <stdint.h>

/* Multipliers are finite numbers in [-SDW_LORA_MAX_MULTIPLIER, SDW_LORA_MAX_MULTIPLIER]. */
#define SDW_LORA_MAX_MULTIPLIER 100.0f

typedef struct sdw_lora_entry {
    char *name;   /* the stem: what <lora:NAME> and sdw_lora_ref.name take (owned by the list) */
    char *path;   /* relative to the folder: "styles/detail.safetensors" (owned by the list) */
    int64_t size; /* bytes */
} sdw_lora_entry;

/* The .safetensors files under dir, subfolders included (hidden entries skipped; a symlink is
 * followed when it resolves to a file inside dir), sorted by path. On success *out is a new
 * array of *n entries (free with sdw_lora_list_free; NULL when empty); on failure (dir is not
 * a readable folder) both are untouched. */
sdw_status sdw_lora_list(const char *dir, sdw_lora_entry **out, int *n, sdw_error *err);
void sdw_lora_list_free(sdw_lora_entry *list, int n); /* NULL ok */

/* The file LoRA `name` means in dir (see above): a bare stem is looked for in dir, then in its
 * subfolders (two files with that stem in different subfolders: SDW_E_INVALID_ARG naming both).
 * On success *path is a new string (free()): the file's real path. SDW_E_NOT_FOUND when no
 * file answers, SDW_E_INVALID_ARG for a name that would leave dir; *path untouched then. */
sdw_status sdw_lora_resolve(const char *dir, const char *name, char **path, sdw_error *err);

/* Parses the len bytes at s as a multiplier (decimal, optional sign and exponent; the whole
 * text). SDW_E_INVALID_ARG naming the text when it is not a number or out of range; *out
 * untouched then. */
sdw_status sdw_lora_multiplier_parse(const char *s, size_t len, float *out, sdw_error *err);

/* One <lora:NAME[:M]> tag of a prompt. */
typedef struct sdw_lora_tag {
    char *name; /* owned by the tag list */
    float multiplier;
} sdw_lora_tag;

/* The LoRA tags of prompt (NULL = none), in order, and the prompt without them. On success
 * *tags is a new array of *n tags (sdw_lora_tags_free; NULL when none) and, when stripped is
 * not NULL, *stripped a new string (free()). A malformed tag (empty name, a multiplier that is
 * not a number, more fields than NAME:M, no closing '>') is SDW_E_INVALID_ARG quoting it;
 * outputs untouched then. Names are not resolved here. */
sdw_status sdw_lora_prompt_tags(const char *prompt, sdw_lora_tag **tags, int *n, char **stripped,
                                sdw_error *err);
void sdw_lora_tags_free(sdw_lora_tag *tags, int n); /* NULL ok */

#endif
