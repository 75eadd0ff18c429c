// text/sentencepiece_shim.cc — the C interface of sentencepiece_shim.h over
// sentencepiece::SentencePieceProcessor (Debian's libsentencepiece). The only C++ in the project:
// every entry point catches everything, so no exception crosses into C.
#include "text/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

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

// ---- what libsentencepiece trusts in a model file ----
//
// A normalizer's precompiled_charsmap is a darts-clone double-array trie followed by the
// normalized strings it maps to: [u32 trie bytes][trie: u32 units][NUL-terminated strings].
// sentencepiece reads it as it is: a unit pointing outside the array, or a value outside the
// strings, makes Normalize read out of bounds on the first input that walks there (the fuzz
// target fuzz_t5_spiece found it). So a model's charsmaps are checked here before it is loaded:
// every trie position a prefix search can reach from the root stays inside the array, and every
// value names a string that ends inside the blob.

namespace {

// darts-clone's unit fields (darts.h: DoubleArrayUnit).
uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
bool unit_has_leaf(uint32_t u) { return ((u >> 8) & 1) == 1; }
uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFFu); }
uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

// Checks one precompiled_charsmap; false with *why set when a search could leave it.
bool charsmap_ok(const uint8_t *blob, size_t n, const char **why) {
    if (n == 0) return true; // no rules: sentencepiece builds no trie
    uint32_t trie_bytes;
    if (n <= 4) return *why = "shorter than its header", false;
    std::memcpy(&trie_bytes, blob, 4); // little-endian, as the files are written here
    if (trie_bytes >= n - 4 + 1 || trie_bytes < 4) return *why = "its trie size is wrong", false;
    const uint8_t *units = blob + 4;
    const size_t n_units = trie_bytes / 4;
    const char *strings = reinterpret_cast<const char *>(blob + 4 + trie_bytes);
    const size_t n_strings = n - 4 - trie_bytes;
    auto unit = [&](size_t i) {
        uint32_t u;
        std::memcpy(&u, units + 4 * i, 4);
        return u;
    };
    // Depth-first over the nodes a search can reach. A node at base b reads its children at
    // b ^ c for every byte c: the whole 256-unit block of b must be inside the array.
    std::vector<uint8_t> seen(n_units, 0);
    std::vector<size_t> todo{unit_offset(unit(0))};
    while (!todo.empty()) {
        const size_t base = todo.back();
        todo.pop_back();
        if ((base | 0xFF) >= n_units) return *why = "a node's children lie outside its trie", false;
        if (seen[base]) continue;
        seen[base] = 1;
        for (uint32_t c = 0; c < 256; c++) {
            const size_t pos = base ^ c;
            const uint32_t u = unit(pos);
            if (unit_label(u) != c) continue;
            const size_t next = pos ^ unit_offset(u);
            if (unit_has_leaf(u)) {
                if (next >= n_units) return *why = "a value lies outside its trie", false;
                const uint32_t v = unit_value(unit(next));
                if (v >= n_strings || !std::memchr(strings + v, 0, n_strings - v))
                    return *why = "a rule points outside its normalized strings", false;
            }
            todo.push_back(next);
        }
    }
    return true;
}

// Protocol-buffer wire format: one field at p (below end) into *field, *wire and, for
// length-delimited fields, [*data, *data + *len). Returns the position after it, or nullptr
// when the bytes are malformed (sentencepiece's own parser then says so).
const uint8_t *next_field(const uint8_t *p, const uint8_t *end, uint64_t *field, int *wire,
                          const uint8_t **data, size_t *len) {
    auto varint = [&](uint64_t *v) {
        *v = 0;
        for (int shift = 0; p < end && shift < 64; shift += 7) {
            const uint8_t b = *p++;
            *v |= uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return true;
        }
        return false;
    };
    uint64_t key, v;
    if (!varint(&key)) return nullptr;
    *field = key >> 3;
    *wire = int(key & 7);
    switch (*wire) {
    case 0: return varint(&v) ? p : nullptr;
    case 1: return end - p >= 8 ? p + 8 : nullptr;
    case 5: return end - p >= 4 ? p + 4 : nullptr;
    case 2:
        if (!varint(&v) || v > uint64_t(end - p)) return nullptr;
        *data = p;
        *len = size_t(v);
        return p + v;
    default: return nullptr;
    }
}

// Every precompiled_charsmap (field 2) of the model's normalizer_spec (3) and
// denormalizer_spec (5).
bool model_charsmaps_ok(const uint8_t *p, size_t n, const char **why) {
    const uint8_t *end = p + n, *data = nullptr;
    uint64_t field;
    int wire;
    size_t len = 0;
    while (p < end) {
        if (!(p = next_field(p, end, &field, &wire, &data, &len))) return true;
        if (wire != 2 || (field != 3 && field != 5)) continue;
        const uint8_t *q = data, *qend = data + len, *cm = nullptr;
        size_t cm_len = 0;
        uint64_t f;
        int w;
        while (q < qend) {
            if (!(q = next_field(q, qend, &f, &w, &cm, &cm_len))) return true;
            if (w == 2 && f == 2 && !charsmap_ok(cm, cm_len, why)) return false;
        }
    }
    return true;
}

} // namespace

extern "C" sdw_spm *sdw_spm_load(const void *model, size_t n, char *msg, size_t msg_cap) {
    sdw_spm *sp = nullptr;
    try {
        const char *why = nullptr;
        if (!model_charsmaps_ok(static_cast<const uint8_t *>(model), n, &why)) {
            std::string m = std::string("its normalizer's precompiled_charsmap is corrupt: ") + why;
            set_msg(msg, msg_cap, m.c_str());
            return nullptr;
        }
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
