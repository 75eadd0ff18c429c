/* text/prompt_parser.h — AUTOMATIC1111's prompt syntax: emphasis and BREAK, as its
 * modules/prompt_parser.py parse_prompt_attention reads a prompt, and the "Original" emphasis
 * its sd_emphasis.py applies to an encoder's output.
 *
 *   sdw_prompt_pieces pp;
 *   if (sdw_prompt_parse("a (red:1.3) [cat] BREAK sky", &pp, &err)) return err.code;
 *   for (int i = 0; i < pp.n; i++)   // "a " 1, "red" 1.3, " " 1, "cat" 1/1.1, BREAK, "sky" 1
 *       use(pp.v[i].text, pp.v[i].weight, pp.v[i].is_break);
 *   sdw_prompt_pieces_free(&pp);
 *
 * The syntax (weights are Python floats, multiplied in A1111's order, so they are equal to the
 * bit to A1111's before they are rounded to float32 for use):
 *   (text)        weight x 1.1; nested: ((text)) x 1.21 ...
 *   (text:1.3)    weight x 1.3: ':' then [+-]?[.0-9]+ then ')' closes the innermost '('
 *   [text]        weight x (1 / 1.1)
 *   \( \) \[ \] \\   the literal character; a backslash before anything else is dropped
 *   BREAK         (upper case, a word of its own) ends the current 75-token chunk; the
 *                 whitespace around it is dropped
 *   brackets left open at the end apply to the end of the prompt (every '(' first, then
 *   every '['); a ')' or ']' with nothing open, and a ':' not part of a weight, are text.
 * Adjacent pieces of equal weight are merged (their text is tokenized as one), an empty
 * prompt is one empty piece of weight 1.
 * Two deliberate differences from A1111, where its behaviour is an accident: a BREAK inside
 * brackets still breaks (A1111 multiplies its marker weight -1 by the bracket and then reads
 * it as the word "BREAK" with a negative weight), and "\s" / "\b" around BREAK use Unicode
 * White_Space-like spaces and letters/numbers (utf8proc categories L*, N*) as Python's re
 * does up to the odd code point. A weight that is not a number Python's float() reads
 * ("(a:1.2.3)", "(a:.)") fails the request, as it fails A1111's.
 *
 * Thread safety: pure functions.
 */
#ifndef SDW_TEXT_PROMPT_PARSER_H
#define SDW_TEXT_PROMPT_PARSER_H

#include "sdw/status.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct sdw_prompt_piece {
    const char *text; /* NUL-terminated UTF-8 (as given: not validated here); "" for BREAK */
    double weight;    /* the multiplier of every token of text; 1 for BREAK */
    bool is_break;    /* BREAK: start a new chunk here */
} sdw_prompt_piece;

typedef struct sdw_prompt_pieces {
    sdw_prompt_piece *v; /* [n], n >= 1 */
    int n;
    char *storage; /* the pieces' text */
} sdw_prompt_pieces;

/* Parses prompt (NUL-terminated, NULL = "") into pieces. On success *out holds new pieces
 * (free with sdw_prompt_pieces_free). On failure (SDW_E_INVALID_ARG: a weight that is not a
 * number, named with its byte offset) *out is untouched. */
sdw_status sdw_prompt_parse(const char *prompt, sdw_prompt_pieces *out, sdw_error *err);
void sdw_prompt_pieces_free(sdw_prompt_pieces *p); /* NULL ok; zeroes it */

/* The pieces' text joined, BREAK as one space: the prompt without its markup (for an encoder
 * that takes no weights). Returns a new string (free()). */
char *sdw_prompt_pieces_text(const sdw_prompt_pieces *p);

/* A1111's "Original" emphasis (sd_emphasis.EmphasisOriginal.after_transformers) on one
 * encoded window z [L, W]: z[i] *= mult[i], then z *= mean(z before) / mean(z after), the
 * means over all L x W values (accumulated in double). Nothing changes when every multiplier
 * is 1. Returns SDW_E_INVALID_ARG (z untouched) when the result would not be finite (weights
 * that overflow, or a weighted mean of 0). */
sdw_status sdw_emphasis_apply(float *z, int L, int W, const float *mult, sdw_error *err);

#endif
