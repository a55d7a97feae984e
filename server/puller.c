/*
 * puller.c: named-weights downloads on their own threads (puller.h).
 */
#include "puller.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "jsontext.h"
#include "log.h"
#include "store.h"

/* "fetch" events go out at most this often per pull (and once at the end). */
#define EVENT_INTERVAL_S 1.0

typedef struct Pull {
    struct Pull *next;
    Puller *owner;
    const FetchEntry *entry;
    int64_t job;
    pthread_t thread;
    atomic_int cancel;
    atomic_int finished;        /* the thread has ended: join it */
    uint64_t done, total;       /* under owner->mu */
    double last_event;          /* the thread's own */
} Pull;

struct Puller {
    PullerConfig cfg;
    char weights_dir[FETCH_PATH_MAX], mirror[FETCH_PATH_MAX], db_path[FETCH_PATH_MAX];
    pthread_mutex_t mu;
    Pull *pulls;                /* under way and finished-but-not-joined */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void publish(Puller *p, int64_t job, const char *type, json_t *data, int final)
{
    char *text = jsontext_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (text)
        events_publish(p->cfg.events, job, type, text, final);
    free(text);
}

static void on_progress(void *ctx, const FetchProgress *fp)
{
    Pull *u = ctx;
    Puller *p = u->owner;
    pthread_mutex_lock(&p->mu);
    u->done = fp->done;
    u->total = fp->total;
    pthread_mutex_unlock(&p->mu);
    double t = now_s();
    if (u->job && t - u->last_event >= EVENT_INTERVAL_S) {
        u->last_event = t;
        publish(p, u->job, "fetch",
                json_pack("{s:I, s:s, s:s, s:I, s:I}", "job", (json_int_t)u->job, "weights",
                          u->entry->name, "file", u->entry->file, "done", (json_int_t)fp->done,
                          "total", (json_int_t)fp->total),
                0);
    }
}

/* The pull's end for its job: queued (and the worker woken) or failed. */
static void finish_job(Pull *u, const char *error)
{
    Puller *p = u->owner;
    Store *st;
    Error err;
    if (store_connect(&st, p->db_path, &err)) {
        log_msg(LOG_LEVEL_ERROR, "job %lld: %s", (long long)u->job, err.msg);
        return;
    }
    int changed = store_job_fetched(st, u->job, error, &err);
    store_close(st);
    if (changed < 0) {
        log_msg(LOG_LEVEL_ERROR, "job %lld: cannot record the end of its download: %s",
                (long long)u->job, err.msg);
        return;
    }
    if (changed == 0) /* cancelled meanwhile */
        return;
    publish(p, u->job, "state",
            json_pack("{s:I, s:s, s:s?}", "job", (json_int_t)u->job, "state",
                      error ? JOB_FAILED : JOB_QUEUED, "error", error),
            error != NULL);
    if (error)
        log_msg(LOG_LEVEL_ERROR, "job %lld failed: %s", (long long)u->job, error);
    else
        worker_wake(p->cfg.worker);
}

static void *pull_main(void *arg)
{
    Pull *u = arg;
    Puller *p = u->owner;
    FetchOptions o;
    fetch_options_init(&o);
    o.weights_dir = p->weights_dir;
    o.mirror = p->mirror;
    o.progress = on_progress;
    o.progress_ctx = u;
    o.cancel = &u->cancel;
    FetchResult res;
    Error err;
    double t0 = now_s();
    log_msg(LOG_LEVEL_INFO, "weights %s: downloading %s%s", u->entry->name, u->entry->file,
            u->job ? " for a job" : "");
    int rc = fetch_pull(p->cfg.hub, u->entry, &o, &res, &err);
    if (rc == 0)
        log_msg(LOG_LEVEL_INFO, "weights %s: %s in %.1f s (%s)", u->entry->name, res.path,
                now_s() - t0, res.cached ? "already there" : res.shared ? "shared download"
                                                                         : "downloaded");
    else if (!res.cancelled)
        log_msg(LOG_LEVEL_ERROR, "weights %s: %s", u->entry->name, err.msg);
    if (u->job && !res.cancelled) {
        char msg[sizeof err.msg + 128];
        snprintf(msg, sizeof msg, "weights %s: %s", u->entry->name, err.msg);
        finish_job(u, rc ? msg : NULL);
    }
    atomic_store(&u->finished, 1);
    return NULL;
}

/* Joins and frees the pulls whose threads have ended. Called with p->mu held. */
static void reap(Puller *p)
{
    for (Pull **at = &p->pulls; *at;) {
        Pull *u = *at;
        if (atomic_load(&u->finished)) {
            pthread_join(u->thread, NULL);
            *at = u->next;
            free(u);
        } else {
            at = &u->next;
        }
    }
}

int puller_create(Puller **out, const PullerConfig *cfg, Error *err)
{
    Puller *p = calloc(1, sizeof *p);
    if (!p)
        return error_set(err, "out of memory");
    p->cfg = *cfg;
    snprintf(p->weights_dir, sizeof p->weights_dir, "%s", cfg->weights_dir);
    snprintf(p->mirror, sizeof p->mirror, "%s", cfg->mirror ? cfg->mirror : "");
    snprintf(p->db_path, sizeof p->db_path, "%s", cfg->db_path);
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return 0;
}

void puller_free(Puller *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    for (Pull *u = p->pulls; u; u = u->next)
        atomic_store(&u->cancel, 1);
    Pull *all = p->pulls;
    p->pulls = NULL;
    pthread_mutex_unlock(&p->mu);
    while (all) {
        Pull *next = all->next;
        pthread_join(all->thread, NULL);
        free(all);
        all = next;
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int puller_start(Puller *p, const FetchEntry *e, int64_t job, Error *err)
{
    Pull *u = calloc(1, sizeof *u);
    if (!u)
        return error_set(err, "out of memory");
    u->owner = p;
    u->entry = e;
    u->job = job;
    u->last_event = -EVENT_INTERVAL_S;
    pthread_mutex_lock(&p->mu);
    reap(p);
    if (pthread_create(&u->thread, NULL, pull_main, u)) {
        pthread_mutex_unlock(&p->mu);
        free(u);
        return error_set(err, "cannot start a download thread");
    }
    u->next = p->pulls;
    p->pulls = u;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int puller_status(Puller *p, const char *file, int64_t job, PullStatus *st)
{
    int found = 0;
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    for (Pull *u = p->pulls; u && !found; u = u->next) {
        if (atomic_load(&u->finished) || atomic_load(&u->cancel))
            continue;
        if (file ? strcmp(u->entry->file, file) : u->job != job)
            continue;
        snprintf(st->weights, sizeof st->weights, "%s", u->entry->name);
        snprintf(st->file, sizeof st->file, "%s", u->entry->file);
        st->done = u->done;
        st->total = u->total;
        found = 1;
    }
    pthread_mutex_unlock(&p->mu);
    return found;
}

void puller_cancel_job(Puller *p, int64_t job)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    for (Pull *u = p->pulls; u; u = u->next)
        if (u->job == job)
            atomic_store(&u->cancel, 1);
    pthread_mutex_unlock(&p->mu);
}
