/*
 * api.c: the REST API (see api.h and docs/api.md).
 *
 * A request's life: the first call of the access handler decides, from the
 * method, the route and the headers, whether the request may go on (token,
 * media type, declared size) and where its body goes (memory for JSON and
 * images, a file for archives, a form parser for multipart uploads); the
 * following calls feed the body there, counting it against the limit; the
 * last call dispatches to the route's handler, which answers.
 */
#include "api.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "blas.h"
#include "dataset.h"
#include "diagnose.h"
#include "image.h"
#include "jobcheck.h"
#include "jobspec.h"
#include "jsontext.h"
#include "log.h"
#include "predict.h"
#include "resnet.h"
#include "select.h"
#include "store.h"
#include "unpack.h"
#include "weights.h"

#define RESNETD_VERSION "0.1.0"
#define JSON_MAX_DEPTH 32
/* what curl -d sends without -H */
#define FORM_URLENCODED "application/x-www-form-urlencoded"
#define PREDICT_MAX_BYTES ((size_t)64 << 20)
#define SSE_KEEPALIVE_MS 15000

struct Api {
    ApiConfig cfg;
    char host[256], db_path[4096], data_dir[4096], data_root[4096], weights_dir[4096],
        web_dir[4096], token[256];
    struct MHD_Daemon *mhd;
    int port;
    volatile int quiescing;
    pthread_key_t store_key;      /* each connection thread's store connection */
    pthread_mutex_t predict_mu;   /* one cached predictor, used by one request at a time */
    Predictor *predictor;
    int64_t predictor_job;
};

/* ---- requests ----------------------------------------------------------- */

enum { BODY_MEMORY, BODY_FILE, BODY_FORM, BODY_DISCARD };

typedef struct {
    Api *api;
    char method[16];
    char url[1024];
    double t0;
    unsigned status;
    int body_kind;
    char *buf;
    size_t len, cap;
    uint64_t limit, received;
    int too_large;
    int fd;                      /* BODY_FILE / BODY_FORM file part */
    char upload_path[4300];
    struct MHD_PostProcessor *pp;
    char form_name[128];
    int form_file_seen;
    int form_write_error;
    struct MHD_Response *early;  /* decided before the body: sent at the end */
    unsigned early_status;
    int json_as_form;            /* JSON sent as application/x-www-form-urlencoded */
} Req;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static Store *thread_store(Api *a, Error *err)
{
    Store *s = pthread_getspecific(a->store_key);
    if (s)
        return s;
    if (store_connect(&s, a->db_path, err))
        return NULL;
    pthread_setspecific(a->store_key, s);
    return s;
}

static void close_thread_store(void *s)
{
    store_close(s);
}

/* ---- responses ---------------------------------------------------------- */

static struct MHD_Response *json_response(json_t *body)
{
    char *text = jsontext_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(body);
    if (!text)
        text = strdup("{\"error\": {\"code\": \"internal\", \"message\": \"out of memory\"}}");
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    text[len] = '\n';
    text[len + 1] = '\0';
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len + 1, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    return r;
}

static enum MHD_Result send_response(struct MHD_Connection *c, Req *q, unsigned status,
                                     struct MHD_Response *r)
{
    q->status = status;
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, Req *q, unsigned status, json_t *body)
{
    return send_response(c, q, status, json_response(body));
}

/* 201 Created with body and "Location: /api/KIND/ID". */
static enum MHD_Result send_created(struct MHD_Connection *c, Req *q, const char *kind,
                                    int64_t id, json_t *body)
{
    struct MHD_Response *r = json_response(body);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/%s/%lld", kind, (long long)id);
    MHD_add_response_header(r, "Location", loc);
    return send_response(c, q, 201, r);
}

static const char *status_code_name(unsigned status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "too_large";
    case 415: return "unsupported_media_type";
    case 503: return "unavailable";
    default: return "internal";
    }
}

static struct MHD_Response *error_response(unsigned status, const char *path, const char *fmt,
                                           ...) __attribute__((format(printf, 3, 4)));
static struct MHD_Response *error_response(unsigned status, const char *path, const char *fmt,
                                           ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s, s:s}", "code", status_code_name(status), "message", msg);
    if (path)
        json_object_set_new(e, "path", json_string(path));
    struct MHD_Response *r = json_response(json_pack("{s:o}", "error", e));
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"resnetd\"");
    return r;
}

#define SEND_ERROR(c, q, status, path, ...) \
    send_response((c), (q), (status), error_response((status), (path), __VA_ARGS__))

/* ---- small helpers ------------------------------------------------------ */

/* Parses a positive decimal id; 0 when s is not one. */
static int64_t parse_id(const char *s)
{
    if (!s || !*s || strlen(s) > 18)
        return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return strtoll(s, NULL, 10);
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64 || !strcmp(s, ".") || !strcmp(s, ".."))
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* Depth of JSON nesting, ignoring brackets inside strings. */
static int json_depth(const char *s, size_t len)
{
    int depth = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max)
                max = depth;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    return max;
}

/* Does text begin, after JSON whitespace, with '{'? */
static int starts_object(const char *text, size_t len)
{
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    return i < len && text[i] == '{';
}

/* Parses the request body as a JSON object, or answers 400 (returns NULL and
 * sets *rc). A body sent as a form (curl -d without -H) is taken as JSON when it
 * is an object: one that does not start as one is a real form, 415. */
static json_t *body_object(struct MHD_Connection *c, Req *q, enum MHD_Result *rc)
{
    if (q->json_as_form && !starts_object(q->buf ? q->buf : "", q->len)) {
        *rc = SEND_ERROR(c, q, 415, NULL, "Content-Type '" FORM_URLENCODED "': the body is a "
                         "form, not a JSON object; send a JSON object, best with "
                         "'Content-Type: application/json' (curl --json '{...}')");
        return NULL;
    }
    if (json_depth(q->buf ? q->buf : "", q->len) > JSON_MAX_DEPTH) {
        *rc = SEND_ERROR(c, q, 400, NULL, "the JSON body nests deeper than %d levels",
                         JSON_MAX_DEPTH);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(q->buf ? q->buf : "", q->len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        *rc = SEND_ERROR(c, q, 400, NULL, "malformed JSON at line %d, column %d: %s", je.line,
                         je.column, je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        *rc = SEND_ERROR(c, q, 400, NULL, "the body must be a JSON object");
        return NULL;
    }
    return v;
}

static int token_ok(const Api *a, struct MHD_Connection *c)
{
    if (!a->token[0])
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    char want[300];
    snprintf(want, sizeof want, "Bearer %s", a->token);
    if (!h)
        h = "";
    /* constant time in the token's length: every byte is compared */
    size_t n = strlen(want), m = strlen(h);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < m ? h[i] : 0));
    return diff == 0;
}

/* The media type of the request without parameters, lower case. */
static void content_type(struct MHD_Connection *c, char *out, size_t len)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    size_t i = 0;
    for (; h && h[i] && h[i] != ';' && i + 1 < len; i++)
        out[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] + 32 : h[i]);
    while (i > 0 && out[i - 1] == ' ')
        i--;
    out[i] = '\0';
}

static int is_archive_type(const char *t)
{
    return !strcmp(t, "application/gzip") || !strcmp(t, "application/x-gzip") ||
           !strcmp(t, "application/x-tar") || !strcmp(t, "application/zip") ||
           !strcmp(t, "application/octet-stream") || !strcmp(t, "application/x-gtar");
}

static int is_image_type(const char *t)
{
    return !strcmp(t, "image/png") || !strcmp(t, "image/jpeg") ||
           !strcmp(t, "application/octet-stream");
}

/* ---- JSON views --------------------------------------------------------- */

static void collect_finding(void *ctx, const Finding *f)
{
    json_t *v = json_loads(f->evidence, 0, NULL);
    json_array_append_new(ctx, json_pack("{s:s, s:s, s:s, s:o, s:s}", "code", f->code,
                                         "severity", diag_severity_name(f->severity), "message",
                                         f->message, "evidence", v ? v : json_object(), "fix",
                                         f->fix));
}

static json_t *dataset_report_json(const Dataset *ds)
{
    const DatasetReport *r = &ds->report;
    json_t *classes = json_array(), *counts = json_object(), *problems = json_array();
    for (int c = 0; c < ds->n_classes; c++) {
        json_array_append_new(classes, json_string(ds->classes[c]));
        json_object_set_new(counts, ds->classes[c],
                            json_pack("{s:i, s:i}", "train", ds->counts[c].count[SPLIT_TRAIN],
                                      "val", ds->counts[c].count[SPLIT_VAL]));
    }
    for (int i = 0; i < ds->n_problems && i < 100; i++)
        json_array_append_new(problems, json_pack("{s:s, s:s}", "path", ds->problems[i].path,
                                                  "reason", ds->problems[i].reason));
    json_t *mean = json_object(), *std = json_object();
    static const char *const split_names[SPLIT_COUNT] = {"train", "val"};
    json_t *imbalance = json_object(), *totals = json_object(), *gray = json_object();
    json_t *side = json_object(), *image_mean_std = json_object();
    for (int s = 0; s < SPLIT_COUNT; s++) {
        json_object_set_new(gray, split_names[s], json_integer(r->gray[s]));
        json_object_set_new(side, split_names[s], json_integer(r->side_median[s]));
        json_object_set_new(image_mean_std, split_names[s],
                            json_pack("[f, f, f]", r->image_mean_std[s][0],
                                      r->image_mean_std[s][1], r->image_mean_std[s][2]));
        json_object_set_new(mean, split_names[s],
                            json_pack("[f, f, f]", r->mean[s][0], r->mean[s][1], r->mean[s][2]));
        json_object_set_new(std, split_names[s],
                            json_pack("[f, f, f]", r->std[s][0], r->std[s][1], r->std[s][2]));
        json_object_set_new(imbalance, split_names[s],
                            isfinite(r->imbalance[s]) ? json_real(r->imbalance[s]) : json_null());
        json_object_set_new(totals, split_names[s], json_integer(r->total[s]));
    }
    json_t *findings = json_array();
    diag_dataset(ds, collect_finding, findings);
    return json_pack("{s:s, s:s, s:o, s:o, s:i, s:o, s:o, s:{s:[i,i,i], s:[i,i,i]}, s:i, s:i,"
                     " s:i, s:i, s:o, s:{s:o, s:o, s:o}, s:o, s:o, s:o}",
                     "root", ds->root, "layout", ds->split_layout ? "train_val" : "class_folders",
                     "classes", classes, "counts", counts, "images", ds->n_items, "totals", totals,
                     "imbalance", imbalance, "sizes", "width", r->width_min, r->width_median,
                     r->width_max, "height", r->height_min, r->height_median, r->height_max,
                     "gray", r->n_gray, "alpha", r->n_alpha, "cross_split_duplicates",
                     r->n_cross_duplicates, "problem_count", r->n_problems, "problems", problems,
                     "channels", "mean", mean, "std", std, "image_mean_std", image_mean_std,
                     "gray_per_split", gray, "side_median", side, "findings", findings);
}

/* The job as the API shows it; NULL (and *missing) when there is none. */
static json_t *job_json(Api *a, Store *st, int64_t id, int *missing, Error *err)
{
    json_t *j = store_query_one(st, "SELECT id, name, state, error, created, started, finished,"
                                    " epochs_total, epochs_done, phase, phase_name, classes, spec,"
                                    " info AS resolved FROM jobs WHERE id = ?1", id, 0, missing, err);
    if (!j)
        return NULL;
    WorkerProgress p;
    if (worker_progress(a->cfg.worker, id, &p) && p.step >= 0) {
        json_object_set_new(j, "progress",
                            json_pack("{s:i, s:i, s:i, s:o}", "epoch", p.epoch, "step", p.step,
                                      "steps", p.steps, "loss",
                                      isfinite(p.loss) ? json_real(p.loss) : json_null()));
    } else {
        json_object_set_new(j, "progress", json_null());
    }
    json_object_set_new(j, "cancel_requested",
                        json_boolean(worker_progress(a->cfg.worker, id, &p) &&
                                     p.cancel_requested));
    int none;
    Error e2;
    json_t *best = store_query_one(st, "SELECT epoch, val_loss, val_acc FROM epochs WHERE"
                                       " job_id = ?1 AND val_loss IS NOT NULL ORDER BY val_loss,"
                                       " epoch LIMIT 1", id, 0, &none, &e2);
    json_object_set_new(j, "best", best ? best : json_null());
    return j;
}

/* ---- handlers ----------------------------------------------------------- */

static enum MHD_Result db_failure(struct MHD_Connection *c, Req *q, const Error *err)
{
    log_msg(LOG_LEVEL_ERROR, "%s %s: %s", q->method, q->url, err->msg);
    return SEND_ERROR(c, q, 500, NULL, "%s", err->msg);
}

static enum MHD_Result get_health(struct MHD_Connection *c, Req *q)
{
    return send_json(c, q, 200, json_pack("{s:s, s:s}", "status", "ok", "version",
                                          RESNETD_VERSION));
}

static enum MHD_Result get_info(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    Error err;
    Store *st = thread_store(a, &err);
    if (!st)
        return db_failure(c, q, &err);
    json_t *queued = store_query(st, "SELECT count(*) AS n FROM jobs WHERE state = 'queued'", 0,
                                 0, &err);
    json_t *running = store_query(st, "SELECT id FROM jobs WHERE state = 'running'", 0, 0, &err);
    json_t *j = json_pack(
        "{s:s, s:[s, s], s:i, s:s, s:s, s:s?, s:{s:I, s:I, s:I, s:I, s:i}, s:s, s:b, "
        "s:{s:o, s:o}}",
        "version", RESNETD_VERSION, "variants", "torchvision", "keras", "threads",
        blas_threads(), "blas_kernel", blas_kernel_name(), "blas_kernel_origin",
        blas_kernel_origin(), "blas_kernel_best", blas_kernel_best(), "limits", "body_limit",
        (json_int_t)a->cfg.body_limit, "upload_limit", (json_int_t)a->cfg.upload_limit,
        "max_pixels", (json_int_t)a->cfg.max_pixels, "cache_bytes",
        (json_int_t)a->cfg.cache_bytes, "max_jobs_queued", a->cfg.max_jobs_queued, "data_root",
        a->data_root, "auth", a->token[0] != 0, "queue", "running",
        json_array_size(running) ? json_incref(json_object_get(json_array_get(running, 0), "id"))
                                 : json_null(),
        "queued",
        queued ? json_incref(json_object_get(json_array_get(queued, 0), "n")) : json_integer(0));
    json_decref(queued);
    json_decref(running);
    return send_json(c, q, 200, j);
}

static enum MHD_Result get_datasets(struct MHD_Connection *c, Req *q)
{
    Error err;
    Store *st = thread_store(q->api, &err);
    json_t *rows = st ? store_query(st, "SELECT id, name, source, path, created,"
                                        " json_extract(report, '$.classes') AS classes,"
                                        " json_extract(report, '$.images') AS images"
                                        " FROM datasets ORDER BY id", 0, 0, &err)
                      : NULL;
    if (!rows)
        return db_failure(c, q, &err);
    return send_json(c, q, 200, json_pack("{s:o}", "datasets", rows));
}

static enum MHD_Result get_dataset(struct MHD_Connection *c, Req *q, const char *key)
{
    Error err;
    int missing = 0;
    Store *st = thread_store(q->api, &err);
    json_t *d = st ? store_dataset_find(st, key, 1, &missing, &err) : NULL;
    if (!d && missing)
        return SEND_ERROR(c, q, 404, NULL, "no dataset '%s'", key);
    if (!d)
        return db_failure(c, q, &err);
    return send_json(c, q, 200, d);
}

/* Removes dir and everything below it (never following links). */
static void remove_tree(const char *dir)
{
    Error err;
    unpack_clear_dir(dir, &err);
    rmdir(dir);
}

/* Scans root and registers it; answers 201 or the error. */
static enum MHD_Result register_dataset(struct MHD_Connection *c, Req *q, const char *name,
                                        const char *root, const char *allowed,
                                        const char *source, const char *cleanup_dir)
{
    Api *a = q->api;
    Error err;
    Store *st = thread_store(a, &err);
    if (!st)
        return db_failure(c, q, &err);
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    DatasetOptions opt = dataset_default_options();
    opt.allowed_root = allowed;
    opt.max_pixels = a->cfg.max_pixels;
    opt.threads = a->cfg.threads;
    if (dataset_scan(&ds, root, &opt, &err)) {
        if (cleanup_dir)
            remove_tree(cleanup_dir);
        int outside = strstr(err.msg, "outside") != NULL;
        return SEND_ERROR(c, q, outside ? 403 : 400, source[0] == 'f' ? "path" : NULL, "%s",
                          err.msg);
    }
    json_t *report = dataset_report_json(&ds);
    char *report_text = jsontext_dumps(report, JSON_COMPACT);
    json_decref(report);
    int64_t id = 0;
    int rc = store_dataset_insert(st, name, ds.root, source, report_text ? report_text : "{}",
                                  &id, &err);
    free(report_text);
    dataset_free(&ds);
    if (rc) {
        if (cleanup_dir)
            remove_tree(cleanup_dir);
        if (strstr(err.msg, "UNIQUE"))
            return SEND_ERROR(c, q, 409, "name", "a dataset named '%s' exists already", name);
        return db_failure(c, q, &err);
    }
    log_msg(LOG_LEVEL_INFO, "dataset %lld '%s' registered (%s)", (long long)id, name, source);
    int missing;
    json_t *d = store_query_one(st, "SELECT id, name, source, path, created, report FROM datasets"
                                    " WHERE id = ?1", id, 0, &missing, &err);
    if (!d)
        return db_failure(c, q, &err);
    return send_created(c, q, "datasets", id, d);
}

static enum MHD_Result post_dataset_folder(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    enum MHD_Result rc;
    json_t *body = body_object(c, q, &rc);
    if (!body)
        return rc;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
        if (strcmp(key, "name") && strcmp(key, "path")) {
            rc = SEND_ERROR(c, q, 400, key, "%s: unknown field (expected name, path)", key);
            json_decref(body);
            return rc;
        }
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *path = json_string_value(json_object_get(body, "path"));
    if (!name || !valid_name(name)) {
        json_decref(body);
        return SEND_ERROR(c, q, 400, "name", "name: must be a string of 1 to 64 letters, digits,"
                          " '.', '_' or '-'");
    }
    if (!path || !*path) {
        json_decref(body);
        return SEND_ERROR(c, q, 400, "path", "path: must be a non-empty string");
    }
    if (!a->data_root[0]) {
        json_decref(body);
        return SEND_ERROR(c, q, 403, "path", "registering server-side folders is off: the "
                          "daemon has no data_root (--data-root DIR)");
    }
    char full[8200];
    if (path[0] == '/')
        snprintf(full, sizeof full, "%s", path);
    else
        snprintf(full, sizeof full, "%s/%s", a->data_root, path);
    char nm[80];
    snprintf(nm, sizeof nm, "%s", name);
    json_decref(body);
    return register_dataset(c, q, nm, full, a->data_root, "folder", NULL);
}

/* An archive upload has been written to q->upload_path: unpack, scan, register. */
static enum MHD_Result post_dataset_archive(struct MHD_Connection *c, Req *q, const char *name)
{
    Api *a = q->api;
    Error err;
    if (!name || !valid_name(name))
        return SEND_ERROR(c, q, 400, "name", "name: give the dataset a name of 1 to 64 letters, "
                          "digits, '.', '_' or '-' (?name=... or a form field 'name')");
    Store *st = thread_store(a, &err);
    if (!st)
        return db_failure(c, q, &err);
    int missing = 0;
    json_t *exists = store_dataset_find(st, name, 0, &missing, &err);
    if (exists) {
        json_decref(exists);
        return SEND_ERROR(c, q, 409, "name", "a dataset named '%s' exists already", name);
    }
    char uploads[4200], dest[4400];
    snprintf(uploads, sizeof uploads, "%s/datasets", a->data_dir);
    snprintf(dest, sizeof dest, "%s/%s", uploads, name);
    if (mkdir(dest, 0755)) {
        if (errno == EEXIST)
            return SEND_ERROR(c, q, 409, "name", "%s exists already on disk", dest);
        error_set(&err, "cannot create %s: %s", dest, strerror(errno));
        return db_failure(c, q, &err);
    }
    UnpackLimits lim = {a->cfg.upload_limit * 4, 1000000};
    UnpackStats stats;
    if (unpack_archive(q->upload_path, dest, &lim, &stats, &err)) {
        remove_tree(dest);
        int big = strstr(err.msg, "more than") != NULL;
        return SEND_ERROR(c, q, big ? 413 : 400, NULL, "%s", err.msg);
    }
    char root[4400];
    if (unpack_dataset_root(dest, root, sizeof root, &err)) {
        remove_tree(dest);
        return SEND_ERROR(c, q, 400, NULL, "%s", err.msg);
    }
    log_msg(LOG_LEVEL_INFO, "upload '%s': %llu files, %llu bytes unpacked", name,
            (unsigned long long)stats.files, (unsigned long long)stats.bytes);
    return register_dataset(c, q, name, root, uploads, "upload", dest);
}

static enum MHD_Result delete_dataset(struct MHD_Connection *c, Req *q, const char *key)
{
    Api *a = q->api;
    Error err;
    int missing = 0;
    Store *st = thread_store(a, &err);
    json_t *d = st ? store_dataset_find(st, key, 0, &missing, &err) : NULL;
    if (!d && missing)
        return SEND_ERROR(c, q, 404, NULL, "no dataset '%s'", key);
    if (!d)
        return db_failure(c, q, &err);
    int64_t id = json_integer_value(json_object_get(d, "id"));
    char name[80], path[4096], source[16];
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(d, "name")));
    snprintf(path, sizeof path, "%s", json_string_value(json_object_get(d, "path")));
    snprintf(source, sizeof source, "%s", json_string_value(json_object_get(d, "source")));
    json_decref(d);
    json_t *users = store_query(st, "SELECT id FROM jobs WHERE state IN ('queued', 'running')"
                                    " AND (json_extract(spec, '$.dataset') = (SELECT name FROM"
                                    " datasets WHERE id = ?1) OR json_extract(spec, '$.dataset')"
                                    " = CAST(?1 AS TEXT))", id, 0, &err);
    if (!users)
        return db_failure(c, q, &err);
    if (json_array_size(users)) {
        long long job = json_integer_value(json_object_get(json_array_get(users, 0), "id"));
        json_decref(users);
        return SEND_ERROR(c, q, 409, NULL, "dataset '%s' is in use by job %lld", name, job);
    }
    json_decref(users);
    if (store_dataset_delete(st, id, &err))
        return db_failure(c, q, &err);
    if (!strcmp(source, "upload")) {
        char dest[4400];
        snprintf(dest, sizeof dest, "%s/datasets/%s", a->data_dir, name);
        remove_tree(dest);
    }
    log_msg(LOG_LEVEL_INFO, "dataset %lld '%s' deleted", (long long)id, name);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    return send_response(c, q, 204, r);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static enum MHD_Result get_weights(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    json_t *list = json_array();
    DIR *d = opendir(a->weights_dir);
    struct dirent *e;
    char names[256][256];
    int n = 0;
    while (d && (e = readdir(d)) && n < 256)
        if (e->d_name[0] != '.' && ends_with(e->d_name, ".safetensors"))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    if (d)
        closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) {
        char path[8500];
        if (snprintf(path, sizeof path, "%s/%s", a->weights_dir, names[i]) >= (int)sizeof path)
            continue;
        struct stat sb;
        json_t *w = json_pack("{s:s, s:I}", "name", names[i], "size",
                              (json_int_t)(stat(path, &sb) ? 0 : sb.st_size));
        WeightsInfo info;
        Error err;
        if (weights_probe(path, &info, &err)) {
            json_object_set_new(w, "error", json_string(err.msg));
        } else {
            json_object_set_new(w, "variant", json_string(resnet_variant_name(info.variant)));
            json_object_set_new(w, "preprocess", json_string(info.preprocess));
            json_object_set_new(w, "tensors", json_integer(info.n_tensors));
            json_object_set_new(w, "parameters", json_integer((json_int_t)info.n_params));
            json_object_set_new(w, "head_classes",
                                info.has_head ? json_integer(info.head_classes) : json_null());
            weights_info_free(&info);
        }
        json_array_append_new(list, w);
    }
    return send_json(c, q, 200, json_pack("{s:o}", "weights", list));
}

/* The submit-time checks (jobcheck.h) of spec against the dataset row d (with
 * its report) and the weights file (NULL for random weights): the resolved
 * spec to store with the job, or NULL with err and the JSON path set. */
static json_t *check_job(const JobSpec *spec, const char *weights_path, json_t *d, char *path,
                         size_t path_len, Error *err)
{
    json_t *names = json_object_get(json_object_get(d, "report"), "classes");
    size_t n = json_array_size(names);
    const char **classes = calloc(n ? n : 1, sizeof *classes);
    if (!classes) {
        error_set(err, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(names, i));
        classes[i] = name ? name : "";
    }
    JobResolved r;
    int rc = jobcheck_run(spec, weights_path, json_is_array(names) ? classes : NULL, (int)n, &r,
                          path, path_len, err);
    free(classes);
    if (rc)
        return NULL;
    json_t *bn = json_array();
    for (int i = 0; i < spec->n_phases; i++)
        json_array_append_new(bn, json_string(select_bn_name(spec->phases[i].bn)));
    return json_pack("{s:s, s:s, s:s, s:b, s:o, s:f, s:f}", "variant",
                     resnet_variant_name(r.variant), "preprocess", r.preprocess, "preprocess_from",
                     r.preprocess_from, "preprocess_overridden", r.overridden, "bn", bn,
                     "memory_estimate_bytes", r.memory_bytes, "memory_limit_bytes",
                     r.memory_limit);
}

static enum MHD_Result post_job(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    Error err;
    enum MHD_Result rc;
    if (a->quiescing)
        return SEND_ERROR(c, q, 503, NULL, "the daemon is shutting down");
    json_t *body = body_object(c, q, &rc);
    if (!body)
        return rc;
    JobSpec spec;
    char path[256] = "";
    if (jobspec_parse(&spec, q->buf, q->len, path, sizeof path, &err)) {
        json_decref(body);
        return SEND_ERROR(c, q, 400, path[0] ? path : NULL, "%s", err.msg);
    }
    Store *st = thread_store(a, &err);
    if (!st) {
        jobspec_free(&spec);
        json_decref(body);
        return db_failure(c, q, &err);
    }
    int missing = 0;
    json_t *d = store_dataset_find(st, spec.dataset, 1, &missing, &err);
    if (!d) {
        jobspec_free(&spec);
        json_decref(body);
        if (!missing)
            return db_failure(c, q, &err);
        return SEND_ERROR(c, q, 400, "dataset", "dataset: no registered dataset '%s' (see GET "
                          "/api/datasets)", spec.dataset);
    }
    const int random = !strcmp(spec.weights, "random");
    char wpath[8500];
    snprintf(wpath, sizeof wpath, "%s/%s", a->weights_dir, spec.weights);
    if (!random && (strchr(spec.weights, '/') || spec.weights[0] == '.' || access(wpath, R_OK))) {
        json_decref(d);
        jobspec_free(&spec);
        json_decref(body);
        return SEND_ERROR(c, q, 400, "weights", "weights: '%s' is not a file in the weights "
                          "folder (see GET /api/weights), nor \"random\"", spec.weights);
    }
    json_t *resolved = check_job(&spec, random ? NULL : wpath, d, path, sizeof path, &err);
    json_decref(d);
    if (!resolved) {
        jobspec_free(&spec);
        json_decref(body);
        return SEND_ERROR(c, q, 400, path[0] ? path : NULL, "%s", err.msg);
    }
    json_t *queued = store_query(st, "SELECT count(*) AS n FROM jobs WHERE state = 'queued'", 0,
                                 0, &err);
    json_int_t n_queued = queued ? json_integer_value(json_object_get(json_array_get(queued, 0),
                                                                      "n"))
                                 : 0;
    json_decref(queued);
    if (n_queued >= a->cfg.max_jobs_queued) {
        jobspec_free(&spec);
        json_decref(body);
        json_decref(resolved);
        return SEND_ERROR(c, q, 503, NULL, "the queue is full (%d jobs waiting)",
                          a->cfg.max_jobs_queued);
    }
    char *spec_text = jsontext_dumps(body, JSON_COMPACT);
    json_decref(body);
    int64_t id = 0;
    char *resolved_text = jsontext_dumps(resolved, JSON_COMPACT);
    json_decref(resolved);
    int irc = store_job_insert(st, spec.name[0] ? spec.name : "job", spec_text ? spec_text : "{}",
                               resolved_text, jobspec_total_epochs(&spec), JOB_QUEUED, &id, &err);
    free(resolved_text);
    free(spec_text);
    jobspec_free(&spec);
    if (irc)
        return db_failure(c, q, &err);
    log_msg(LOG_LEVEL_INFO, "job %lld queued", (long long)id);
    worker_wake(a->cfg.worker);
    json_t *j = job_json(a, st, id, &missing, &err);
    if (!j)
        return db_failure(c, q, &err);
    return send_created(c, q, "jobs", id, j);
}

static enum MHD_Result get_jobs(struct MHD_Connection *c, Req *q)
{
    Error err;
    Store *st = thread_store(q->api, &err);
    json_t *ids = st ? store_query(st, "SELECT id FROM jobs ORDER BY id DESC", 0, 0, &err) : NULL;
    if (!ids)
        return db_failure(c, q, &err);
    json_t *jobs = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(ids, i, row) {
        int missing;
        json_t *j = job_json(q->api, st, json_integer_value(json_object_get(row, "id")), &missing,
                             &err);
        if (j)
            json_array_append_new(jobs, j);
    }
    json_decref(ids);
    return send_json(c, q, 200, json_pack("{s:o}", "jobs", jobs));
}

/* The job's row or a 404/500 answer (returns NULL, *rc set). */
static json_t *job_or_answer(struct MHD_Connection *c, Req *q, int64_t id, Store **st,
                             enum MHD_Result *rc)
{
    Error err;
    int missing = 0;
    *st = thread_store(q->api, &err);
    json_t *j = *st ? job_json(q->api, *st, id, &missing, &err) : NULL;
    if (!j)
        *rc = missing ? SEND_ERROR(c, q, 404, NULL, "no job %lld", (long long)id)
                      : db_failure(c, q, &err);
    return j;
}

static enum MHD_Result post_cancel(struct MHD_Connection *c, Req *q, int64_t id)
{
    Api *a = q->api;
    Store *st;
    enum MHD_Result rc;
    Error err;
    json_t *j = job_or_answer(c, q, id, &st, &rc);
    if (!j)
        return rc;
    json_decref(j);
    if (worker_cancel_running(a->cfg.worker, id)) {
        log_msg(LOG_LEVEL_INFO, "job %lld: cancel requested", (long long)id);
        int missing;
        return send_json(c, q, 202, job_json(a, st, id, &missing, &err));
    }
    int done = store_job_cancel_queued(st, id, &err);
    if (done < 0)
        return db_failure(c, q, &err);
    if (done == 0 && worker_cancel_running(a->cfg.worker, id)) { /* it started meanwhile */
        int missing;
        return send_json(c, q, 202, job_json(a, st, id, &missing, &err));
    }
    int missing;
    j = job_json(a, st, id, &missing, &err);
    if (!j)
        return db_failure(c, q, &err);
    if (done == 0) {
        const char *state = json_string_value(json_object_get(j, "state"));
        rc = SEND_ERROR(c, q, 409, NULL, "job %lld is %s already", (long long)id, state);
        json_decref(j);
        return rc;
    }
    log_msg(LOG_LEVEL_INFO, "job %lld: cancelled while queued", (long long)id);
    json_t *ev = json_pack("{s:I, s:s, s:n}", "job", (json_int_t)id, "state", "cancelled",
                           "error");
    char *text = jsontext_dumps(ev, JSON_COMPACT);
    if (text)
        events_publish(a->cfg.events, id, "state", text, 1);
    free(text);
    json_decref(ev);
    worker_wake(a->cfg.worker);
    return send_json(c, q, 200, j);
}

static enum MHD_Result get_job_rows(struct MHD_Connection *c, Req *q, int64_t id,
                                    const char *what)
{
    Store *st;
    enum MHD_Result rc;
    Error err;
    json_t *j = job_or_answer(c, q, id, &st, &rc);
    if (!j)
        return rc;
    json_t *out = NULL;
    if (!strcmp(what, "metrics")) {
        json_t *rows = store_query(st, STORE_EPOCH_SELECT "WHERE job_id = ?1 ORDER BY epoch", id,
                                   0, &err);
        if (rows)
            out = json_pack("{s:I, s:o}", "job", (json_int_t)id, "epochs", rows);
    } else if (!strcmp(what, "steps")) {
        const char *after_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
        char *end = NULL;
        long long after = after_s ? strtoll(after_s, &end, 10) : -1;
        if (after_s && (!*after_s || *end)) {
            json_decref(j);
            return SEND_ERROR(c, q, 400, "after", "after: must be a whole number");
        }
        json_t *rows = store_query(st, "SELECT * FROM (SELECT epoch, step, steps, loss, lr,"
                                       " row_number() OVER (ORDER BY epoch, step) - 1 AS 'index'"
                                       " FROM steps WHERE job_id = ?1) WHERE \"index\" > ?2"
                                       " ORDER BY \"index\"", id, after, &err);
        if (rows)
            out = json_pack("{s:I, s:o}", "job", (json_int_t)id, "steps", rows);
    } else if (!strcmp(what, "classes")) {
        const char *ep = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "epoch");
        char *end = NULL;
        long long epoch = ep ? strtoll(ep, &end, 10) : -1;
        if (ep && (!*ep || *end || epoch < 0)) {
            json_decref(j);
            return SEND_ERROR(c, q, 400, "epoch", "epoch: must be a whole number >= 0");
        }
        if (epoch < 0) {
            int none;
            json_t *last = store_query_one(st, "SELECT max(epoch) AS e FROM epochs WHERE"
                                               " job_id = ?1", id, 0, &none, &err);
            epoch = last && json_is_integer(json_object_get(last, "e"))
                        ? json_integer_value(json_object_get(last, "e"))
                        : -1;
            json_decref(last);
        }
        int none;
        json_t *conf = store_query_one(st, "SELECT confusion FROM epochs WHERE job_id = ?1 AND"
                                           " epoch = ?2", id, epoch, &none, &err);
        if (!conf) {
            json_decref(j);
            return SEND_ERROR(c, q, 404, NULL, "job %lld has no epoch %lld yet", (long long)id,
                              epoch);
        }
        json_t *rows = store_query(st, "SELECT class, name, precision, recall, f1, support,"
                                       " predicted FROM class_metrics WHERE job_id = ?1 AND"
                                       " epoch = ?2 ORDER BY class", id, epoch, &err);
        if (rows)
            out = json_pack("{s:I, s:I, s:o, s:O}", "job", (json_int_t)id, "epoch",
                            (json_int_t)epoch, "classes", rows, "confusion",
                            json_object_get(conf, "confusion"));
        json_decref(conf);
    } else { /* diagnosis */
        json_t *rows = store_query(st, STORE_FINDING_SELECT "WHERE job_id = ?1 ORDER BY rowid",
                                   id, 0, &err);
        if (rows)
            out = json_pack("{s:I, s:o}", "job", (json_int_t)id, "findings", rows);
    }
    json_decref(j);
    if (!out)
        return db_failure(c, q, &err);
    return send_json(c, q, 200, out);
}

/* ---- events (server-sent) ------------------------------------------------ */

typedef struct {
    Api *api;
    int64_t job;
    uint64_t seq;
    char *pending;       /* frame being sent */
    size_t off;
    int final_sent;
} Stream;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    Stream *s = cls;
    (void)pos;
    for (;;) {
        if (s->pending) {
            size_t left = strlen(s->pending + s->off), n = left < max ? left : max;
            memcpy(buf, s->pending + s->off, n);
            s->off += n;
            if (!s->pending[s->off]) {
                free(s->pending);
                s->pending = NULL;
                s->off = 0;
            }
            return (ssize_t)n;
        }
        if (s->final_sent)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int final = 0;
        int rc = events_next(s->api->cfg.events, s->job, &s->seq, SSE_KEEPALIVE_MS, &s->pending,
                             &final);
        if (rc == EVENTS_OK) {
            s->final_sent = final;
        } else if (rc == EVENTS_TIMEOUT) {
            s->pending = strdup(": keep-alive\n\n");
        } else {
            if (rc == EVENTS_LOST)
                log_msg(LOG_LEVEL_WARN, "events of job %lld: a client fell behind and was dropped",
                        (long long)s->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!s->pending)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls)
{
    Stream *s = cls;
    free(s->pending);
    free(s);
}

static enum MHD_Result get_events(struct MHD_Connection *c, Req *q, int64_t id)
{
    Store *st;
    enum MHD_Result rc;
    Stream *s = calloc(1, sizeof *s);
    if (!s)
        return SEND_ERROR(c, q, 500, NULL, "out of memory");
    s->api = q->api;
    s->job = id;
    s->seq = events_head(q->api->cfg.events); /* before reading the state: nothing is missed */
    json_t *j = job_or_answer(c, q, id, &st, &rc);
    if (!j) {
        free(s);
        return rc;
    }
    const char *state = json_string_value(json_object_get(j, "state"));
    json_t *ev = json_pack("{s:I, s:s, s:O}", "job", (json_int_t)id, "state", state, "error",
                           json_object_get(j, "error"));
    char *text = jsontext_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    size_t len = (text ? strlen(text) : 0) + 64;
    s->pending = malloc(len);
    if (s->pending)
        snprintf(s->pending, len, "event: state\ndata: %s\n\n", text ? text : "{}");
    free(text);
    s->final_sent = !strcmp(state, "completed") || !strcmp(state, "failed") ||
                    !strcmp(state, "cancelled");
    json_decref(j);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                               stream_read, s, stream_free);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return send_response(c, q, 200, r);
}

/* ---- weights and prediction ----------------------------------------------- */

static enum MHD_Result get_job_weights(struct MHD_Connection *c, Req *q, int64_t id)
{
    Store *st;
    enum MHD_Result rc;
    json_t *j = job_or_answer(c, q, id, &st, &rc);
    if (!j)
        return rc;
    const char *state = json_string_value(json_object_get(j, "state"));
    char path[4400];
    worker_job_path(q->api->data_dir, id, "model.safetensors", path, sizeof path);
    int fd = strcmp(state, "completed") ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        if (fd >= 0)
            close(fd);
        rc = SEND_ERROR(c, q, 409, NULL, "job %lld is %s: its weights exist once it completes",
                        (long long)id, state);
        json_decref(j);
        return rc;
    }
    char disp[256];
    snprintf(disp, sizeof disp, "attachment; filename=\"job-%lld.safetensors\"", (long long)id);
    json_decref(j);
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    MHD_add_response_header(r, "Content-Disposition", disp);
    return send_response(c, q, 200, r);
}

static enum MHD_Result post_predict(struct MHD_Connection *c, Req *q, int64_t id)
{
    Api *a = q->api;
    Store *st;
    enum MHD_Result rc;
    Error err;
    json_t *j = job_or_answer(c, q, id, &st, &rc);
    if (!j)
        return rc;
    int completed = !strcmp(json_string_value(json_object_get(j, "state")), "completed");
    json_decref(j);
    if (!completed)
        return SEND_ERROR(c, q, 409, NULL, "job %lld has not completed: nothing to predict with",
                          (long long)id);
    const char *top_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "top");
    char *end = NULL;
    long top = top_s ? strtol(top_s, &end, 10) : 5;
    if (top_s && (!*top_s || *end || top < 1 || top > 1000))
        return SEND_ERROR(c, q, 400, "top", "top: must be a whole number from 1 to 1000");
    ImageFormat fmt;
    int w, h;
    Error perr;
    if (!q->len || image_probe((const uint8_t *)q->buf, q->len, &fmt, &w, &h, &perr))
        return SEND_ERROR(c, q, 415, NULL, "the body is not a PNG or JPEG image");
    Image img;
    if (image_decode(&img, (const uint8_t *)q->buf, q->len, a->cfg.max_pixels, &err)) {
        int big = strstr(err.msg, "pixels") != NULL;
        return SEND_ERROR(c, q, big ? 413 : 400, NULL, "%s", err.msg);
    }
    pthread_mutex_lock(&a->predict_mu);
    if (a->predictor_job != id) {
        predictor_free(a->predictor);
        a->predictor = NULL;
        a->predictor_job = 0;
        char path[4400];
        worker_job_path(a->data_dir, id, "model.safetensors", path, sizeof path);
        if (predictor_load(&a->predictor, path, &err)) {
            pthread_mutex_unlock(&a->predict_mu);
            image_free(&img);
            return db_failure(c, q, &err);
        }
        a->predictor_job = id;
    }
    Prediction *out = calloc((size_t)top, sizeof *out);
    int n = 0;
    int prc = out ? predictor_run(a->predictor, &img, (int)top, out, &n, &err) : -1;
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:i, s:s, s:o}", "index", out[i].index, "class",
                                              out[i].name, "prob",
                                              isfinite(out[i].prob) ? json_real(out[i].prob)
                                                                    : json_null()));
    pthread_mutex_unlock(&a->predict_mu);
    free(out);
    image_free(&img);
    if (prc) {
        json_decref(list);
        return SEND_ERROR(c, q, 400, NULL, "%s", out ? err.msg : "out of memory");
    }
    return send_json(c, q, 200, json_pack("{s:I, s:o}", "job", (json_int_t)id, "top", list));
}

/* ---- the dashboard ------------------------------------------------------- */

static const char *mime_of(const char *path)
{
    if (ends_with(path, ".html")) return "text/html; charset=utf-8";
    if (ends_with(path, ".js") || ends_with(path, ".mjs")) return "text/javascript";
    if (ends_with(path, ".css")) return "text/css";
    if (ends_with(path, ".svg")) return "image/svg+xml";
    if (ends_with(path, ".png")) return "image/png";
    if (ends_with(path, ".json")) return "application/json";
    return "application/octet-stream";
}

static enum MHD_Result get_static(struct MHD_Connection *c, Req *q, const char *url)
{
    const char *rel = !strcmp(url, "/") ? "index.html" : url + 1;
    for (const char *p = rel; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-' || *p == '/'))
            return SEND_ERROR(c, q, 404, NULL, "no such file");
    if (strstr(rel, "..") || rel[0] == '/')
        return SEND_ERROR(c, q, 404, NULL, "no such file");
    char path[8400];
    snprintf(path, sizeof path, "%s/%s", q->api->web_dir, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        return SEND_ERROR(c, q, 404, NULL, "no such file: %s", url);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    MHD_add_response_header(r, "Content-Type", mime_of(path));
    return send_response(c, q, 200, r);
}

/* ---- routing ------------------------------------------------------------- */

static enum MHD_Result method_not_allowed(struct MHD_Connection *c, Req *q, const char *allow)
{
    struct MHD_Response *r = error_response(405, NULL, "%s %s: use %s", q->method, q->url,
                                            allow);
    MHD_add_response_header(r, "Allow", allow);
    return send_response(c, q, 405, r);
}

/* Splits "/api/jobs/12/metrics" into up to 4 segments after "/api/". */
static int segments(const char *url, char seg[4][128])
{
    if (strncmp(url, "/api/", 5))
        return -1;
    int n = 0;
    const char *p = url + 5;
    while (*p && n < 4) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || len >= sizeof seg[0])
            return -1;
        memcpy(seg[n], p, len);
        seg[n][len] = '\0';
        n++;
        p += len;
        if (*p == '/')
            p++;
    }
    return *p ? -1 : n;
}

static enum MHD_Result dispatch(struct MHD_Connection *c, Req *q)
{
    const char *m = q->method, *url = q->url;
    int get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST"),
        del = !strcmp(m, "DELETE");
    char seg[4][128];
    int n = segments(url, seg);
    if (n < 0) {
        if (!strncmp(url, "/api", 4))
            return SEND_ERROR(c, q, 404, NULL, "no route %s", url);
        if (!get)
            return method_not_allowed(c, q, "GET");
        return get_static(c, q, url);
    }
    if (n == 1 && !strcmp(seg[0], "health"))
        return get ? get_health(c, q) : method_not_allowed(c, q, "GET");
    if (n == 1 && !strcmp(seg[0], "info"))
        return get ? get_info(c, q) : method_not_allowed(c, q, "GET");
    if (n == 1 && !strcmp(seg[0], "weights"))
        return get ? get_weights(c, q) : method_not_allowed(c, q, "GET");
    if (!strcmp(seg[0], "datasets")) {
        if (n == 1) {
            if (get)
                return get_datasets(c, q);
            if (!post)
                return method_not_allowed(c, q, "GET, POST");
            if (q->body_kind == BODY_MEMORY)
                return post_dataset_folder(c, q);
            const char *name = q->body_kind == BODY_FORM && q->form_name[0]
                                   ? q->form_name
                                   : MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "name");
            if (q->body_kind == BODY_FORM && !q->form_file_seen)
                return SEND_ERROR(c, q, 400, "file", "file: the form has no 'file' field with "
                                  "the archive");
            return post_dataset_archive(c, q, name);
        }
        if (n == 2) {
            if (get)
                return get_dataset(c, q, seg[1]);
            if (del)
                return delete_dataset(c, q, seg[1]);
            return method_not_allowed(c, q, "GET, DELETE");
        }
    }
    if (!strcmp(seg[0], "jobs")) {
        if (n == 1) {
            if (get)
                return get_jobs(c, q);
            if (post)
                return post_job(c, q);
            return method_not_allowed(c, q, "GET, POST");
        }
        int64_t id = parse_id(seg[1]);
        if (!id)
            return SEND_ERROR(c, q, 404, NULL, "no job '%s'", seg[1]);
        if (n == 2) {
            Store *st;
            enum MHD_Result rc;
            if (!get)
                return method_not_allowed(c, q, "GET");
            json_t *j = job_or_answer(c, q, id, &st, &rc);
            return j ? send_json(c, q, 200, j) : rc;
        }
        if (n == 3) {
            const char *what = seg[2];
            if (!strcmp(what, "cancel"))
                return post ? post_cancel(c, q, id) : method_not_allowed(c, q, "POST");
            if (!strcmp(what, "predict"))
                return post ? post_predict(c, q, id) : method_not_allowed(c, q, "POST");
            if (!strcmp(what, "metrics") || !strcmp(what, "steps") || !strcmp(what, "classes") ||
                !strcmp(what, "diagnosis"))
                return get ? get_job_rows(c, q, id, what) : method_not_allowed(c, q, "GET");
            if (!strcmp(what, "events"))
                return get ? get_events(c, q, id) : method_not_allowed(c, q, "GET");
            if (!strcmp(what, "weights"))
                return get ? get_job_weights(c, q, id) : method_not_allowed(c, q, "GET");
        }
    }
    return SEND_ERROR(c, q, 404, NULL, "no route %s", url);
}

/* ---- bodies -------------------------------------------------------------- */

static int mem_append(Req *q, const char *data, size_t n)
{
    if (q->len + n + 1 > q->cap) {
        size_t cap = q->cap ? q->cap : 4096;
        while (cap < q->len + n + 1)
            cap *= 2;
        char *b = realloc(q->buf, cap);
        if (!b)
            return -1;
        q->buf = b;
        q->cap = cap;
    }
    memcpy(q->buf + q->len, data, n);
    q->len += n;
    q->buf[q->len] = '\0';
    return 0;
}

static int file_append(Req *q, const char *data, size_t n)
{
    while (n) {
        ssize_t w = write(q->fd, data, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

static enum MHD_Result form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *filename, const char *ctype, const char *encoding,
                                  const char *data, uint64_t off, size_t size)
{
    Req *q = cls;
    (void)kind; (void)filename; (void)ctype; (void)encoding; (void)off;
    if (!strcmp(key, "name")) {
        size_t have = strlen(q->form_name);
        if (have + size < sizeof q->form_name) {
            memcpy(q->form_name + have, data, size);
            q->form_name[have + size] = '\0';
        }
    } else if (!strcmp(key, "file")) {
        q->form_file_seen = 1;
        if (q->fd >= 0 && size && file_append(q, data, size))
            q->form_write_error = 1;
        else if (q->fd < 0 && size && mem_append(q, data, size))
            q->form_write_error = 1;
    }
    return MHD_YES;
}

/* Opens a new upload file in data_dir/datasets/. */
static int open_upload(Req *q)
{
    snprintf(q->upload_path, sizeof q->upload_path, "%s/datasets/.upload-XXXXXX",
             q->api->data_dir);
    q->fd = mkostemp(q->upload_path, O_CLOEXEC);
    return q->fd < 0 ? -1 : 0;
}

/* First call of a request: checks what can be checked before the body and
 * chooses where the body goes. Sets q->early on refusal. */
static void begin(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    int post = !strcmp(q->method, "POST"), del = !strcmp(q->method, "DELETE");
    char ctype[128];
    content_type(c, ctype, sizeof ctype);
    q->body_kind = BODY_MEMORY;
    q->limit = a->cfg.body_limit;
    if ((post || del) && !token_ok(a, c)) {
        q->early_status = 401;
        q->early = error_response(401, NULL, "this request changes something: it needs "
                                  "'Authorization: Bearer TOKEN' with the daemon's token");
        return;
    }
    if (!post) {
        q->body_kind = BODY_DISCARD;
        return;
    }
    char seg[4][128];
    int n = segments(q->url, seg);
    int is_datasets = n == 1 && !strcmp(seg[0], "datasets");
    int is_predict = n == 3 && !strcmp(seg[0], "jobs") && !strcmp(seg[2], "predict");
    int is_form = !strcmp(ctype, "multipart/form-data");
    /* curl -d sends JSON as a form unless told otherwise; whether such a body is
     * JSON is known once it has arrived (body_object) */
    q->json_as_form = !strcmp(ctype, FORM_URLENCODED);
    int is_json = !strcmp(ctype, "application/json") || q->json_as_form;
    if (is_datasets && !is_json) {
        if (!is_form && !is_archive_type(ctype)) {
            q->early_status = 415;
            q->early = error_response(415, NULL, "Content-Type '%s': send JSON (a server "
                                      "folder), an archive (application/gzip, application/x-tar,"
                                      " application/zip) or a multipart form", ctype);
            return;
        }
        q->limit = a->cfg.upload_limit;
        if (open_upload(q)) {
            q->early_status = 500;
            q->early = error_response(500, NULL, "cannot create an upload file in %s/datasets: "
                                      "%s", a->data_dir, strerror(errno));
            return;
        }
        q->body_kind = is_form ? BODY_FORM : BODY_FILE;
    } else if (is_predict) {
        if (!is_form && !is_image_type(ctype)) {
            q->early_status = 415;
            q->early = error_response(415, NULL, "Content-Type '%s': send image/png, image/jpeg "
                                      "or a multipart form with a 'file' field", ctype);
            return;
        }
        q->limit = PREDICT_MAX_BYTES;
        q->body_kind = is_form ? BODY_FORM : BODY_MEMORY;
    } else if (ctype[0] && !is_json && !(n == 3 && !strcmp(seg[2], "cancel"))) {
        q->early_status = 415;
        q->early = error_response(415, NULL, "Content-Type '%s': send application/json", ctype);
        return;
    }
    if (q->body_kind == BODY_FORM) {
        q->pp = MHD_create_post_processor(c, 64 * 1024, form_field, q);
        if (!q->pp) {
            q->early_status = 400;
            q->early = error_response(400, NULL, "malformed multipart form (no boundary?)");
            return;
        }
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > q->limit) {
        q->early_status = 413;
        q->early = error_response(413, NULL, "the body is %s bytes; the limit for this request "
                                  "is %llu", cl, (unsigned long long)q->limit);
    }
}

static void consume(Req *q, const char *data, size_t n)
{
    q->received += n;
    if (q->too_large || q->early)
        return;
    if (q->received > q->limit) {
        q->too_large = 1;
        return;
    }
    int fail = 0;
    switch (q->body_kind) {
    case BODY_MEMORY: fail = mem_append(q, data, n); break;
    case BODY_FILE: fail = file_append(q, data, n); break;
    case BODY_FORM: fail = MHD_post_process(q->pp, data, n) != MHD_YES; break;
    default: break;
    }
    if (fail && !q->early) {
        q->early_status = 500;
        q->early = error_response(500, NULL, "cannot store the request body: %s",
                                  q->body_kind == BODY_FORM ? "malformed form" : strerror(errno));
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    Api *a = cls;
    (void)version;
    Req *q = *con_cls;
    if (!q) {
        q = calloc(1, sizeof *q);
        if (!q)
            return MHD_NO;
        q->api = a;
        q->fd = -1;
        q->t0 = now_s();
        snprintf(q->method, sizeof q->method, "%s", method);
        snprintf(q->url, sizeof q->url, "%s", url);
        *con_cls = q;
        begin(c, q);
        if (q->early && q->early_status != 500) { /* answer now, without reading the body */
            struct MHD_Response *r = q->early;
            q->early = NULL;
            return send_response(c, q, q->early_status, r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        consume(q, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (q->early) {
        struct MHD_Response *r = q->early;
        q->early = NULL;
        return send_response(c, q, q->early_status, r);
    }
    if (q->too_large)
        return SEND_ERROR(c, q, 413, NULL, "the body is larger than this request's limit of %llu "
                          "bytes", (unsigned long long)q->limit);
    if (q->form_write_error)
        return SEND_ERROR(c, q, 500, NULL, "cannot store the uploaded file");
    if (q->fd >= 0) {
        close(q->fd);
        q->fd = -2; /* closed; the path is removed at the end */
    }
    return dispatch(c, q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)c;
    Req *q = *con_cls;
    if (!q)
        return;
    log_msg(toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
            "%s %s %u %.1f ms%s", q->method, q->url, q->status, (now_s() - q->t0) * 1000.0,
            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    if (q->early)
        MHD_destroy_response(q->early);
    if (q->pp)
        MHD_destroy_post_processor(q->pp);
    if (q->fd >= 0)
        close(q->fd);
    if (q->upload_path[0])
        unlink(q->upload_path);
    free(q->buf);
    free(q);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_msg(LOG_LEVEL_DEBUG, "http: %s", msg);
}

int api_start(Api **out, const ApiConfig *cfg, Error *err)
{
    Api *a = calloc(1, sizeof *a);
    if (!a)
        return error_set(err, "out of memory");
    a->cfg = *cfg;
    snprintf(a->host, sizeof a->host, "%s", cfg->host);
    snprintf(a->db_path, sizeof a->db_path, "%s", cfg->db_path);
    snprintf(a->data_dir, sizeof a->data_dir, "%s", cfg->data_dir);
    snprintf(a->data_root, sizeof a->data_root, "%s", cfg->data_root ? cfg->data_root : "");
    snprintf(a->weights_dir, sizeof a->weights_dir, "%s", cfg->weights_dir);
    snprintf(a->web_dir, sizeof a->web_dir, "%s", cfg->web_dir);
    snprintf(a->token, sizeof a->token, "%s", cfg->token ? cfg->token : "");
    pthread_key_create(&a->store_key, close_thread_store);
    pthread_mutex_init(&a->predict_mu, NULL);
    struct sockaddr_in sa;
    struct sockaddr_in6 sa6;
    memset(&sa, 0, sizeof sa);
    memset(&sa6, 0, sizeof sa6);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    sa6.sin6_family = AF_INET6;
    sa6.sin6_port = htons((uint16_t)cfg->port);
    const char *host = !strcmp(cfg->host, "localhost") ? "127.0.0.1" : cfg->host;
    int v6 = strchr(host, ':') != NULL;
    if (v6 ? inet_pton(AF_INET6, host, &sa6.sin6_addr) != 1
           : inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        free(a);
        return error_set(err, "listen address '%s' is not an IP address", cfg->host);
    }
    a->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                  MHD_USE_ERROR_LOG | MHD_USE_ITC | (v6 ? MHD_USE_IPv6 : 0),
                              0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                              v6 ? (struct sockaddr *)&sa6 : (struct sockaddr *)&sa,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, a,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!a->mhd) {
        free(a);
        return error_set(err, "cannot listen on %s:%d (in use, or not an address of this "
                         "machine)", cfg->host, cfg->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : cfg->port;
    *out = a;
    return 0;
}

int api_port(const Api *a)
{
    return a->port;
}

void api_quiesce(Api *a)
{
    a->quiescing = 1;
    MHD_socket s = MHD_quiesce_daemon(a->mhd);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

void api_stop(Api *a)
{
    if (!a)
        return;
    MHD_stop_daemon(a->mhd);
    predictor_free(a->predictor);
    pthread_mutex_destroy(&a->predict_mu);
    pthread_key_delete(a->store_key);
    free(a);
}
