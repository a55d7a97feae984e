/*
 * worker.c: the training worker thread (see worker.h).
 */
#include "worker.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "jobspec.h"
#include "jsontext.h"
#include "log.h"
#include "store.h"
#include "train.h"
#include "wref.h"

struct Worker {
    WorkerConfig cfg;
    char db_path[4096], data_dir[4096], weights_dir[4096];
    Store *store;             /* the worker thread's own connection */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int pending;
    volatile int stopping;  /* read by train_run as checkpoint_on_cancel */
    volatile int cancel;      /* train_run's cancel flag */
    WorkerProgress progress;  /* progress.job 0: idle */
};

void worker_job_path(const char *data_dir, int64_t job, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/jobs/%lld%s%s", data_dir, (long long)job, name ? "/" : "",
             name ? name : "");
}

/* ---- one job ------------------------------------------------------------- */

typedef struct {
    Worker *w;
    int64_t job;
    char *const *classes;
    char export_path[4200];
    char export_error[600];
    int store_failed;
} JobRun;

static void store_failure(JobRun *r, const Error *err)
{
    if (!r->store_failed)
        log_msg(LOG_LEVEL_ERROR, "job %lld: store: %s (rows are no longer recorded)",
                (long long)r->job, err->msg);
    r->store_failed = 1;
}

static void publish_state(Worker *w, int64_t job, const char *state, const char *error,
                          int final)
{
    json_t *j = json_pack("{s:I, s:s, s:s?}", "job", (json_int_t)job, "state", state,
                          "error", error);
    char *text = jsontext_dumps(j, JSON_COMPACT);
    if (text)
        events_publish(w->cfg.events, job, "state", text, final);
    free(text);
    json_decref(j);
}

static void on_start(void *ctx, const Dataset *ds, const struct Resnet *m, const Preprocess *p,
                     int first_epoch, int first_step)
{
    (void)m;
    JobRun *r = ctx;
    Error err;
    (void)p;
    r->classes = ds->classes;
    if (first_epoch > 0 || first_step > 0)
        log_msg(LOG_LEVEL_INFO, "job %lld: resuming at epoch %d, step %d from its checkpoint",
                (long long)r->job, first_epoch + 1, first_step + 1);
    if (store_job_trim(r->w->store, r->job, first_epoch, first_step, &err) ||
        store_job_started(r->w->store, r->job, ds, NULL, &err))
        store_failure(r, &err);
    pthread_mutex_lock(&r->w->mu);
    r->w->progress.epoch = first_epoch;
    pthread_mutex_unlock(&r->w->mu);
}

static void on_phase(void *ctx, int phase, const PhaseSpec *ph, const char *describe)
{
    JobRun *r = ctx;
    Error err;
    log_msg(LOG_LEVEL_INFO, "job %lld: phase %d \"%s\": %s", (long long)r->job, phase + 1, ph->name,
            describe);
    if (store_job_phase(r->w->store, r->job, phase, ph->name, &err))
        store_failure(r, &err);
}

static void on_step(void *ctx, int epoch, int step, int steps, double loss, float lr)
{
    JobRun *r = ctx;
    Worker *w = r->w;
    Error err;
    if (!r->store_failed &&
        store_step_put(w->store, r->job, epoch, step, steps, loss, lr, &err))
        store_failure(r, &err);
    pthread_mutex_lock(&w->mu);
    w->progress.epoch = epoch;
    w->progress.step = step;
    w->progress.steps = steps;
    w->progress.loss = loss;
    pthread_mutex_unlock(&w->mu);
    json_t *j = json_pack("{s:I, s:i, s:i, s:i, s:o, s:f}", "job", (json_int_t)r->job,
                          "epoch", epoch, "step", step, "steps", steps, "loss",
                          isfinite(loss) ? json_real(loss) : json_null(), "lr", store_float(lr));
    char *text = jsontext_dumps(j, JSON_COMPACT);
    if (text)
        events_publish(w->cfg.events, r->job, "step", text, 0);
    free(text);
    json_decref(j);
}

static void on_epoch(void *ctx, const EpochReport *rep)
{
    JobRun *r = ctx;
    Worker *w = r->w;
    Error err;
    log_msg(LOG_LEVEL_INFO, "job %lld: epoch %d/%d [%s] train loss %.4f acc %.4f, val loss %.4f "
            "acc %.4f, %.1f img/s", (long long)r->job, rep->epoch + 1, rep->epochs_total,
            rep->phase_name, rep->train_loss, rep->train_accuracy, rep->val_loss,
            rep->val_accuracy, rep->images_per_second);
    if (r->store_failed || store_epoch_put(w->store, r->job, rep, r->classes, &err)) {
        if (!r->store_failed)
            store_failure(r, &err);
        return;
    }
    /* the event carries exactly what GET /metrics shows for the epoch */
    int missing;
    json_t *row = store_epoch_get(w->store, r->job, rep->epoch, &missing, &err);
    if (!row)
        return;
    json_object_set_new(row, "job", json_integer(r->job));
    char *text = jsontext_dumps(row, JSON_COMPACT);
    if (text)
        events_publish(w->cfg.events, r->job, "epoch", text, 0);
    free(text);
    json_decref(row);
}

static void on_finding(void *ctx, const Finding *f)
{
    JobRun *r = ctx;
    Error err;
    log_msg(f->severity == DIAG_ERROR ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, "job %lld: finding %s "
            "(%s): %s", (long long)r->job, f->code, diag_severity_name(f->severity), f->message);
    if (!r->store_failed && store_finding_put(r->w->store, r->job, f, &err))
        store_failure(r, &err);
    json_t *ev = json_loads(f->evidence, 0, NULL);
    json_t *j = json_pack("{s:I, s:s, s:s, s:o, s:s, s:s, s:o}", "job", (json_int_t)r->job, "code",
                          f->code, "severity", diag_severity_name(f->severity), "epoch",
                          f->epoch >= 0 ? json_integer(f->epoch) : json_null(), "message",
                          f->message, "fix", f->fix, "evidence", ev ? ev : json_object());
    char *text = jsontext_dumps(j, JSON_COMPACT);
    if (text)
        events_publish(r->w->cfg.events, r->job, "finding", text, 0);
    free(text);
    json_decref(j);
}

static void on_done(void *ctx, const struct Resnet *m, const Dataset *ds, const Preprocess *p)
{
    JobRun *r = ctx;
    Error err;
    if (r->w->cancel)
        return; /* cancelled or stopping: no export */
    if (train_export(m, ds, p, r->export_path, &err))
        snprintf(r->export_error, sizeof r->export_error, "export failed: %s", err.msg);
}

/* Resolves the spec's dataset (a registered name or id) and weights to paths:
 * the file the submit resolved (weights_file: a file of the weights folder, or
 * named weights downloaded there), else wref.h's rule. */
static int resolve(Worker *w, JobSpec *spec, const char *resolved_file, Error *err)
{
    int missing;
    Error qerr;
    json_t *row = store_dataset_find(w->store, spec->dataset, 0, &missing, &qerr);
    if (!row && !missing)
        return error_set(err, "%s", qerr.msg);
    if (!row)
        return error_set(err, "dataset '%s' is not registered (any more)", spec->dataset);
    snprintf(spec->dataset, sizeof spec->dataset, "%s",
             json_string_value(json_object_get(row, "path")));
    json_decref(row);
    Wref ref;
    if (resolved_file && resolved_file[0])
        return snprintf(spec->weights, sizeof spec->weights, "%s/%s", w->weights_dir,
                        resolved_file) >= (int)sizeof spec->weights
                   ? error_set(err, "weights: the path is too long")
                   : 0;
    if (wref_resolve(spec->weights, spec->variant, w->weights_dir, w->data_dir, NULL, NULL, &ref,
                     err))
        return error_wrap(err, "weights");
    if (ref.kind != WREF_RANDOM &&
        snprintf(spec->weights, sizeof spec->weights, "%s", ref.path) >= (int)sizeof spec->weights)
        return error_set(err, "weights: the path %s is too long", ref.path);
    return 0;
}

static void finish(Worker *w, int64_t job, const char *state, const char *error)
{
    Error err;
    if (store_job_set_state(w->store, job, state, error, &err))
        log_msg(LOG_LEVEL_ERROR, "job %lld: store: %s", (long long)job, err.msg);
    /* no longer running: readers of the final state see no live progress */
    pthread_mutex_lock(&w->mu);
    memset(&w->progress, 0, sizeof w->progress);
    pthread_mutex_unlock(&w->mu);
    if (error)
        log_msg(LOG_LEVEL_WARN, "job %lld: %s: %s", (long long)job, state, error);
    else
        log_msg(LOG_LEVEL_INFO, "job %lld: %s", (long long)job, state);
    publish_state(w, job, state, error, 1);
}

static void run_job(Worker *w, int64_t job)
{
    Error err;
    int missing;
    json_t *row = store_job_get(w->store, job, &missing, &err);
    if (!row) {
        log_msg(LOG_LEVEL_ERROR, "job %lld: %s", (long long)job, err.msg);
        return;
    }
    const int resuming = !strcmp(json_string_value(json_object_get(row, "state")), "running");
    char *spec_text = jsontext_dumps(json_object_get(row, "spec"), JSON_COMPACT);
    const char *wf = json_string_value(json_object_get(json_object_get(row, "resolved"),
                                                       "weights_file"));
    char weights_file[256];
    snprintf(weights_file, sizeof weights_file, "%s", wf ? wf : "");
    json_decref(row);
    pthread_mutex_lock(&w->mu);
    memset(&w->progress, 0, sizeof w->progress);
    w->progress.job = job;
    w->progress.step = -1;
    w->cancel = 0;
    pthread_mutex_unlock(&w->mu);
    if (!resuming) {
        int claimed = store_job_claim(w->store, job, &err);
        if (claimed <= 0) { /* cancelled meanwhile */
            if (claimed < 0)
                log_msg(LOG_LEVEL_ERROR, "job %lld: %s", (long long)job, err.msg);
            goto out;
        }
    }
    log_msg(LOG_LEVEL_INFO, "job %lld: %s", (long long)job, resuming ? "resuming" : "started");
    publish_state(w, job, JOB_RUNNING, NULL, 0);

    JobSpec spec;
    if (!spec_text || jobspec_parse(&spec, spec_text, strlen(spec_text), NULL, 0, &err)) {
        finish(w, job, JOB_FAILED, spec_text ? err.msg : "out of memory");
        goto out;
    }
    if (resolve(w, &spec, weights_file, &err)) {
        jobspec_free(&spec);
        finish(w, job, JOB_FAILED, err.msg);
        goto out;
    }
    char dir[4200], ckpt[4300];
    worker_job_path(w->data_dir, job, NULL, dir, sizeof dir);
    worker_job_path(w->data_dir, job, "checkpoint.safetensors", ckpt, sizeof ckpt);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        jobspec_free(&spec);
        error_set(&err, "cannot create %s: %s", dir, strerror(errno));
        finish(w, job, JOB_FAILED, err.msg);
        goto out;
    }
    JobRun r;
    memset(&r, 0, sizeof r);
    r.w = w;
    r.job = job;
    worker_job_path(w->data_dir, job, "model.safetensors", r.export_path, sizeof r.export_path);
    TrainOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.checkpoint_path = ckpt;
    opt.resume = 1;
    opt.activation_cache_bytes = w->cfg.cache_bytes;
    opt.no_activation_cache = w->cfg.cache_bytes == 0;
    opt.spill_dir = dir;
    opt.max_pixels = w->cfg.max_pixels;
    opt.checkpoint_on_cancel = &w->stopping;
    opt.checkpoint_interval_s = w->cfg.checkpoint_interval;
    TrainCallbacks cb = {&r, on_phase, on_step, on_epoch, &w->cancel, on_done, on_start,
                         on_finding};
    TrainResult res;
    int rc = train_run(&spec, &opt, &cb, &res, &err);
    jobspec_free(&spec);
    pthread_mutex_lock(&w->mu);
    int stopping = w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (rc)
        finish(w, job, JOB_FAILED, err.msg);
    else if (res.cancelled && stopping)
        log_msg(LOG_LEVEL_INFO, "job %lld: stopped by the shutdown after %d epochs; the next start "
                "resumes it from its checkpoint", (long long)job, res.epochs_run);
    else if (res.cancelled)
        finish(w, job, JOB_CANCELLED, NULL);
    else if (r.export_error[0])
        finish(w, job, JOB_FAILED, r.export_error);
    else
        finish(w, job, JOB_COMPLETED, NULL);
out:
    free(spec_text);
    pthread_mutex_lock(&w->mu);
    memset(&w->progress, 0, sizeof w->progress);
    pthread_mutex_unlock(&w->mu);
}

/* ---- the thread ---------------------------------------------------------- */

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Error err;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int stopping = w->stopping;
        w->pending = 0;
        pthread_mutex_unlock(&w->mu);
        if (stopping)
            break;
        int64_t job;
        int rc = store_job_next(w->store, &job, &err);
        if (rc < 0)
            log_msg(LOG_LEVEL_ERROR, "worker: %s", err.msg);
        if (rc == 1) {
            run_job(w, job);
            continue;
        }
        pthread_mutex_lock(&w->mu);
        while (!w->pending && !w->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += rc < 0 ? 5 : 60; /* look again now and then all the same */
            if (pthread_cond_timedwait(&w->cond, &w->mu, &until) == ETIMEDOUT)
                break;
        }
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

int worker_start(Worker **out, const WorkerConfig *cfg, Error *err)
{
    Worker *w = calloc(1, sizeof *w);
    if (!w)
        return error_set(err, "out of memory");
    w->cfg = *cfg;
    snprintf(w->db_path, sizeof w->db_path, "%s", cfg->db_path);
    snprintf(w->data_dir, sizeof w->data_dir, "%s", cfg->data_dir);
    snprintf(w->weights_dir, sizeof w->weights_dir, "%s", cfg->weights_dir);
    w->cfg.db_path = w->db_path;
    w->cfg.data_dir = w->data_dir;
    w->cfg.weights_dir = w->weights_dir;
    if (store_open(&w->store, w->db_path, err)) {
        free(w);
        return -1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    w->pending = 1;
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
        store_close(w->store);
        free(w);
        return error_set(err, "cannot start the worker thread: %s", strerror(rc));
    }
    *out = w;
    return 0;
}

void worker_wake(Worker *w)
{
    pthread_mutex_lock(&w->mu);
    w->pending = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

int worker_cancel_running(Worker *w, int64_t job)
{
    pthread_mutex_lock(&w->mu);
    int running = w->progress.job == job && job > 0;
    if (running) {
        w->cancel = 1;
        w->progress.cancel_requested = 1;
    }
    pthread_mutex_unlock(&w->mu);
    return running;
}

int worker_progress(Worker *w, int64_t job, WorkerProgress *out)
{
    pthread_mutex_lock(&w->mu);
    int running = w->progress.job == job && job > 0;
    if (running)
        *out = w->progress;
    pthread_mutex_unlock(&w->mu);
    return running;
}

void worker_stop(Worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    w->cancel = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    store_close(w->store);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
