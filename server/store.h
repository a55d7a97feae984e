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

#define STORE_SCHEMA_VERSION 1

typedef struct Store Store;

/* Opens (creating when missing) the database at path. */
int store_open(Store **out, const char *path, Error *err);
void store_close(Store *s);

/* Another connection to a database that store_open has created or migrated
 * (the daemon's HTTP threads): no schema work, so connecting never waits for
 * the writer. */
int store_connect(Store **out, const char *path, Error *err);

/* Job states. */
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
 * text, may be NULL), recorded when training starts. */
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

/* ---- reads and daemon bookkeeping (jansson values, owned by the caller) ---- */

/* Runs sql with ?1 = a and ?2 = b (when the statement has them) and returns
 * the rows as an array of objects keyed by column name. Columns holding JSON
 * text (spec, classes, info, report, grad_norm, weight_change, predicted,
 * confusion, evidence) are parsed; best, cached and cancel_requested become
 * booleans. NULL on error. */
json_t *store_query(Store *s, const char *sql, int64_t a, int64_t b, Error *err);

/* The first row of store_query, or NULL with err "not found" (*missing = 1)
 * or a database error (*missing = 0). */
json_t *store_query_one(Store *s, const char *sql, int64_t a, int64_t b, int *missing,
                        Error *err);

/* The columns of an epoch as the API shows it (GET /api/jobs/ID/metrics and the
 * "epoch" event); append "WHERE ..." to use. */
#define STORE_EPOCH_SELECT                                                                   \
    "SELECT epoch, phase, phase_name, phase_epoch, lr, train_loss, train_acc, val_loss,"     \
    " val_acc, val_balanced_acc, seconds, images_per_second, best, cached, grad_norm,"       \
    " weight_change, predicted FROM epochs "

/* queued -> cancelled when still queued: 1 done, 0 not queued, -1 error. */
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

/* The columns of a finding as the API shows it; append "WHERE ...". */
#define STORE_FINDING_SELECT \
    "SELECT code, severity, epoch, message, evidence, fix FROM findings "

/* For tests and tools: the raw connection (sqlite3 *). */
void *store_db(Store *s);

#endif
