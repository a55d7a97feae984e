/*
 * api.c: the REST API's route table (docs/api.md lists the same routes), and
 * the daemon's own resources: health, info and the dashboard's files. http.c
 * matches a request against the table once and runs the route's handler.
 */
#include "http.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blas.h"

/* limit: which configured limit bounds the body (POST /api/datasets: upload_limit
 * for an archive, body_limit for JSON). */
const Route api_routes[] = {
    {"GET", "/api/health", api_handle_health, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/info", api_handle_info, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/datasets", api_handle_datasets_list, ACCEPT_NONE, LIMIT_BODY},
    {"POST", "/api/datasets", api_handle_dataset_post, ACCEPT_DATASET, LIMIT_UPLOAD},
    {"GET", "/api/datasets/{name}", api_handle_dataset_get, ACCEPT_NONE, LIMIT_BODY},
    {"DELETE", "/api/datasets/{name}", api_handle_dataset_delete, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/weights", api_handle_weights_list, ACCEPT_NONE, LIMIT_BODY},
    {"POST", "/api/weights/pull", api_handle_weights_pull, ACCEPT_JSON, LIMIT_BODY},
    {"PUT", "/api/weights/{name}", api_handle_weights_put, ACCEPT_WEIGHTS, LIMIT_UPLOAD},
    {"GET", "/api/weights/{name}", api_handle_weights_get, ACCEPT_NONE, LIMIT_BODY},
    {"DELETE", "/api/weights/{name}", api_handle_weights_delete, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs", api_handle_jobs_list, ACCEPT_NONE, LIMIT_BODY},
    {"POST", "/api/jobs", api_handle_job_post, ACCEPT_JSON, LIMIT_BODY},
    {"GET", "/api/jobs/{id}", api_handle_job_get, ACCEPT_NONE, LIMIT_BODY},
    {"POST", "/api/jobs/{id}/cancel", api_handle_job_cancel, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs/{id}/metrics", api_handle_job_metrics, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs/{id}/steps", api_handle_job_steps, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs/{id}/classes", api_handle_job_classes, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs/{id}/diagnosis", api_handle_job_diagnosis, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs/{id}/events", api_handle_job_events, ACCEPT_NONE, LIMIT_BODY},
    {"GET", "/api/jobs/{id}/weights", api_handle_job_weights, ACCEPT_NONE, LIMIT_BODY},
    {"POST", "/api/jobs/{id}/predict", api_handle_job_predict, ACCEPT_IMAGE, LIMIT_PREDICT},
};
const int api_route_count = (int)(sizeof api_routes / sizeof api_routes[0]);

enum MHD_Result api_handle_health(struct MHD_Connection *c, Req *q)
{
    return http_send_json(c, q, 200, json_pack("{s:s, s:s}", "status", "ok", "version",
                                               RESNETD_VERSION));
}

enum MHD_Result api_handle_info(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    Error err;
    Store *st = http_store(a, &err);
    int64_t queued = 0, running = 0;
    int has_running = st ? store_job_running(st, &running, &err) : -1;
    if (has_running < 0 || store_jobs_queued(st, &queued, &err))
        return http_db_failure(c, q, &err);
    json_t *j = json_pack(
        "{s:s, s:[s, s], s:i, s:s, s:s, s:s?, s:{s:I, s:I, s:I, s:I, s:i}, s:s, s:b, "
        "s:{s:o, s:I}, s:{s:s?, s:i, s:s?}}",
        "version", RESNETD_VERSION, "variants", "torchvision", "keras", "threads",
        blas_threads(), "blas_kernel", blas_kernel_name(), "blas_kernel_origin",
        blas_kernel_origin(), "blas_kernel_best", blas_kernel_best(), "limits", "body_limit",
        (json_int_t)a->cfg.body_limit, "upload_limit", (json_int_t)a->cfg.upload_limit,
        "max_pixels", (json_int_t)a->cfg.max_pixels, "cache_bytes",
        (json_int_t)a->cfg.cache_bytes, "max_jobs_queued", a->cfg.max_jobs_queued, "data_root",
        a->data_root, "auth", a->token[0] != 0, "queue", "running",
        has_running ? json_integer(running) : json_null(), "queued", (json_int_t)queued,
        "named_weights", "manifest", a->cfg.manifest ? a->cfg.manifest->path : NULL, "count",
        a->cfg.manifest ? a->cfg.manifest->n : 0, "error",
        a->cfg.manifest ? NULL : a->cfg.manifest_error);
    return http_send_json(c, q, 200, j);
}

/* ---- the dashboard ------------------------------------------------------- */

static const char *mime_of(const char *path)
{
    if (http_ends_with(path, ".html")) return "text/html; charset=utf-8";
    if (http_ends_with(path, ".js") || http_ends_with(path, ".mjs")) return "text/javascript";
    if (http_ends_with(path, ".css")) return "text/css";
    if (http_ends_with(path, ".svg")) return "image/svg+xml";
    if (http_ends_with(path, ".png")) return "image/png";
    if (http_ends_with(path, ".json")) return "application/json";
    return "application/octet-stream";
}

enum MHD_Result api_handle_static(struct MHD_Connection *c, Req *q)
{
    const char *url = q->url;
    const char *rel = !strcmp(url, "/") ? "index.html" : url + 1;
    for (const char *p = rel; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-' || *p == '/'))
            return HTTP_ERROR(c, q, 404, NULL, "no such file");
    if (strstr(rel, "..") || rel[0] == '/')
        return HTTP_ERROR(c, q, 404, NULL, "no such file");
    char path[8400];
    snprintf(path, sizeof path, "%s/%s", q->api->web_dir, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        return HTTP_ERROR(c, q, 404, NULL, "no such file: %s", url);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    MHD_add_response_header(r, "Content-Type", mime_of(path));
    return http_send(c, q, 200, r);
}
