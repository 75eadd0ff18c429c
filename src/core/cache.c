/* core/cache.c — key/value lines in the user's cache folder (see cache.h). */
#include "core/cache.h"

#include "core/common.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER "sdworker cache 1\n"
#define MAX_FILE (256 * 1024) /* a few hundred entries; anything larger is not ours */
#define MAX_LINE 1024

bool sdw_cache_dir(char *buf, size_t cap) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/') /* the spec: a relative XDG_CACHE_HOME is invalid, ignore it */
        n = snprintf(buf, cap, "%s/sdworker", xdg);
    else if (home && home[0] == '/')
        n = snprintf(buf, cap, "%s/.cache/sdworker", home);
    else
        return false;
    return n > 0 && (size_t)n < cap;
}

static bool file_path(const char *name, char *buf, size_t cap) {
    char dir[4096];
    if (!sdw_cache_dir(dir, sizeof dir)) return false;
    const int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap;
}

/* The file's entries after its header, or NULL when it is absent or damaged (free it). Every
 * line is "key\tvalue\n". */
static char *read_entries(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_FILE) return NULL;
    char *text = NULL;
    size_t len = 0;
    if (sdw_read_file(path, &text, &len, NULL) != SDW_OK) return NULL;
    const size_t hl = strlen(HEADER);
    bool ok = len >= hl && memcmp(text, HEADER, hl) == 0 && strlen(text) == len &&
              (len == hl || text[len - 1] == '\n');
    for (const char *p = text + hl; ok && *p; p = strchr(p, '\n') + 1) {
        const char *nl = strchr(p, '\n'), *tab = memchr(p, '\t', (size_t)(nl - p));
        ok = tab && tab > p && nl - p < MAX_LINE && !memchr(tab + 1, '\t', (size_t)(nl - tab - 1));
    }
    if (!ok) {
        SDW_DEBUG("cache file %s is damaged: ignored", path);
        free(text);
        return NULL;
    }
    memmove(text, text + hl, len - hl + 1);
    return text;
}

/* s with tabs and newlines replaced, into buf. */
static void one_line(const char *s, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", s);
    for (char *p = buf; *p; p++)
        if (*p == '\t' || *p == '\n' || *p == '\r') *p = ' ';
}

/* The line of key in entries, or NULL. */
static const char *find(const char *entries, const char *key) {
    const size_t kl = strlen(key);
    for (const char *p = entries; *p; p = strchr(p, '\n') + 1)
        if (strncmp(p, key, kl) == 0 && p[kl] == '\t') return p;
    return NULL;
}

bool sdw_cache_get(const char *name, const char *key, char *val, size_t cap) {
    char path[4200], k[MAX_LINE];
    if (!file_path(name, path, sizeof path)) return false;
    char *entries = read_entries(path);
    if (!entries) return false;
    one_line(key, k, sizeof k);
    const char *line = find(entries, k);
    if (line) {
        const char *v = line + strlen(k) + 1;
        const size_t n = (size_t)(strchr(v, '\n') - v);
        snprintf(val, cap, "%.*s", (int)n, v);
    }
    free(entries);
    return line != NULL;
}

/* mkdir -p of the cache folder (its parents too: ~/.cache may not exist yet). */
static bool make_dirs(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1;; s++) {
        const bool end = *s == 0;
        if (*s == '/' || end) {
            *s = 0;
            if (mkdir(p, 0700) != 0 && errno != EEXIST) return false;
            if (end) return true;
            *s = '/';
        }
    }
}

sdw_status sdw_cache_put(const char *name, const char *key, const char *value, sdw_error *err) {
    char dir[4096], path[4200], tmp[4300], k[MAX_LINE], v[MAX_LINE];
    if (!sdw_cache_dir(dir, sizeof dir) || !file_path(name, path, sizeof path))
        return sdw_error_set(err, SDW_E_IO, "no cache folder (neither XDG_CACHE_HOME nor HOME)");
    if (!make_dirs(dir))
        return sdw_error_set(err, SDW_E_IO, "cannot create %s: %s", dir, strerror(errno));
    one_line(key, k, sizeof k);
    one_line(value, v, sizeof v);
    char *entries = read_entries(path);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        free(entries);
        return sdw_error_set(err, SDW_E_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    fputs(HEADER, f);
    /* the other entries as they were, then this one */
    for (const char *p = entries ? entries : ""; *p; p = strchr(p, '\n') + 1) {
        const size_t n = (size_t)(strchr(p, '\n') - p) + 1;
        if (!(strncmp(p, k, strlen(k)) == 0 && p[strlen(k)] == '\t')) fwrite(p, 1, n, f);
    }
    fprintf(f, "%s\t%s\n", k, v);
    free(entries);
    const bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed || rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return sdw_error_set(err, SDW_E_IO, "cannot write %s: %s", path, strerror(e));
    }
    return SDW_OK;
}
