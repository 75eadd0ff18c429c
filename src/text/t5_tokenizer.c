/* text/t5_tokenizer.c — transformers 4.30.2's T5Tokenizer (tokenization_t5.py, with the
 * special-token handling of tokenization_utils.py's PreTrainedTokenizer.tokenize) in C, over
 * libsentencepiece through text/sentencepiece_shim.h.
 *
 * Sections: model facts (what the bounded encoder may assume), configuration (the JSON files
 * as from_pretrained reads them), special tokens (Trie.split and the whitespace stripping),
 * sentencepiece encoding (whole, or only the prefix a window needs), and the API. */
#include "text/t5_tokenizer.h"

#include "core/common.h"
#include "text/sentencepiece_shim.h"

#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

#define EXTRA_ID_PREFIX "<extra_id_"
#define EXTRA_ID_PREFIX_LEN 10
#define SPM_UNIGRAM 1 /* TrainerSpec.model_type UNIGRAM, the default */

/* A no-split token: a special token transformers matches in the raw text and never hands to
 * sentencepiece. */
typedef struct special {
    char *text;
    size_t len;
    int32_t id;
    bool added;  /* configured as an AddedToken: strips only as lstrip/rstrip say */
    bool lstrip; /* (added only) the text before the token loses its trailing whitespace */
    bool rstrip; /* (added only) the text after it loses its leading whitespace */
} special;

/* Trie over code points of the special tokens (transformers' Trie). */
typedef struct tnode {
    uint32_t cp;
    int32_t child, sibling; /* -1: none */
    int32_t special;        /* index of the token ending here, -1: not a token's end */
} tnode;

struct sdw_t5_tokenizer {
    sdw_spm *sp;  /* the model: vocabulary look-ups, and encoding unless enc is set */
    sdw_spm *enc; /* the model with byte fallback added (see byte_fallback_model), or NULL */
    int n_pieces, extra_ids, vocab; /* vocab = T5Tokenizer.vocab_size = n_pieces + extra_ids */
    int32_t eos, pad;
    special *specials;
    int n_specials;
    tnode *trie; /* [0] is the root */
    int32_t n_nodes, nodes_cap;
    /* encode_prefix's preconditions and bounds (see there) */
    bool local;       /* a unigram model without byte fallback whose charsmap parsed */
    size_t lookahead; /* W: bytes of input the normalizer reads to decide one step */
    size_t max_piece; /* bytes of the longest vocabulary entry */
};

/* ---- UTF-8 and Python's whitespace ---- */

/* Decodes the strict UTF-8 character at s[i] (no overlongs, surrogates or values above
 * U+10FFFF) into *cp; returns its length, or 0 where s[i..] is not valid UTF-8. */
static int u8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned char c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (!len || c > 0xF4 || n - i < (size_t)len) return 0;
    uint32_t v = c & (0x3F >> (len - 1));
    for (int k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i + k] & 0x3F);
    }
    static const uint32_t k_min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < k_min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Python's str.isspace(), which str.strip() uses: bidirectional class WS, B or S, or Zs. */
static bool py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- model facts, from the model file's protobuf ---- */

typedef struct pbuf {
    const uint8_t *p, *end;
} pbuf;

static bool pb_varint(pbuf *b, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && b->p < b->end; shift += 7) {
        uint8_t c = *b->p++;
        r |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Reads one field of a protobuf message: its number, and its value (a varint in *v, or the
 * bytes of a length-delimited field in *data, *len; fixed-width values are skipped). */
static bool pb_field(pbuf *b, uint64_t *field, uint64_t *v, const uint8_t **data, size_t *len) {
    uint64_t key;
    *data = NULL;
    if (!pb_varint(b, &key)) return false;
    *field = key >> 3;
    switch (key & 7) {
    case 0:
        return pb_varint(b, v);
    case 1:
        if (b->end - b->p < 8) return false;
        b->p += 8;
        return true;
    case 5:
        if (b->end - b->p < 4) return false;
        b->p += 4;
        return true;
    case 2:
        if (!pb_varint(b, v) || *v > (uint64_t)(b->end - b->p)) return false;
        *data = b->p;
        *len = (size_t)*v;
        b->p += *len;
        return true;
    default:
        return false;
    }
}

/* From a serialized ModelProto: TrainerSpec.model_type (field 2.3) and
 * NormalizerSpec.precompiled_charsmap (field 3.2); later occurrences win, as protobuf merges. */
static bool model_spec(const uint8_t *m, size_t n, uint64_t *model_type, const uint8_t **charsmap,
                       size_t *charsmap_len) {
    pbuf b = {m, m + n};
    *model_type = SPM_UNIGRAM;
    *charsmap = NULL;
    *charsmap_len = 0;
    while (b.p < b.end) {
        uint64_t f, v = 0;
        const uint8_t *d;
        size_t len = 0;
        if (!pb_field(&b, &f, &v, &d, &len)) return false;
        if (!d || (f != 2 && f != 3)) continue;
        pbuf in = {d, d + len};
        while (in.p < in.end) {
            uint64_t g, w = 0;
            const uint8_t *e;
            size_t elen = 0;
            if (!pb_field(&in, &g, &w, &e, &elen)) return false;
            if (f == 2 && g == 3 && !e) *model_type = w;
            if (f == 3 && g == 2 && e) *charsmap = e, *charsmap_len = elen;
        }
    }
    return true;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The longest key, in bytes, of a precompiled charsmap (sentencepiece's <uint32 trie size>
 * <darts-clone double array> <normalized strings>): how far its normalizer looks ahead. The
 * array is walked as darts-clone's commonPrefixSearch walks it: a node's children sit at
 * base ^ c for the bytes c whose unit there has label c, and a child's own base is its
 * position ^ its offset. darts-clone shares common suffixes (a DAWG), so nodes are reached on
 * several paths: the longest key below each base is computed once, depth first. Returns -1 for
 * a blob that does not walk as an acyclic automaton (then nothing is assumed about the
 * normalizer). */
static long charsmap_max_key(const uint8_t *blob, size_t n) {
    if (n == 0) return 0; /* no rules: the normalizer copies characters */
    if (n <= 4 || le32(blob) >= n - 4 || le32(blob) < 4) return -1;
    const uint8_t *units = blob + 4;
    const size_t n_units = le32(blob) / 4, n_pos = (n_units | 0xFF) + 1;
#define DU(i) le32(units + 4 * (size_t)(i))
#define DU_OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))
#define DU_LABEL(u) ((u) & ((1u << 31) | 0xFFu))
#define DU_HAS_LEAF(u) (((u) >> 8) & 1u)
    /* base -> longest key below it; -1 while open (a cycle if met again), -2 unseen */
    long *longest = sdw_xmalloc(n_pos * sizeof *longest);
    for (size_t i = 0; i < n_pos; i++)
        longest[i] = -2;
    typedef struct frame {
        uint32_t base, c;
    } frame;
    frame *stack = sdw_xmalloc((n_pos + 1) * sizeof *stack);
    size_t top = 0;
    long result = -1;
    uint32_t root = DU_OFFSET(DU(0));
    if (root >= n_pos) goto done;
    stack[top++] = (frame){root, 1};
    longest[root] = -1;
    while (top) {
        frame *fr = &stack[top - 1];
        for (; fr->c < 256; fr->c++) { /* keys are text: no NUL, so c from 1 */
            uint32_t child = fr->base ^ fr->c;
            if (child >= n_units || DU_LABEL(DU(child)) != fr->c) continue;
            uint32_t b = child ^ DU_OFFSET(DU(child));
            if (b >= n_pos || longest[b] == -1) goto done; /* out of the array, or a cycle */
            if (longest[b] == -2) {
                longest[b] = -1;
                fr->c++;
                stack[top++] = (frame){b, 1};
                break;
            }
        }
        if (top && &stack[top - 1] != fr) continue; /* descended */
        long best = 0;
        for (uint32_t c = 1; c < 256; c++) {
            uint32_t child = fr->base ^ c;
            if (child >= n_units || DU_LABEL(DU(child)) != c) continue;
            uint32_t u = DU(child);
            long below = longest[child ^ DU_OFFSET(u)];
            if (DU_HAS_LEAF(u)) best = SDW_MAX(best, 1);
            if (below > 0) best = SDW_MAX(best, below + 1);
        }
        longest[fr->base] = best;
        top--;
    }
    result = longest[root];
done:
#undef DU
#undef DU_OFFSET
#undef DU_LABEL
#undef DU_HAS_LEAF
    free(stack);
    free(longest);
    return result;
}

/* Fills max_piece, lookahead and local (see encode_prefix) from the model; *has_bytes says
 * whether it has byte pieces (byte fallback of its own). */
static void model_facts(sdw_t5_tokenizer *t, const uint8_t *model, size_t n, bool *has_bytes_out) {
    bool has_bytes = false;
    t->max_piece = 1;
    for (int id = 0; id < t->n_pieces; id++) {
        size_t len;
        sdw_spm_id_to_piece(t->sp, id, &len);
        t->max_piece = SDW_MAX(t->max_piece, len);
        has_bytes |= sdw_spm_piece_type(t->sp, id) == SDW_SPM_BYTE;
    }
    uint64_t model_type;
    const uint8_t *charsmap;
    size_t charsmap_len;
    long max_key = -1;
    if (model_spec(model, n, &model_type, &charsmap, &charsmap_len))
        max_key = charsmap_max_key(charsmap, charsmap_len);
    /* The normalizer's step at a position reads the longest user-defined symbol there (at most
     * max_piece bytes), the longest charsmap key (max_key), or one UTF-8 character (<= 4). */
    t->lookahead = SDW_MAX(SDW_MAX(t->max_piece, (size_t)SDW_MAX(max_key, 0)), 4);
    t->local = model_type == SPM_UNIGRAM && !has_bytes && max_key >= 0;
    *has_bytes_out = has_bytes;
}

/* The model again, serialized, with 256 byte pieces "<0x00>".."<0xFF>" appended (type BYTE,
 * score 0), TrainerSpec.byte_fallback set (an appended trainer_spec merges into the first, as
 * protobuf merges repeated messages) and the self-test samples (field 4) dropped, as their
 * expected output assumes no byte fallback. Returns a new buffer of *out_n bytes, or NULL.
 *
 * Why: libsentencepiece joins a run of unknown characters into one piece by appending each
 * character's text to the piece so far, quadratic in the run (a 100 KB run of characters the
 * vocabulary lacks, e.g. Chinese for T5, takes seconds, a megabyte minutes). With byte
 * fallback it emits each unknown character's bytes as byte pieces instead, in linear time,
 * and on_piece joins consecutive ones back into the piece the plain model gives. Nothing else
 * changes: byte pieces are reserved entries (never lattice nodes), min/max scores count NORMAL
 * pieces only, ids below n_pieces stay, and the normalizer does not read byte_fallback. */
static uint8_t *byte_fallback_model(const uint8_t *m, size_t n, size_t *out_n) {
    /* SentencePiece { piece: "<0xNN>" (1), score: 0.0f (2), type: BYTE = 6 (3) } as a field 1 */
    static const char k_piece[] = "\x0A\x0F"
                                  "\x0A\x06<0x00>"
                                  "\x15\x00\x00\x00\x00"
                                  "\x18\x06";
    const size_t piece_len = sizeof k_piece - 1;
    size_t cap = n + 256 * piece_len + 5;
    uint8_t *out = sdw_xmalloc(cap), *o = out;
    pbuf b = {m, m + n};
    while (b.p < b.end) {
        const uint8_t *field_start = b.p, *d;
        uint64_t f, v;
        size_t len;
        if (!pb_field(&b, &f, &v, &d, &len)) {
            free(out);
            return NULL;
        }
        if (f == 4) continue; /* self_test_data */
        memcpy(o, field_start, (size_t)(b.p - field_start));
        o += b.p - field_start;
    }
    static const char k_hex[] = "0123456789ABCDEF";
    for (int c = 0; c < 256; c++) {
        memcpy(o, k_piece, piece_len);
        o[7] = (uint8_t)k_hex[c >> 4];
        o[8] = (uint8_t)k_hex[c & 15];
        o += piece_len;
    }
    /* trainer_spec { byte_fallback (35): true }, merged into the model's own */
    static const uint8_t k_trainer[] = {0x12, 3, 0x98, 0x02, 1};
    memcpy(o, k_trainer, sizeof k_trainer);
    o += sizeof k_trainer;
    *out_n = (size_t)(o - out);
    return out;
}

/* ---- configuration: tokenizer_config.json + special_tokens_map.json ---- */

/* PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES in its order, which decides whose
 * AddedToken flags a text gets when two attributes name it (the first AddedToken). */
enum { ROLE_BOS, ROLE_EOS, ROLE_UNK, ROLE_SEP, ROLE_PAD, ROLE_CLS, ROLE_MASK, N_ROLES };
static const char *const k_roles[N_ROLES] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                             "pad_token", "cls_token", "mask_token"};

typedef struct tokspec {
    char *text; /* NULL: None */
    bool added, lstrip, rstrip;
} tokspec;

typedef struct tconfig {
    tokspec role[N_ROLES];
    tokspec *extra; /* additional_special_tokens; NULL with extra_set false: None */
    size_t n_extra;
    bool extra_set;
    long long extra_ids;
} tconfig;

static void tokspec_clear(tokspec *s) {
    free(s->text);
    *s = (tokspec){0};
}

static void tconfig_free(tconfig *c) {
    for (int r = 0; r < N_ROLES; r++)
        tokspec_clear(&c->role[r]);
    for (size_t i = 0; i < c->n_extra; i++)
        tokspec_clear(&c->extra[i]);
    free(c->extra);
}

/* A special-token value: a string; null (None); or an AddedToken, which tokenizer_config.json
 * spells {"__type": "AddedToken", "content": ...} and special_tokens_map.json as any object
 * (from_pretrained converts exactly those). Only content, lstrip and rstrip matter here;
 * AddedToken ignores keys it does not know. */
static sdw_status parse_token(const json_t *v, bool from_map, const char *file, const char *key,
                              tokspec *out, sdw_error *err) {
    tokspec_clear(out);
    if (json_is_null(v)) return SDW_OK;
    if (json_is_string(v)) {
        out->text = sdw_xstrdup(json_string_value(v));
        return SDW_OK;
    }
    const json_t *type = json_object_get(v, "__type");
    if (!json_is_object(v) ||
        (!from_map && !(json_is_string(type) && !strcmp(json_string_value(type), "AddedToken"))))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: %s is neither a string nor an AddedToken",
                             file, key);
    const json_t *content = json_object_get(v, "content");
    const json_t *l = json_object_get(v, "lstrip"), *r = json_object_get(v, "rstrip");
    if (!json_is_string(content) || (l && !json_is_boolean(l)) || (r && !json_is_boolean(r)))
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: %s: an AddedToken needs a string \"content\" "
                             "and boolean \"lstrip\"/\"rstrip\"",
                             file, key);
    out->text = sdw_xstrdup(json_string_value(content));
    out->added = true;
    out->lstrip = json_is_true(l);
    out->rstrip = json_is_true(r);
    return SDW_OK;
}

static sdw_status parse_token_list(const json_t *v, bool from_map, const char *file, tconfig *c,
                                   sdw_error *err) {
    for (size_t i = 0; i < c->n_extra; i++)
        tokspec_clear(&c->extra[i]);
    free(c->extra);
    c->extra = NULL;
    c->n_extra = 0;
    c->extra_set = !json_is_null(v);
    if (json_is_null(v)) return SDW_OK;
    if (!json_is_array(v))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: additional_special_tokens is not a list",
                             file);
    c->extra = sdw_xcalloc(json_array_size(v) + 1, sizeof *c->extra);
    for (size_t i = 0; i < json_array_size(v); i++) {
        sdw_status st = parse_token(json_array_get(v, i), from_map, file,
                                    "an additional_special_tokens entry", &c->extra[i], err);
        if (st == SDW_OK && !c->extra[i].text)
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: additional_special_tokens holds null", file);
        if (st != SDW_OK) return st;
        c->n_extra++;
    }
    return SDW_OK;
}

/* The JSON object in path; NULL with *st SDW_OK when there is no such file. */
static json_t *load_json(const char *path, sdw_status *st, sdw_error *err) {
    struct stat sb;
    *st = SDW_OK;
    if (stat(path, &sb) != 0) return NULL;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        *st = sdw_error_set(err, SDW_E_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line,
                            jerr.text);
    else if (!json_is_object(root)) {
        json_decref(root);
        root = NULL;
        *st = sdw_error_set(err, SDW_E_FORMAT, "%s: not a JSON object", path);
    }
    return root;
}

/* T5Tokenizer.__init__ with tokenizer_config.json's values (the defaults where absent). */
static sdw_status read_tokenizer_config(const char *path, tconfig *c, sdw_error *err) {
    c->role[ROLE_EOS].text = sdw_xstrdup("</s>");
    c->role[ROLE_UNK].text = sdw_xstrdup("<unk>");
    c->role[ROLE_PAD].text = sdw_xstrdup("<pad>");
    c->extra_ids = 100;
    sdw_status st = SDW_OK;
    json_t *root = path ? load_json(path, &st, err) : NULL;
    if (st != SDW_OK) return st;
    if (!root) goto defaults;
    for (int r = 0; r < N_ROLES && st == SDW_OK; r++) {
        const json_t *v = json_object_get(root, k_roles[r]);
        if (v) st = parse_token(v, false, path, k_roles[r], &c->role[r], err);
    }
    const json_t *v = json_object_get(root, "extra_ids");
    if (st == SDW_OK && v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: extra_ids is not a count", path);
        else
            c->extra_ids = json_integer_value(v);
    }
    v = json_object_get(root, "additional_special_tokens");
    if (st == SDW_OK && v) st = parse_token_list(v, false, path, c, err);
    v = json_object_get(root, "sp_model_kwargs");
    if (st == SDW_OK && v && !json_is_null(v) && !(json_is_object(v) && json_object_size(v) == 0))
        st = sdw_error_set(err, SDW_E_UNSUPPORTED,
                           "%s: sp_model_kwargs (sampling options) are not "
                           "supported",
                           path);
    if (st == SDW_OK && c->extra_set && c->extra_ids > 0) {
        /* T5Tokenizer insists the list holds extra_ids distinct texts containing "extra_id". */
        size_t distinct = 0;
        for (size_t i = 0; i < c->n_extra; i++) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                seen = !strcmp(c->extra[j].text, c->extra[i].text);
            distinct += !seen && strstr(c->extra[i].text, "extra_id");
        }
        if ((long long)distinct != c->extra_ids)
            st = sdw_error_set(
                err, SDW_E_FORMAT,
                "%s: extra_ids is %lld but "
                "additional_special_tokens holds %zu <extra_id_N> tokens (transformers "
                "refuses this)",
                path, c->extra_ids, distinct);
    }
    json_decref(root);
defaults:
    if (st == SDW_OK && !c->extra_set && c->extra_ids > 0) {
        c->extra_set = true;
        c->extra = sdw_xcalloc((size_t)c->extra_ids, sizeof *c->extra);
        for (long long i = 0; i < c->extra_ids; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, EXTRA_ID_PREFIX "%lld>", i);
            c->extra[c->n_extra++].text = sdw_xstrdup(buf);
        }
    }
    return st;
}

/* special_tokens_map.json: from_pretrained sets each attribute it names over __init__'s. */
static sdw_status read_special_map(const char *path, tconfig *c, sdw_error *err) {
    sdw_status st;
    json_t *root = load_json(path, &st, err);
    if (!root) return st;
    for (int r = 0; r < N_ROLES && st == SDW_OK; r++) {
        const json_t *v = json_object_get(root, k_roles[r]);
        if (v) st = parse_token(v, true, path, k_roles[r], &c->role[r], err);
    }
    const json_t *v = json_object_get(root, "additional_special_tokens");
    if (st == SDW_OK && v) st = parse_token_list(v, true, path, c, err);
    json_decref(root);
    return st;
}

/* added_tokens.json would add tokens past the vocabulary; an empty one adds nothing. */
static sdw_status check_added_tokens(const char *path, sdw_error *err) {
    sdw_status st;
    json_t *root = load_json(path, &st, err);
    if (root && json_object_size(root) > 0)
        st = sdw_error_set(err, SDW_E_UNSUPPORTED,
                           "%s: tokens added beyond the sentencepiece "
                           "vocabulary are not supported",
                           path);
    json_decref(root);
    return st;
}

/* ---- special tokens ---- */

/* T5Tokenizer._convert_token_to_id: "<extra_id_N>" -> vocab - 1 - N (re.match(r"<extra_id_(\d+)>"),
 * so text after the '>' is ignored), anything else sentencepiece's PieceToId. Returns false
 * where the reference raises (the prefix without digits and '>'); Python's \d also takes
 * non-ASCII digits, which only a vocabulary holding such a piece could ever show. */
static bool convert_token(const sdw_t5_tokenizer *t, const char *s, size_t n, int64_t *id) {
    if (n < EXTRA_ID_PREFIX_LEN || memcmp(s, EXTRA_ID_PREFIX, EXTRA_ID_PREFIX_LEN)) {
        *id = sdw_spm_piece_to_id(t->sp, s, n);
        return true;
    }
    size_t i = EXTRA_ID_PREFIX_LEN;
    int64_t num = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        num = num > (INT64_MAX - 9) / 10 ? INT64_MAX : num * 10 + (s[i] - '0');
        i++;
    }
    if (i == EXTRA_ID_PREFIX_LEN || i == n || s[i] != '>') return false;
    *id = num == INT64_MAX ? -1 : (int64_t)t->vocab - 1 - num;
    return true;
}

static int32_t trie_child(const sdw_t5_tokenizer *t, int32_t node, uint32_t cp) {
    for (int32_t c = t->trie[node].child; c >= 0; c = t->trie[c].sibling)
        if (t->trie[c].cp == cp) return c;
    return -1;
}

static void trie_add(sdw_t5_tokenizer *t, const special *sp, int32_t index) {
    int32_t node = 0;
    for (size_t i = 0; i < sp->len;) {
        uint32_t cp;
        int len = u8_next((const unsigned char *)sp->text, sp->len, i, &cp);
        SDW_ASSERT(len > 0); /* jansson rejects invalid UTF-8 */
        i += (size_t)len;
        int32_t c = trie_child(t, node, cp);
        if (c < 0) {
            if (t->n_nodes == t->nodes_cap) {
                t->nodes_cap *= 2;
                t->trie = realloc(t->trie, (size_t)t->nodes_cap * sizeof *t->trie);
                if (!t->trie) SDW_ABORT("out of memory: %d trie nodes", t->nodes_cap);
            }
            c = t->n_nodes++;
            t->trie[c] = (tnode){cp, -1, t->trie[node].child, -1};
            t->trie[node].child = c;
        }
        node = c;
    }
    t->trie[node].special = index;
}

/* PreTrainedTokenizer.sanitize_special_tokens: every special token (the set attributes, then
 * additional_special_tokens) becomes a no-split token with its id. */
static sdw_status build_specials(sdw_t5_tokenizer *t, const tconfig *c, const char *where,
                                 sdw_error *err) {
    size_t n_all = N_ROLES + c->n_extra;
    const tokspec **all = sdw_xcalloc(n_all, sizeof *all);
    size_t k = 0;
    for (int r = 0; r < N_ROLES; r++)
        if (c->role[r].text) all[k++] = &c->role[r];
    for (size_t i = 0; i < c->n_extra; i++)
        all[k++] = &c->extra[i];
    n_all = k;
    t->specials = sdw_xcalloc(n_all + 1, sizeof *t->specials);
    t->nodes_cap = 256;
    t->trie = sdw_xmalloc((size_t)t->nodes_cap * sizeof *t->trie);
    t->trie[0] = (tnode){0, -1, -1, -1};
    t->n_nodes = 1;
    sdw_status st = SDW_OK;
    const char *unk_text = c->role[ROLE_UNK].text;
    int64_t unk_ref = -1;
    if (unk_text && !convert_token(t, unk_text, strlen(unk_text), &unk_ref))
        st = sdw_error_set(err, SDW_E_FORMAT, "%s: unk_token \"%.64s\" is a malformed <extra_id_N>",
                           where, unk_text);
    for (size_t i = 0; i < n_all && st == SDW_OK; i++) {
        const tokspec *ts = all[i];
        int s = 0;
        while (s < t->n_specials && strcmp(t->specials[s].text, ts->text))
            s++;
        if (s < t->n_specials) { /* the first AddedToken of a text sets its stripping */
            special *sp = &t->specials[s];
            if (!sp->added && ts->added)
                sp->added = true, sp->lstrip = ts->lstrip, sp->rstrip = ts->rstrip;
            continue;
        }
        size_t len = strlen(ts->text); /* valid UTF-8: jansson checks strings strictly */
        int64_t id;
        if (!convert_token(t, ts->text, len, &id)) {
            st = sdw_error_set(err, SDW_E_FORMAT,
                               "%s: special token \"%.64s\" starts like "
                               "<extra_id_N> but is not one (transformers fails on it)",
                               where, ts->text);
        } else if (unk_text && strcmp(ts->text, unk_text) && id == unk_ref) {
            st =
                sdw_error_set(err, SDW_E_UNSUPPORTED,
                              "%s: special token \"%.64s\" is not in the "
                              "sentencepiece vocabulary (transformers would add it as a new token; "
                              "not supported)",
                              where, ts->text);
        } else if (id < 0 || id >= t->vocab) {
            st = sdw_error_set(err, SDW_E_FORMAT,
                               "%s: special token \"%.64s\" has id %lld, outside "
                               "the vocabulary of %d",
                               where, ts->text, (long long)id, t->vocab);
        } else {
            special *sp = &t->specials[t->n_specials];
            *sp = (special){
                sdw_xstrdup(ts->text), len, (int32_t)id, ts->added, ts->lstrip, ts->rstrip};
            if (len) trie_add(t, sp, t->n_specials); /* Trie.add ignores "" */
            t->n_specials++;
        }
    }
    for (int r = 0; r < 2 && st == SDW_OK; r++) {
        const char *text = c->role[r ? ROLE_PAD : ROLE_EOS].text;
        if (!text) {
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: %s is null (T5 needs it)", where,
                               r ? "pad_token" : "eos_token");
            break;
        }
        int s = 0;
        while (strcmp(t->specials[s].text, text))
            s++;
        *(r ? &t->pad : &t->eos) = t->specials[s].id;
    }
    free(all);
    return st;
}

/* The special token whose text is exactly s[0..n), or -1. */
static int special_of(const sdw_t5_tokenizer *t, const char *s, size_t n) {
    int32_t node = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = u8_next((const unsigned char *)s, n, i, &cp);
        i += (size_t)len;
        if ((node = trie_child(t, node, cp)) < 0) return -1;
    }
    return node ? t->trie[node].special : -1;
}

typedef struct span {
    size_t off, len;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static void span_push(spans *b, size_t off, size_t len) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->v = realloc(b->v, b->cap * sizeof *b->v);
        if (!b->v) SDW_ABORT("out of memory: %zu text spans", b->cap);
    }
    b->v[b->n++] = (span){off, len};
}

typedef struct offsets {
    size_t *v;
    size_t n, cap;
} offsets;

static void offset_push(offsets *o, size_t at) {
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->v = realloc(o->v, o->cap * sizeof *o->v);
        if (!o->v) SDW_ABORT("out of memory: %zu cut offsets", o->cap);
    }
    o->v[o->n++] = at;
}

/* transformers' Trie.split(text) up to cut_text: the cut offsets, on bytes instead of
 * characters (the same order, so the same cuts). States are the partial matches by start,
 * oldest first; a state that completes looks ahead for the longest match among itself and the
 * earlier ones, and its start and end are cuts. Mirrors the reference's quirks, e.g. the
 * lookahead of a state that failed on this character still runs from the next one. */
static void trie_split(const sdw_t5_tokenizer *t, const char *text, size_t n, offsets *cuts) {
    const unsigned char *s = (const unsigned char *)text;
    typedef struct tstate {
        size_t start;
        int32_t node;
        bool dead;
    } tstate;
    tstate *st = NULL;
    size_t n_st = 0, cap = 0, skip = 0;
#define TERMINAL(node) (t->trie[node].special >= 0)
    for (size_t cur = 0; cur < n;) {
        uint32_t cp;
        size_t next = cur + (size_t)u8_next(s, n, cur, &cp);
        if (skip && cur < skip) {
            cur = next;
            continue;
        }
        bool reset = false;
        for (size_t k = 0; k < n_st; k++) {
            if (!TERMINAL(st[k].node)) {
                int32_t c = trie_child(t, st[k].node, cp);
                if (c >= 0)
                    st[k].node = c;
                else
                    st[k].dead = true;
                continue;
            }
            size_t start = st[k].start, end = 0;
            for (size_t m = 0; m < n_st && st[m].start <= start; m++) {
                int32_t node = st[m].node;
                size_t la = st[m].start < start ? next : cur; /* earlier ones already moved on */
                end = la;
                if (TERMINAL(node)) start = st[m].start, end = la, skip = la;
                while (la < n) {
                    uint32_t c2;
                    int l2 = u8_next(s, n, la, &c2);
                    int32_t c = trie_child(t, node, c2);
                    if (c < 0) break;
                    node = c;
                    la += (size_t)l2;
                    if (TERMINAL(node)) start = st[m].start, end = la, skip = la;
                }
            }
            offset_push(cuts, start);
            offset_push(cuts, end);
            reset = true;
            break;
        }
        if (reset) {
            n_st = 0;
        } else {
            size_t j = 0;
            for (size_t k = 0; k < n_st; k++)
                if (!st[k].dead) st[j++] = st[k];
            n_st = j;
        }
        int32_t c;
        if (cur >= skip && (c = trie_child(t, 0, cp)) >= 0) {
            if (n_st == cap) {
                cap = cap ? cap * 2 : 16;
                st = realloc(st, cap * sizeof *st);
                if (!st) SDW_ABORT("out of memory: %zu trie states", cap);
            }
            st[n_st++] = (tstate){cur, c, false};
        }
        cur = next;
    }
    for (size_t k = 0; k < n_st; k++)
        if (TERMINAL(st[k].node)) {
            offset_push(cuts, st[k].start);
            offset_push(cuts, n);
            break;
        }
#undef TERMINAL
    free(st);
}

/* Trie.cut_text, then tokenize()'s stripping around no-split tokens. pieces gets the text's
 * pieces in order (some emptied by stripping; the caller skips those). */
static void split_text(const sdw_t5_tokenizer *t, const char *text, size_t n, spans *pieces) {
    offsets cuts = {0};
    trie_split(t, text, n, &cuts);
    offset_push(&cuts, n);
    size_t start = 0;
    for (size_t i = 0; i < cuts.n; i++) {
        size_t end = cuts.v[i];
        if (start >= end) continue; /* zero-width, or the reference's "bug in Trie" recovery */
        span_push(pieces, start, end - start);
        start = end;
    }
    free(cuts.v);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < pieces->n; i++) {
        int k = special_of(t, text + pieces->v[i].off, pieces->v[i].len);
        if (k < 0) continue;
        const special *sp = &t->specials[k];
        span *right = i + 1 < pieces->n ? &pieces->v[i + 1] : NULL;
        span *left = i > 0 ? &pieces->v[i - 1] : NULL;
        if (right && (!sp->added || sp->rstrip)) { /* right.lstrip() */
            uint32_t cp;
            int len;
            while (right->len && (len = u8_next(s, n, right->off, &cp)) && py_space(cp))
                right->off += (size_t)len, right->len -= (size_t)len;
        }
        if (left && (!sp->added || sp->lstrip)) { /* left.rstrip() */
            while (left->len) {
                size_t j = left->off + left->len - 1;
                while ((s[j] & 0xC0) == 0x80)
                    j--;
                uint32_t cp;
                u8_next(s, n, j, &cp);
                if (!py_space(cp)) break;
                left->len = j - left->off;
            }
        }
    }
}

/* ---- sentencepiece encoding ---- */

typedef struct idbuf {
    int32_t *v;
    size_t n, cap;
} idbuf;

static void id_push(idbuf *b, int32_t id) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->v = realloc(b->v, b->cap * sizeof *b->v);
        if (!b->v) SDW_ABORT("out of memory: %zu token ids", b->cap);
    }
    b->v[b->n++] = id;
}

/* The pieces of one sentencepiece Encode: their ids as T5Tokenizer converts them (-1 where the
 * reference would raise), and for encode_prefix each piece's start in the normalized text
 * (norm[]: the pieces' strings concatenated), its input offset and whether it is unknown. */
typedef struct pieces {
    const sdw_t5_tokenizer *t;
    bool detail;
    idbuf ids;
    size_t *norm_off, *begin;
    bool *unk;
    char *norm;
    size_t norm_len, norm_cap, cap;
    int unk_id;
    char *run; /* bytes of the unknown characters in a row so far (byte fallback) */
    size_t run_len, run_cap, run_begin;
} pieces;

/* One piece of the plain model's output. */
static void add_piece(pieces *p, const char *piece, size_t len, bool unk, size_t begin) {
    int64_t conv;
    id_push(&p->ids, convert_token(p->t, piece, len, &conv) && conv >= 0 ? (int32_t)conv : -1);
    if (!p->detail) return;
    size_t k = p->ids.n - 1;
    if (k >= p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->norm_off = realloc(p->norm_off, p->cap * sizeof *p->norm_off);
        p->begin = realloc(p->begin, p->cap * sizeof *p->begin);
        p->unk = realloc(p->unk, p->cap * sizeof *p->unk);
        if (!p->norm_off || !p->begin || !p->unk) SDW_ABORT("out of memory: %zu pieces", p->cap);
    }
    if (p->norm_len + len + 1 > p->norm_cap) {
        while (p->norm_len + len + 1 > p->norm_cap)
            p->norm_cap = p->norm_cap ? p->norm_cap * 2 : 4096;
        p->norm = realloc(p->norm, p->norm_cap);
        if (!p->norm) SDW_ABORT("out of memory: %zu bytes of normalized text", p->norm_cap);
    }
    p->norm_off[k] = p->norm_len;
    p->begin[k] = begin;
    p->unk[k] = unk;
    memcpy(p->norm + p->norm_len, piece, len);
    p->norm_len += len;
}

/* Emits the pending run of unknown characters as the one piece the plain model makes of it
 * (PopulateSentencePieceText: consecutive unknown pieces joined, begin of the first). */
static void flush_run(pieces *p) {
    if (!p->run_len) return;
    add_piece(p, p->run, p->run_len, true, p->run_begin);
    p->run_len = 0;
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* sdw_spm_piece_fn: ids from n_pieces up are the byte pieces byte_fallback_model added, one
 * per byte of an unknown character; they are collected into the run. */
static void on_piece(void *user, const char *piece, size_t len, int id, size_t begin) {
    pieces *p = user;
    if (id < p->t->n_pieces) {
        flush_run(p);
        add_piece(p, piece, len, id == p->unk_id, begin);
        return;
    }
    SDW_ASSERT(len == 6 && hex_digit(piece[3]) >= 0 && hex_digit(piece[4]) >= 0);
    if (!p->run_len) p->run_begin = begin;
    if (p->run_len == p->run_cap) {
        p->run_cap = p->run_cap ? p->run_cap * 2 : 64;
        p->run = realloc(p->run, p->run_cap);
        if (!p->run) SDW_ABORT("out of memory: %zu bytes of unknown text", p->run_cap);
    }
    p->run[p->run_len++] = (char)(hex_digit(piece[3]) << 4 | hex_digit(piece[4]));
}

static void pieces_free(pieces *p) {
    free(p->ids.v);
    free(p->norm_off);
    free(p->begin);
    free(p->unk);
    free(p->norm);
    free(p->run);
}

static sdw_status spm_encode(const sdw_t5_tokenizer *t, const char *s, size_t n, pieces *p,
                             sdw_error *err) {
    char msg[256];
    p->t = t;
    p->unk_id = sdw_spm_unk_id(t->sp);
    if (sdw_spm_encode(t->enc ? t->enc : t->sp, s, n, on_piece, p, msg, sizeof msg) != 0)
        return sdw_error_set(err, SDW_E_BACKEND, "sentencepiece failed: %s", msg);
    flush_run(p);
    return SDW_OK;
}

/* Appends ids to out, failing where the reference raises on a piece. */
static sdw_status append_ids(const int32_t *ids, size_t n, idbuf *out, sdw_error *err) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "the vocabulary has a piece that starts like "
                                 "<extra_id_N> but is not one (transformers fails on it)");
        id_push(out, ids[i]);
    }
    return SDW_OK;
}

/* Whether some vocabulary entry, as a substring of norm[0..q), starts before p and ends after
 * it (a lattice node across p). Substrings are taken at character boundaries, up to max_piece
 * bytes long; any entry counts, even those Viterbi never uses (control, unused), which can
 * only make the answer "yes" more often. */
static bool node_across(const sdw_t5_tokenizer *t, const char *norm, size_t q, size_t p) {
    size_t lo = p > t->max_piece ? p - t->max_piece + 1 : 0;
    for (size_t a = p; a-- > lo;) {
        if ((norm[a] & 0xC0) == 0x80) continue;
        for (size_t b = p + 1; b <= q && b - a <= t->max_piece; b++) {
            if (b < q && (norm[b] & 0xC0) == 0x80) continue;
            if (sdw_spm_piece_to_id(t->sp, norm + a, b - a) != sdw_spm_unk_id(t->sp)) return true;
        }
    }
    return false;
}

/* Appends to out the ids of sentencepiece's Encode(s[0..n)), all of them or, once at least
 * `need` are certain, just the first `need`.
 *
 * Why a prefix gives exactly the first ids. Encoding is normalize, then Viterbi over the
 * normalized text, then merging runs of unknown pieces. Encode T = s[0..c) instead of s:
 *  (a) The normalizer is one left-to-right pass; each step at input offset i consumes what the
 *      longest user-defined symbol, or the longest charsmap key, or one UTF-8 character
 *      matches there, reading at most W = lookahead bytes (model_facts). Steps at i <= c - W
 *      see the same bytes in T and s and make the same choice, with the same whitespace state,
 *      so both normalized texts share their output: every normalized byte whose input offset
 *      (what the library reports as a piece's begin) is <= c - W. Let q be the normalized
 *      start of the last piece of T that begins at or before c - W: norm[0..q) is shared.
 *  (b) A position p with p + max_piece <= q where no vocabulary entry of the shared text
 *      spans p (node_across) cuts the lattice in both: every node ends at or before p or
 *      starts at or after it (unknown-character nodes are one character). Viterbi's forward
 *      pass fills the best path ending at each position from nodes ending there, so up to p
 *      it computes the same floats in the same order in both; both best paths pass through p
 *      and agree before it.
 *  (c) Merging joins an unknown piece to an unknown predecessor; if the piece before p is
 *      known, nothing merges across p.
 * So the pieces of T before such a p are the first pieces of s. A unigram model without byte
 * fallback is required (t->local): byte pieces would hide the normalized text, and BPE has no
 * forward pass. Each try encodes a prefix twice as long, so the work stays within about twice
 * what the window needs, and at worst (no cut found: one giant word) the whole text. */
static sdw_status encode_prefix(const sdw_t5_tokenizer *t, const char *s, size_t n, size_t need,
                                idbuf *out, sdw_error *err) {
    size_t c = need < SIZE_MAX / 64 ? need * 16 + 4 * t->lookahead + 256 : SIZE_MAX;
    sdw_status st = SDW_OK;
    for (;;) {
        if (!t->local || c >= n) { /* the whole text */
            pieces p = {0};
            st = spm_encode(t, s, n, &p, err);
            if (st == SDW_OK) st = append_ids(p.ids.v, SDW_MIN(p.ids.n, need), out, err);
            pieces_free(&p);
            return st;
        }
        while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80)
            c--; /* a character boundary */
        pieces p = {.detail = true};
        st = spm_encode(t, s, c, &p, err);
        size_t cut = 0; /* pieces known to be the first pieces of s */
        if (st == SDW_OK && p.ids.n > need && c >= t->lookahead) {
            size_t last = 0; /* last piece beginning at or before c - W */
            while (last + 1 < p.ids.n && p.begin[last + 1] <= c - t->lookahead)
                last++;
            size_t q = p.begin[last] <= c - t->lookahead ? p.norm_off[last] : 0;
            /* The first cut at or after `need` pieces will do. Ordinary text has one every word
             * or so; text with none (one giant word) gets a few tries per doubling, not a scan. */
            for (size_t j = need, tries = 0; j < last && tries < 64 && !cut; j++) {
                if (p.norm_off[j] + t->max_piece > q) break;
                if (p.unk[j - 1]) continue;
                tries++;
                if (!node_across(t, p.norm, q, p.norm_off[j])) cut = j;
            }
        }
        if (st == SDW_OK && cut >= need) st = append_ids(p.ids.v, need, out, err);
        pieces_free(&p);
        if (st != SDW_OK || cut >= need) return st;
        c = c < SIZE_MAX / 2 ? c * 2 : SIZE_MAX;
    }
}

/* tokenize() + convert_tokens_to_ids(): appends the text's ids to out, stopping once `limit`
 * are there (SIZE_MAX: all). */
static sdw_status text_ids(const sdw_t5_tokenizer *t, const char *text, size_t limit, idbuf *out,
                           sdw_error *err) {
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = u8_next((const unsigned char *)text, n, i, &cp);
        if (!len)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "text is not valid UTF-8 (byte %zu)", i);
        i += (size_t)len;
    }
    spans parts = {0};
    split_text(t, text, n, &parts);
    sdw_status st = SDW_OK;
    for (size_t i = 0; i < parts.n && out->n < limit && st == SDW_OK; i++) {
        const span *sp = &parts.v[i];
        if (!sp->len) continue; /* stripped away */
        int k = special_of(t, text + sp->off, sp->len);
        if (k >= 0)
            id_push(out, t->specials[k].id);
        else
            st = encode_prefix(t, text + sp->off, sp->len,
                               limit == SIZE_MAX ? SIZE_MAX : limit - out->n, out, err);
    }
    free(parts.v);
    return st;
}

/* ---- API ---- */

static sdw_status load_model(sdw_t5_tokenizer *t, const char *model_path, sdw_error *err) {
    char *bytes = NULL;
    size_t n = 0;
    sdw_status st = sdw_read_file(model_path, &bytes, &n, err);
    if (st != SDW_OK) return st;
    char msg[256];
    t->sp = sdw_spm_load(bytes, n, msg, sizeof msg);
    if (!t->sp) {
        free(bytes);
        return sdw_error_set(err, SDW_E_FORMAT, "%s: not a sentencepiece model (%s)", model_path,
                             msg);
    }
    t->n_pieces = sdw_spm_n_pieces(t->sp);
    bool has_bytes;
    model_facts(t, (const uint8_t *)bytes, n, &has_bytes);
    /* A model with byte fallback of its own has no runs to join; one the library will not take
     * with byte pieces added (say it already has an entry "<0x41>") keeps the plain path. */
    size_t n_fb;
    uint8_t *fb = has_bytes ? NULL : byte_fallback_model((const uint8_t *)bytes, n, &n_fb);
    if (fb) t->enc = sdw_spm_load(fb, n_fb, msg, sizeof msg);
    if (fb && !t->enc) SDW_DEBUG("T5 tokenizer: %s: byte fallback not added (%s)", model_path, msg);
    free(fb);
    free(bytes);
    return SDW_OK;
}

sdw_status sdw_t5_tokenizer_load(const char *path, sdw_t5_tokenizer **out, sdw_error *err) {
    SDW_ASSERT(path && out);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sdw_error_set(err, SDW_E_IO, "T5 tokenizer: %s: no such file or folder", path);
    bool dir = S_ISDIR(sb.st_mode);
    size_t cap = strlen(path) + 32;
    char *model = sdw_xmalloc(cap), *config = sdw_xmalloc(cap), *map = sdw_xmalloc(cap),
         *added = sdw_xmalloc(cap);
    snprintf(model, cap, dir ? "%s/spiece.model" : "%s", path);
    snprintf(config, cap, "%s/tokenizer_config.json", path);
    snprintf(map, cap, "%s/special_tokens_map.json", path);
    snprintf(added, cap, "%s/added_tokens.json", path);
    sdw_t5_tokenizer *t = sdw_xcalloc(1, sizeof *t);
    tconfig c = {0};
    sdw_status st = SDW_OK;
    if (dir && stat(model, &sb) != 0)
        st = sdw_error_set(err, SDW_E_IO,
                           "%s: no spiece.model in the folder (a T5 tokenizer "
                           "folder such as tokenizer_2/ holds one)",
                           path);
    if (st == SDW_OK) st = load_model(t, model, err);
    if (st == SDW_OK) st = read_tokenizer_config(dir ? config : NULL, &c, err);
    if (st == SDW_OK && dir) st = read_special_map(map, &c, err);
    if (st == SDW_OK && dir) st = check_added_tokens(added, err);
    if (st == SDW_OK) {
        t->extra_ids = (int)c.extra_ids;
        if ((long long)t->n_pieces + c.extra_ids > INT32_MAX)
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: vocabulary too large", model);
        t->vocab = t->n_pieces + t->extra_ids;
    }
    if (st == SDW_OK) st = build_specials(t, &c, dir ? path : model, err);
    if (st != SDW_OK) {
        sdw_error_prefix(err, "T5 tokenizer");
        sdw_t5_tokenizer_destroy(t);
    } else {
        *out = t;
    }
    tconfig_free(&c);
    free(model);
    free(config);
    free(map);
    free(added);
    return st;
}

void sdw_t5_tokenizer_destroy(sdw_t5_tokenizer *t) {
    if (!t) return;
    sdw_spm_destroy(t->sp);
    sdw_spm_destroy(t->enc);
    for (int i = 0; i < t->n_specials; i++)
        free(t->specials[i].text);
    free(t->specials);
    free(t->trie);
    free(t);
}

int32_t sdw_t5_tokenizer_pad(const sdw_t5_tokenizer *t) {
    return t->pad;
}
int32_t sdw_t5_tokenizer_eos(const sdw_t5_tokenizer *t) {
    return t->eos;
}
int sdw_t5_tokenizer_vocab(const sdw_t5_tokenizer *t) {
    return t->vocab;
}

sdw_status sdw_t5_tokenize(const sdw_t5_tokenizer *t, const char *text, int32_t **ids, int *n,
                           sdw_error *err) {
    SDW_ASSERT(t && text && ids && n);
    idbuf out = {0};
    sdw_status st = text_ids(t, text, SIZE_MAX, &out, err);
    /* build_inputs_with_special_tokens -> _add_eos_if_not_present */
    if (st == SDW_OK && (!out.n || out.v[out.n - 1] != t->eos)) id_push(&out, t->eos);
    if (st == SDW_OK && out.n > INT32_MAX)
        st = sdw_error_set(err, SDW_E_INVALID_ARG, "prompt too long: %zu tokens", out.n);
    if (st != SDW_OK) {
        free(out.v);
        return st;
    }
    *ids = out.v;
    *n = (int)out.n;
    return SDW_OK;
}

sdw_status sdw_t5_tokenize_window(const sdw_t5_tokenizer *t, const char *text, int max_len,
                                  int32_t *ids, bool *truncated, sdw_error *err) {
    SDW_ASSERT(t && text && ids && max_len >= 2);
    /* prepare_for_model: one special token (EOS) is added, so more than max_len - 1 tokens are
     * cut to max_len - 1; the first max_len tokens decide everything. */
    idbuf out = {0};
    sdw_status st = text_ids(t, text, (size_t)max_len, &out, err);
    if (st != SDW_OK) {
        free(out.v);
        return st;
    }
    size_t keep = SDW_MIN(out.n, (size_t)max_len - 1);
    if (keep) memcpy(ids, out.v, keep * sizeof *ids);
    if (!keep || ids[keep - 1] != t->eos) ids[keep++] = t->eos;
    for (size_t i = keep; i < (size_t)max_len; i++)
        ids[i] = t->pad;
    if (truncated) *truncated = out.n > (size_t)max_len - 1;
    free(out.v);
    return SDW_OK;
}
