// text/sentencepiece_shim.cc — the C interface of sentencepiece_shim.h over
// sentencepiece::SentencePieceProcessor (Debian's libsentencepiece). The only C++ in the project:
// every entry point catches everything, so no exception crosses into C.
#include "text/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>

struct sdw_spm {
    sentencepiece::SentencePieceProcessor proc;
};

// A programmer error (an id out of range): the C side's SDW_ASSERT, spelled for C++.
#define SHIM_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            std::fprintf(stderr, "%s:%d: fatal: assertion failed: %s\n", __FILE__, __LINE__,       \
                         #cond);                                                                   \
            std::abort();                                                                          \
        }                                                                                          \
    } while (0)

static void set_msg(char *msg, size_t cap, const char *what) {
    if (msg && cap) std::snprintf(msg, cap, "%s", what);
}

extern "C" sdw_spm *sdw_spm_load(const void *model, size_t n, char *msg, size_t msg_cap) {
    sdw_spm *sp = nullptr;
    try {
        sp = new sdw_spm;
        auto st = sp->proc.LoadFromSerializedProto(
            absl::string_view(static_cast<const char *>(model), n));
        if (!st.ok()) {
            set_msg(msg, msg_cap, st.ToString().c_str());
            delete sp;
            return nullptr;
        }
        return sp;
    } catch (const std::exception &e) {
        set_msg(msg, msg_cap, e.what());
    } catch (...) {
        set_msg(msg, msg_cap, "unknown C++ exception in sentencepiece");
    }
    delete sp;
    return nullptr;
}

extern "C" void sdw_spm_destroy(sdw_spm *sp) {
    delete sp;
}

// The accessors below read tables the processor built at load; they allocate nothing and
// cannot throw.
extern "C" int sdw_spm_n_pieces(const sdw_spm *sp) {
    return sp->proc.GetPieceSize();
}

extern "C" int sdw_spm_unk_id(const sdw_spm *sp) {
    return sp->proc.unk_id();
}

extern "C" int sdw_spm_piece_to_id(const sdw_spm *sp, const char *piece, size_t len) {
    return sp->proc.PieceToId(absl::string_view(piece, len));
}

extern "C" const char *sdw_spm_id_to_piece(const sdw_spm *sp, int id, size_t *len) {
    SHIM_ASSERT(id >= 0 && id < sp->proc.GetPieceSize());
    const std::string &s = sp->proc.IdToPiece(id);
    *len = s.size();
    return s.data();
}

extern "C" sdw_spm_type sdw_spm_piece_type(const sdw_spm *sp, int id) {
    SHIM_ASSERT(id >= 0 && id < sp->proc.GetPieceSize());
    if (sp->proc.IsUnknown(id)) return SDW_SPM_UNKNOWN;
    if (sp->proc.IsControl(id)) return SDW_SPM_CONTROL;
    if (sp->proc.IsUnused(id)) return SDW_SPM_UNUSED;
    if (sp->proc.IsByte(id)) return SDW_SPM_BYTE;
    return SDW_SPM_NORMAL;
}

extern "C" int sdw_spm_encode(const sdw_spm *sp, const char *text, size_t n, sdw_spm_piece_fn fn,
                              void *user, char *msg, size_t msg_cap) {
    try {
        // The immutable wrapper owns a SentencePieceText (whose class the installed headers
        // leave incomplete) and reads it back: EncodeAsPieces builds the same proto and copies
        // out piece() of each entry.
        sentencepiece::ImmutableSentencePieceText spt;
        auto st = sp->proc.Encode(absl::string_view(text, n), spt.mutable_proto());
        if (!st.ok()) {
            set_msg(msg, msg_cap, st.ToString().c_str());
            return -1;
        }
        const size_t count = spt.pieces_size();
        for (size_t i = 0; i < count; i++) {
            const auto piece = spt.pieces(static_cast<int>(i));
            const std::string &s = piece.piece();
            fn(user, s.data(), s.size(), static_cast<int>(piece.id()), piece.begin());
        }
        return 0;
    } catch (const std::exception &e) {
        set_msg(msg, msg_cap, e.what());
    } catch (...) {
        set_msg(msg, msg_cap, "unknown C++ exception in sentencepiece");
    }
    return -1;
}
