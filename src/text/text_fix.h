/* text/text_fix.h — ftfy.fix_text for prompts, and the UTF-8 <-> code point conversions it runs on.
 *
 *   uint32_t *cp; size_t n;
 *   if (sdw_utf8_decode(s, strlen(s), &cp, &n, &err) != SDW_OK) return err.code;
 *   uint32_t *fixed; size_t n_fixed;
 *   sdw_text_fix(cp, n, &fixed, &n_fixed);      // as ftfy.fix_text(s) with the default config
 *   free(cp); free(fixed);
 *
 * Why: transformers' CLIPTokenizer runs every prompt through ftfy.fix_text (when ftfy is
 * installed, as it is wherever Stable Diffusion runs), so matching its token ids means matching
 * ftfy first. Implemented (ftfy 6.x default config, in its order, repeated until nothing
 * changes, line by line):
 *   unescape_html ("auto": off for a line containing '<' and for every line after it),
 *   fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes,
 *   fix_line_breaks, remove_terminal_escapes, remove_control_chars, NFC normalisation.
 * Not implemented: fix_encoding (mojibake repair such as "cafÃ©" -> "café", a statistical
 * heuristic over ftfy's character tables) and its sub-steps. Text that ftfy would re-decode
 * therefore comes out unchanged here. fix_surrogates cannot apply: valid UTF-8 holds none.
 *
 * Thread safety: all functions are pure (no shared state); call from any thread.
 */
#ifndef SDW_TEXT_TEXT_FIX_H
#define SDW_TEXT_TEXT_FIX_H

#include "sdw/status.h"

#include <stddef.h>
#include <stdint.h>

/* Decodes len bytes of strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF; NUL
 * bytes are accepted as U+0000). On success *out is a new array (free()) of *n code points
 * (never NULL, even for n == 0). On failure returns SDW_E_INVALID_ARG naming the byte offset of
 * the first bad sequence; *out and *n are untouched. */
sdw_status sdw_utf8_decode(const char *s, size_t len, uint32_t **out, size_t *n, sdw_error *err);

/* Encodes n code points (each must be a Unicode scalar value: asserted) as UTF-8. Returns a new
 * NUL-terminated string (free()); its byte length goes to *len when len is non-NULL. */
char *sdw_utf8_encode(const uint32_t *cp, size_t n, size_t *len);

/* ftfy.fix_text(text) with ftfy's default TextFixerConfig, minus the steps listed above.
 * Returns a new array (free()) of *n_out code points in *out; never fails (aborts on OOM). */
void sdw_text_fix(const uint32_t *in, size_t n, uint32_t **out, size_t *n_out);

#endif
