/*
 * worker.h: the training worker: one thread that owns the model, the optimizer
 * state and the loader, and runs the queued jobs one at a time, oldest first
 * (a job a previous daemon left running comes first and resumes from its
 * checkpoint). It writes its own rows (one store connection of its own) and
 * publishes live events; HTTP handlers only read and send it commands.
 *
 * Files of job ID live in DATA_DIR/jobs/ID/: checkpoint.safetensors (after
 * every epoch, and when the daemon stops mid-epoch), model.safetensors (the
 * export, when the job completes), and the activation cache's spill file
 * (unlinked while in use).
 */
#ifndef RESNETD_WORKER_H
#define RESNETD_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "events.h"

typedef struct {
    const char *db_path;
    const char *data_dir;
    const char *weights_dir;
    size_t cache_bytes;
    uint64_t max_pixels;
    int checkpoint_interval;    /* seconds, 0 = after every epoch (TrainOptions) */
    EventHub *events;
} WorkerConfig;

typedef struct Worker Worker;

int worker_start(Worker **out, const WorkerConfig *cfg, Error *err);

/* A job was queued (or cancelled): look at the queue again. */
void worker_wake(Worker *w);

/* Asks the running job to stop after its current batch: 1 when job is the
 * running one, 0 otherwise. */
int worker_cancel_running(Worker *w, int64_t job);

typedef struct {
    int64_t job;
    int epoch, step, steps;   /* last finished batch, 0-based; step -1 before the first */
    double loss;
    int cancel_requested;
} WorkerProgress;

/* 1 and *out when job is running now, else 0. */
int worker_progress(Worker *w, int64_t job, WorkerProgress *out);

/* The path of job's file `name` under data_dir ("checkpoint.safetensors", ...). */
void worker_job_path(const char *data_dir, int64_t job, const char *name, char *out,
                     size_t len);

/* Stops: the running job ends after its batch with a checkpoint and stays
 * "running" in the store, so that the next daemon resumes it. Joins the thread
 * and frees the worker. */
void worker_stop(Worker *w);

#endif
