/*
 * http.c: the request lifecycle of the REST API (http.h): the daemon, the route
 * table matched once per request, the token, bodies and responses. The
 * resources' handlers are in api.c (health, info, the dashboard's files),
 * api_datasets.c, api_jobs.c, api_weights.c, api_predict.c and sse.c.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jsontext.h"
#include "log.h"

#define JSON_MAX_DEPTH 32

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

Store *http_store(Api *a, Error *err)
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

enum MHD_Result http_send(struct MHD_Connection *c, Req *q, unsigned status,
                                     struct MHD_Response *r)
{
    q->status = status;
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result http_send_json(struct MHD_Connection *c, Req *q, unsigned status, json_t *body)
{
    return http_send(c, q, status, json_response(body));
}

enum MHD_Result http_send_created_at(struct MHD_Connection *c, Req *q, const char *location,
                                     json_t *body)
{
    struct MHD_Response *r = json_response(body);
    MHD_add_response_header(r, "Location", location);
    return http_send(c, q, 201, r);
}

enum MHD_Result http_send_created(struct MHD_Connection *c, Req *q, const char *kind,
                                  int64_t id, json_t *body)
{
    char loc[64];
    snprintf(loc, sizeof loc, "/api/%s/%lld", kind, (long long)id);
    return http_send_created_at(c, q, loc, body);
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

struct MHD_Response *http_error_response(unsigned status, const char *path, const char *fmt,
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

enum MHD_Result http_db_failure(struct MHD_Connection *c, Req *q, const Error *err)
{
    log_msg(LOG_LEVEL_ERROR, "%s %s: %s", q->method, q->url, err->msg);
    return HTTP_ERROR(c, q, 500, NULL, "%s", err->msg);
}

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

int http_valid_name(const char *s)
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
json_t *http_body_object(struct MHD_Connection *c, Req *q, const char *const *fields,
                         enum MHD_Result *rc)
{
    if (q->json_as_form && !starts_object(q->buf ? q->buf : "", q->len)) {
        *rc = HTTP_ERROR(c, q, 415, NULL, "Content-Type '" FORM_URLENCODED "': the body is a "
                         "form, not a JSON object; send a JSON object, best with "
                         "'Content-Type: application/json' (curl --json '{...}')");
        return NULL;
    }
    if (json_depth(q->buf ? q->buf : "", q->len) > JSON_MAX_DEPTH) {
        *rc = HTTP_ERROR(c, q, 400, NULL, "the JSON body nests deeper than %d levels",
                         JSON_MAX_DEPTH);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(q->buf ? q->buf : "", q->len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        *rc = HTTP_ERROR(c, q, 400, NULL, "malformed JSON at line %d, column %d: %s", je.line,
                         je.column, je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        *rc = HTTP_ERROR(c, q, 400, NULL, "the body must be a JSON object");
        return NULL;
    }
    const char *key;
    json_t *field;
    json_object_foreach(v, key, field) {
        int known = !fields;
        for (int i = 0; fields && fields[i] && !known; i++)
            known = !strcmp(key, fields[i]);
        if (!known) {
            char list[256] = "";
            for (int i = 0; fields[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         fields[i]);
            *rc = HTTP_ERROR(c, q, 400, key, "%s: unknown field (expected %s)", key, list);
            json_decref(v);
            return NULL;
        }
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

int http_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

const char *http_arg(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- routing --------------------------------------------------------------- */

/* Does url match pattern? Literal segments compare equal; "{id}" and "{name}"
 * take any non-empty segment (copied to param, at most one per pattern). */
static int pattern_match(const char *pattern, const char *url, char *param, size_t len)
{
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t n = strcspn(u, "/");
            if (!close || n == 0 || n >= len)
                return 0;
            memcpy(param, u, n);
            param[n] = '\0';
            p = close + 1;
            u += n;
            continue;
        }
        if (*p != *u)
            return 0;
        p++;
        u++;
    }
    return !*p && !*u;
}

/* Matches q's method and URL against the route table, once. Returns the route
 * (and sets q->route, q->param, q->id), or NULL with *status 404 or 405 and, for
 * 405, the methods the URL takes in allow. GET routes answer HEAD too. */
static const Route *route_find(Req *q, unsigned *status, char *allow, size_t allow_len)
{
    const char *m = !strcmp(q->method, "HEAD") ? "GET" : q->method;
    allow[0] = '\0';
    *status = 404;
    for (int i = 0; i < api_route_count; i++) {
        const Route *r = &api_routes[i];
        char param[sizeof q->param] = "";
        if (!pattern_match(r->pattern, q->url, param, sizeof param))
            continue;
        if (!strcmp(r->method, m)) {
            q->route = r;
            snprintf(q->param, sizeof q->param, "%s", param);
            q->id = parse_id(param);
            return r;
        }
        *status = 405;
        if (!strstr(allow, r->method)) {
            size_t used = strlen(allow);
            snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "", r->method);
        }
    }
    return NULL;
}

static struct MHD_Response *method_not_allowed(Req *q, const char *allow)
{
    struct MHD_Response *r = http_error_response(405, NULL, "%s %s: use %s", q->method, q->url,
                                                 allow);
    MHD_add_response_header(r, "Allow", allow);
    return r;
}

/* The route's handler, once the body is in; the dashboard's files for a GET
 * outside /api. */
static enum MHD_Result dispatch(struct MHD_Connection *c, Req *q)
{
    if (!q->route)
        return api_handle_static(c, q);
    if (strstr(q->route->pattern, "{id}") && !q->id)
        return HTTP_ERROR(c, q, 404, NULL, "no job '%s'", q->param);
    return q->route->handler(c, q);
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

/* Opens a new upload file in dir (data_dir/datasets or the weights folder: where
 * it is renamed to once checked). */
static int open_upload(Req *q, const char *dir)
{
    snprintf(q->upload_path, sizeof q->upload_path, "%s/.upload-XXXXXX", dir);
    q->fd = mkostemp(q->upload_path, O_CLOEXEC);
    return q->fd < 0 ? -1 : 0;
}

/* Refuses the request before its body: sets q->early (sent at once, without
 * reading the body, unless it is a 500). */
static void refuse(Req *q, unsigned status, struct MHD_Response *r)
{
    q->early_status = status;
    q->early = r;
}

/* First call of a request: matches the route, checks the token and what the
 * route accepts, and chooses where the body goes. */
static void begin(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    const int get = !strcmp(q->method, "GET") || !strcmp(q->method, "HEAD");
    char ctype[128];
    content_type(c, ctype, sizeof ctype);
    q->body_kind = BODY_DISCARD;
    q->limit = a->cfg.body_limit;
    if (!get && !token_ok(a, c)) {
        refuse(q, 401, http_error_response(401, NULL, "this request changes something: it "
                                           "needs 'Authorization: Bearer TOKEN' with the "
                                           "daemon's token"));
        return;
    }
    if (strncmp(q->url, "/api", 4)) {
        if (!get)
            refuse(q, 405, method_not_allowed(q, "GET"));
        return; /* the dashboard's files */
    }
    unsigned status;
    char allow[64];
    const Route *r = route_find(q, &status, allow, sizeof allow);
    if (!r) {
        refuse(q, status, status == 405 ? method_not_allowed(q, allow)
                                        : http_error_response(404, NULL, "no route %s", q->url));
        return;
    }
    q->limit = r->limit == LIMIT_UPLOAD    ? a->cfg.upload_limit
               : r->limit == LIMIT_PREDICT ? PREDICT_MAX_BYTES
                                           : a->cfg.body_limit;
    const int is_form = !strcmp(ctype, "multipart/form-data");
    /* curl -d sends JSON as a form unless told otherwise; whether such a body is
     * JSON is known once it has arrived (http_body_object) */
    q->json_as_form = !strcmp(ctype, FORM_URLENCODED);
    const int is_json = !strcmp(ctype, "application/json") || q->json_as_form;
    switch (r->accept) {
    case ACCEPT_NONE:
        return;
    case ACCEPT_JSON:
        if (ctype[0] && !is_json) {
            refuse(q, 415, http_error_response(415, NULL, "Content-Type '%s': send "
                                               "application/json", ctype));
            return;
        }
        q->body_kind = BODY_MEMORY;
        break;
    case ACCEPT_DATASET:
        q->body_kind = BODY_MEMORY;
        if (is_json) { /* a server folder: a small JSON body, not an upload */
            q->limit = a->cfg.body_limit;
            break;
        }
        if (!is_form && !is_archive_type(ctype)) {
            refuse(q, 415, http_error_response(415, NULL, "Content-Type '%s': send JSON (a "
                                               "server folder), an archive (application/gzip,"
                                               " application/x-tar, application/zip) or a "
                                               "multipart form", ctype));
            return;
        }
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/datasets", a->data_dir);
        if (open_upload(q, dir)) {
            refuse(q, 500, http_error_response(500, NULL, "cannot create an upload file in "
                                               "%s: %s", dir, strerror(errno)));
            return;
        }
        q->body_kind = is_form ? BODY_FORM : BODY_FILE;
        break;
    case ACCEPT_WEIGHTS:
        if (ctype[0] && strcmp(ctype, "application/octet-stream")) {
            refuse(q, 415, http_error_response(415, NULL, "Content-Type '%s': send the file's "
                                               "bytes as application/octet-stream (curl -T FILE"
                                               " or --data-binary @FILE)", ctype));
            return;
        }
        if (open_upload(q, a->weights_dir)) {
            refuse(q, 500, http_error_response(500, NULL, "cannot create an upload file in "
                                               "%s: %s", a->weights_dir, strerror(errno)));
            return;
        }
        q->body_kind = BODY_FILE;
        break;
    case ACCEPT_IMAGE:
        if (!is_form && !is_image_type(ctype)) {
            refuse(q, 415, http_error_response(415, NULL, "Content-Type '%s': send image/png, "
                                               "image/jpeg or a multipart form with a 'file' "
                                               "field", ctype));
            return;
        }
        q->body_kind = is_form ? BODY_FORM : BODY_MEMORY;
        break;
    }
    if (q->body_kind == BODY_FORM) {
        q->pp = MHD_create_post_processor(c, 64 * 1024, form_field, q);
        if (!q->pp) {
            refuse(q, 400, http_error_response(400, NULL, "malformed multipart form (no "
                                               "boundary?)"));
            return;
        }
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > q->limit)
        refuse(q, 413, http_error_response(413, NULL, "the body is %s bytes; the limit for this "
                                           "request is %llu", cl, (unsigned long long)q->limit));
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
        q->early = http_error_response(500, NULL, "cannot store the request body: %s",
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
            return http_send(c, q, q->early_status, r);
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
        return http_send(c, q, q->early_status, r);
    }
    if (q->too_large)
        return HTTP_ERROR(c, q, 413, NULL, "the body is larger than this request's limit of %llu "
                          "bytes", (unsigned long long)q->limit);
    if (q->form_write_error)
        return HTTP_ERROR(c, q, 500, NULL, "cannot store the uploaded file");
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

/* ---- the daemon ---------------------------------------------------------- */

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
