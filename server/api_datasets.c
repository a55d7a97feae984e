/*
 * api_datasets.c: the datasets resource: register a folder under data_root or
 * an uploaded archive (scanned, with its report), list, show and delete them.
 */
#include "http.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "diagnose.h"
#include "jsontext.h"
#include "log.h"
#include "unpack.h"

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

enum MHD_Result api_handle_datasets_list(struct MHD_Connection *c, Req *q)
{
    Error err;
    Store *st = http_store(q->api, &err);
    json_t *rows = st ? store_datasets_list(st, &err) : NULL;
    if (!rows)
        return http_db_failure(c, q, &err);
    return http_send_json(c, q, 200, json_pack("{s:o}", "datasets", rows));
}

enum MHD_Result api_handle_dataset_get(struct MHD_Connection *c, Req *q)
{
    const char *key = q->param;
    Error err;
    int missing = 0;
    Store *st = http_store(q->api, &err);
    json_t *d = st ? store_dataset_find(st, key, 1, &missing, &err) : NULL;
    if (!d && missing)
        return HTTP_ERROR(c, q, 404, NULL, "no dataset '%s'", key);
    if (!d)
        return http_db_failure(c, q, &err);
    return http_send_json(c, q, 200, d);
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
    Store *st = http_store(a, &err);
    if (!st)
        return http_db_failure(c, q, &err);
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
        return HTTP_ERROR(c, q, outside ? 403 : 400, source[0] == 'f' ? "path" : NULL, "%s",
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
            return HTTP_ERROR(c, q, 409, "name", "a dataset named '%s' exists already", name);
        return http_db_failure(c, q, &err);
    }
    log_msg(LOG_LEVEL_INFO, "dataset %lld '%s' registered (%s)", (long long)id, name, source);
    int missing;
    json_t *d = store_dataset_find(st, name, 1, &missing, &err);
    if (!d)
        return http_db_failure(c, q, &err);
    return http_send_created(c, q, "datasets", id, d);
}

static enum MHD_Result post_dataset_folder(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    enum MHD_Result rc;
    static const char *const fields[] = {"name", "path", NULL};
    json_t *body = http_body_object(c, q, fields, &rc);
    if (!body)
        return rc;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *path = json_string_value(json_object_get(body, "path"));
    if (!name || !http_valid_name(name)) {
        json_decref(body);
        return HTTP_ERROR(c, q, 400, "name", "name: must be a string of 1 to 64 letters, digits,"
                          " '.', '_' or '-'");
    }
    if (!path || !*path) {
        json_decref(body);
        return HTTP_ERROR(c, q, 400, "path", "path: must be a non-empty string");
    }
    if (!a->data_root[0]) {
        json_decref(body);
        return HTTP_ERROR(c, q, 403, "path", "registering server-side folders is off: the "
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
    if (!name || !http_valid_name(name))
        return HTTP_ERROR(c, q, 400, "name", "name: give the dataset a name of 1 to 64 letters, "
                          "digits, '.', '_' or '-' (?name=... or a form field 'name')");
    Store *st = http_store(a, &err);
    if (!st)
        return http_db_failure(c, q, &err);
    int missing = 0;
    json_t *exists = store_dataset_find(st, name, 0, &missing, &err);
    if (exists) {
        json_decref(exists);
        return HTTP_ERROR(c, q, 409, "name", "a dataset named '%s' exists already", name);
    }
    char uploads[4200], dest[4400];
    snprintf(uploads, sizeof uploads, "%s/datasets", a->data_dir);
    snprintf(dest, sizeof dest, "%s/%s", uploads, name);
    if (mkdir(dest, 0755)) {
        if (errno == EEXIST)
            return HTTP_ERROR(c, q, 409, "name", "%s exists already on disk", dest);
        error_set(&err, "cannot create %s: %s", dest, strerror(errno));
        return http_db_failure(c, q, &err);
    }
    UnpackLimits lim = {a->cfg.upload_limit * 4, 1000000};
    UnpackStats stats;
    if (unpack_archive(q->upload_path, dest, &lim, &stats, &err)) {
        remove_tree(dest);
        int big = strstr(err.msg, "more than") != NULL;
        return HTTP_ERROR(c, q, big ? 413 : 400, NULL, "%s", err.msg);
    }
    char root[4400];
    if (unpack_dataset_root(dest, root, sizeof root, &err)) {
        remove_tree(dest);
        return HTTP_ERROR(c, q, 400, NULL, "%s", err.msg);
    }
    log_msg(LOG_LEVEL_INFO, "upload '%s': %llu files, %llu bytes unpacked", name,
            (unsigned long long)stats.files, (unsigned long long)stats.bytes);
    return register_dataset(c, q, name, root, uploads, "upload", dest);
}

/* POST /api/datasets: a JSON body names a server folder; an archive or a form
 * has been written to q->upload_path. */
enum MHD_Result api_handle_dataset_post(struct MHD_Connection *c, Req *q)
{
    if (q->body_kind == BODY_MEMORY)
        return post_dataset_folder(c, q);
    const char *name = q->body_kind == BODY_FORM && q->form_name[0] ? q->form_name
                                                                     : http_arg(c, "name");
    if (q->body_kind == BODY_FORM && !q->form_file_seen)
        return HTTP_ERROR(c, q, 400, "file", "file: the form has no 'file' field with the "
                          "archive");
    return post_dataset_archive(c, q, name);
}

enum MHD_Result api_handle_dataset_delete(struct MHD_Connection *c, Req *q)
{
    const char *key = q->param;
    Api *a = q->api;
    Error err;
    int missing = 0;
    Store *st = http_store(a, &err);
    json_t *d = st ? store_dataset_find(st, key, 0, &missing, &err) : NULL;
    if (!d && missing)
        return HTTP_ERROR(c, q, 404, NULL, "no dataset '%s'", key);
    if (!d)
        return http_db_failure(c, q, &err);
    int64_t id = json_integer_value(json_object_get(d, "id"));
    char name[80], path[4096], source[16];
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(d, "name")));
    snprintf(path, sizeof path, "%s", json_string_value(json_object_get(d, "path")));
    snprintf(source, sizeof source, "%s", json_string_value(json_object_get(d, "source")));
    json_decref(d);
    int64_t job;
    int used = store_dataset_user(st, id, &job, &err);
    if (used < 0)
        return http_db_failure(c, q, &err);
    if (used)
        return HTTP_ERROR(c, q, 409, NULL, "dataset '%s' is in use by job %lld", name,
                          (long long)job);
    if (store_dataset_delete(st, id, &err))
        return http_db_failure(c, q, &err);
    if (!strcmp(source, "upload")) {
        char dest[4400];
        snprintf(dest, sizeof dest, "%s/datasets/%s", a->data_dir, name);
        remove_tree(dest);
    }
    log_msg(LOG_LEVEL_INFO, "dataset %lld '%s' deleted", (long long)id, name);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    return http_send(c, q, 204, r);
}
