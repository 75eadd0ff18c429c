/* text/sentencepiece_shim.h — a C interface to libsentencepiece's SentencePieceProcessor (C++),
 * the implementation transformers' sentencepiece tokenizers (T5Tokenizer) call.
 *
 *   char msg[256];
 *   sdw_spm *sp = sdw_spm_load(bytes, n_bytes, msg, sizeof msg);   // a spiece.model's bytes
 *   if (!sp) fprintf(stderr, "%s\n", msg);
 *   sdw_spm_encode(sp, "a photo of a cat", 16, on_piece, user, msg, sizeof msg);
 *   sdw_spm_destroy(sp);
 *
 * A thin wrapper: every function does what the SentencePieceProcessor method it names does, no
 * more. No C++ exception leaves it: failures (including std::bad_alloc) come back as NULL or -1
 * with a message in msg (truncated to msg_cap, always NUL-terminated when msg_cap > 0).
 * Thread safety: a loaded processor is read-only; any number of threads may call the const
 * functions on it concurrently. Load and destroy are not concurrent with use.
 */
#ifndef SDW_TEXT_SENTENCEPIECE_SHIM_H
#define SDW_TEXT_SENTENCEPIECE_SHIM_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdw_spm sdw_spm;

/* The type of a vocabulary entry (ModelProto.SentencePiece.Type); NORMAL also covers
 * USER_DEFINED, which the processor does not tell apart through its public interface. */
typedef enum sdw_spm_type {
    SDW_SPM_NORMAL,
    SDW_SPM_UNKNOWN, /* "<unk>": never matched in text; what unknown characters become */
    SDW_SPM_CONTROL, /* e.g. "<pad>", "</s>": never matched in text */
    SDW_SPM_UNUSED,
    SDW_SPM_BYTE, /* "<0x41>": byte fallback */
} sdw_spm_type;

/* LoadFromSerializedProto: model[0..n) is a serialized ModelProto (a spiece.model file's
 * bytes; borrowed, copied by the library). Returns a new processor (free with
 * sdw_spm_destroy), or NULL with the library's reason in msg. */
sdw_spm *sdw_spm_load(const void *model, size_t n, char *msg, size_t msg_cap);
/* NULL is allowed. */
void sdw_spm_destroy(sdw_spm *sp);

/* GetPieceSize: vocabulary entries, ids 0 .. n-1. */
int sdw_spm_n_pieces(const sdw_spm *sp);
/* unk_id: the id of the UNKNOWN entry. */
int sdw_spm_unk_id(const sdw_spm *sp);
/* PieceToId on piece[0..len) (any bytes): the entry's id, or the unk id when no entry has that
 * exact string (as for "<unk>" itself). */
int sdw_spm_piece_to_id(const sdw_spm *sp, const char *piece, size_t len);
/* IdToPiece: the entry's string (borrowed, valid until destroy; not NUL-terminated where it
 * holds NUL) and its byte length in *len. id must be in [0, n_pieces) (asserted). */
const char *sdw_spm_id_to_piece(const sdw_spm *sp, int id, size_t *len);
/* The entry's type. id must be in [0, n_pieces) (asserted). */
sdw_spm_type sdw_spm_piece_type(const sdw_spm *sp, int id);

/* Called once per piece, in order: the piece string (borrowed for the call; for a run of
 * unknown characters the normalized text of the run, as the library reports it), its id as the
 * library gives it, and the byte offset in the input where the piece's text begins. */
typedef void (*sdw_spm_piece_fn)(void *user, const char *piece, size_t len, int id, size_t begin);

/* Encode(text[0..n)) into a SentencePieceText: exactly the pieces EncodeAsPieces gives (the
 * Python binding's encode(text, out_type=str)), with their input offsets. text should be valid
 * UTF-8 (the library turns each invalid byte into U+FFFD). Returns 0, or -1 with a message in
 * msg (fn may have been called for none, some or all pieces). */
int sdw_spm_encode(const sdw_spm *sp, const char *text, size_t n, sdw_spm_piece_fn fn, void *user,
                   char *msg, size_t msg_cap);

#ifdef __cplusplus
}
#endif

#endif
