/*
 * puller.h: the daemon's downloads of named weights (fetch.h), each on its own
 * thread, so that the HTTP threads answer at once and the training worker never
 * waits on the network.
 *
 * A job whose weights must be downloaded first is stored in state "fetching";
 * its pull publishes "fetch" events ({"job", "weights", "file", "done",
 * "total"}, about once a second) and, when it ends, moves the job to "queued"
 * (and wakes the worker) or to "failed" with the reason, then publishes the
 * "state" event. Pulls of one file share one download (fetch_pull's hub). A pull
 * with no job (POST /api/weights/pull) only installs the file.
 *
 * Every function may be called from any thread.
 */
#ifndef RESNETD_PULLER_H
#define RESNETD_PULLER_H

#include <stdint.h>

#include "error.h"
#include "events.h"
#include "fetch.h"
#include "worker.h"

typedef struct {
    FetchHub *hub;                  /* borrowed, outlives the puller */
    const char *weights_dir;        /* copied */
    const char *mirror;             /* copied; "" = the manifest's URLs */
    const char *db_path;            /* each pull thread opens its own connection */
    EventHub *events;               /* borrowed */
    Worker *worker;                 /* borrowed; woken when a job's weights arrive */
} PullerConfig;

typedef struct Puller Puller;

int puller_create(Puller **out, const PullerConfig *cfg, Error *err);

/* Cancels the pulls under way (their part files stay, and the next pull of the
 * file resumes them; their jobs stay "fetching" and are pulled again at the next
 * start), waits for their threads and frees; accepts NULL. */
void puller_free(Puller *p);

/* Starts downloading e (borrowed: the manifest outlives the puller) for job (0:
 * for no job). The job, if any, must be in state "fetching". */
int puller_start(Puller *p, const FetchEntry *e, int64_t job, Error *err);

typedef struct {
    char weights[64];       /* the manifest name */
    char file[128];         /* the file in the weights folder */
    uint64_t done, total;   /* bytes; total 0 while unknown */
} PullStatus;

/* 1 with *st when a pull of the file named file (job 0), or for job (file
 * NULL), is under way; 0 otherwise (p NULL included). */
int puller_status(Puller *p, const char *file, int64_t job, PullStatus *st);

/* Stops the pull of job (after POST /api/jobs/ID/cancel), if any (p may be
 * NULL). Another pull of the same file that is waiting takes the download over. */
void puller_cancel_job(Puller *p, int64_t job);

#endif
