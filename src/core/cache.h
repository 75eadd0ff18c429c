/* core/cache.h — small facts remembered between runs in the user's cache folder
 * ($XDG_CACHE_HOME/sdworker, else $HOME/.cache/sdworker): one text file per kind of fact, one
 * "key<TAB>value" line per entry (the CPU backend keeps its measured precision choices here).
 *
 *   char v[128];
 *   if (!sdw_cache_get("precision.txt", key, v, sizeof v)) {     // absent, or file damaged
 *       ... measure ...
 *       sdw_cache_put("precision.txt", key, "bf16 ...", NULL);   // best effort
 *   }
 *
 * A cache is an optimisation, never a requirement: a missing or read-only home, a missing
 * folder or a damaged file reads as "absent", and a put that cannot write says so in its status
 * (callers log it and go on). A damaged file (not ours, truncated, a line without a tab, too
 * large) is ignored as a whole and replaced by the next put. Puts replace the file atomically
 * (a temporary file renamed over it), so concurrent processes never see half a file; when two
 * put at once, one of their entries may be lost, which only costs a measurement.
 * Keys and values are single lines: tabs and newlines in them are replaced by spaces.
 * Thread safety: reentrant (no state besides the files).
 */
#ifndef SDW_CORE_CACHE_H
#define SDW_CORE_CACHE_H

#include "sdw/status.h"

#include <stdbool.h>
#include <stddef.h>

/* The cache folder's path into buf (not created): false when neither XDG_CACHE_HOME nor HOME
 * is set to an absolute path, or it does not fit in cap. */
bool sdw_cache_dir(char *buf, size_t cap);
/* The value of key in cache file `name` into val (NUL-terminated, truncated to cap); false
 * when there is none (no file, damaged file, no such key). */
bool sdw_cache_get(const char *name, const char *key, char *val, size_t cap);
/* Sets key to value in cache file `name`, creating the folder (0700) when missing. SDW_E_IO
 * with err set when the folder or file cannot be written (read-only home, full disk). */
sdw_status sdw_cache_put(const char *name, const char *key, const char *value, sdw_error *err);

#endif
