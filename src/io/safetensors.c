/* io/safetensors.c — validating mmap reader, dtype conversion and a streaming writer.
 *
 * File layout (https://github.com/huggingface/safetensors): u64 little-endian header length N,
 * N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"k": "v"}}, then the data section; offsets are relative to its start.
 * Everything in the header is untrusted: all sizes go through overflow-checked arithmetic before
 * any pointer into the mapping is formed. */
#define _GNU_SOURCE
#include "io/safetensors.h"

#include "core/cpu.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

/* The reference implementation refuses headers over 100 MB; real ones are well under 1 MB. */
#define ST_MAX_HEADER ((uint64_t)100000000)

struct sdw_st_file {
    char *path;
    const uint8_t *base; /* whole file (mapping or borrowed buffer) */
    size_t len;
    bool mapped;
    sdw_st_tensor *tensors; /* sorted by name */
    int n;
    char *names; /* one block holding every tensor name */
    json_t *metadata; /* the header's "__metadata__" object (string values), or NULL */
    sdw_st_file **parts; /* a sharded checkpoint: its shard files (owned; names live there) */
    int n_parts;
};

static const struct {
    const char *name;
    sdw_dtype dtype;
    size_t size;
} k_dtypes[] = {
    {"F32", SDW_DTYPE_F32, 4},         {"F16", SDW_DTYPE_F16, 2},
    {"BF16", SDW_DTYPE_BF16, 2},       {"F64", SDW_DTYPE_F64, 8},
    {"I64", SDW_DTYPE_I64, 8},         {"I32", SDW_DTYPE_I32, 4},
    {"I16", SDW_DTYPE_I16, 2},         {"I8", SDW_DTYPE_I8, 1},
    {"U8", SDW_DTYPE_U8, 1},           {"BOOL", SDW_DTYPE_BOOL, 1},
    {"F8_E4M3", SDW_DTYPE_F8_E4M3, 1}, {"F8_E5M2", SDW_DTYPE_F8_E5M2, 1},
};

/* Valid in the format but not representable here (unsigned wide ints). */
static const char *const k_unsupported_dtypes[] = {"U16", "U32", "U64"};

const char *sdw_dtype_str(sdw_dtype t) {
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_dtypes); i++)
        if (k_dtypes[i].dtype == t) return k_dtypes[i].name;
    return "?";
}

size_t sdw_dtype_size(sdw_dtype t) {
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_dtypes); i++)
        if (k_dtypes[i].dtype == t) return k_dtypes[i].size;
    SDW_ABORT("sdw_dtype_size: invalid dtype %d", (int)t);
}

bool sdw_dtype_is_float(sdw_dtype t) {
    switch (t) {
    case SDW_DTYPE_F32:
    case SDW_DTYPE_F16:
    case SDW_DTYPE_BF16:
    case SDW_DTYPE_F64:
    case SDW_DTYPE_F8_E4M3:
    case SDW_DTYPE_F8_E5M2:
        return true;
    default:
        return false;
    }
}

/* ---- pickle detection ---- */

static bool has_pickle_extension(const char *path) {
    static const char *const exts[] = {".ckpt", ".pt", ".pth", ".bin"};
    size_t n = strlen(path);
    for (size_t i = 0; i < SDW_ARRAY_LEN(exts); i++) {
        size_t m = strlen(exts[i]);
        if (n >= m && strcasecmp(path + n - m, exts[i]) == 0) return true;
    }
    return false;
}

/* torch.save writes a zip archive (since 1.6) or a bare pickle (protocol 2..5: 0x80 <proto>). */
static bool has_pickle_magic(const uint8_t *p, size_t len) {
    if (len >= 4 && memcmp(p, "PK\x03\x04", 4) == 0) return true;
    return len >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5;
}

static sdw_status pickle_error(sdw_error *err, const char *path) {
    return sdw_error_set(err, SDW_E_UNSUPPORTED,
                         "%s is a PyTorch pickle checkpoint; pickle files can execute arbitrary "
                         "code when loaded, so sdworker does not read them. Convert it to "
                         ".safetensors first (e.g. with the safetensors convert script or "
                         "diffusers' convert tools)",
                         path);
}

/* ---- header validation ---- */

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const sdw_st_tensor *)a)->name, ((const sdw_st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const sdw_st_tensor *x = *(const sdw_st_tensor *const *)a, *y = *(const sdw_st_tensor *const *)b;
    if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return x->n_bytes < y->n_bytes ? -1 : x->n_bytes > y->n_bytes;
}

static sdw_status parse_metadata(json_t *meta, const char *path, sdw_error *err) {
    if (!json_is_object(meta))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: \"__metadata__\" must be a JSON object", path);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "%s: \"__metadata__\" entry \"%s\" must be a string", path, k);
    }
    return SDW_OK;
}

/* Fills t from one header entry; data pointers are formed only after every check passed. */
static sdw_status parse_tensor(const char *path, const char *name, json_t *e, const uint8_t *data,
                               size_t data_len, sdw_st_tensor *t, sdw_error *err) {
    if (!json_is_object(e))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: tensor %s: header entry is not an object",
                             path, name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: tensor %s: entry needs \"dtype\" (string), \"shape\" (array) "
                             "and \"data_offsets\" (array)",
                             path, name);

    const char *ds = json_string_value(jd);
    size_t esize = 0;
    for (size_t i = 0; i < SDW_ARRAY_LEN(k_dtypes); i++)
        if (strcmp(ds, k_dtypes[i].name) == 0) t->dtype = k_dtypes[i].dtype, esize = k_dtypes[i].size;
    if (!esize) {
        for (size_t i = 0; i < SDW_ARRAY_LEN(k_unsupported_dtypes); i++)
            if (strcmp(ds, k_unsupported_dtypes[i]) == 0)
                return sdw_error_set(err, SDW_E_UNSUPPORTED,
                                     "%s: tensor %s: dtype %s is not supported", path, name, ds);
        return sdw_error_set(err, SDW_E_FORMAT, "%s: tensor %s: unknown dtype \"%s\"", path, name,
                             ds);
    }

    size_t nd = json_array_size(js);
    if (nd > SDW_ST_MAX_DIMS)
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: tensor %s: %zu dimensions (max %d)",
                             path, name, nd, SDW_ST_MAX_DIMS);
    t->n_dims = (int)nd;
    size_t n = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "%s: tensor %s: shape entries must be non-negative integers",
                                 path, name);
        t->shape[i] = (int64_t)json_integer_value(d);
        if ((uint64_t)t->shape[i] > SIZE_MAX || !sdw_size_mul(n, (size_t)t->shape[i], &n))
            return sdw_error_set(err, SDW_E_FORMAT, "%s: tensor %s: element count overflows",
                                 path, name);
    }
    size_t nbytes;
    if (!sdw_size_mul(n, esize, &nbytes))
        return sdw_error_set(err, SDW_E_FORMAT, "%s: tensor %s: byte size overflows", path, name);

    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (json_array_size(jo) != 2 || !json_is_integer(jb) || !json_is_integer(je) ||
        json_integer_value(jb) < 0 || json_integer_value(je) < 0)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: tensor %s: data_offsets must be two non-negative integers "
                             "[begin, end]",
                             path, name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (begin > end)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: tensor %s: data_offsets begin %llu > end %llu", path, name,
                             (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: tensor %s: data_offsets [%llu, %llu] past the end of the data "
                             "section (%zu bytes; file truncated?)",
                             path, name, (unsigned long long)begin, (unsigned long long)end,
                             data_len);
    if (end - begin != nbytes)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: tensor %s: shape x dtype size is %zu bytes but data_offsets "
                             "span %llu bytes",
                             path, name, nbytes, (unsigned long long)(end - begin));
    t->n_elems = n;
    t->n_bytes = nbytes;
    t->data = data + begin;
    return SDW_OK;
}

/* Tensors may leave gaps (harmless) but must not share bytes: a writer bug that would make two
 * weights alias. Empty tensors occupy nothing. */
static sdw_status check_overlaps(sdw_st_file *f, sdw_error *err) {
    if (f->n < 2) return SDW_OK;
    const sdw_st_tensor **byoff = sdw_xmalloc(sizeof *byoff * (size_t)f->n);
    for (int i = 0; i < f->n; i++) byoff[i] = &f->tensors[i];
    qsort(byoff, (size_t)f->n, sizeof *byoff, cmp_tensor_offset);
    sdw_status st = SDW_OK;
    const sdw_st_tensor *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const sdw_st_tensor *t = byoff[i];
        if (!t->n_bytes) continue;
        if (prev && (const uint8_t *)t->data < (const uint8_t *)prev->data + prev->n_bytes) {
            st = sdw_error_set(err, SDW_E_FORMAT,
                               "%s: tensors %s and %s have overlapping data_offsets", f->path,
                               prev->name, t->name);
            break;
        }
        prev = t;
    }
    free(byoff);
    return st;
}

static sdw_status parse_header(sdw_st_file *f, sdw_error *err) {
    const char *path = f->path;
    if (f->len < 8)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a safetensors file (only %zu bytes; truncated?)", path, f->len);
    uint64_t hlen;
    memcpy(&hlen, f->base, 8);
    bool plausible = hlen >= 2 && hlen <= f->len - 8 && hlen <= ST_MAX_HEADER && f->base[8] == '{';
    if (!plausible && has_pickle_magic(f->base, f->len)) return pickle_error(err, path);
    if (hlen > f->len - 8)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a safetensors file, or truncated: header length %llu is "
                             "past the end of the file (%zu bytes)",
                             path, (unsigned long long)hlen, f->len);
    if (hlen > ST_MAX_HEADER)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a safetensors file: header length %llu exceeds the %llu "
                             "byte limit",
                             path, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen < 2 || f->base[8] != '{')
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a safetensors file (the header is not a JSON object)", path);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: safetensors header is not valid JSON: %s (at byte %d)", path,
                             jerr.text, jerr.position);
    sdw_status st = SDW_OK;
    if (!json_is_object(root)) {
        st = sdw_error_set(err, SDW_E_FORMAT,
                           "%s: not a safetensors file (the header is not a JSON object)", path);
        goto done;
    }
    const uint8_t *data = f->base + 8 + hlen;
    size_t data_len = f->len - 8 - (size_t)hlen;

    size_t n = json_object_size(root), names_len = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) names_len += strlen(key) + 1;
    if (n > INT32_MAX) {
        st = sdw_error_set(err, SDW_E_FORMAT, "%s: too many tensors", path);
        goto done;
    }
    f->tensors = sdw_xcalloc(n ? n : 1, sizeof *f->tensors);
    f->names = sdw_xmalloc(names_len ? names_len : 1);
    char *np = f->names;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = parse_metadata(val, path, err)) != SDW_OK) goto done;
            f->metadata = json_incref(val);
            continue;
        }
        sdw_st_tensor *t = &f->tensors[f->n];
        if ((st = parse_tensor(path, key, val, data, data_len, t, err)) != SDW_OK) goto done;
        size_t kl = strlen(key) + 1;
        t->name = memcpy(np, key, kl);
        np += kl;
        f->n++;
    }
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_name);
    st = check_overlaps(f, err);
done:
    json_decref(root);
    return st;
}

/* ---- open / close ---- */

static sdw_status open_common(sdw_st_file *f, sdw_st_file **out, sdw_error *err) {
    sdw_status st = parse_header(f, err);
    if (st != SDW_OK) {
        sdw_st_close(f);
        return st;
    }
    *out = f;
    return SDW_OK;
}

sdw_status sdw_st_open(const char *path, sdw_st_file **out, sdw_error *err) {
    SDW_ASSERT(path && out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sdw_error_set(err, SDW_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sdw_error_set(err, SDW_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: file too large", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        if (has_pickle_extension(path)) return pickle_error(err, path);
        return sdw_error_set(err, SDW_E_FORMAT,
                             "%s: not a safetensors file (only %zu bytes; truncated?)", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return sdw_error_set(err, SDW_E_IO, "cannot map %s: %s", path, strerror(map_errno));

    sdw_st_file *f = sdw_xcalloc(1, sizeof *f);
    f->path = sdw_xstrdup(path);
    f->base = map;
    f->len = len;
    f->mapped = true;
    /* Content decides: a pickle is refused whatever its name, and a file named .bin that really
     * is safetensors is harmless to read. The extension only chooses the clearer message. */
    uint64_t hlen;
    memcpy(&hlen, f->base, 8);
    if (has_pickle_extension(path) && !(len > 8 && hlen <= len - 8 && f->base[8] == '{')) {
        sdw_st_close(f);
        return pickle_error(err, path);
    }
    return open_common(f, out, err);
}

void sdw_st_drop_pages(const sdw_st_file *f, const sdw_st_tensor *t) {
    if (!(f->mapped || f->n_parts) || !t->n_bytes) return;
    /* Whole pages around the tensor: a neighbour sharing an edge page just faults it back in
     * (read-only private mapping, never written). */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)t->data & ~(page - 1);
    uintptr_t hi = ((uintptr_t)t->data + t->n_bytes + page - 1) & ~(page - 1);
    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advisory: failure only costs memory */
}

sdw_status sdw_st_open_memory(const void *data, size_t len, const char *label, sdw_st_file **out,
                              sdw_error *err) {
    SDW_ASSERT((data || !len) && out);
    sdw_st_file *f = sdw_xcalloc(1, sizeof *f);
    f->path = sdw_xstrdup(label ? label : "(memory)");
    f->base = data;
    f->len = len;
    return open_common(f, out, err);
}

void sdw_st_close(sdw_st_file *f) {
    if (!f) return;
    if (f->mapped) munmap((void *)f->base, f->len);
    for (int i = 0; i < f->n_parts; i++)
        sdw_st_close(f->parts[i]);
    free(f->parts);
    free(f->tensors);
    free(f->names);
    free(f->path);
    json_decref(f->metadata);
    free(f);
}

/* ---- sharded checkpoints ---- */

#define ST_MAX_SHARDS 1024 /* real ones have a handful; bounds what an index can make us open */

/* The shard file names of an index's weight_map, each once, in first-seen order. */
static sdw_status shard_names(json_t *map, const char *index, const char ***out, int *n_out,
                              sdw_error *err) {
    const char *key;
    json_t *v;
    const char **names = NULL;
    int n = 0;
    json_object_foreach(map, key, v) {
        const char *file = json_string_value(v);
        if (!file || !*file || strchr(file, '/') || !strcmp(file, "..")) {
            free(names);
            return sdw_error_set(err, SDW_E_FORMAT,
                                 "%s: weight_map[\"%s\"] must name a file beside the index", index,
                                 key);
        }
        bool seen = false;
        for (int i = 0; i < n && !seen; i++)
            seen = strcmp(names[i], file) == 0;
        if (seen) continue;
        if (n == ST_MAX_SHARDS) {
            free(names);
            return sdw_error_set(err, SDW_E_UNSUPPORTED, "%s: more than %d shards", index,
                                 ST_MAX_SHARDS);
        }
        names = realloc(names, (size_t)(n + 1) * sizeof *names);
        SDW_ASSERT(names);
        names[n++] = file;
    }
    *out = names;
    *n_out = n;
    return SDW_OK;
}

sdw_status sdw_st_open_sharded(const char *index, sdw_st_file **out, sdw_error *err) {
    SDW_ASSERT(index && out);
    json_error_t je;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return sdw_error_set(err, SDW_E_FORMAT, "%s: not a valid shard index (line %d: %s)", index,
                             je.line, je.text);
    json_t *map = json_object_get(root, "weight_map");
    sdw_st_file *f = NULL;
    const char **names = NULL;
    int n_names = 0;
    sdw_status st;
    if (!json_is_object(map) || json_object_size(map) == 0) {
        st = sdw_error_set(err, SDW_E_FORMAT, "%s: no \"weight_map\" object of tensor -> file",
                           index);
        goto done;
    }
    if ((st = shard_names(map, index, &names, &n_names, err))) goto done;
    f = sdw_xcalloc(1, sizeof *f);
    f->path = sdw_xstrdup(index);
    f->parts = sdw_xcalloc((size_t)n_names, sizeof *f->parts);
    const char *slash = strrchr(index, '/');
    const int dir_len = slash ? (int)(slash - index) : 1;
    const char *dir = slash ? index : ".";
    size_t total = 0;
    for (int i = 0; i < n_names; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%.*s/%s", dir_len, dir, names[i]);
        if ((st = sdw_st_open(path, &f->parts[i], err))) goto done;
        f->n_parts++;
        total += (size_t)sdw_st_count(f->parts[i]);
    }
    if (total > INT32_MAX) {
        st = sdw_error_set(err, SDW_E_FORMAT, "%s: too many tensors", index);
        goto done;
    }
    /* One table over every shard, sorted by name; a name in two shards is ambiguous. */
    f->tensors = sdw_xcalloc(total ? total : 1, sizeof *f->tensors);
    for (int i = 0; i < f->n_parts; i++)
        for (int k = 0; k < sdw_st_count(f->parts[i]); k++)
            f->tensors[f->n++] = *sdw_st_at(f->parts[i], k);
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_name);
    for (int k = 1; k < f->n; k++)
        if (!strcmp(f->tensors[k - 1].name, f->tensors[k].name)) {
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: tensor %s is in two shards", index,
                               f->tensors[k].name);
            goto done;
        }
    /* Every tensor the index lists must be where it says. */
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        int part = 0;
        while (strcmp(names[part], json_string_value(v))) part++;
        if (!sdw_st_find(f->parts[part], key)) {
            st = sdw_error_set(err, SDW_E_FORMAT, "%s: tensor %s is not in %s as it says", index,
                               key, names[part]);
            goto done;
        }
    }
done:
    free(names);
    json_decref(root);
    if (st) {
        sdw_st_close(f);
        return st;
    }
    *out = f;
    return SDW_OK;
}

const char *sdw_st_metadata(const sdw_st_file *f, const char *key) {
    return f->metadata ? json_string_value(json_object_get(f->metadata, key)) : NULL;
}

const char *sdw_st_path(const sdw_st_file *f) { return f->path; }
int sdw_st_count(const sdw_st_file *f) { return f->n; }

const sdw_st_tensor *sdw_st_at(const sdw_st_file *f, int i) {
    SDW_ASSERT(i >= 0 && i < f->n);
    return &f->tensors[i];
}

const sdw_st_tensor *sdw_st_find(const sdw_st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* ---- dtype conversion ---- */

static inline float bits_to_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}
static inline uint32_t f32_to_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

/* IEEE binary16 -> binary32, exact for every input (subnormals normalised, inf/NaN kept). */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (!man) return bits_to_f32(sign);
        /* subnormal: man * 2^-24 is exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

/* binary32 -> binary16 with round-to-nearest-even, overflow to inf, NaN kept quiet. */
static inline uint16_t f32_to_f16(float x) {
    uint32_t u = f32_to_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t exp = (u >> 23) & 0xff, man = u & 0x7fffff;
    if (exp == 0xff) return sign | 0x7c00 | (man ? 0x200 | (uint16_t)(man >> 13) : 0);
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) return sign | 0x7c00;
    if (e <= 0) {
        if (e < -10) return sign; /* below half the smallest subnormal: rounds to zero */
        man |= 0x800000;          /* implicit bit; shift into the subnormal position */
        int shift = 14 - e;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
    /* a carry out of the mantissa correctly bumps the exponent (up to inf) */
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return sign | (uint16_t)half;
}

/* ---- 8-bit floats ----
 * F8_E4M3 is torch.float8_e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0
 * holds the subnormals m * 2^-9; no infinities: S.1111.111 is NaN, so S.1111.110 = ±448 is the
 * largest finite value. F8_E5M2 is torch.float8_e5m2: the top byte of an IEEE binary16 (bias 15,
 * subnormals m * 2^-16, infinities and NaNs as in IEEE). Every value of either is exact in f16,
 * bf16 and f32. */

/* The conversions below are integer-only and branch-free, so their loops vectorise (f32
 * arithmetic would not be speculated by the compiler: it may trap). */

/* E4M3 -> f32, exact for all 256 codes. */
static inline float e4m3_to_f32(uint8_t b) {
    const uint32_t sign = (uint32_t)(b & 0x80) << 24, em = b & 0x7fu;
    /* normal: exponent and mantissa move up to f32's positions, the bias goes from 7 to 127 */
    const uint32_t normal = (em << 20) + (120u << 23);
    /* subnormal (exponent field 0): m * 2^-9 for m = em = 1..7, normalised: the leading bit
     * p = floor(log2 m) gives the exponent 2^(p-9), the bits below it the mantissa */
    const uint32_t p = (em >= 2) + (em >= 4);
    const uint32_t sub = em ? ((118u + p) << 23) | ((em << (23 - p)) & 0x7fffffu) : 0;
    uint32_t u = em >= 8 ? normal : sub;
    u = em == 0x7f ? 0x7ff00000u : u; /* NaN: all-ones exponent, the mantissa carried over */
    return bits_to_f32(sign | u);
}

/* Rounds a = |x| (f32 bits, below the normal range of a format whose subnormals are multiples
 * of 2^-k) to the nearest multiple, ties to even: the significand shifted right by
 * shift0 - exponent (shift0 = 150 - k), capped at 31 (anything shifted that far is < 1/2).
 * The round and sticky bits come from variable shifts of the significand only, so this
 * vectorises (AVX2 shifts a vector by a vector). */
static inline uint32_t subnormal_code(uint32_t a, uint32_t shift0) {
    /* e clamped so that the shift stays in [1, 31] for any input (the caller discards the
     * result outside the subnormal range, but the shift must still be defined) */
    const uint32_t e = SDW_MIN(a >> 23, shift0 - 1), sig = (a & 0x7fffffu) | 0x800000u;
    const uint32_t s1 = (e >= shift0 - 31 ? shift0 - e : 31) - 1; /* s - 1 */
    const uint32_t t = sig >> s1, q = t >> 1, round = t & 1u;     /* t: q and the round bit */
    const uint32_t below = sig - (t << s1);                       /* the bits under it */
    const uint32_t sticky = (below | (0u - below)) >> 31;         /* below != 0 */
    return q + (round & (sticky | q));
}

/* f32 -> E4M3 with round to nearest even, as torch's .to(torch.float8_e4m3fn). Above the max:
 * a magnitude that rounds past 448 (|x| > 464, the midpoint between 448 and the next step 480;
 * 464 itself ties to the even 448) becomes NaN, as do infinities and NaN, with x's sign — E4M3
 * has no infinity and torch's cast does not saturate. (The writer refuses such finite values.) */
static inline uint8_t f32_to_e4m3(float x) {
    const uint32_t u = f32_to_bits(x), a = u & 0x7fffffffu;
    /* normal: rebias 127 -> 7, then round the 20 dropped mantissa bits to nearest even (a carry
     * correctly bumps the exponent); anything past S.1111.110 is NaN (0x7f) */
    uint32_t r = a - (120u << 23);
    r = (r + 0x7ffffu + ((r >> 20) & 1u)) >> 20;
    r = r > 0x7eu ? 0x7fu : r;
    const uint32_t sub = subnormal_code(a, 141); /* below 2^-6: m * 2^-9, m = 0..8 */
    return (uint8_t)(((u >> 24) & 0x80u) | (a < (121u << 23) ? sub : r));
}

/* f32 -> E5M2 with round to nearest even, as torch's .to(torch.float8_e5m2): overflow (|x| >=
 * 61440, the midpoint between the max 57344 and 2^16, ties going up to the even 2^16) gives
 * infinity as in IEEE, NaN gives NaN (S.11111.11), signs kept. */
static inline uint8_t f32_to_e5m2(float x) {
    const uint32_t u = f32_to_bits(x), a = u & 0x7fffffffu;
    uint32_t r = a - (112u << 23); /* rebias 127 -> 15; 21 dropped bits */
    r = (r + 0xfffffu + ((r >> 21) & 1u)) >> 21;
    r = r > 0x7cu ? 0x7cu : r;
    const uint32_t sub = subnormal_code(a, 134); /* below 2^-14: m * 2^-16, m = 0..4 */
    r = a < (113u << 23) ? sub : r;
    r = a > 0x7f800000u ? 0x7fu : r;
    return (uint8_t)(((u >> 24) & 0x80u) | r);
}

SDW_VEC_BODY void e4m3_block_to_f32_body(const uint8_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = e4m3_to_f32(s[i]);
}
SDW_VEC_KERNEL(e4m3_block_to_f32, (const uint8_t *s, float *d, size_t n), (s, d, n))

SDW_VEC_BODY void f32_block_to_e4m3_body(const float *s, uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_e4m3(s[i]);
}
SDW_VEC_KERNEL(f32_block_to_e4m3, (const float *s, uint8_t *d, size_t n), (s, d, n))

/* binary32 -> bfloat16 with round-to-nearest-even (a carry bumps the exponent, up to inf), NaN
 * kept quiet; branch-free, so the loop vectorises. */
SDW_VEC_BODY void f32_block_to_bf16_body(const float *s, uint16_t *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = f32_to_bits(s[i]), nan = (u & 0x7fffffffu) > 0x7f800000u;
        const uint32_t m = 0u - nan, quiet = (u >> 16) | 0x40u;
        d[i] = (uint16_t)((quiet & m) | (((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) & ~m));
    }
}
SDW_VEC_KERNEL(f32_block_to_bf16, (const float *s, uint16_t *d, size_t n), (s, d, n))

SDW_VEC_BODY void f32_block_to_e5m2_body(const float *s, uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_e5m2(s[i]);
}
SDW_VEC_KERNEL(f32_block_to_e5m2, (const float *s, uint8_t *d, size_t n), (s, d, n))

#if defined(__x86_64__)
#include <immintrin.h>
/* VCVTPH2PS is exact for every half value, subnormals included (MXCSR.DAZ does not apply to
 * half inputs), so it matches f16_to_f32 bit for bit; ~10x faster on multi-GB f16 checkpoints. */
__attribute__((target("avx,f16c"))) static size_t f16_block_f16c(const uint8_t *s, float *d,
                                                                   size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
    return i;
}
/* VCVTPS2PH with round-to-nearest-even: the same half as f32_to_f16 for every f32 input,
 * subnormals, overflow to infinity and NaN payloads included (checked over all 2^32 inputs). */
__attribute__((target("avx,f16c"))) static size_t f32_block_f16c(const float *s, uint8_t *d,
                                                                   size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
/* E5M2 bytes as the high bytes of halves, through the same exact conversion. */
__attribute__((target("avx2,f16c"))) static size_t e5m2_block_f16c(const uint8_t *s, float *d,
                                                                   size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i b = _mm_loadl_epi64((const __m128i *)(s + i));
        const __m128i h = _mm_slli_epi16(_mm_cvtepu8_epi16(b), 8);
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
    return i;
}
#endif

#if defined(__x86_64__)
/* F16C comes with our AVX2 level (core/cpu.h: AVX2 + FMA + F16C, read with CPUID, capped by
 * SDW_MAX_ISA). */
static bool cpu_has_f16c(void) {
    return sdw_cpu_isa() >= SDW_ISA_AVX2;
}
#endif

void sdw_convert_to_f32(sdw_dtype dtype, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t done = 0;
    switch (dtype) {
    case SDW_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return;
    case SDW_DTYPE_F16:
#if defined(__x86_64__)
        if (cpu_has_f16c()) done = f16_block_f16c(s, dst, n);
#endif
        for (size_t i = done; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2); /* tensor data need not be aligned */
            dst[i] = f16_to_f32(h);
        }
        return;
    case SDW_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = bits_to_f32((uint32_t)h << 16);
        }
        return;
    case SDW_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        return;
    case SDW_DTYPE_F8_E4M3:
        e4m3_block_to_f32(s, dst, n);
        return;
    case SDW_DTYPE_F8_E5M2:
#if defined(__x86_64__)
        if (cpu_has_f16c())
            done = e5m2_block_f16c(s, dst, n);
#endif
        for (size_t i = done; i < n; i++)
            dst[i] = f16_to_f32((uint16_t)(s[i] << 8));
        return;
    default:
        SDW_ABORT("sdw_convert_to_f32: %s is not a float dtype", sdw_dtype_str(dtype));
    }
}

void sdw_convert_from_f32(sdw_dtype dtype, const float *src, void *dst, size_t n) {
    uint16_t *d16 = dst;
    size_t done = 0;
    switch (dtype) {
    case SDW_DTYPE_F16:
#if defined(__x86_64__)
        if (cpu_has_f16c()) done = f32_block_f16c(src, dst, n);
#endif
        for (size_t i = done; i < n; i++)
            d16[i] = f32_to_f16(src[i]);
        return;
    case SDW_DTYPE_BF16:
        f32_block_to_bf16(src, d16, n);
        return;
    case SDW_DTYPE_F8_E4M3:
        f32_block_to_e4m3(src, dst, n);
        return;
    case SDW_DTYPE_F8_E5M2:
        f32_block_to_e5m2(src, dst, n);
        return;
    default:
        SDW_ABORT("sdw_convert_from_f32: cannot convert to %s", sdw_dtype_str(dtype));
    }
}

/* ---- writer ---- */

typedef struct st_wtensor {
    char *name;
    sdw_dtype dtype;
    int n_dims;
    int64_t shape[SDW_ST_MAX_DIMS];
    size_t n_elems;
} st_wtensor;

struct sdw_st_writer {
    char *path, *tmp_path;
    FILE *fp;
    st_wtensor *t;
    int n, cap, next; /* next: index of the tensor the next write() supplies */
    bool begun;
    char bad[256]; /* first invalid add(), reported by begin() */
};

sdw_status sdw_st_writer_create(const char *path, sdw_st_writer **out, sdw_error *err) {
    SDW_ASSERT(path && out);
    sdw_st_writer *w = sdw_xcalloc(1, sizeof *w);
    w->path = sdw_xstrdup(path);
    size_t n = strlen(path) + 5;
    w->tmp_path = sdw_xmalloc(n);
    snprintf(w->tmp_path, n, "%s.tmp", path);
    /* Written under a temporary name and renamed at finish, so a failed or interrupted write
     * never leaves a truncated file that looks like a checkpoint. */
    w->fp = fopen(w->tmp_path, "wb");
    if (!w->fp) {
        sdw_status st = sdw_error_set(err, SDW_E_IO, "cannot create %s: %s", w->tmp_path,
                                      strerror(errno));
        free(w->tmp_path);
        free(w->path);
        free(w);
        return st;
    }
    *out = w;
    return SDW_OK;
}

void sdw_st_writer_add(sdw_st_writer *w, const char *name, sdw_dtype dtype, int n_dims,
                       const int64_t *shape) {
    SDW_ASSERT(w && name && !w->begun);
    SDW_ASSERT(dtype == SDW_DTYPE_F32 || dtype == SDW_DTYPE_F16 || dtype == SDW_DTYPE_BF16 ||
               dtype == SDW_DTYPE_F8_E4M3 || dtype == SDW_DTYPE_F8_E5M2);
    SDW_ASSERT(n_dims >= 0 && n_dims <= SDW_ST_MAX_DIMS && (shape || !n_dims));
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->t = realloc(w->t, sizeof *w->t * (size_t)w->cap);
        if (!w->t) SDW_ABORT("out of memory");
    }
    st_wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = sdw_xstrdup(name);
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->n_elems = 1;
    for (int i = 0; i < n_dims; i++) {
        t->shape[i] = shape[i];
        if (shape[i] < 0 || !sdw_size_mul(t->n_elems, (size_t)shape[i], &t->n_elems)) {
            if (!w->bad[0]) snprintf(w->bad, sizeof w->bad, "tensor %s: invalid shape", name);
        }
    }
    if (!strcmp(name, "__metadata__") && !w->bad[0])
        snprintf(w->bad, sizeof w->bad, "\"__metadata__\" is not a valid tensor name");
}

sdw_status sdw_st_writer_begin(sdw_st_writer *w, sdw_error *err) {
    SDW_ASSERT(w && !w->begun);
    w->begun = true;
    if (w->bad[0]) return sdw_error_set(err, SDW_E_INVALID_ARG, "%s: %s", w->path, w->bad);
    json_t *root = json_object();
    size_t off = 0;
    sdw_status st = SDW_OK;
    for (int i = 0; i < w->n; i++) {
        st_wtensor *t = &w->t[i];
        size_t nb;
        if (!sdw_size_mul(t->n_elems, sdw_dtype_size(t->dtype), &nb) || off + nb < off) {
            st = sdw_error_set(err, SDW_E_INVALID_ARG, "%s: tensor %s too large", w->path, t->name);
            goto done;
        }
        json_t *shape = json_array();
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(sdw_dtype_str(t->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets",
                            json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb)));
        if (json_object_get(root, t->name)) {
            json_decref(e);
            st = sdw_error_set(err, SDW_E_INVALID_ARG, "%s: tensor %s added twice", w->path,
                               t->name);
            goto done;
        }
        json_object_set_new(root, t->name, e);
        off += nb;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr) SDW_ABORT("out of memory");
    /* Pad with spaces so the data section starts 8-byte aligned, as the reference writer does
     * (lets readers use the mapping as f32/f64 arrays directly). */
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    uint64_t hlen = padded;
    bool ok = fwrite(&hlen, 8, 1, w->fp) == 1 && fwrite(hdr, 1, hl, w->fp) == hl;
    for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', w->fp) != EOF;
    free(hdr);
    if (!ok) st = sdw_error_set(err, SDW_E_IO, "error writing %s: %s", w->tmp_path, strerror(errno));
done:
    json_decref(root);
    return st;
}

/* The first of n values that is finite but became NaN (E4M3) or infinity (E5M2) in the 8-bit
 * codes c, or n. The converter follows torch there; a file written from finite weights should
 * hold them, so the writer refuses instead of storing NaN or infinity. */
static size_t fp8_out_of_range(sdw_dtype dt, const float *x, const uint8_t *c, size_t n) {
    const uint8_t special = dt == SDW_DTYPE_F8_E4M3 ? 0x7f : 0x7c; /* NaN / lowest inf-NaN code */
    for (size_t i = 0; i < n; i++)
        if ((c[i] & special) == special && isfinite(x[i])) return i;
    return n;
}

sdw_status sdw_st_writer_write(sdw_st_writer *w, const float *data, sdw_error *err) {
    SDW_ASSERT(w && w->begun && w->next < w->n);
    const st_wtensor *t = &w->t[w->next++];
    if (t->dtype == SDW_DTYPE_F32) {
        if (fwrite(data, 4, t->n_elems, w->fp) != t->n_elems) goto io_fail;
        return SDW_OK;
    }
    /* Convert in bounded chunks: full-size checkpoints have tensors of hundreds of MB. */
    enum { CHUNK = 1 << 16 };
    uint16_t buf[CHUNK];
    const size_t esize = sdw_dtype_size(t->dtype);
    for (size_t i = 0; i < t->n_elems; i += CHUNK) {
        size_t m = SDW_MIN((size_t)CHUNK, t->n_elems - i);
        sdw_convert_from_f32(t->dtype, data + i, buf, m);
        if (esize == 1) {
            size_t bad = fp8_out_of_range(t->dtype, data + i, (const uint8_t *)buf, m);
            if (bad < m)
                return sdw_error_set(err, SDW_E_INVALID_ARG,
                                     "%s: tensor %s: value %g at element %zu is outside the range "
                                     "of %s (max %g)",
                                     w->path, t->name, (double)data[i + bad], i + bad,
                                     sdw_dtype_str(t->dtype),
                                     t->dtype == SDW_DTYPE_F8_E4M3 ? 448.0 : 57344.0);
        }
        if (fwrite(buf, esize, m, w->fp) != m) goto io_fail;
    }
    return SDW_OK;
io_fail:
    return sdw_error_set(err, SDW_E_IO, "error writing %s (tensor %s): %s", w->tmp_path, t->name,
                         strerror(errno));
}

sdw_status sdw_st_writer_finish(sdw_st_writer *w, sdw_error *err) {
    if (!w) return SDW_OK;
    sdw_status st = SDW_OK;
    if (!w->begun || w->next != w->n)
        st = sdw_error_set(err, SDW_E_INVALID_ARG,
                           "%s: writer finished after %d of %d tensors were written", w->path,
                           w->next, w->n);
    bool io_ok = fflush(w->fp) == 0 && !ferror(w->fp);
    if (fclose(w->fp) != 0) io_ok = false;
    if (st == SDW_OK && !io_ok)
        st = sdw_error_set(err, SDW_E_IO, "error writing %s: %s", w->tmp_path, strerror(errno));
    if (st == SDW_OK && rename(w->tmp_path, w->path) != 0)
        st = sdw_error_set(err, SDW_E_IO, "cannot rename %s to %s: %s", w->tmp_path, w->path,
                           strerror(errno));
    if (st != SDW_OK) unlink(w->tmp_path);
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    free(w->tmp_path);
    free(w->path);
    free(w);
    return st;
}
