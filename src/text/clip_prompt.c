/* text/clip_prompt.c — see clip_prompt.h. The pipelines' encode_prompt for one CLIP encoder:
 * diffusers' StableDiffusion(XL)Pipeline (0.25), FluxPipeline and StableDiffusion3Pipeline
 * (0.30.3) tokenize with padding="max_length", truncation, and run the encoder without an
 * attention mask; they differ only in the hidden state and pooled output they take.
 * AUTOMATIC1111's reading (modules/sd_hijack_clip.py) lays the prompt out in chunks first.
 *
 * Both readings first turn a prompt into items — a token id with its weight, or vector j of a
 * textual-inversion embedding — laid out in 77-item windows; the embeddings' items become ids
 * only when the whole batch is known (their rows are handed to the encoder in the folder's
 * order, so argmax pooling sees the order diffusers' added ids have). */
#include "text/clip_prompt.h"

#include "core/common.h"
#include "text/prompt_parser.h"

#include <string.h>

void sdw_clip_prompt_deinit(sdw_clip_prompt *p) {
    if (!p) return;
    sdw_clip_text_destroy(p->enc);
    sdw_clip_tokenizer_destroy(p->tokenizer);
    sdw_weights_destroy(p->w);
    memset(p, 0, sizeof *p);
}

void sdw_clip_encoding_deinit(sdw_clip_encoding *e) {
    if (!e) return;
    free(e->hidden);
    free(e->pooled);
    memset(e, 0, sizeof *e);
}

int sdw_clip_prompt_width(const sdw_clip_prompt *p) {
    return sdw_clip_text_get_config(p->enc)->hidden;
}

int sdw_clip_prompt_pooled_width(const sdw_clip_prompt *p) {
    const sdw_clip_text_config *c = sdw_clip_text_get_config(p->enc);
    return p->params.project_pooled ? c->projection_dim : c->hidden;
}

/* The reference's name for the hidden state an encoder contributes, or NULL if it records none
 * under a name of its own. */
static const char *state_name(const sdw_clip_text_params *p) {
    if (p->skip_layers == 0 && p->final_norm) return "last_hidden_state";
    if (p->skip_layers == 1 && !p->final_norm) return "penultimate";
    return NULL;
}

/* ---- items and windows ---- */

typedef struct item {
    int32_t id;  /* token id, or -1 for an embedding's vector */
    int32_t emb; /* embedding entry (sdw_embeddings_info index) */
    int32_t j;   /* its vector */
    float mult;  /* emphasis weight (float32, as A1111's multipliers tensor) */
} item;

typedef struct items {
    item *v;
    int n, cap;
} items;

static void items_push(items *s, item x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 128;
        s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v);
        if (!s->v) SDW_ABORT("out of memory");
    }
    s->v[s->n++] = x;
}

/* ---- textual inversion: which runs of ids spell an embedding's name ---- */

typedef struct ti_name {
    int32_t *ids;
    int n, emb;
} ti_name;

typedef struct ti {
    const sdw_embeddings *e;
    const char *key;
    int width;
    ti_name *names; /* sorted by first id, then longest first, then folder order */
    int n_names;
    bool *used;   /* [entries]: its vectors are in the batch */
    int *n_vecs;  /* [entries]: its vector count for this encoder, 0 = not yet checked */
} ti;

static int cmp_name(const void *a, const void *b) {
    const ti_name *x = a, *y = b;
    if (x->ids[0] != y->ids[0]) return x->ids[0] < y->ids[0] ? -1 : 1;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    return x->emb - y->emb;
}

static void ti_free(ti *t) {
    for (int i = 0; i < t->n_names; i++) free(t->names[i].ids);
    free(t->names);
    free(t->used);
    free(t->n_vecs);
}

/* Token ids of text: the plain reading's (all special tokens, no BOS/EOS) or A1111's. */
static sdw_status token_ids(const sdw_clip_tokenizer *tok, bool syntax, const char *text,
                            int32_t **ids, int *n, sdw_error *err) {
    if (syntax) return sdw_clip_tokenize_text(tok, text, ids, n, err);
    sdw_status s = sdw_clip_tokenize(tok, text, ids, n, err);
    if (s) return s;
    *n -= 2; /* drop BOS and EOS */
    memmove(*ids, *ids + 1, (size_t)*n * sizeof **ids);
    return SDW_OK;
}

/* A1111's register_embedding: each usable entry's name tokenized as a prompt's text is. */
static void ti_init(ti *t, const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o) {
    memset(t, 0, sizeof *t);
    t->e = o->embeddings;
    t->key = o->ti_key;
    const int n = sdw_embeddings_count(t->e);
    if (!n) return;
    t->width = sdw_clip_prompt_width(p);
    t->names = sdw_xcalloc((size_t)n, sizeof *t->names);
    t->used = sdw_xcalloc((size_t)n, sizeof *t->used);
    t->n_vecs = sdw_xcalloc((size_t)n, sizeof *t->n_vecs);
    for (int i = 0; i < n; i++) {
        sdw_embedding_info info = sdw_embeddings_info(t->e, i);
        int32_t *ids;
        int k;
        if (info.skipped || token_ids(p->tokenizer, o->syntax, info.name, &ids, &k, NULL)) continue;
        if (k == 0) {
            free(ids);
            continue;
        }
        t->names[t->n_names++] = (ti_name){ids, k, i};
    }
    if (t->n_names) qsort(t->names, (size_t)t->n_names, sizeof *t->names, cmp_name);
}

/* The vectors entry i has for this encoder (checked once per call). */
static sdw_status ti_vectors(ti *t, int i, int *n, sdw_error *err) {
    if (!t->n_vecs[i]) {
        const float *rows;
        sdw_status s = sdw_embeddings_vectors(t->e, i, t->key, t->width, &rows, &t->n_vecs[i], err);
        if (s) return s;
    }
    *n = t->n_vecs[i];
    return SDW_OK;
}

/* find_embedding_at_position: the entry whose name's ids start at ids[at] (the longest), or
 * -1; *len = its length in tokens. */
static int ti_find(const ti *t, const int32_t *ids, int n, int at, int *len) {
    int lo = 0, hi = t->n_names;
    while (lo < hi) { /* first name starting with ids[at] */
        int mid = (lo + hi) / 2;
        if (t->names[mid].ids[0] < ids[at]) lo = mid + 1;
        else hi = mid;
    }
    for (int i = lo; i < t->n_names && t->names[i].ids[0] == ids[at]; i++) {
        const ti_name *m = &t->names[i];
        if (m->n <= n - at && !memcmp(m->ids, ids + at, (size_t)m->n * sizeof *ids)) {
            *len = m->n;
            return m->emb;
        }
    }
    return -1;
}

/* ---- the plain reading: one window ---- */

/* `embedding:NAME` at text[i] (the start of the text or after whitespace): the entry, with
 * *len = the reference's length; -1 when there is none; -2 (error set) when NAME is unknown.
 * NAME runs to the next whitespace; trailing punctuation that is not part of a known name is
 * left as text (ComfyUI strips commas the same way). */
static int explicit_ref(const sdw_embeddings *e, const char *text, size_t i, size_t *len,
                        sdw_error *err) {
    static const char prefix[] = "embedding:";
    const size_t k = sizeof prefix - 1;
    if (!e || strncmp(text + i, prefix, k) != 0) return -1;
    if (i > 0 && !strchr(" \t\n\r\f\v", text[i - 1])) return -1;
    size_t end = i + k;
    while (text[end] && !strchr(" \t\n\r\f\v", text[end])) end++;
    char name[512];
    for (size_t stop = end; stop > i + k; stop--) {
        const size_t n = stop - i - k;
        if (n >= sizeof name) continue;
        memcpy(name, text + i + k, n);
        name[n] = 0;
        const size_t ext = strlen(".safetensors");
        if (n > ext && !strcmp(name + n - ext, ".safetensors")) name[n - ext] = 0;
        const int found = sdw_embeddings_find(e, name);
        if (found >= 0) {
            *len = stop - i;
            return found;
        }
        if (!strchr(",.;:!?", text[stop - 1])) break; /* only punctuation may be left over */
    }
    const size_t n = SDW_MIN(end - i - k, (size_t)200);
    char names[512] = "";
    for (int j = 0, at = 0; j < sdw_embeddings_count(e) && at < (int)sizeof names - 64; j++) {
        sdw_embedding_info info = sdw_embeddings_info(e, j);
        if (!info.skipped)
            at += snprintf(names + at, sizeof names - (size_t)at, "%s%s", at ? ", " : "",
                           info.name);
    }
    sdw_error_set(err, SDW_E_INVALID_ARG, "prompt: unknown embedding '%.*s' (the embeddings "
                  "folder has: %s)", (int)n, text + i + k, *names ? names : "none");
    return -2;
}

/* The items of one piece of text with weight w: `embedding:NAME` references, and between
 * them the text's tokens with every run that spells an embedding's name replaced by its
 * vectors. */
static sdw_status text_items(const sdw_clip_prompt *p, bool syntax, ti *t, const char *text,
                             float w, items *out, sdw_error *err) {
    const size_t n_text = strlen(text);
    char *seg = sdw_xmalloc(n_text + 1);
    sdw_status s = SDW_OK;
    for (size_t i = 0, start = 0; s == SDW_OK && start <= n_text; i++) {
        size_t ref_len = 0;
        const int ref = i < n_text ? explicit_ref(t->e, text, i, &ref_len, err) : -1;
        if (ref == -2) {
            s = SDW_E_INVALID_ARG;
            break;
        }
        if (ref == -1 && i < n_text) continue;
        /* the text [start, i) */
        memcpy(seg, text + start, i - start);
        seg[i - start] = 0;
        int32_t *ids = NULL;
        int n = 0;
        if (i > start && (s = token_ids(p->tokenizer, syntax, seg, &ids, &n, err))) break;
        for (int at = 0; at < n;) {
            int len = 0, nv = 0;
            const int e = t->n_names ? ti_find(t, ids, n, at, &len) : -1;
            if (e < 0) {
                items_push(out, (item){ids[at++], -1, 0, w});
                continue;
            }
            if ((s = ti_vectors(t, e, &nv, err))) break;
            for (int j = 0; j < nv; j++) items_push(out, (item){-1, e, j, w});
            at += len;
        }
        free(ids);
        if (s || ref < 0) break; /* the end of the text */
        int nv = 0;
        if ((s = ti_vectors(t, ref, &nv, err))) break;
        for (int j = 0; j < nv; j++) items_push(out, (item){-1, ref, j, w});
        start = i + ref_len;
        i = start - 1;
    }
    free(seg);
    return s;
}

/* BOS, items, EOS, pad in windows of 77: the plain reading's one window. */
static void plain_window(const sdw_clip_prompt *p, const items *in, items *out, bool *cut) {
    const int32_t bos = sdw_clip_tokenizer_bos(p->tokenizer);
    const int32_t eos = sdw_clip_tokenizer_eos(p->tokenizer);
    const int keep = SDW_MIN(in->n, SDW_CLIP_CHUNK);
    items_push(out, (item){bos, -1, 0, 1.0f});
    for (int i = 0; i < keep; i++) items_push(out, in->v[i]);
    items_push(out, (item){eos, -1, 0, 1.0f});
    while (out->n < SDW_CLIP_WINDOW) items_push(out, (item){p->pad_id, -1, 0, 1.0f});
    *cut = in->n > keep;
}

/* ---- AUTOMATIC1111's reading: tokenize_line's chunks ---- */

typedef struct chunker {
    const sdw_clip_prompt *p;
    items *out;  /* finished windows, 77 items each */
    items chunk; /* the chunk being filled (no BOS/EOS yet) */
    int last_comma;
    int32_t comma; /* the id of ",</w>", or -1 */
} chunker;

/* next_chunk: the chunk padded with EOS to 75, wrapped in BOS/EOS, everything after its first
 * EOS set to the pad id (process_tokens, for encoders whose pad is not EOS). */
static void next_chunk(chunker *c) {
    const int32_t bos = sdw_clip_tokenizer_bos(c->p->tokenizer);
    const int32_t eos = sdw_clip_tokenizer_eos(c->p->tokenizer);
    const int base = c->out->n;
    items_push(c->out, (item){bos, -1, 0, 1.0f});
    for (int i = 0; i < c->chunk.n; i++) items_push(c->out, c->chunk.v[i]);
    for (int i = c->chunk.n; i < SDW_CLIP_CHUNK + 1; i++) items_push(c->out, (item){eos, -1, 0, 1.0f});
    bool after_eos = false;
    for (int i = base; i < base + SDW_CLIP_WINDOW; i++) {
        if (after_eos) c->out->v[i].id = c->p->pad_id;
        after_eos |= c->out->v[i].id == eos;
    }
    c->chunk.n = 0;
    c->last_comma = -1;
}

/* One piece's items into the chunks: the comma backtrack, full chunks, embeddings kept whole. */
static void chunk_items(chunker *c, const items *in) {
    for (int at = 0; at < in->n;) {
        const item x = in->v[at];
        if (x.emb < 0 && x.id == c->comma) {
            c->last_comma = c->chunk.n;
        } else if (c->chunk.n == SDW_CLIP_CHUNK && c->last_comma != -1 &&
                   c->chunk.n - c->last_comma <= SDW_CLIP_COMMA_BACKTRACK) {
            /* the tokens after the comma go to the next chunk */
            const int from = c->last_comma + 1, n_move = c->chunk.n - from;
            item moved[SDW_CLIP_CHUNK];
            memcpy(moved, c->chunk.v + from, (size_t)n_move * sizeof *moved);
            c->chunk.n = from;
            next_chunk(c);
            for (int i = 0; i < n_move; i++) items_push(&c->chunk, moved[i]);
        }
        if (c->chunk.n == SDW_CLIP_CHUNK) next_chunk(c);
        if (x.emb < 0) {
            items_push(&c->chunk, x);
            at++;
            continue;
        }
        int nv = 1; /* an embedding: all its vectors in one chunk */
        while (at + nv < in->n && in->v[at + nv].emb == x.emb && in->v[at + nv].j == nv) nv++;
        if (c->chunk.n + nv > SDW_CLIP_CHUNK) next_chunk(c);
        for (int i = 0; i < nv; i++) items_push(&c->chunk, in->v[at + i]);
        at += nv;
    }
}

static sdw_status a1111_windows(const sdw_clip_prompt *p, ti *t, const char *prompt, int max,
                                items *out, bool *cut, sdw_error *err) {
    sdw_prompt_pieces pp;
    sdw_status s = sdw_prompt_parse(prompt, &pp, err);
    if (s) return s;
    int32_t *comma = NULL;
    int n_comma = 0;
    chunker c = {.p = p, .out = out, .last_comma = -1, .comma = -1};
    if (sdw_clip_tokenize_text(p->tokenizer, ",", &comma, &n_comma, NULL) == SDW_OK &&
        n_comma == 1)
        c.comma = comma[0];
    free(comma);
    items piece = {0};
    for (int i = 0; i < pp.n && !s; i++) {
        if (pp.v[i].is_break) {
            next_chunk(&c);
            continue;
        }
        piece.n = 0;
        s = text_items(p, true, t, pp.v[i].text, (float)pp.v[i].weight, &piece, err);
        if (!s) chunk_items(&c, &piece);
    }
    if (!s && (c.chunk.n || out->n == 0)) next_chunk(&c);
    free(piece.v);
    free(c.chunk.v);
    sdw_prompt_pieces_free(&pp);
    *cut = out->n > max * SDW_CLIP_WINDOW;
    if (*cut) out->n = max * SDW_CLIP_WINDOW;
    return s;
}

/* The windows of one prompt (NULL = "") as o says. */
static sdw_status windows(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o, ti *t,
                          const char *prompt, items *out, bool *cut, sdw_error *err) {
    const char *text = prompt ? prompt : "";
    if (o->syntax)
        return a1111_windows(p, t, text, o->max_chunks > 0 ? o->max_chunks : SDW_CLIP_MAX_CHUNKS,
                             out, cut, err);
    items flat = {0};
    sdw_status s = text_items(p, false, t, text, 1.0f, &flat, err);
    if (!s) plain_window(p, &flat, out, cut);
    free(flat.v);
    return s;
}

sdw_status sdw_clip_prompt_windows(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o,
                                   const char *prompt, int32_t **ids, float **mult,
                                   int *n_windows, bool *truncated, sdw_error *err) {
    const sdw_clip_prompt_opts plain = {0};
    if (!o) o = &plain;
    SDW_ASSERT(p->enc || !o->embeddings);
    ti t;
    ti_init(&t, p, o);
    items win = {0};
    bool cut = false;
    sdw_status s = windows(p, o, &t, prompt, &win, &cut, err);
    if (!s) {
        const int vocab = p->enc ? sdw_clip_text_get_config(p->enc)->vocab
                                 : sdw_clip_tokenizer_vocab_size(p->tokenizer);
        *ids = sdw_xmalloc((size_t)win.n * sizeof **ids);
        if (mult) *mult = sdw_xmalloc((size_t)win.n * sizeof **mult);
        for (int i = 0; i < win.n; i++) {
            const item *x = &win.v[i];
            (*ids)[i] = x->emb < 0 ? x->id : vocab + sdw_embeddings_offset(t.e, x->emb) + x->j;
            if (mult) (*mult)[i] = x->mult;
        }
        *n_windows = win.n / SDW_CLIP_WINDOW;
        if (truncated) *truncated = cut;
    }
    free(win.v);
    ti_free(&t);
    return s;
}

/* ---- encoding ---- */

/* The encoder's state for this request: the default, or hidden_states[-clip_skip] never
 * closer to the output than the default, its final-norm choice kept. */
static sdw_status request_params(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o,
                                 sdw_clip_text_params *out, sdw_error *err) {
    sdw_clip_text_params q = p->params;
    const int n_layers = sdw_clip_text_get_config(p->enc)->n_layers;
    if (o->clip_skip < 0)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "clip_skip %d is negative", o->clip_skip);
    if (o->clip_skip > 0) {
        if (o->clip_skip > n_layers)
            return sdw_error_set(err, SDW_E_INVALID_ARG,
                                 "clip_skip %d: this model's text encoder has %d layers (at "
                                 "most %d)",
                                 o->clip_skip, n_layers, n_layers);
        q.skip_layers = SDW_MAX(q.skip_layers, o->clip_skip - 1);
    }
    q.pool_id = o->syntax ? sdw_clip_tokenizer_eos(p->tokenizer) : 0;
    *out = q;
    return SDW_OK;
}

static void tap_ids(const sdw_clip_prompt *p, sdw_text_tap_fn tap, void *user, const char *which,
                    const int32_t *ids, int L) {
    char name[96];
    float *f = sdw_xmalloc((size_t)L * sizeof *f);
    for (int i = 0; i < L; i++) f[i] = (float)ids[i];
    snprintf(name, sizeof name, "%s.%s.input_ids", p->tap, which);
    tap(user, name, f, 2, (const int64_t[]){1, L});
    free(f);
}

sdw_status sdw_clip_prompt_encode_chunks(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o,
                                         int n, const char *const *prompts,
                                         const char *const *which, bool want_hidden,
                                         bool want_pooled, sdw_clip_encoding *out,
                                         bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                         sdw_error *err) {
    SDW_ASSERT(n >= 1 && n <= 2);
    const sdw_clip_prompt_opts plain = {0};
    if (!o) o = &plain;
    const int W = sdw_clip_prompt_width(p), P = sdw_clip_prompt_pooled_width(p);
    const int vocab = sdw_clip_text_get_config(p->enc)->vocab;
    const int max = o->max_chunks > 0 ? o->max_chunks : SDW_CLIP_MAX_CHUNKS;
    sdw_clip_text_params params;
    sdw_status s = request_params(p, o, &params, err);
    if (s) return s;
    ti t;
    ti_init(&t, p, o);
    items win[2] = {{0}};
    int n_win[2] = {0, 0};
    for (int k = 0; k < n && !s; k++) {
        bool cut = false;
        if ((s = windows(p, o, &t, prompts[k], &win[k], &cut, err))) break;
        n_win[k] = win[k].n / SDW_CLIP_WINDOW;
        if (cut && o->syntax)
            SDW_WARN("the %s prompt takes more than %d windows of %d tokens: the text encoder "
                     "sees only the first %d",
                     which[k], max, SDW_CLIP_CHUNK, max);
        else if (cut)
            SDW_WARN("the %s prompt is longer than %d tokens: the text encoder sees only the "
                     "first %d (see `sdw tokenize`)",
                     which[k], SDW_CLIP_WINDOW, SDW_CLIP_CHUNK);
        *truncated |= cut;
    }

    /* The embeddings' vectors in the batch, in the folder's order: compact rows for the
     * encoder (ids vocab + row), the folder's numbering for the taps (vocab + offset + j). */
    float *extra = NULL;
    int n_extra = 0;
    int *row_of = NULL;
    for (int k = 0; k < n && !s; k++)
        for (int i = 0; i < win[k].n; i++)
            if (win[k].v[i].emb >= 0) t.used[win[k].v[i].emb] = true;
    if (!s && t.used) {
        const int n_e = sdw_embeddings_count(t.e);
        row_of = sdw_xcalloc((size_t)n_e, sizeof *row_of);
        for (int e = 0; e < n_e; e++)
            if (t.used[e]) {
                row_of[e] = n_extra;
                n_extra += t.n_vecs[e];
            }
        extra = sdw_xmalloc((size_t)SDW_MAX(n_extra, 1) * W * sizeof *extra);
        for (int e = 0; e < n_e; e++) {
            const float *rows;
            int nv; /* checked by ti_vectors when the prompt used it */
            if (t.used[e] && sdw_embeddings_vectors(t.e, e, t.key, W, &rows, &nv, NULL) == SDW_OK)
                memcpy(extra + (size_t)row_of[e] * W, rows, (size_t)nv * W * sizeof *extra);
        }
    }

    /* One batch of windows: every window of every prompt (the first only without hidden). */
    const int L = SDW_CLIP_WINDOW;
    int n_run[2] = {0, 0}, B = 0;
    for (int k = 0; k < n; k++) B += n_run[k] = want_hidden ? n_win[k] : SDW_MIN(n_win[k], 1);
    int32_t *ids = s ? NULL : sdw_xmalloc((size_t)B * L * sizeof *ids);
    int32_t *shown = s ? NULL : sdw_xmalloc((size_t)(n_win[0] + n_win[1]) * L * sizeof *shown);
    for (int k = 0, b = 0, q = 0; k < n && !s; k++)
        for (int i = 0; i < win[k].n; i++) {
            const item *x = &win[k].v[i];
            const int32_t id = x->emb < 0 ? x->id : vocab + row_of[x->emb] + x->j;
            shown[q++] = x->emb < 0 ? x->id : vocab + sdw_embeddings_offset(t.e, x->emb) + x->j;
            if (i < n_run[k] * L) ids[b++] = id;
        }
    params.extra_rows = extra;
    params.n_extra = n_extra;
    float *hidden = NULL, *pooled = NULL;
    if (!s) {
        hidden = want_hidden || tap ? sdw_xmalloc((size_t)B * L * W * sizeof *hidden) : NULL;
        pooled = want_pooled ? sdw_xmalloc((size_t)B * P * sizeof *pooled) : NULL;
        s = sdw_clip_text_forward(p->enc, ids, B, L, &params, hidden, pooled, err);
    }
    /* Emphasis per window and prompt (A1111 encodes one prompt per call). */
    for (int k = 0, b = 0; k < n && !s && hidden; b += n_run[k], k++)
        for (int c = 0; c < n_run[k] && !s && o->syntax; c++) {
            float mult[SDW_CLIP_WINDOW];
            for (int i = 0; i < L; i++) mult[i] = win[k].v[c * L + i].mult;
            s = sdw_emphasis_apply(hidden + (size_t)(b + c) * L * W, L, W, mult, err);
        }
    sdw_clip_encoding res[2] = {{0}};
    const char *state = state_name(&params);
    char name[96];
    for (int k = 0, b = 0, q = 0; k < n && !s; q += n_win[k] * L, b += n_run[k], k++) {
        res[k].n_chunks = n_win[k];
        const size_t rows = (size_t)n_run[k] * L;
        if (tap) {
            tap_ids(p, tap, tap_user, which[k], shown + q, n_win[k] * L);
            if (state && n_run[k] == n_win[k]) {
                snprintf(name, sizeof name, "%s.%s.%s", p->tap, which[k], state);
                tap(tap_user, name, hidden + (size_t)b * L * W, 3,
                    (const int64_t[]){1, (int64_t)rows, W});
            }
            if (pooled) {
                snprintf(name, sizeof name, "%s.%s.pooled", p->tap, which[k]);
                tap(tap_user, name, pooled + (size_t)b * P, 2, (const int64_t[]){1, P});
            }
        }
        if (want_hidden) {
            res[k].hidden = sdw_xmalloc(rows * W * sizeof(float));
            memcpy(res[k].hidden, hidden + (size_t)b * L * W, rows * W * sizeof(float));
        }
        if (want_pooled) {
            res[k].pooled = sdw_xmalloc((size_t)P * sizeof(float));
            memcpy(res[k].pooled, pooled + (size_t)b * P, (size_t)P * sizeof(float));
        }
    }
    if (!s)
        for (int k = 0; k < n; k++) out[k] = res[k];
    free(hidden);
    free(pooled);
    free(ids);
    free(shown);
    free(extra);
    free(row_of);
    for (int k = 0; k < 2; k++) free(win[k].v);
    ti_free(&t);
    return s;
}

/* ---- laying out a batch ---- */

static int gcd(int a, int b) {
    return b ? gcd(b, a % b) : a;
}

int sdw_clip_batch_chunks(int a, int b, bool repeat) {
    SDW_ASSERT(a >= 1 && b >= 1);
    if (a == b) return a;
    const int lo = SDW_MIN(a, b), lcm = a / gcd(a, b) * b;
    return repeat && lcm / lo <= 4 ? lcm : SDW_MAX(a, b);
}

void sdw_clip_encoding_place(const sdw_clip_encoding *e, int n_out, bool repeat,
                             const sdw_clip_encoding *empty, int width, float *dst, int ld,
                             int col) {
    const int L = SDW_CLIP_WINDOW;
    SDW_ASSERT(e->hidden && n_out >= e->n_chunks);
    const bool cycle = repeat && n_out % e->n_chunks == 0;
    SDW_ASSERT(cycle || n_out == e->n_chunks || (empty && empty->hidden));
    for (int c = 0; c < n_out; c++) {
        const float *src = c < e->n_chunks ? e->hidden + (size_t)c * L * width
                           : cycle          ? e->hidden + (size_t)(c % e->n_chunks) * L * width
                                            : empty->hidden;
        for (int i = 0; i < L; i++)
            memcpy(dst + ((size_t)c * L + i) * ld + col, src + (size_t)i * width,
                   (size_t)width * sizeof(float));
    }
}

sdw_status sdw_clip_prompt_encode(const sdw_clip_prompt *p, const sdw_clip_prompt_opts *o, int n,
                                  const char *const *prompts, const char *const *which,
                                  float *const *ctx, int ld, int col, float *const *pooled,
                                  bool *truncated, sdw_text_tap_fn tap, void *tap_user,
                                  sdw_error *err) {
    const bool want_pooled = pooled && (pooled[0] || (n > 1 && pooled[1]));
    sdw_clip_encoding enc[2] = {{0}};
    sdw_status s = sdw_clip_prompt_encode_chunks(p, o, n, prompts, which, ctx != NULL,
                                                 want_pooled, enc, truncated, tap, tap_user, err);
    if (s) return s;
    const int W = sdw_clip_prompt_width(p), P = sdw_clip_prompt_pooled_width(p);
    for (int k = 0; k < n; k++) {
        if (ctx) {
            sdw_clip_encoding first = {1, enc[k].hidden, NULL};
            sdw_clip_encoding_place(&first, 1, false, NULL, W, ctx[k], ld, col);
        }
        if (pooled && pooled[k]) memcpy(pooled[k], enc[k].pooled, (size_t)P * sizeof(float));
        sdw_clip_encoding_deinit(&enc[k]);
    }
    return SDW_OK;
}
