/*
 * store.c: the SQLite store (see store.h).
 */
#include "store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "jsontext.h"

struct Store {
    sqlite3 *db;
    char path[1024];
};

/* MIGRATIONS[0] is the schema of version 1, applied to an empty database; entry
 * N turns version N into N + 1. They run with foreign keys off (store_open turns
 * them on afterwards), so that rebuilding a table does not cascade. */
static const char *const MIGRATIONS[STORE_SCHEMA_VERSION] = {
    "CREATE TABLE datasets ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  path TEXT NOT NULL,"
    "  source TEXT NOT NULL CHECK (source IN ('folder', 'upload')),"
    "  created REAL NOT NULL,"
    "  report TEXT NOT NULL);"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  spec TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('queued', 'running', 'completed', 'failed', 'cancelled')),"
    "  error TEXT,"
    "  created REAL NOT NULL,"
    "  started REAL,"
    "  finished REAL,"
    "  epochs_total INTEGER NOT NULL,"
    "  epochs_done INTEGER NOT NULL DEFAULT 0,"
    "  phase INTEGER,"
    "  phase_name TEXT,"
    "  classes TEXT,"
    "  info TEXT);"
    "CREATE TABLE epochs ("
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  epoch INTEGER NOT NULL,"
    "  phase INTEGER NOT NULL,"
    "  phase_name TEXT NOT NULL,"
    "  phase_epoch INTEGER NOT NULL,"
    "  lr REAL,"
    "  train_loss REAL, train_acc REAL,"
    "  val_loss REAL, val_acc REAL, val_balanced_acc REAL,"
    "  seconds REAL, images_per_second REAL,"
    "  best INTEGER NOT NULL,"
    "  cached INTEGER NOT NULL,"
    "  grad_norm TEXT, weight_change TEXT, predicted TEXT, confusion TEXT,"
    "  PRIMARY KEY (job_id, epoch));"
    "CREATE TABLE class_metrics ("
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  epoch INTEGER NOT NULL,"
    "  class INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  precision REAL, recall REAL, f1 REAL,"
    "  support INTEGER NOT NULL, predicted INTEGER NOT NULL,"
    "  PRIMARY KEY (job_id, epoch, class));"
    "CREATE TABLE steps ("
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  epoch INTEGER NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  steps INTEGER NOT NULL,"
    "  loss REAL,"
    "  lr REAL,"
    "  PRIMARY KEY (job_id, epoch, step));"
    "CREATE TABLE findings ("
    "  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  code TEXT NOT NULL,"
    "  severity TEXT NOT NULL,"
    "  epoch INTEGER,"
    "  message TEXT NOT NULL,"
    "  evidence TEXT NOT NULL,"
    "  fix TEXT NOT NULL,"
    "  PRIMARY KEY (job_id, code));",
    /* 2: jobs may be "fetching" (waiting for their named weights to download); a
     * CHECK constraint changes by rebuilding the table (SQLite's ALTER TABLE
     * procedure: new table, copy, drop, rename) */
    "CREATE TABLE jobs_v2 ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  spec TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('fetching', 'queued', 'running', 'completed', 'failed', 'cancelled')),"
    "  error TEXT,"
    "  created REAL NOT NULL,"
    "  started REAL,"
    "  finished REAL,"
    "  epochs_total INTEGER NOT NULL,"
    "  epochs_done INTEGER NOT NULL DEFAULT 0,"
    "  phase INTEGER,"
    "  phase_name TEXT,"
    "  classes TEXT,"
    "  info TEXT);"
    "INSERT INTO jobs_v2 (id, name, spec, state, error, created, started, finished,"
    "  epochs_total, epochs_done, phase, phase_name, classes, info)"
    "  SELECT id, name, spec, state, error, created, started, finished, epochs_total,"
    "  epochs_done, phase, phase_name, classes, info FROM jobs;"
    "DROP TABLE jobs;"
    "ALTER TABLE jobs_v2 RENAME TO jobs;",
};

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int db_error(Store *s, Error *err, const char *what)
{
    return error_set(err, "database %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static int exec(Store *s, const char *sql, Error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        error_set(err, "database %s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int pragma_int(Store *s, const char *sql, int *out, Error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(s, err, sql);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_error(s, err, sql);
}

static int migrate(Store *s, Error *err)
{
    if (exec(s, "BEGIN IMMEDIATE", err))
        return -1;
    int version = 0;
    if (pragma_int(s, "PRAGMA user_version", &version, err))
        goto fail;
    if (version > STORE_SCHEMA_VERSION) {
        error_set(err, "database %s has schema version %d, newer than this resnetd's %d: "
                  "use a newer resnetd or another data directory", s->path, version,
                  STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < STORE_SCHEMA_VERSION; v++)
        if (exec(s, MIGRATIONS[v], err)) {
            error_wrap(err, "migrating the schema to version %d", v + 1);
            goto fail;
        }
    int broken = 0;
    if (version && version != STORE_SCHEMA_VERSION) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &st, NULL) != SQLITE_OK) {
            db_error(s, err, "foreign_key_check");
            goto fail;
        }
        broken = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    if (broken) {
        error_set(err, "database %s: migrating the schema to version %d left rows without "
                  "their job: nothing was changed", s->path, STORE_SCHEMA_VERSION);
        goto fail;
    }
    if (version != STORE_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        if (exec(s, sql, err))
            goto fail;
    }
    return exec(s, "COMMIT", err);
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int store_open(Store **out, const char *path, Error *err)
{
    *out = NULL;
    Store *s = calloc(1, sizeof *s);
    if (!s)
        return error_set(err, "out of memory");
    snprintf(s->path, sizeof s->path, "%s", path);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        error_set(err, "cannot open database %s: %s", path,
                  s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 10000);
    sqlite3_extended_result_codes(s->db, 1);
    /* journal_mode reports the mode in force: anything but "wal" is an error
     * (for instance a file that is not a database shows up here) */
    sqlite3_stmt *st;
    int wal = 0;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            const unsigned char *mode = sqlite3_column_text(st, 0);
            wal = mode && !strcmp((const char *)mode, "wal");
        }
        sqlite3_finalize(st);
    }
    if (!wal) {
        db_error(s, err, "cannot switch to WAL mode");
        store_close(s);
        return -1;
    }
    if (exec(s, "PRAGMA synchronous = NORMAL", err) || migrate(s, err) ||
        exec(s, "PRAGMA foreign_keys = ON", err)) {
        store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

int store_connect(Store **out, const char *path, Error *err)
{
    *out = NULL;
    Store *s = calloc(1, sizeof *s);
    if (!s)
        return error_set(err, "out of memory");
    snprintf(s->path, sizeof s->path, "%s", path);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        error_set(err, "cannot open database %s: %s", path,
                  s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 10000);
    if (exec(s, "PRAGMA foreign_keys = ON", err)) {
        store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void store_close(Store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    free(s);
}

void *store_db(Store *s)
{
    return s->db;
}

/* Prepares sql, or sets err. */
static sqlite3_stmt *prepare(Store *s, const char *sql, Error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_error(s, err, "prepare");
        return NULL;
    }
    return st;
}

/* Steps a statement that returns no rows, and finalizes it. */
static int run(Store *s, sqlite3_stmt *st, Error *err)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        error_set(err, "database %s: %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

double store_float(float f)
{
    if (!isfinite(f))
        return f;
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f)
            break;
    }
    return strtod(buf, NULL);
}

/* NaN and infinities are stored as NULL. */
static void bind_real(sqlite3_stmt *st, int i, double v)
{
    if (isfinite(v))
        sqlite3_bind_double(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void bind_json(sqlite3_stmt *st, int i, json_t *j)
{
    char *text = jsontext_dumps(j, JSON_COMPACT);
    if (text)
        sqlite3_bind_text(st, i, text, -1, free);
    else
        sqlite3_bind_null(st, i);
    json_decref(j);
}

static json_t *real_array(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, isfinite(v[i]) ? json_real(v[i]) : json_null());
    return a;
}

static json_t *int_array(const int64_t *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

int store_job_insert(Store *s, const char *name, const char *spec_json, const char *resolved_json,
                     int epochs_total, const char *state, int64_t *id, Error *err)
{
    /* the schema's `info` column holds the resolved spec */
    sqlite3_stmt *st = prepare(s, "INSERT INTO jobs (name, spec, state, created, epochs_total, "
                                  "info) VALUES (?, ?, ?, ?, ?, ?)", err);
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, spec_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, now_unix());
    sqlite3_bind_int(st, 5, epochs_total);
    if (resolved_json)
        sqlite3_bind_text(st, 6, resolved_json, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 6);
    if (run(s, st, err))
        return -1;
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_job_set_state(Store *s, int64_t id, const char *state, const char *error, Error *err)
{
    int final = strcmp(state, JOB_QUEUED) && strcmp(state, JOB_RUNNING);
    sqlite3_stmt *st = prepare(s,
        "UPDATE jobs SET state = ?1, error = ?2,"
        " started = CASE WHEN ?1 = 'running' THEN coalesce(started, ?3) ELSE started END,"
        " finished = CASE WHEN ?4 THEN ?3 ELSE NULL END"
        " WHERE id = ?5", err);
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
    if (error)
        sqlite3_bind_text(st, 2, error, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_double(st, 3, now_unix());
    sqlite3_bind_int(st, 4, final);
    sqlite3_bind_int64(st, 5, id);
    return run(s, st, err);
}

int store_job_started(Store *s, int64_t id, const Dataset *ds, const char *info_json,
                      Error *err)
{
    json_t *classes = json_array();
    for (int c = 0; c < ds->n_classes; c++)
        json_array_append_new(classes, json_string(ds->classes[c]));
    /* info NULL keeps what the submit-time checks resolved */
    sqlite3_stmt *st = prepare(s, "UPDATE jobs SET classes = ?, info = coalesce(?, info)"
                                  " WHERE id = ?", err);
    if (!st) {
        json_decref(classes);
        return -1;
    }
    bind_json(st, 1, classes);
    if (info_json)
        sqlite3_bind_text(st, 2, info_json, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, id);
    return run(s, st, err);
}

int store_job_phase(Store *s, int64_t id, int phase, const char *phase_name, Error *err)
{
    sqlite3_stmt *st = prepare(s, "UPDATE jobs SET phase = ?, phase_name = ? WHERE id = ?", err);
    if (!st)
        return -1;
    sqlite3_bind_int(st, 1, phase);
    sqlite3_bind_text(st, 2, phase_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, id);
    return run(s, st, err);
}

static int put_epoch_row(Store *s, int64_t job, const EpochReport *r, Error *err)
{
    sqlite3_stmt *st = prepare(s,
        "INSERT OR REPLACE INTO epochs (job_id, epoch, phase, phase_name, phase_epoch, lr,"
        " train_loss, train_acc, val_loss, val_acc, val_balanced_acc, seconds,"
        " images_per_second, best, cached, grad_norm, weight_change, predicted, confusion)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!st)
        return -1;
    int i = 1;
    sqlite3_bind_int64(st, i++, job);
    sqlite3_bind_int(st, i++, r->epoch);
    sqlite3_bind_int(st, i++, r->phase);
    sqlite3_bind_text(st, i++, r->phase_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, i++, r->phase_epoch);
    bind_real(st, i++, store_float(r->lr));
    bind_real(st, i++, r->train_loss);
    bind_real(st, i++, r->train_accuracy);
    bind_real(st, i++, r->val_loss);
    bind_real(st, i++, r->val_accuracy);
    bind_real(st, i++, r->val_balanced_accuracy);
    bind_real(st, i++, r->seconds);
    bind_real(st, i++, r->images_per_second);
    sqlite3_bind_int(st, i++, r->best);
    sqlite3_bind_int(st, i++, r->cached);
    bind_json(st, i++, real_array(r->grad_norm, TRAIN_STAGES));
    bind_json(st, i++, real_array(r->weight_change, TRAIN_STAGES));
    bind_json(st, i++, r->val ? int_array(r->val->predicted, r->val->k) : NULL);
    json_t *conf = NULL;
    if (r->confusion) {
        conf = json_array();
        for (int t = 0; t < r->confusion->k; t++)
            json_array_append_new(conf, int_array(r->confusion->matrix +
                                                  (size_t)t * r->confusion->k,
                                                  r->confusion->k));
    }
    bind_json(st, i++, conf);
    return run(s, st, err);
}

static int put_class_rows(Store *s, int64_t job, const EpochReport *r, char *const *names,
                          Error *err)
{
    if (!r->val)
        return 0;
    sqlite3_stmt *st = prepare(s,
        "INSERT OR REPLACE INTO class_metrics (job_id, epoch, class, name, precision, recall,"
        " f1, support, predicted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!st)
        return -1;
    int rc = 0;
    for (int c = 0; c < r->val->k && !rc; c++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, job);
        sqlite3_bind_int(st, 2, r->epoch);
        sqlite3_bind_int(st, 3, c);
        sqlite3_bind_text(st, 4, names ? names[c] : "", -1, SQLITE_TRANSIENT);
        bind_real(st, 5, r->val->precision[c]);
        bind_real(st, 6, r->val->recall[c]);
        bind_real(st, 7, r->val->f1[c]);
        sqlite3_bind_int64(st, 8, r->val->support[c]);
        sqlite3_bind_int64(st, 9, r->val->predicted[c]);
        int step = sqlite3_step(st);
        if (step != SQLITE_DONE)
            rc = error_set(err, "database %s: %s", s->path, sqlite3_errmsg(s->db));
    }
    sqlite3_finalize(st);
    return rc;
}

/* jobs.epochs_done from the epoch rows, then COMMIT (inside a transaction). */
static int count_epochs_commit(Store *s, int64_t job, Error *err)
{
    sqlite3_stmt *st = prepare(s, "UPDATE jobs SET epochs_done = (SELECT count(*) FROM epochs"
                                  " WHERE job_id = ?1) WHERE id = ?1", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    return run(s, st, err) || exec(s, "COMMIT", err) ? -1 : 0;
}

int store_epoch_put(Store *s, int64_t job, const EpochReport *r, char *const *class_names,
                    Error *err)
{
    if (exec(s, "BEGIN IMMEDIATE", err))
        return -1;
    if (put_epoch_row(s, job, r, err) || put_class_rows(s, job, r, class_names, err) ||
        count_epochs_commit(s, job, err))
        goto fail;
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return error_wrap(err, "epoch %d of job %lld", r->epoch + 1, (long long)job);
}

int store_step_put(Store *s, int64_t job, int epoch, int step, int steps, double loss,
                   float lr, Error *err)
{
    sqlite3_stmt *st = prepare(s, "INSERT OR REPLACE INTO steps (job_id, epoch, step, steps,"
                                  " loss, lr) VALUES (?, ?, ?, ?, ?, ?)", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int(st, 2, epoch);
    sqlite3_bind_int(st, 3, step);
    sqlite3_bind_int(st, 4, steps);
    bind_real(st, 5, loss);
    bind_real(st, 6, store_float(lr));
    return run(s, st, err);
}

int store_job_trim(Store *s, int64_t job, int from_epoch, int from_step, Error *err)
{
    if (exec(s, "BEGIN IMMEDIATE", err))
        return -1;
    static const char *const sql[3] = {
        "DELETE FROM epochs WHERE job_id = ?1 AND epoch >= ?2",
        "DELETE FROM class_metrics WHERE job_id = ?1 AND epoch >= ?2",
        "DELETE FROM steps WHERE job_id = ?1 AND (epoch > ?2 OR (epoch = ?2 AND step >= ?3))"};
    for (int t = 0; t < 3; t++) {
        sqlite3_stmt *st = prepare(s, sql[t], err);
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, job);
        sqlite3_bind_int(st, 2, from_epoch);
        if (t == 2)
            sqlite3_bind_int(st, 3, from_step);
        if (run(s, st, err))
            goto fail;
    }
    if (count_epochs_commit(s, job, err))
        goto fail;
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- reads ---------------------------------------------------------------- */

static int is_json_column(const char *name)
{
    static const char *const cols[] = {"spec", "classes", "info", "resolved", "report", "grad_norm",
                                       "weight_change", "predicted", "confusion", "evidence"};
    for (size_t i = 0; i < sizeof cols / sizeof *cols; i++)
        if (!strcmp(name, cols[i]))
            return 1;
    return 0;
}

static int is_bool_column(const char *name)
{
    return !strcmp(name, "best") || !strcmp(name, "cached") || !strcmp(name, "cancel_requested");
}

static json_t *column_json(sqlite3_stmt *st, int i)
{
    const char *name = sqlite3_column_name(st, i);
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL:
        return json_null();
    case SQLITE_INTEGER:
        if (is_bool_column(name))
            return json_boolean(sqlite3_column_int64(st, i) != 0);
        return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    default: {
        const char *text = (const char *)sqlite3_column_text(st, i);
        if (is_json_column(name)) {
            json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
            if (v)
                return v;
        }
        return json_string(text ? text : "");
    }
    }
}

/* Runs sql with ?1 = a and ?2 = b (when the statement has them) and returns the
 * rows as an array of objects keyed by column name (column_json's types). NULL
 * on error. */
static json_t *query(Store *s, const char *sql, int64_t a, int64_t b, Error *err)
{
    sqlite3_stmt *st = prepare(s, sql, err);
    if (!st)
        return NULL;
    int params = sqlite3_bind_parameter_count(st);
    if (params >= 1)
        sqlite3_bind_int64(st, 1, a);
    if (params >= 2)
        sqlite3_bind_int64(st, 2, b);
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(st); i++)
            json_object_set_new(row, sqlite3_column_name(st, i), column_json(st, i));
        json_array_append_new(rows, row);
    }
    if (rc != SQLITE_DONE) {
        db_error(s, err, "query");
        json_decref(rows);
        rows = NULL;
    }
    sqlite3_finalize(st);
    return rows;
}

/* The first row of query, or NULL with err "not found" (*missing = 1) or a
 * database error (*missing = 0). */
static json_t *query_one(Store *s, const char *sql, int64_t a, int64_t b, int *missing,
                         Error *err)
{
    *missing = 0;
    json_t *rows = query(s, sql, a, b, err);
    if (!rows)
        return NULL;
    json_t *row = json_array_get(rows, 0);
    if (row)
        json_incref(row);
    else {
        *missing = 1;
        error_set(err, "not found");
    }
    json_decref(rows);
    return row;
}

/* ---- named reads --------------------------------------------------------- */

#define EPOCH_SELECT                                                                         \
    "SELECT epoch, phase, phase_name, phase_epoch, lr, train_loss, train_acc, val_loss,"     \
    " val_acc, val_balanced_acc, seconds, images_per_second, best, cached, grad_norm,"       \
    " weight_change, predicted FROM epochs "

/* The id in the first row of sql, whose ?1 is text (when not NULL) or a: 1 with
 * *id, 0 no row, -1 error. */
static int first_id(Store *s, const char *sql, int64_t a, const char *text, int64_t *id,
                    Error *err)
{
    sqlite3_stmt *st = prepare(s, sql, err);
    if (!st)
        return -1;
    if (text)
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_int64(st, 1, a);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        db_error(s, err, "job lookup");
        found = -1;
    }
    sqlite3_finalize(st);
    return found;
}

json_t *store_job_get(Store *s, int64_t id, int *missing, Error *err)
{
    json_t *j = query_one(s, "SELECT id, name, state, error, created, started, finished,"
                             " epochs_total, epochs_done, phase, phase_name, classes, spec,"
                             " info AS resolved FROM jobs WHERE id = ?1", id, 0, missing, err);
    if (!j && *missing)
        error_set(err, "no job %lld", (long long)id);
    return j;
}

json_t *store_job_best(Store *s, int64_t id, Error *err)
{
    int missing;
    return query_one(s, "SELECT epoch, val_loss, val_acc FROM epochs WHERE job_id = ?1 AND"
                        " val_loss IS NOT NULL ORDER BY val_loss, epoch LIMIT 1", id, 0,
                     &missing, err);
}

/* The ids of query's rows (column "id"), in order. */
static json_t *ids_of(json_t *rows)
{
    if (!rows)
        return NULL;
    json_t *ids = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        json_array_append(ids, json_object_get(row, "id"));
    json_decref(rows);
    return ids;
}

json_t *store_jobs_fetching(Store *s, Error *err)
{
    return ids_of(query(s, "SELECT id FROM jobs WHERE state = 'fetching' ORDER BY id", 0, 0,
                        err));
}

json_t *store_job_ids(Store *s, Error *err)
{
    return ids_of(query(s, "SELECT id FROM jobs ORDER BY id DESC", 0, 0, err));
}

int store_jobs_queued(Store *s, int64_t *n, Error *err)
{
    int missing;
    json_t *row = query_one(s, "SELECT count(*) AS n FROM jobs WHERE state IN ('queued',"
                               " 'fetching')", 0, 0, &missing, err);
    if (!row)
        return -1;
    *n = json_integer_value(json_object_get(row, "n"));
    json_decref(row);
    return 0;
}

int store_job_running(Store *s, int64_t *id, Error *err)
{
    return first_id(s, "SELECT id FROM jobs WHERE state = 'running' ORDER BY id LIMIT 1", 0,
                    NULL, id, err);
}

int store_job_unfinished_with_spec(Store *s, const char *spec_json, int64_t *id, Error *err)
{
    return first_id(s, "SELECT id FROM jobs WHERE spec = ?1 AND state <> 'completed'"
                       " ORDER BY id DESC LIMIT 1", 0, spec_json, id, err);
}

json_t *store_datasets_list(Store *s, Error *err)
{
    return query(s, "SELECT id, name, source, path, created,"
                    " json_extract(report, '$.classes') AS classes,"
                    " json_extract(report, '$.images') AS images FROM datasets ORDER BY id",
                 0, 0, err);
}

int store_dataset_user(Store *s, int64_t dataset, int64_t *job, Error *err)
{
    return first_id(s, "SELECT id FROM jobs WHERE state IN ('fetching', 'queued', 'running')"
                       " AND (json_extract(spec, '$.dataset') = (SELECT name FROM datasets"
                       " WHERE id = ?1) OR json_extract(spec, '$.dataset') = CAST(?1 AS TEXT))"
                       " ORDER BY id LIMIT 1", dataset, NULL, job, err);
}

int store_weights_user(Store *s, const char *file, int64_t *job, Error *err)
{
    return first_id(s, "SELECT id FROM jobs WHERE state IN ('fetching', 'queued', 'running')"
                       " AND (json_extract(info, '$.weights_file') = ?1 OR"
                       " json_extract(spec, '$.weights') = ?1) ORDER BY id LIMIT 1", 0, file, job,
                    err);
}

json_t *store_epochs_list(Store *s, int64_t job, Error *err)
{
    return query(s, EPOCH_SELECT "WHERE job_id = ?1 ORDER BY epoch", job, 0, err);
}

json_t *store_epoch_get(Store *s, int64_t job, int epoch, int *missing, Error *err)
{
    return query_one(s, EPOCH_SELECT "WHERE job_id = ?1 AND epoch = ?2", job, epoch, missing,
                     err);
}

int store_epoch_last(Store *s, int64_t job, int64_t *epoch, Error *err)
{
    int missing;
    json_t *row = query_one(s, "SELECT max(epoch) AS e FROM epochs WHERE job_id = ?1", job, 0,
                            &missing, err);
    if (!row)
        return -1;
    json_t *e = json_object_get(row, "e");
    int found = json_is_integer(e);
    if (found)
        *epoch = json_integer_value(e);
    json_decref(row);
    return found;
}

json_t *store_epoch_confusion(Store *s, int64_t job, int64_t epoch, int *missing, Error *err)
{
    json_t *row = query_one(s, "SELECT confusion FROM epochs WHERE job_id = ?1 AND epoch = ?2",
                            job, epoch, missing, err);
    if (!row)
        return NULL;
    json_t *c = json_incref(json_object_get(row, "confusion"));
    json_decref(row);
    return c;
}

json_t *store_class_metrics_list(Store *s, int64_t job, int64_t epoch, Error *err)
{
    return query(s, "SELECT class, name, precision, recall, f1, support, predicted FROM"
                    " class_metrics WHERE job_id = ?1 AND epoch = ?2 ORDER BY class", job,
                 epoch, err);
}

json_t *store_steps_list(Store *s, int64_t job, int64_t after, Error *err)
{
    return query(s, "SELECT * FROM (SELECT epoch, step, steps, loss, lr,"
                    " row_number() OVER (ORDER BY epoch, step) - 1 AS 'index'"
                    " FROM steps WHERE job_id = ?1) WHERE \"index\" > ?2 ORDER BY \"index\"",
                 job, after, err);
}

json_t *store_findings_list(Store *s, int64_t job, Error *err)
{
    return query(s, "SELECT code, severity, epoch, message, evidence, fix FROM findings"
                    " WHERE job_id = ?1 ORDER BY rowid", job, 0, err);
}

/* Runs an UPDATE/DELETE with ?1 = id; the number of rows changed, or -1. */
static int change(Store *s, const char *sql, int64_t id, Error *err)
{
    sqlite3_stmt *st = prepare(s, sql, err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, now_unix());
    if (run(s, st, err))
        return -1;
    return sqlite3_changes(s->db);
}

int store_job_cancel_queued(Store *s, int64_t id, Error *err)
{
    return change(s, "UPDATE jobs SET state = 'cancelled', finished = ?2"
                     " WHERE id = ?1 AND state IN ('queued', 'fetching')", id, err);
}

int store_job_fetched(Store *s, int64_t id, const char *error, Error *err)
{
    sqlite3_stmt *st = prepare(s, "UPDATE jobs SET state = CASE WHEN ?2 IS NULL THEN 'queued'"
                                  " ELSE 'failed' END, error = ?2, finished = CASE WHEN ?2 IS"
                                  " NULL THEN NULL ELSE ?3 END WHERE id = ?1 AND"
                                  " state = 'fetching'", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    if (error)
        sqlite3_bind_text(st, 2, error, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_double(st, 3, now_unix());
    if (run(s, st, err))
        return -1;
    return sqlite3_changes(s->db);
}

int store_job_claim(Store *s, int64_t id, Error *err)
{
    return change(s, "UPDATE jobs SET state = 'running', started = coalesce(started, ?2)"
                     " WHERE id = ?1 AND state = 'queued'", id, err);
}

int store_job_next(Store *s, int64_t *id, Error *err)
{
    sqlite3_stmt *st = prepare(s, "SELECT id FROM jobs WHERE state IN ('running', 'queued')"
                                  " ORDER BY state = 'running' DESC, id LIMIT 1", err);
    if (!st)
        return -1;
    int rc = sqlite3_step(st), found = rc == SQLITE_ROW;
    if (found)
        *id = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        db_error(s, err, "next job");
    sqlite3_finalize(st);
    return found ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

json_t *store_dataset_find(Store *s, const char *key, int with_report, int *missing,
                           Error *err)
{
    *missing = 0;
    sqlite3_stmt *st = prepare(s, with_report
        ? "SELECT id, name, source, path, created, report FROM datasets"
          " WHERE name = ?1 OR CAST(id AS TEXT) = ?1 ORDER BY name = ?1 DESC LIMIT 1"
        : "SELECT id, name, source, path, created FROM datasets"
          " WHERE name = ?1 OR CAST(id AS TEXT) = ?1 ORDER BY name = ?1 DESC LIMIT 1", err);
    if (!st)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    json_t *row = NULL;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        row = json_object();
        for (int i = 0; i < sqlite3_column_count(st); i++)
            json_object_set_new(row, sqlite3_column_name(st, i), column_json(st, i));
    } else if (rc == SQLITE_DONE) {
        *missing = 1;
        error_set(err, "no dataset '%s'", key);
    } else {
        db_error(s, err, "dataset lookup");
    }
    sqlite3_finalize(st);
    return row;
}

int store_dataset_insert(Store *s, const char *name, const char *path, const char *source,
                         const char *report_json, int64_t *id, Error *err)
{
    sqlite3_stmt *st = prepare(s, "INSERT INTO datasets (name, path, source, created, report)"
                                  " VALUES (?, ?, ?, ?, ?)", err);
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, source, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, now_unix());
    sqlite3_bind_text(st, 5, report_json, -1, SQLITE_TRANSIENT);
    if (run(s, st, err))
        return -1;
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_dataset_delete(Store *s, int64_t id, Error *err)
{
    sqlite3_stmt *st = prepare(s, "DELETE FROM datasets WHERE id = ?", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    return run(s, st, err);
}

int store_finding_put(Store *s, int64_t job, const Finding *f, Error *err)
{
    sqlite3_stmt *st = prepare(s, "INSERT OR REPLACE INTO findings (job_id, code, severity,"
                                  " epoch, message, evidence, fix) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_text(st, 2, f->code, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, diag_severity_name(f->severity), -1, SQLITE_STATIC);
    if (f->epoch >= 0)
        sqlite3_bind_int(st, 4, f->epoch);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_text(st, 5, f->message, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, f->evidence[0] ? f->evidence : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, f->fix, -1, SQLITE_TRANSIENT);
    return run(s, st, err);
}
