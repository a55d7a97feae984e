/*
 * api_jobs.c: the jobs resource: submit (with the checks that need no
 * training), list, show, cancel, and each job's stored rows (metrics, steps,
 * per-class metrics, diagnosis).
 */
#include "http.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events.h"
#include "jobcheck.h"
#include "jobspec.h"
#include "jsontext.h"
#include "log.h"
#include "select.h"
#include "worker.h"
#include "wref.h"

json_t *api_job_json(Api *a, Store *st, int64_t id, int *missing, Error *err)
{
    json_t *j = store_job_get(st, id, missing, err);
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
    PullStatus ps;
    json_object_set_new(j, "fetch",
                        puller_status(a->cfg.puller, NULL, id, &ps)
                            ? json_pack("{s:s, s:s, s:I, s:I}", "weights", ps.weights, "file",
                                        ps.file, "done", (json_int_t)ps.done, "total",
                                        (json_int_t)ps.total)
                            : json_null());
    json_object_set_new(j, "cancel_requested",
                        json_boolean(worker_progress(a->cfg.worker, id, &p) &&
                                     p.cancel_requested));
    Error e2;
    json_t *best = store_job_best(st, id, &e2);
    json_object_set_new(j, "best", best ? best : json_null());
    return j;
}

/* The submit-time checks (jobcheck.h) of spec against the dataset row d (with
 * its report) and the weights file (NULL for random weights; or decl, what
 * weights still to download declare): the resolved spec to store with the job,
 * or NULL with err and the JSON path set. */
static json_t *check_job(const JobSpec *spec, const char *weights_path,
                         const JobDeclared *decl, json_t *d, char *path, size_t path_len,
                         Error *err)
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
    const char *const *known = json_is_array(names) ? classes : NULL;
    int rc = decl ? jobcheck_run_declared(spec, decl, known, (int)n, &r, path, path_len, err)
                  : jobcheck_run(spec, weights_path, known, (int)n, &r, path, path_len, err);
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

/* Resolves a job's "weights" (wref.h) and checks that what it names is there:
 * a file in the weights folder, or a completed job's exported model. */
static int weights_usable(Store *st, Api *a, const JobSpec *spec, Wref *ref, Error *err)
{
    const char *weights = spec->weights;
    if (wref_resolve(weights, spec->variant, a->weights_dir, a->data_dir, a->cfg.manifest,
                     a->cfg.manifest_error, ref, err))
        return -1;
    if (ref->kind == WREF_FILE && access(ref->path, R_OK))
        return error_set(err, "'%s' is not a file in the weights folder nor a name of the "
                         "manifest (see GET /api/weights), nor \"random\", \"imagenet\" or "
                         "\"job:ID\"", weights);
    if (ref->kind == WREF_NAMED && !ref->cached && !fetch_entry_pinned(ref->entry))
        return error_set(err, "'%s': the manifest pins no SHA-256 or MD5 for %s, so it is "
                         "never downloaded unchecked; put the file in the weights folder as "
                         "%s, or pin its hash in the manifest", weights, ref->entry->name,
                         ref->entry->file);
    if (ref->kind != WREF_JOB)
        return 0;
    int missing;
    json_t *j = store_job_get(st, ref->job, &missing, err);
    if (!j)
        return missing ? error_set(err, "'%s': there is no job %lld", weights,
                                   (long long)ref->job)
                       : -1;
    char state[32];
    snprintf(state, sizeof state, "%s", json_string_value(json_object_get(j, "state")));
    json_decref(j);
    if (strcmp(state, JOB_COMPLETED))
        return error_set(err, "'%s': job %lld is %s; a job starts from another's weights once "
                         "that one has completed", weights, (long long)ref->job, state);
    if (access(ref->path, R_OK))
        return error_set(err, "'%s': job %lld completed but its exported model %s is missing",
                         weights, (long long)ref->job, ref->path);
    return 0;
}

enum MHD_Result api_handle_job_post(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    Error err;
    enum MHD_Result rc;
    if (a->quiescing)
        return HTTP_ERROR(c, q, 503, NULL, "the daemon is shutting down");
    json_t *body = http_body_object(c, q, NULL, &rc);
    if (!body)
        return rc;
    JobSpec spec;
    char path[256] = "";
    if (jobspec_parse(&spec, q->buf, q->len, path, sizeof path, &err)) {
        json_decref(body);
        return HTTP_ERROR(c, q, 400, path[0] ? path : NULL, "%s", err.msg);
    }
    Store *st = http_store(a, &err);
    if (!st) {
        jobspec_free(&spec);
        json_decref(body);
        return http_db_failure(c, q, &err);
    }
    int missing = 0;
    json_t *d = store_dataset_find(st, spec.dataset, 1, &missing, &err);
    if (!d) {
        jobspec_free(&spec);
        json_decref(body);
        if (!missing)
            return http_db_failure(c, q, &err);
        return HTTP_ERROR(c, q, 400, "dataset", "dataset: no registered dataset '%s' (see GET "
                          "/api/datasets)", spec.dataset);
    }
    Wref ref;
    if (weights_usable(st, a, &spec, &ref, &err)) {
        json_decref(d);
        jobspec_free(&spec);
        json_decref(body);
        return HTTP_ERROR(c, q, 400, "weights", "weights: %s", err.msg);
    }
    /* named weights not downloaded yet: checked against what the manifest declares */
    const int fetching = ref.kind == WREF_NAMED && !ref.cached;
    JobDeclared decl;
    if (fetching) {
        decl.variant = strcmp(ref.entry->variant, "keras") ? RESNET_TORCHVISION : RESNET_KERAS;
        snprintf(decl.preprocess, sizeof decl.preprocess, "%s", ref.entry->preprocess);
    }
    json_t *resolved = check_job(&spec, ref.kind == WREF_RANDOM || fetching ? NULL : ref.path,
                                 fetching ? &decl : NULL, d, path, sizeof path, &err);
    json_decref(d);
    if (resolved && (ref.kind == WREF_FILE || ref.kind == WREF_NAMED))
        json_object_set_new(resolved, "weights_file", json_string(ref.file));
    if (resolved && ref.kind == WREF_NAMED)
        json_object_set_new(resolved, "weights_name", json_string(ref.entry->name));
    if (resolved && ref.kind == WREF_JOB)
        json_object_set_new(resolved, "weights_job", json_integer(ref.job));
    if (!resolved) {
        jobspec_free(&spec);
        json_decref(body);
        return HTTP_ERROR(c, q, 400, path[0] ? path : NULL, "%s", err.msg);
    }
    int64_t n_queued = 0;
    if (store_jobs_queued(st, &n_queued, &err) == 0 && n_queued >= a->cfg.max_jobs_queued) {
        jobspec_free(&spec);
        json_decref(body);
        json_decref(resolved);
        return HTTP_ERROR(c, q, 503, NULL, "the queue is full (%d jobs waiting)",
                          a->cfg.max_jobs_queued);
    }
    char *spec_text = jsontext_dumps(body, JSON_COMPACT);
    json_decref(body);
    int64_t id = 0;
    char *resolved_text = jsontext_dumps(resolved, JSON_COMPACT);
    json_decref(resolved);
    int irc = store_job_insert(st, spec.name[0] ? spec.name : "job", spec_text ? spec_text : "{}",
                               resolved_text, jobspec_total_epochs(&spec),
                               fetching ? JOB_FETCHING : JOB_QUEUED, &id, &err);
    free(resolved_text);
    free(spec_text);
    jobspec_free(&spec);
    if (irc)
        return http_db_failure(c, q, &err);
    if (fetching) {
        log_msg(LOG_LEVEL_INFO, "job %lld waits for its weights %s", (long long)id,
                ref.entry->name);
        if (puller_start(a->cfg.puller, ref.entry, id, &err)) {
            char why[sizeof err.msg + 128];
            snprintf(why, sizeof why, "weights %s: %s", ref.entry->name, err.msg);
            store_job_fetched(st, id, why, &err);
        }
    } else {
        log_msg(LOG_LEVEL_INFO, "job %lld queued", (long long)id);
        worker_wake(a->cfg.worker);
    }
    json_t *j = api_job_json(a, st, id, &missing, &err);
    if (!j)
        return http_db_failure(c, q, &err);
    return http_send_created(c, q, "jobs", id, j);
}

enum MHD_Result api_handle_jobs_list(struct MHD_Connection *c, Req *q)
{
    Error err;
    Store *st = http_store(q->api, &err);
    json_t *ids = st ? store_job_ids(st, &err) : NULL;
    if (!ids)
        return http_db_failure(c, q, &err);
    json_t *jobs = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(ids, i, row) {
        int missing;
        json_t *j = api_job_json(q->api, st, json_integer_value(row), &missing, &err);
        if (j)
            json_array_append_new(jobs, j);
    }
    json_decref(ids);
    return http_send_json(c, q, 200, json_pack("{s:o}", "jobs", jobs));
}

json_t *api_job_or_answer(struct MHD_Connection *c, Req *q, Store **st, enum MHD_Result *rc)
{
    const int64_t id = q->id;
    Error err;
    int missing = 0;
    *st = http_store(q->api, &err);
    json_t *j = *st ? api_job_json(q->api, *st, id, &missing, &err) : NULL;
    if (!j)
        *rc = missing ? HTTP_ERROR(c, q, 404, NULL, "no job %lld", (long long)id)
                      : http_db_failure(c, q, &err);
    return j;
}

enum MHD_Result api_handle_job_get(struct MHD_Connection *c, Req *q)
{
    Store *st;
    enum MHD_Result rc;
    json_t *j = api_job_or_answer(c, q, &st, &rc);
    return j ? http_send_json(c, q, 200, j) : rc;
}

enum MHD_Result api_handle_job_cancel(struct MHD_Connection *c, Req *q)
{
    const int64_t id = q->id;
    Api *a = q->api;
    Store *st;
    enum MHD_Result rc;
    Error err;
    json_t *j = api_job_or_answer(c, q, &st, &rc);
    if (!j)
        return rc;
    json_decref(j);
    if (worker_cancel_running(a->cfg.worker, id)) {
        log_msg(LOG_LEVEL_INFO, "job %lld: cancel requested", (long long)id);
        int missing;
        return http_send_json(c, q, 202, api_job_json(a, st, id, &missing, &err));
    }
    int done = store_job_cancel_queued(st, id, &err);
    if (done < 0)
        return http_db_failure(c, q, &err);
    if (done == 0 && worker_cancel_running(a->cfg.worker, id)) { /* it started meanwhile */
        int missing;
        return http_send_json(c, q, 202, api_job_json(a, st, id, &missing, &err));
    }
    int missing;
    j = api_job_json(a, st, id, &missing, &err);
    if (!j)
        return http_db_failure(c, q, &err);
    if (done == 0) {
        const char *state = json_string_value(json_object_get(j, "state"));
        rc = HTTP_ERROR(c, q, 409, NULL, "job %lld is %s already", (long long)id, state);
        json_decref(j);
        return rc;
    }
    puller_cancel_job(a->cfg.puller, id); /* if it was fetching its weights */
    log_msg(LOG_LEVEL_INFO, "job %lld: cancelled while queued", (long long)id);
    json_t *ev = json_pack("{s:I, s:s, s:n}", "job", (json_int_t)id, "state", "cancelled",
                           "error");
    char *text = jsontext_dumps(ev, JSON_COMPACT);
    if (text)
        events_publish(a->cfg.events, id, "state", text, 1);
    free(text);
    json_decref(ev);
    worker_wake(a->cfg.worker);
    return http_send_json(c, q, 200, j);
}

/* The thread's store when the job of q->id exists, else NULL after answering
 * 404/500 (*rc set). */
static Store *job_store(struct MHD_Connection *c, Req *q, enum MHD_Result *rc)
{
    Store *st;
    json_t *j = api_job_or_answer(c, q, &st, rc);
    if (!j)
        return NULL;
    json_decref(j);
    return st;
}

/* {"job": ID, key: rows}, or a 500 when rows is NULL (a database error in err). */
static enum MHD_Result send_rows(struct MHD_Connection *c, Req *q, const char *key, json_t *rows,
                                 const Error *err)
{
    if (!rows)
        return http_db_failure(c, q, err);
    return http_send_json(c, q, 200, json_pack("{s:I, s:o}", "job", (json_int_t)q->id, key,
                                               rows));
}

/* GET /api/jobs/ID/metrics: every epoch's row. */
enum MHD_Result api_handle_job_metrics(struct MHD_Connection *c, Req *q)
{
    enum MHD_Result rc;
    Error err;
    Store *st = job_store(c, q, &rc);
    return st ? send_rows(c, q, "epochs", store_epochs_list(st, q->id, &err), &err) : rc;
}

/* GET /api/jobs/ID/steps[?after=INDEX]: the steps after INDEX, in order. */
enum MHD_Result api_handle_job_steps(struct MHD_Connection *c, Req *q)
{
    enum MHD_Result rc;
    Error err;
    const char *after_s = http_arg(c, "after");
    char *end = NULL;
    long long after = after_s ? strtoll(after_s, &end, 10) : -1;
    if (after_s && (!*after_s || *end))
        return HTTP_ERROR(c, q, 400, "after", "after: must be a whole number");
    Store *st = job_store(c, q, &rc);
    return st ? send_rows(c, q, "steps", store_steps_list(st, q->id, after, &err), &err) : rc;
}

/* GET /api/jobs/ID/classes[?epoch=E]: per-class metrics and the confusion
 * matrix of epoch E (default: the last one written). */
enum MHD_Result api_handle_job_classes(struct MHD_Connection *c, Req *q)
{
    enum MHD_Result rc;
    Error err;
    const char *ep = http_arg(c, "epoch");
    char *end = NULL;
    int64_t epoch = ep ? strtoll(ep, &end, 10) : -1;
    if (ep && (!*ep || *end || epoch < 0))
        return HTTP_ERROR(c, q, 400, "epoch", "epoch: must be a whole number >= 0");
    Store *st = job_store(c, q, &rc);
    if (!st)
        return rc;
    if (epoch < 0 && store_epoch_last(st, q->id, &epoch, &err) < 0)
        return http_db_failure(c, q, &err);
    int missing = 0;
    json_t *conf = epoch >= 0 ? store_epoch_confusion(st, q->id, epoch, &missing, &err) : NULL;
    if (!conf && (missing || epoch < 0))
        return HTTP_ERROR(c, q, 404, NULL, "job %lld has no epoch %lld yet", (long long)q->id,
                          (long long)epoch);
    json_t *rows = conf ? store_class_metrics_list(st, q->id, epoch, &err) : NULL;
    if (!rows) {
        json_decref(conf);
        return http_db_failure(c, q, &err);
    }
    return http_send_json(c, q, 200, json_pack("{s:I, s:I, s:o, s:o}", "job", (json_int_t)q->id,
                                               "epoch", (json_int_t)epoch, "classes", rows,
                                               "confusion", conf));
}

/* GET /api/jobs/ID/diagnosis: the job's findings. */
enum MHD_Result api_handle_job_diagnosis(struct MHD_Connection *c, Req *q)
{
    enum MHD_Result rc;
    Error err;
    Store *st = job_store(c, q, &rc);
    return st ? send_rows(c, q, "findings", store_findings_list(st, q->id, &err), &err) : rc;
}
