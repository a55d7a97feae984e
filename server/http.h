/*
 * http.h: what the API's files share (the public interface is api.h).
 *
 * A request's life (http.c): the first call of the access handler matches the
 * method and URL against the route table (api.c) once, checks the token and
 * what the route accepts (media type, declared size) and chooses where the body
 * goes (memory for JSON and images, a file for archives and weights, a form
 * parser for multipart uploads); the following calls feed the body there,
 * counting it against the route's limit; the last call runs the route's
 * handler, which answers. Handlers (api_*.c, sse.c) run on the connection's
 * thread: one request at a time per thread, many threads at once.
 */
#ifndef RESNETD_HTTP_H
#define RESNETD_HTTP_H

#include <pthread.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api.h"
#include "predict.h"
#include "store.h"

#define RESNETD_VERSION "0.1.0"
/* what curl -d sends without -H */
#define FORM_URLENCODED "application/x-www-form-urlencoded"
#define PREDICT_MAX_BYTES ((size_t)64 << 20)

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

/* What a route takes as its body: the media types and where the bytes go. */
typedef enum {
    ACCEPT_NONE,    /* nothing is read (a body sent anyway is discarded) */
    ACCEPT_JSON,    /* a JSON object (application/json, or a curl -d form that is one),
                       in memory */
    ACCEPT_DATASET, /* JSON (a server folder) in memory, or an archive or a multipart
                       form with a 'file' field, to a file in data_dir/datasets */
    ACCEPT_IMAGE,   /* image/png, image/jpeg, application/octet-stream or a multipart
                       form with a 'file' field, in memory */
    ACCEPT_WEIGHTS, /* the bytes of a weights file (application/octet-stream or no
                       type), to a temporary file in the weights folder */
} Accept;

/* Which configured limit bounds the body. */
typedef enum { LIMIT_BODY, LIMIT_UPLOAD, LIMIT_PREDICT } Limit;

typedef struct Req Req;
typedef enum MHD_Result (*Handler)(struct MHD_Connection *c, Req *q);

typedef struct {
    const char *method;   /* "GET" (answers HEAD too), "POST", "PUT" or "DELETE" */
    const char *pattern;  /* "/api/jobs/{id}/metrics": {id} a job id, {name} a name */
    Handler handler;
    Accept accept;
    Limit limit;
} Route;

/* The route table (api.c), in the order routes are listed in docs/api.md. */
extern const Route api_routes[];
extern const int api_route_count;

enum { BODY_MEMORY, BODY_FILE, BODY_FORM, BODY_DISCARD };

struct Req {
    Api *api;
    char method[16];
    char url[1024];
    const Route *route;          /* the matched route; NULL for the dashboard's files */
    int64_t id;                  /* {id} of the route (0 when the segment is not a number) */
    char param[128];             /* the {id} or {name} segment as sent */
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
};

/* ---- responses (http.c): each takes ownership of body / r ---------------- */

enum MHD_Result http_send(struct MHD_Connection *c, Req *q, unsigned status,
                          struct MHD_Response *r);
enum MHD_Result http_send_json(struct MHD_Connection *c, Req *q, unsigned status, json_t *body);
/* 201 Created with body and "Location: /api/KIND/ID" (or the location given). */
enum MHD_Result http_send_created(struct MHD_Connection *c, Req *q, const char *kind, int64_t id,
                                  json_t *body);
enum MHD_Result http_send_created_at(struct MHD_Connection *c, Req *q, const char *location,
                                     json_t *body);
/* {"error": {"code", "message", "path"}}; path (a JSON path into the request) may be NULL. */
struct MHD_Response *http_error_response(unsigned status, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define HTTP_ERROR(c, q, status, path, ...) \
    http_send((c), (q), (status), http_error_response((status), (path), __VA_ARGS__))
/* 500 with err's message, logged. */
enum MHD_Result http_db_failure(struct MHD_Connection *c, Req *q, const Error *err);

/* ---- requests (http.c) ----------------------------------------------------- */

/* This thread's store connection (opened on first use); NULL with err. */
Store *http_store(Api *a, Error *err);
/* The body as a JSON object, or NULL after answering 400/415 (*rc set); with
 * fields (NULL-terminated), a key outside them is a 400 naming it. */
json_t *http_body_object(struct MHD_Connection *c, Req *q, const char *const *fields,
                         enum MHD_Result *rc);
/* 1..64 of [A-Za-z0-9._-], not "." or "..". */
int http_valid_name(const char *s);
int http_ends_with(const char *s, const char *suffix);
/* A query argument, or NULL. */
const char *http_arg(struct MHD_Connection *c, const char *name);

/* ---- views shared by the resources ----------------------------------------- */

/* The job as the API shows it (api_jobs.c); NULL with *missing = 1 when there is
 * none, or a database error. */
json_t *api_job_json(Api *a, Store *st, int64_t id, int *missing, Error *err);
/* The job of q->id, or NULL after answering 404/500 (*rc set); *st is the
 * thread's store. */
json_t *api_job_or_answer(struct MHD_Connection *c, Req *q, Store **st, enum MHD_Result *rc);

/* ---- handlers (the route table's; the dashboard's files for other GETs) ---- */

enum MHD_Result api_handle_health(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_info(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_static(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_datasets_list(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_dataset_post(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_dataset_get(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_dataset_delete(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_weights_list(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_weights_put(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_weights_pull(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_weights_get(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_weights_delete(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_jobs_list(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_post(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_get(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_cancel(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_metrics(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_steps(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_classes(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_diagnosis(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_events(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_weights(struct MHD_Connection *c, Req *q);
enum MHD_Result api_handle_job_predict(struct MHD_Connection *c, Req *q);

#endif
