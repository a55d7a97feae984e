/*
 * fetch.c: named pretrained weights (see fetch.h): the manifest reader, and the
 * downloader: libcurl for the transfer, OpenSSL's EVP for the hashes, flock(2)
 * between processes and a registry of downloads under way inside a process.
 */
#include "fetch.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

/* ---- the manifest ----------------------------------------------------------- */

static const char *const entry_fields[] = {"url", "file", "size", "sha256", "md5", "format",
                                           "variant", "preprocess", "classes", "top1",
                                           "description", "sources", "unverified"};

static int one_of(const char *s, const char *const *set, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, set[i]))
            return 1;
    return 0;
}

/* A required string field of entry obj; errors name "weights.NAME.FIELD". */
static int field_string(json_t *obj, const char *path, const char *name, const char *field,
                        const char **out, Error *err)
{
    json_t *v = json_object_get(obj, field);
    if (!v)
        return error_set(err, "%s: weights.%s: missing \"%s\"", path, name, field);
    if (!json_is_string(v) || !json_string_length(v))
        return error_set(err, "%s: weights.%s.%s: expected a non-empty string", path, name,
                         field);
    *out = json_string_value(v);
    return 0;
}

/* A pinned hash: null or absent (""), or exactly digits hexadecimal digits,
 * stored in lower case. */
static int field_hash(json_t *obj, const char *path, const char *name, const char *field,
                      size_t digits, char *out, Error *err)
{
    json_t *v = json_object_get(obj, field);
    out[0] = '\0';
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    int ok = s && strlen(s) == digits;
    for (size_t i = 0; ok && i < digits; i++)
        ok = isxdigit((unsigned char)s[i]) != 0;
    if (!ok)
        return error_set(err, "%s: weights.%s.%s: expected %zu hexadecimal digits or null",
                         path, name, field, digits);
    for (size_t i = 0; i <= digits; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    return 0;
}

static int url_scheme_ok(const char *u)
{
    return !strncmp(u, "http://", 7) || !strncmp(u, "https://", 8) || !strncmp(u, "file://", 7);
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof ((FetchEntry *)0)->name || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '.' ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return strcmp(s, "imagenet") != 0;
}

static int entry_parse(FetchEntry *e, const char *path, const char *name, json_t *obj,
                       Error *err)
{
    if (!name_ok(name))
        return error_set(err, "%s: weights.%s: a name is 1 to 63 characters of a-z, 0-9, '.', "
                              "'_' and '-', not starting with '.' or '-', and not \"imagenet\"",
                         path, name);
    if (!json_is_object(obj))
        return error_set(err, "%s: weights.%s: expected an object", path, name);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!one_of(key, entry_fields, (int)(sizeof entry_fields / sizeof entry_fields[0])))
            return error_set(err, "%s: weights.%s: unknown field \"%s\"", path, name, key);
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    const char *url, *file, *format, *variant, *preprocess;
    if (field_string(obj, path, name, "url", &url, err) ||
        field_string(obj, path, name, "file", &file, err) ||
        field_string(obj, path, name, "format", &format, err) ||
        field_string(obj, path, name, "variant", &variant, err) ||
        field_string(obj, path, name, "preprocess", &preprocess, err))
        return -1;
    if (!url_scheme_ok(url) || strpbrk(url, " \t\r\n"))
        return error_set(err, "%s: weights.%s.url: expected an http://, https:// or file:// "
                              "URL without spaces", path, name);
    static const char *const formats[] = {"safetensors", "h5"};
    static const char *const variants[] = {"torchvision", "keras"};
    static const char *const preprocesses[] = {"torch", "caffe"};
    if (!one_of(format, formats, 2))
        return error_set(err, "%s: weights.%s.format: expected \"safetensors\" or \"h5\"",
                         path, name);
    if (!one_of(variant, variants, 2))
        return error_set(err, "%s: weights.%s.variant: expected \"torchvision\" or \"keras\"",
                         path, name);
    if (!one_of(preprocess, preprocesses, 2))
        return error_set(err, "%s: weights.%s.preprocess: expected \"torch\" or \"caffe\"",
                         path, name);
    size_t fl = strlen(file), xl = strlen(format);
    if (fl >= sizeof e->file || strchr(file, '/') || file[0] == '.' ||
        fl < xl + 2 || file[fl - xl - 1] != '.' || strcmp(file + fl - xl, format))
        return error_set(err, "%s: weights.%s.file: expected a file name (no '/', not starting "
                              "with '.', under %zu bytes) ending in \".%s\"",
                         path, name, sizeof e->file, format);
    snprintf(e->file, sizeof e->file, "%s", file);
    snprintf(e->format, sizeof e->format, "%s", format);
    snprintf(e->variant, sizeof e->variant, "%s", variant);
    snprintf(e->preprocess, sizeof e->preprocess, "%s", preprocess);

    v = json_object_get(obj, "size");
    if (!v)
        return error_set(err, "%s: weights.%s: missing \"size\" (bytes, or null when unknown)",
                         path, name);
    if (json_is_null(v))
        e->size = -1;
    else if (json_is_integer(v) && json_integer_value(v) > 0)
        e->size = json_integer_value(v);
    else
        return error_set(err, "%s: weights.%s.size: expected a whole number of bytes above 0, "
                              "or null", path, name);
    if (field_hash(obj, path, name, "sha256", 64, e->sha256, err) ||
        field_hash(obj, path, name, "md5", 32, e->md5, err))
        return -1;

    v = json_object_get(obj, "classes");
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100000)
        return error_set(err, "%s: weights.%s.classes: expected a whole number (1000, or 0 for "
                              "a backbone without its top)", path, name);
    e->classes = (int)json_integer_value(v);
    v = json_object_get(obj, "top1");
    if (!v || json_is_null(v))
        e->top1 = -1;
    else if (json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) <= 100)
        e->top1 = json_number_value(v);
    else
        return error_set(err, "%s: weights.%s.top1: expected a percentage or null", path, name);

    v = json_object_get(obj, "description");
    if (v && !json_is_string(v))
        return error_set(err, "%s: weights.%s.description: expected a string", path, name);
    json_t *sources = json_object_get(obj, "sources");
    if (sources && !json_is_object(sources))
        return error_set(err, "%s: weights.%s.sources: expected an object of strings", path,
                         name);
    json_object_foreach(sources, key, v) {
        if (!json_is_string(v))
            return error_set(err, "%s: weights.%s.sources.%s: expected a string", path, name,
                             key);
    }
    v = json_object_get(obj, "unverified");
    if (v && !json_is_array(v))
        return error_set(err, "%s: weights.%s.unverified: expected an array of strings", path,
                         name);
    for (size_t i = 0; v && i < json_array_size(v); i++)
        if (!json_is_string(json_array_get(v, i)))
            return error_set(err, "%s: weights.%s.unverified[%zu]: expected a string", path,
                             name, i);

    const char *desc = json_string_value(json_object_get(obj, "description"));
    e->url = strdup(url);
    e->description = strdup(desc ? desc : "");
    if (!e->url || !e->description)
        return error_set(err, "out of memory");
    return 0;
}

void fetch_manifest_free(FetchManifest *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++) {
        free(m->entries[i].url);
        free(m->entries[i].description);
    }
    free(m->entries);
    free(m);
}

int fetch_default_manifest(char *out, size_t n, Error *err)
{
    char exe[FETCH_PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[len > 0 ? len : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    char cand[3][FETCH_PATH_MAX + 32];
    snprintf(cand[0], sizeof cand[0], "%s/../config/weights.json", exe);
    snprintf(cand[1], sizeof cand[1], "/etc/resnetd/weights.json");
    snprintf(cand[2], sizeof cand[2], "/usr/share/resnetd/weights.json");
    for (int i = len > 0 ? 0 : 1; i < 3; i++) {
        char real[PATH_MAX];
        if (access(cand[i], R_OK) == 0) {
            if ((size_t)snprintf(out, n, "%s", realpath(cand[i], real) ? real : cand[i]) >= n)
                return error_set(err, "%s: path too long", cand[i]);
            return 0;
        }
    }
    return error_set(err, "no weights manifest: none of %s, %s, %s exists; set weights_manifest "
                          "(RESNETD_WEIGHTS_MANIFEST, --manifest)", cand[0], cand[1], cand[2]);
}

int fetch_manifest_load(FetchManifest **out, const char *path, Error *err)
{
    *out = NULL;
    char found[FETCH_PATH_MAX];
    if (!path || !*path) {
        if (fetch_default_manifest(found, sizeof found, err))
            return -1;
        path = found;
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (jerr.line < 1)
            return error_set(err, "%s: cannot read the weights manifest: %s", path, jerr.text);
        return error_set(err, "%s:%d: not valid JSON: %s", path, jerr.line, jerr.text);
    }
    FetchManifest *m = calloc(1, sizeof *m);
    json_t *weights = json_object_get(root, "weights");
    const char *key;
    json_t *v;
    int rc = -1;
    if (!m) {
        error_set(err, "out of memory");
        goto fail;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    if (!json_is_object(root)) {
        error_set(err, "%s: expected a JSON object with \"weights\"", path);
        goto fail;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "weights") && strcmp(key, "about")) {
            error_set(err, "%s: unknown top-level field \"%s\" (expected \"weights\" and an "
                           "optional \"about\")", path, key);
            goto fail;
        }
    }
    if (!json_is_object(weights)) {
        error_set(err, "%s: \"weights\": expected an object of name -> entry", path);
        goto fail;
    }
    m->entries = calloc(json_object_size(weights) + 1, sizeof *m->entries);
    if (!m->entries) {
        error_set(err, "out of memory");
        goto fail;
    }
    json_object_foreach(weights, key, v) {
        FetchEntry *e = &m->entries[m->n++];
        if (entry_parse(e, path, key, v, err))
            goto fail;
        for (int i = 0; i < m->n - 1; i++) {
            if (!strcmp(m->entries[i].file, e->file)) {
                error_set(err, "%s: weights.%s.file: \"%s\" is already the file of \"%s\"", path,
                          key, e->file, m->entries[i].name);
                goto fail;
            }
        }
    }
    *out = m;
    m = NULL;
    rc = 0;
fail:
    fetch_manifest_free(m);
    json_decref(root);
    return rc;
}

const FetchEntry *fetch_manifest_find(const FetchManifest *m, const char *name)
{
    for (int i = 0; m && name && i < m->n; i++)
        if (!strcmp(m->entries[i].name, name))
            return &m->entries[i];
    return NULL;
}

const char *fetch_imagenet_name(const char *variant)
{
    return variant && !strcmp(variant, "keras") ? "keras" : "torchvision-v1";
}

int fetch_resolve(const FetchManifest *m, const char *name, const char *variant,
                  const FetchEntry **out, Error *err)
{
    const char *want = name && !strcmp(name, "imagenet") ? fetch_imagenet_name(variant) : name;
    *out = fetch_manifest_find(m, want);
    if (*out)
        return 0;
    char names[300] = "";
    size_t used = 0;
    for (int i = 0; i < m->n && used < sizeof names; i++) {
        int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                         m->entries[i].name);
        used += w > 0 ? (size_t)w : 0;
    }
    if (name && !strcmp(name, "imagenet"))
        return error_set(err, "\"imagenet\" means \"%s\" for the %s variant, which the weights "
                              "manifest %s does not name (it has: %s)",
                         want, variant && *variant ? variant : "torchvision", m->path, names);
    return error_set(err, "unknown weights name '%s' (the manifest %s has: %s, and \"imagenet\")",
                     name ? name : "", m->path, names);
}

int fetch_entry_pinned(const FetchEntry *e)
{
    return e->sha256[0] || e->md5[0];
}

int fetch_entry_url(const FetchEntry *e, const char *mirror, char *out, size_t n, Error *err)
{
    int w;
    if (mirror && *mirror) {
        if (!url_scheme_ok(mirror))
            return error_set(err, "weights_mirror '%s': expected an http://, https:// or file:// "
                                  "URL", mirror);
        size_t ml = strlen(mirror);
        w = snprintf(out, n, "%s%s%s", mirror, mirror[ml - 1] == '/' ? "" : "/", e->file);
    } else {
        w = snprintf(out, n, "%s", e->url);
    }
    if (w < 0 || (size_t)w >= n)
        return error_set(err, "%s: URL longer than %zu bytes", e->name, n - 1);
    return 0;
}

int fetch_entry_path(const FetchEntry *e, const char *weights_dir, char *out, size_t n,
                     Error *err)
{
    size_t dl = strlen(weights_dir);
    int w = snprintf(out, n, "%s%s%s", weights_dir, dl && weights_dir[dl - 1] == '/' ? "" : "/",
                     e->file);
    if (w < 0 || (size_t)w >= n)
        return error_set(err, "%s: path in %s longer than %zu bytes", e->name, weights_dir, n - 1);
    return 0;
}

int fetch_entry_cached(const FetchEntry *e, const char *weights_dir)
{
    char path[FETCH_PATH_MAX];
    struct stat st;
    return !fetch_entry_path(e, weights_dir, path, sizeof path, NULL) && stat(path, &st) == 0 &&
           S_ISREG(st.st_mode);
}

void fetch_options_init(FetchOptions *o)
{
    memset(o, 0, sizeof *o);
    o->connect_timeout_s = 30;
    o->stall_timeout_s = 60;
    o->retries = 3;
    o->retry_delay_ms = 1000;
}

/* ---- the registry of downloads under way ------------------------------------ */

/* One download under way in this process, keyed by its final path. refs counts
 * the owner (the call that downloads) and the calls waiting for it. */
typedef struct Inflight {
    char path[FETCH_PATH_MAX];
    int refs;
    int finished;
    int rc;
    int owner_cancelled;
    Error err;
    FetchProgress progress;
    struct Inflight *next;
} Inflight;

struct FetchHub {
    pthread_mutex_t mu;
    pthread_cond_t changed;     /* progress or an end, of any download */
    Inflight *list;
};

int fetch_hub_create(FetchHub **out, Error *err)
{
    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return error_set(err, "cannot initialise libcurl");
    FetchHub *h = calloc(1, sizeof *h);
    if (!h)
        return error_set(err, "out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&h->mu, NULL) || pthread_cond_init(&h->changed, &ca)) {
        pthread_condattr_destroy(&ca);
        free(h);
        return error_set(err, "cannot create the download registry's lock");
    }
    pthread_condattr_destroy(&ca);
    *out = h;
    return 0;
}

void fetch_hub_free(FetchHub *hub)
{
    if (!hub)
        return;
    pthread_cond_destroy(&hub->changed);
    pthread_mutex_destroy(&hub->mu);
    free(hub);
}

/* ---- one pull ----------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cancelled(const FetchOptions *o)
{
    return o->cancel && atomic_load(o->cancel);
}

/* What one fetch_pull call carries through its helpers. */
typedef struct {
    const FetchEntry *e;
    const FetchOptions *o;
    FetchResult *res;
    FetchHub *hub;
    Inflight *flight;           /* NULL without a hub */
    char url[FETCH_PATH_MAX];
    char part[FETCH_PATH_MAX];
    char dir[FETCH_PATH_MAX];
    double last_report;
    FetchProgress progress;
} Pull;

/* Reports progress to the caller (at most every 200 ms unless force) and to the
 * calls waiting on this download. */
static void report(Pull *p, int force)
{
    double t = now_s();
    if (!force && t - p->last_report < 0.2)
        return;
    p->last_report = t;
    if (p->flight) {
        pthread_mutex_lock(&p->hub->mu);
        p->flight->progress = p->progress;
        p->flight->progress.shared = 1;
        pthread_cond_broadcast(&p->hub->changed);
        pthread_mutex_unlock(&p->hub->mu);
    }
    if (p->o->progress)
        p->o->progress(p->o->progress_ctx, &p->progress);
}

/* mkdir -p */
static int make_dirs(const char *path, Error *err)
{
    char buf[FETCH_PATH_MAX];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
        return error_set(err, "%s: path too long", path);
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return error_set(err, "cannot create %s: %s", buf, strerror(errno));
        *s = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return error_set(err, "cannot create %s: %s", buf, strerror(errno));
    return 0;
}

/* How to install the file without this machine's network: appended to the
 * failures of a transfer that reached no server, or one that stopped answering.
 * The URL is written here only, so that the message fits an Error. */
static void by_hand(const Pull *p, Error *err)
{
    if (!err)
        return;
    size_t used = strnlen(err->msg, sizeof err->msg);
    const char *kind = p->e->sha256[0] ? "sha256" : "md5";
    const char *hash = p->e->sha256[0] ? p->e->sha256 : p->e->md5;
    snprintf(err->msg + used, sizeof err->msg - used,
             ". Without network access here, fetch %s on another machine, check that its %s "
             "is %s, and copy it to %s",
             p->url, kind, hash, p->res->path);
}

/* The state of one transfer (one HTTP request and its redirects). */
typedef struct {
    Pull *p;
    CURL *curl;
    int fd;
    uint64_t requested;     /* the Range start asked for (0: no Range) */
    uint64_t offset;        /* bytes in the part file */
    uint64_t received;      /* bytes of this transfer */
    int first_write;        /* the first body byte has not been seen yet */
    int have_range;         /* a Content-Range header came with this response */
    uint64_t range_start;
    int64_t range_total;    /* -1: '*' */
    int restarted;          /* the server ignored the Range: written again from 0 */
    int size_error;         /* the server's file is not the manifest's size */
    char why[ERROR_MSG_MAX];    /* a reason set by a callback that stopped the transfer */
} Transfer;

static size_t on_header(char *buf, size_t size, size_t n, void *ctx)
{
    Transfer *t = ctx;
    size_t len = size * n;
    char line[256];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, buf, l);
    line[l] = '\0';
    if (!strncmp(line, "HTTP/", 5)) {
        t->have_range = 0; /* a new response of a redirect chain */
    } else if (!strncasecmp(line, "Content-Range:", 14)) {
        unsigned long long a, b;
        char total[32];
        if (sscanf(line + 14, " bytes %llu-%llu/%31s", &a, &b, total) == 3) {
            t->have_range = 1;
            t->range_start = a;
            t->range_total = total[0] == '*' ? -1 : strtoll(total, NULL, 10);
        }
    }
    return len;
}

/* At the first byte of the body: did the server honour the Range, and is its
 * file the size the manifest pins? 0 to go on, -1 to stop (t->why set). */
static int first_write(Transfer *t)
{
    long code = 0;
    char *scheme = NULL;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(t->curl, CURLINFO_SCHEME, &scheme);
    curl_off_t length = -1;
    curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    int is_file = scheme && !strcasecmp(scheme, "file");
    uint64_t total = 0;
    const FetchEntry *e = t->p->e;
    if (t->requested && (code == 206 || is_file)) {
        if (code == 206 && (!t->have_range || t->range_start != t->requested)) {
            snprintf(t->why, sizeof t->why, "the server answered a request for bytes %" PRIu64
                     "- with %s%" PRIu64 "-", t->requested, t->have_range ? "bytes " : "no range, ",
                     t->have_range ? t->range_start : 0);
            return -1;
        }
        /* a file:// range says nothing of the whole file's size: verify() checks it */
        if (t->have_range && t->range_total > 0)
            total = (uint64_t)t->range_total;
    } else {
        if (t->requested) {
            /* the server ignored the Range: start the file again from byte 0 */
            if (ftruncate(t->fd, 0)) {
                snprintf(t->why, sizeof t->why, "%.300s: %s", t->p->part, strerror(errno));
                return -1;
            }
            t->offset = 0;
            t->restarted = 1;
        }
        if (length >= 0)
            total = (uint64_t)length;
    }
    if (e->size > 0 && total && total != (uint64_t)e->size) {
        t->size_error = 1;
        snprintf(t->why, sizeof t->why, "size mismatch: the manifest expects %" PRId64 " bytes, "
                 "the server's file has %" PRIu64, e->size, total);
        return -1;
    }
    t->p->progress.total = e->size > 0 ? (uint64_t)e->size : total;
    return 0;
}

static size_t on_write(char *buf, size_t size, size_t n, void *ctx)
{
    Transfer *t = ctx;
    size_t len = size * n;
    if (t->first_write) {
        t->first_write = 0;
        if (first_write(t))
            return 0;
    }
    const FetchEntry *e = t->p->e;
    if (e->size > 0 && t->offset + len > (uint64_t)e->size) {
        t->size_error = 1;
        snprintf(t->why, sizeof t->why, "size mismatch: the manifest expects %" PRId64 " bytes, "
                 "the server sent more", e->size);
        return 0;
    }
    for (size_t w = 0; w < len;) {
        ssize_t k = pwrite(t->fd, buf + w, len - w, (off_t)(t->offset + w));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(t->why, sizeof t->why, "cannot write %.300s: %s", t->p->part,
                     k < 0 ? strerror(errno) : "no space written");
            return 0;
        }
        w += (size_t)k;
    }
    t->offset += len;
    t->received += len;
    t->p->progress.done = t->offset;
    return len;
}

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    Transfer *t = ctx;
    if (cancelled(t->p->o))
        return 1;
    report(t->p, 0);
    return 0;
}

/* How a transfer ended. */
typedef enum {
    XFER_DONE,          /* the body ended where the file ends */
    XFER_COMPLETE,      /* 416 to a Range: the part file may already be whole */
    XFER_RETRY,         /* cut, stalled after some bytes, or 5xx: worth resuming */
    XFER_FAILED,        /* err set; keep the part file */
    XFER_DISCARD,       /* err set; the part file is wrong: remove it */
    XFER_CANCELLED,
} XferEnd;

static XferEnd transfer(Pull *p, int fd, uint64_t offset, Error *err)
{
    Transfer t;
    memset(&t, 0, sizeof t);
    t.p = p;
    t.fd = fd;
    t.requested = offset;
    t.offset = offset;
    t.first_write = 1;
    CURL *c = curl_easy_init();
    if (!c) {
        error_set(err, "%s: cannot start libcurl", p->e->name);
        return XFER_FAILED;
    }
    t.curl = c;
    char errbuf[CURL_ERROR_SIZE] = "";
    char range[48];
    snprintf(range, sizeof range, "%" PRIu64 "-", offset);
    char agent[96];
    snprintf(agent, sizeof agent, "resnetd (libcurl/%s)", curl_version_info(CURLVERSION_NOW)->version);
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, agent);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)p->o->connect_timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)p->o->stall_timeout_s);
    if (offset)
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    /* as curl(1) does: a CA bundle or folder named in the environment */
    const char *ca = getenv("CURL_CA_BUNDLE");
    if (!ca || !*ca)
        ca = getenv("SSL_CERT_FILE");
    if (ca && *ca)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    const char *capath = getenv("SSL_CERT_DIR");
    if (capath && *capath)
        curl_easy_setopt(c, CURLOPT_CAPATH, capath);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);

    p->res->requests++;
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    p->res->bytes += t.received;
    p->progress.done = t.offset;
    report(p, 1);

    const char *name = p->e->name;
    if (rc == CURLE_OK) {
        if (t.first_write && offset && code == 200) {
            /* an empty 200 body to a Range request: the file is empty upstream */
            if (ftruncate(fd, 0) == 0)
                p->progress.done = 0;
        }
        return XFER_DONE;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        error_set(err, "%s: cancelled; %" PRIu64 " bytes are kept in %s and the next pull "
                       "resumes from there", name, t.offset, p->part);
        return XFER_CANCELLED;
    }
    if (rc == CURLE_WRITE_ERROR && t.why[0]) {
        error_set(err, "%s: %s (%s)", name, t.why, p->url);
        return t.size_error ? XFER_DISCARD : XFER_FAILED;
    }
    if (rc == CURLE_HTTP_RETURNED_ERROR) {
        if (code == 416 && offset)
            return XFER_COMPLETE;
        const char *text = code == 404 ? " (Not Found)" : code == 403 ? " (Forbidden)" :
                           code == 401 ? " (Unauthorized)" : code == 410 ? " (Gone)" : "";
        error_set(err, "%s: HTTP %ld%s from %s", name, code, text, p->url);
        return code >= 500 ? XFER_RETRY : XFER_FAILED;
    }
    int stalled = rc == CURLE_OPERATION_TIMEDOUT && strstr(errbuf, "too slow");
    if (stalled)
        error_set(err, "%s: the server sent nothing for %d s (stalled; the limit is the stall "
                       "timeout)", name, p->o->stall_timeout_s);
    else
        error_set(err, "%s: cannot download it: %.160s", name,
                  errbuf[0] ? errbuf : curl_easy_strerror(rc));
    by_hand(p, err);
    int cut = rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
              rc == CURLE_GOT_NOTHING || rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM;
    return cut || (rc == CURLE_OPERATION_TIMEDOUT && t.received) ? XFER_RETRY : XFER_FAILED;
}

/* Hashes the part file's first len bytes and checks its size and every pinned
 * hash. 0 when it matches; -1 with err set (XFER_DISCARD) or on a read error. */
static int verify(Pull *p, int fd, uint64_t len, int *mismatch, Error *err)
{
    const FetchEntry *e = p->e;
    *mismatch = 0;
    if (e->size > 0 && len != (uint64_t)e->size) {
        *mismatch = 1;
        return error_set(err, "%s: size mismatch: expected %" PRId64 " bytes, got %" PRIu64
                              " from %s; the partial file was removed", e->name, e->size, len,
                         p->url);
    }
    EVP_MD_CTX *sha = e->sha256[0] ? EVP_MD_CTX_new() : NULL;
    EVP_MD_CTX *md5 = e->md5[0] ? EVP_MD_CTX_new() : NULL;
    unsigned char *buf = malloc(1 << 20);
    int rc = -1;
    if ((e->sha256[0] && !sha) || (e->md5[0] && !md5) || !buf) {
        error_set(err, "out of memory");
        goto fail;
    }
    if ((sha && !EVP_DigestInit_ex(sha, EVP_sha256(), NULL)) ||
        (md5 && !EVP_DigestInit_ex(md5, EVP_md5(), NULL))) {
        error_set(err, "%s: OpenSSL cannot compute %s", e->name, sha ? "SHA-256" : "MD5");
        goto fail;
    }
    for (uint64_t at = 0; at < len;) {
        size_t want = len - at < (1u << 20) ? (size_t)(len - at) : (1u << 20);
        ssize_t k = pread(fd, buf, want, (off_t)at);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            error_set(err, "cannot read %s: %s", p->part, k < 0 ? strerror(errno) : "truncated");
            goto fail;
        }
        if ((sha && !EVP_DigestUpdate(sha, buf, (size_t)k)) ||
            (md5 && !EVP_DigestUpdate(md5, buf, (size_t)k))) {
            error_set(err, "%s: OpenSSL digest failed", e->name);
            goto fail;
        }
        at += (uint64_t)k;
    }
    struct { EVP_MD_CTX *ctx; const char *want, *label; } checks[2] = {
        {sha, e->sha256, "SHA-256"}, {md5, e->md5, "MD5"}};
    for (int i = 0; i < 2; i++) {
        if (!checks[i].ctx)
            continue;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        if (!EVP_DigestFinal_ex(checks[i].ctx, md, &mdlen)) {
            error_set(err, "%s: OpenSSL digest failed", e->name);
            goto fail;
        }
        for (unsigned j = 0; j < mdlen; j++)
            snprintf(hex + 2 * j, 3, "%02x", md[j]);
        hex[2 * mdlen] = '\0';
        if (strcmp(hex, checks[i].want)) {
            *mismatch = 1;
            error_set(err, "%s: %s mismatch: expected %s, got %s from %s; the download was "
                           "removed", e->name, checks[i].label, checks[i].want, hex, p->url);
            goto fail;
        }
    }
    rc = 0;
fail:
    EVP_MD_CTX_free(sha);
    EVP_MD_CTX_free(md5);
    free(buf);
    return rc;
}

/* Sleeps ms in steps, returning 1 early when cancelled. */
static int sleep_cancellable(const FetchOptions *o, int ms)
{
    for (int slept = 0; slept < ms; slept += 50) {
        if (cancelled(o))
            return 1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return cancelled(o);
}

static int same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Opens and locks the part file, waiting while another process holds it.
 * Returns the descriptor, -2 when the final file appeared meanwhile (another
 * process installed it), or -1 with err set. */
static int lock_part(Pull *p, Error *err)
{
    for (;;) {
        int fd = open(p->part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return error_set(err, "cannot create %s: %s", p->part, strerror(errno));
        while (flock(fd, LOCK_EX | LOCK_NB)) {
            if (errno != EWOULDBLOCK && errno != EINTR) {
                error_set(err, "cannot lock %s: %s", p->part, strerror(errno));
                close(fd);
                return -1;
            }
            /* another process downloads it: show its progress from the file size */
            struct stat st;
            if (fstat(fd, &st) == 0)
                p->progress.done = (uint64_t)st.st_size;
            p->progress.shared = 1;
            report(p, 0);
            if (sleep_cancellable(p->o, 200)) {
                close(fd);
                p->res->cancelled = 1;
                return error_set(err, "%s: cancelled while another process downloads it",
                                 p->e->name);
            }
        }
        p->progress.shared = 0;
        /* the holder may have renamed (installed) or removed the file we opened */
        if (!same_file(fd, p->part)) {
            close(fd);
            struct stat st;
            if (stat(p->res->path, &st) == 0 && S_ISREG(st.st_mode))
                return -2;
            continue;
        }
        struct stat st;
        if (stat(p->res->path, &st) == 0 && S_ISREG(st.st_mode)) {
            unlink(p->part);
            close(fd);
            return -2;
        }
        return fd; /* a process that held it gave up: this one resumes its part file */
    }
}

static int fsync_dir(const char *dir, Error *err)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return error_set(err, "cannot open %s: %s", dir, strerror(errno));
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    return rc ? error_set(err, "cannot sync %s: %s", dir, strerror(e)) : 0;
}

/* The download itself, under the part file's lock: transfers (resumed) until the
 * file is whole, then verify, rename and sync. */
static int download(Pull *p, Error *err)
{
    const FetchOptions *o = p->o;
    if (make_dirs(o->weights_dir, err))
        return -1;
    int fd = lock_part(p, err);
    if (fd == -2) {
        p->res->shared = 1;
        return 0;
    }
    if (fd < 0)
        return -1;
    int rc = -1, remove_part = 0, delay = o->retry_delay_ms;
    for (int attempt = 1;; attempt++) {
        struct stat st;
        if (fstat(fd, &st)) {
            error_set(err, "%s: %s", p->part, strerror(errno));
            goto done;
        }
        uint64_t have = (uint64_t)st.st_size;
        const FetchEntry *e = p->e;
        if (e->size > 0 && have > (uint64_t)e->size) {
            if (ftruncate(fd, 0)) {
                error_set(err, "%s: %s", p->part, strerror(errno));
                goto done;
            }
            have = 0;
        }
        p->progress.done = have;
        p->progress.total = e->size > 0 ? (uint64_t)e->size : 0;
        p->progress.attempt = attempt;
        XferEnd end = (e->size > 0 && have == (uint64_t)e->size) ? XFER_COMPLETE
                                                                   : transfer(p, fd, have, err);
        if (end == XFER_CANCELLED) {
            p->res->cancelled = 1;
            goto done;
        }
        if (end == XFER_DISCARD) {
            remove_part = 1;
            size_t used = strnlen(err->msg, sizeof err->msg);
            snprintf(err->msg + used, sizeof err->msg - used, "; the partial file was removed");
            goto done;
        }
        if (end == XFER_FAILED)
            goto done;
        if (end == XFER_RETRY) {
            if (attempt > o->retries) {
                if (attempt > 1) {
                    size_t used = strnlen(err->msg, sizeof err->msg);
                    snprintf(err->msg + used, sizeof err->msg - used, " (%d attempts)", attempt);
                }
                goto done;
            }
            if (sleep_cancellable(o, delay)) {
                p->res->cancelled = 1;
                error_set(err, "%s: cancelled; the partial file %s is kept", e->name, p->part);
                goto done;
            }
            delay = delay * 2 > 30000 ? 30000 : delay * 2;
            continue;
        }
        /* XFER_DONE or XFER_COMPLETE: the whole file should be there */
        if (fstat(fd, &st)) {
            error_set(err, "%s: %s", p->part, strerror(errno));
            goto done;
        }
        if (fsync(fd)) {
            error_set(err, "cannot sync %s: %s", p->part, strerror(errno));
            goto done;
        }
        int mismatch;
        if (verify(p, fd, (uint64_t)st.st_size, &mismatch, err)) {
            remove_part = mismatch;
            goto done;
        }
        break;
    }
    if (rename(p->part, p->res->path)) {
        error_set(err, "cannot rename %s to %s: %s", p->part, p->res->path, strerror(errno));
        goto done;
    }
    if (fsync_dir(p->dir, err))
        goto done;
    rc = 0;
done:
    if (rc && !remove_part) {
        /* a failure before the first byte leaves nothing worth resuming */
        struct stat st;
        remove_part = fstat(fd, &st) == 0 && st.st_size == 0;
    }
    if (remove_part)
        unlink(p->part);
    close(fd); /* releases the lock */
    return rc;
}

int fetch_pull(FetchHub *hub, const FetchEntry *e, const FetchOptions *o, FetchResult *res,
               Error *err)
{
    Error ignored;
    if (!err)
        err = &ignored; /* the helpers append to the message */
    memset(res, 0, sizeof *res);
    if (!o->weights_dir || !*o->weights_dir)
        return error_set(err, "%s: no weights folder given", e->name);
    if (fetch_entry_path(e, o->weights_dir, res->path, sizeof res->path, err))
        return -1;
    if (!fetch_entry_pinned(e))
        return error_set(err, "%s: the manifest pins no hash for it (neither sha256 nor md5), "
                              "and resnetd never installs an unverified file; add its sha256 to "
                              "the manifest", e->name);
    struct stat st;
    if (stat(res->path, &st) == 0 && S_ISREG(st.st_mode)) {
        res->cached = 1;
        return 0;
    }
    Pull *p = calloc(1, sizeof *p);
    if (!p)
        return error_set(err, "out of memory");
    p->e = e;
    p->o = o;
    p->res = res;
    p->hub = hub;
    int rc = -1;
    size_t dl = strlen(o->weights_dir);
    if (fetch_entry_url(e, o->mirror, p->url, sizeof p->url, err))
        goto out;
    if ((size_t)snprintf(p->part, sizeof p->part, "%s%s.%s.part", o->weights_dir,
                         o->weights_dir[dl - 1] == '/' ? "" : "/", e->file) >= sizeof p->part) {
        error_set(err, "%s: path too long", o->weights_dir);
        goto out;
    }
    snprintf(p->dir, sizeof p->dir, "%s", o->weights_dir);
    if (!hub) {
        rc = download(p, err);
        goto out;
    }
    for (;;) {
        pthread_mutex_lock(&hub->mu);
        Inflight *f = hub->list;
        while (f && strcmp(f->path, res->path))
            f = f->next;
        int owner = !f;
        if (owner) {
            f = calloc(1, sizeof *f);
            if (!f) {
                pthread_mutex_unlock(&hub->mu);
                error_set(err, "out of memory");
                goto out;
            }
            snprintf(f->path, sizeof f->path, "%s", res->path);
            f->next = hub->list;
            hub->list = f;
        }
        f->refs++;
        if (owner) {
            pthread_mutex_unlock(&hub->mu);
            p->flight = f;
            rc = download(p, err);
            pthread_mutex_lock(&hub->mu);
            f->finished = 1;
            f->rc = rc;
            f->owner_cancelled = res->cancelled;
            f->err = *err;
            for (Inflight **q = &hub->list; *q; q = &(*q)->next) {
                if (*q == f) {
                    *q = f->next;
                    break;
                }
            }
            pthread_cond_broadcast(&hub->changed);
            if (--f->refs == 0)
                free(f);
            pthread_mutex_unlock(&hub->mu);
            goto out;
        }
        /* another call downloads it: wait for its end, showing its progress */
        int gave_up = 0;
        while (!f->finished && !gave_up) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&hub->changed, &hub->mu, &ts);
            FetchProgress snap = f->progress;
            snap.shared = 1;
            gave_up = cancelled(o);
            if (!f->finished && !gave_up && o->progress) {
                pthread_mutex_unlock(&hub->mu);
                o->progress(o->progress_ctx, &snap);
                pthread_mutex_lock(&hub->mu);
            }
        }
        int finished = f->finished, frc = f->rc, owner_cancelled = f->owner_cancelled;
        Error ferr = f->err;
        if (--f->refs == 0)
            free(f);
        pthread_mutex_unlock(&hub->mu);
        if (!finished) {
            res->cancelled = 1;
            error_set(err, "%s: cancelled while waiting for another download of it", e->name);
            goto out;
        }
        if (owner_cancelled)
            continue; /* its caller gave up: take over, resuming its part file */
        res->shared = 1;
        rc = frc;
        if (rc)
            *err = ferr;
        goto out;
    }
out:
    free(p);
    return rc;
}
