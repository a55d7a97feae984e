/*
 * store.h: the SQLite store of datasets, jobs and their metrics.
 *
 * One Store is one connection, used by one thread (the thread that owns the
 * rows it writes: the training worker writes epochs and steps, HTTP handlers
 * read). The database runs in WAL mode, so readers never wait for the writer;
 * every write is one short transaction. store_open creates the schema or
 * migrates an older one (PRAGMA user_version); a database written by a newer
 * resnetd is refused rather than touched.
 *
 * Tables (docs/api.md shows them as JSON):
 *   datasets       id, name, path, source ("folder" or "upload"), created, report (JSON)
 *   jobs           id, name, spec (JSON), state, error, created, started, finished,
 *                  epochs_total, epochs_done, phase, phase_name, classes (JSON), info (JSON)
 *   epochs         one row per job and epoch: losses, accuracies, lr, time, per-stage
 *                  gradient norms and weight change, predicted-class histogram,
 *                  confusion matrix (JSON arrays)
 *   class_metrics  one row per job, epoch and class: precision, recall, F1, support
 *   steps          one row per job, epoch and step: loss, lr
 *   findings       one row per job and finding code (diagnosis): severity, epoch,
 *                  message, evidence (JSON), fix
 * Epoch, class and step rows are keyed by (job, epoch[, ...]) and written with
 * "insert or replace": a job resumed from a checkpoint rewrites the epochs after
 * it, so no epoch is lost or stored twice.
 */
#ifndef RESNETD_STORE_H
#define RESNETD_STORE_H

#include <stdint.h>

#include <jansson.h>

#include "error.h"
#include "train.h"

#define STORE_SCHEMA_VERSION 2

typedef struct Store Store;

/* Opens (creating when missing) the database at path. */
int store_open(Store **out, const char *path, Error *err);
void store_close(Store *s);

/* Another connection to a database that store_open has created or migrated
 * (the daemon's HTTP threads): no schema work, so connecting never waits for
 * the writer. */
int store_connect(Store **out, const char *path, Error *err);

/* Job states. */
#define JOB_FETCHING "fetching"  /* queued behind the download of its named weights */
#define JOB_QUEUED "queued"
#define JOB_RUNNING "running"
#define JOB_COMPLETED "completed"
#define JOB_FAILED "failed"
#define JOB_CANCELLED "cancelled"

/* A new job row in state `state`; its id in *id. resolved_json (may be NULL)
 * is what the submit-time checks resolved (jobcheck.h), kept next to the spec
 * and read back as the job's "resolved". */
int store_job_insert(Store *s, const char *name, const char *spec_json, const char *resolved_json,
                     int epochs_total, const char *state, int64_t *id, Error *err);

/* State change; error may be NULL. "running" sets started (first time only);
 * completed, failed and cancelled set finished. */
int store_job_set_state(Store *s, int64_t id, const char *state, const char *error, Error *err);

/* The class names (label order) and the job's set-up description (JSON object
 * text; NULL keeps the one stored at submit), recorded when training starts. */
int store_job_started(Store *s, int64_t id, const Dataset *ds, const char *info_json,
                      Error *err);

/* The phase now running. */
int store_job_phase(Store *s, int64_t id, int phase, const char *phase_name, Error *err);

/* The epoch's row and its per-class rows, one transaction; updates
 * jobs.epochs_done. class_names: ds->classes. */
int store_epoch_put(Store *s, int64_t job, const EpochReport *r, char *const *class_names,
                    Error *err);

/* One training step. */
int store_step_put(Store *s, int64_t job, int epoch, int step, int steps, double loss,
                   float lr, Error *err);

/* Before a resume from a checkpoint: removes the epoch and class rows of
 * epochs >= from_epoch, and the step rows from (from_epoch, from_step) on. */
int store_job_trim(Store *s, int64_t job, int from_epoch, int from_step, Error *err);

/* ---- reads (jansson values owned by the caller; NULL with err on a database
 * error). Columns holding JSON text (spec, classes, resolved, report, grad_norm,
 * weight_change, predicted, confusion, evidence) come parsed; best, cached and
 * cancel_requested as booleans. docs/api.md shows them. ---- */

/* The job's row as the API shows it (id, name, state, error, created, started,
 * finished, epochs_total, epochs_done, phase, phase_name, classes, spec,
 * resolved); NULL with *missing = 1 when there is no such job. */
json_t *store_job_get(Store *s, int64_t id, int *missing, Error *err);

/* The epoch with the lowest val loss (epoch, val_loss, val_acc), or NULL. */
json_t *store_job_best(Store *s, int64_t id, Error *err);

/* Every job id, newest first (an array of integers). */
json_t *store_job_ids(Store *s, Error *err);

/* The jobs waiting for their weights to download (ids, oldest first). */
json_t *store_jobs_fetching(Store *s, Error *err);

/* fetching -> queued (error NULL: the weights arrived) or -> failed with error:
 * 1 done, 0 the job is no longer fetching (cancelled meanwhile), -1 error. */
int store_job_fetched(Store *s, int64_t id, const char *error, Error *err);

/* The number of jobs waiting (queued or fetching) in *n; 0 or -1. */
int store_jobs_queued(Store *s, int64_t *n, Error *err);

/* The running job (the oldest if several): 1 with *id, 0 none, -1 error. */
int store_job_running(Store *s, int64_t *id, Error *err);

/* The newest job with exactly this spec text that has not completed
 * (`resnetd train --resume --db`): 1 with *id, 0 none, -1 error. */
int store_job_unfinished_with_spec(Store *s, const char *spec_json, int64_t *id, Error *err);

/* Every dataset (id, name, source, path, created, classes, images), by id. */
json_t *store_datasets_list(Store *s, Error *err);

/* A fetching, queued or running job that names the dataset (by name or id): 1
 * with *job, 0 none, -1 error. */
int store_dataset_user(Store *s, int64_t dataset, int64_t *job, Error *err);

/* A fetching, queued or running job that starts from the weights folder's file
 * (its resolved weights_file, or its spec's weights): 1 with *job, 0 none, -1
 * error. */
int store_weights_user(Store *s, const char *file, int64_t *job, Error *err);

/* The job's epochs as GET /api/jobs/ID/metrics shows them, by epoch; one of
 * them (the "epoch" event), NULL with *missing = 1 when not written. */
json_t *store_epochs_list(Store *s, int64_t job, Error *err);
json_t *store_epoch_get(Store *s, int64_t job, int epoch, int *missing, Error *err);

/* The last epoch written: 1 with *epoch, 0 none yet, -1 error. */
int store_epoch_last(Store *s, int64_t job, int64_t *epoch, Error *err);

/* The epoch's confusion matrix (rows true, columns predicted), NULL with
 * *missing = 1 when that epoch is not written. */
json_t *store_epoch_confusion(Store *s, int64_t job, int64_t epoch, int *missing, Error *err);

/* The epoch's per-class rows (class, name, precision, recall, f1, support,
 * predicted), by class. */
json_t *store_class_metrics_list(Store *s, int64_t job, int64_t epoch, Error *err);

/* The job's steps (epoch, step, steps, loss, lr, index) with index > after, in
 * order; index counts the job's steps from 0. */
json_t *store_steps_list(Store *s, int64_t job, int64_t after, Error *err);

/* The job's findings (code, severity, epoch, message, evidence, fix), in the
 * order first raised. */
json_t *store_findings_list(Store *s, int64_t job, Error *err);

/* queued or fetching -> cancelled: 1 done, 0 neither, -1 error. */
int store_job_cancel_queued(Store *s, int64_t id, Error *err);

/* queued -> running (the worker claims it): 1 claimed, 0 not queued, -1 error. */
int store_job_claim(Store *s, int64_t id, Error *err);

/* The next job to run: a job left running by a previous daemon (resumed
 * first), else the oldest queued one. 1 with *id, 0 none, -1 error. */
int store_job_next(Store *s, int64_t *id, Error *err);

/* The registered dataset named key, or else the one whose id key spells
 * (columns id, name, source, path, created, and report when with_report);
 * NULL with *missing = 1 when there is none, *missing = 0 on a database error. */
json_t *store_dataset_find(Store *s, const char *key, int with_report, int *missing,
                           Error *err);

/* A registered dataset. */
int store_dataset_insert(Store *s, const char *name, const char *path, const char *source,
                         const char *report_json, int64_t *id, Error *err);
int store_dataset_delete(Store *s, int64_t id, Error *err);

/* The shortest decimal that reads back as f, as a double: a learning rate of
 * 0.001f is stored and shown as 0.001, not 0.0010000000474974513. */
double store_float(float f);

/* A diagnosis finding of job (one row per job and code: a later one replaces it). */
int store_finding_put(Store *s, int64_t job, const Finding *f, Error *err);


/* For tests and tools: the raw connection (sqlite3 *). */
void *store_db(Store *s);

#endif
