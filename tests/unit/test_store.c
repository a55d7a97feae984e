/*
 * test_store.c: server/store.c on real SQLite files: schema and WAL mode,
 * job rows and state changes, epoch/class/step rows with their values, replace
 * on a rewritten epoch (resume), trim, reopen, and refusals (newer schema, a
 * file that is not a database, a folder that does not exist).
 */
#include "testutil.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static int64_t query_int(Store *s, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) != SQLITE_ROW)
        fail_msg("no row for %s", sql);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static double query_real(Store *s, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) != SQLITE_ROW)
        fail_msg("no row for %s", sql);
    double v = sqlite3_column_type(st, 0) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The text of the first column of the first row (static buffer), or "(null)". */
static const char *query_text(Store *s, const char *sql)
{
    static char buf[1024];
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) != SQLITE_ROW)
        fail_msg("no row for %s", sql);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(buf, sizeof buf, "%s", t ? (const char *)t : "(null)");
    sqlite3_finalize(st);
    return buf;
}

static void test_schema_and_wal(void **state)
{
    (void)state;
    Store *s;
    Error err;
    const char *path = testutil_tmp_path("schema.db");
    assert_int_equal(store_open(&s, path, &err), 0);
    assert_int_equal(query_int(s, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    assert_string_equal(query_text(s, "PRAGMA journal_mode"), "wal");
    assert_int_equal(query_int(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                  "name IN ('datasets', 'jobs', 'epochs', 'class_metrics', "
                                  "'steps', 'findings')"), 6);
    store_close(s);
    /* reopening migrates nothing and keeps the version */
    assert_int_equal(store_open(&s, path, &err), 0);
    assert_int_equal(query_int(s, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    store_close(s);
}

/* A database of schema version 1 (jobs and epochs as version 1 wrote them, one
 * job with one epoch) opens as version 2: the rows are kept, a job may be
 * "fetching", and deleting a job still removes its epochs. */
static void test_migrates_version_1(void **state)
{
    (void)state;
    const char *path = testutil_tmp_path("v1.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *v1 =
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN"
        "    ('queued', 'running', 'completed', 'failed', 'cancelled')),"
        "  error TEXT, created REAL NOT NULL, started REAL, finished REAL,"
        "  epochs_total INTEGER NOT NULL, epochs_done INTEGER NOT NULL DEFAULT 0,"
        "  phase INTEGER, phase_name TEXT, classes TEXT, info TEXT);"
        "CREATE TABLE epochs (job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        "  epoch INTEGER NOT NULL, phase INTEGER NOT NULL, phase_name TEXT NOT NULL,"
        "  phase_epoch INTEGER NOT NULL, lr REAL, train_loss REAL, train_acc REAL,"
        "  val_loss REAL, val_acc REAL, val_balanced_acc REAL, seconds REAL,"
        "  images_per_second REAL, best INTEGER NOT NULL, cached INTEGER NOT NULL,"
        "  grad_norm TEXT, weight_change TEXT, predicted TEXT, confusion TEXT,"
        "  PRIMARY KEY (job_id, epoch));"
        "INSERT INTO jobs (id, name, spec, state, created, epochs_total, info)"
        "  VALUES (7, 'old', '{}', 'completed', 1.5, 3, '{\"variant\": \"keras\"}');"
        "INSERT INTO epochs (job_id, epoch, phase, phase_name, phase_epoch, val_loss, best,"
        "  cached) VALUES (7, 0, 0, 'head', 0, 0.25, 1, 0);"
        "PRAGMA user_version = 1;";
    assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    Store *s;
    Error err;
    if (store_open(&s, path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(query_int(s, "PRAGMA user_version"), 2);
    assert_string_equal(query_text(s, "SELECT name || ' ' || state || ' ' || info FROM jobs"
                                      " WHERE id = 7"), "old completed {\"variant\": \"keras\"}");
    assert_true(query_real(s, "SELECT val_loss FROM epochs WHERE job_id = 7") == 0.25);
    int64_t id;
    assert_int_equal(store_job_insert(s, "new", "{}", NULL, 1, JOB_FETCHING, &id, &err), 0);
    assert_int_equal(id, 8);
    assert_int_equal(store_job_fetched(s, id, NULL, &err), 1);
    assert_string_equal(query_text(s, "SELECT state FROM jobs WHERE id = 8"), "queued");
    assert_int_equal(store_job_fetched(s, id, NULL, &err), 0); /* no longer fetching */
    assert_int_equal(sqlite3_exec(store_db(s), "DELETE FROM jobs WHERE id = 7", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(query_int(s, "SELECT count(*) FROM epochs"), 0);
    store_close(s);
}

/* A report of epoch e of a 2-class job with values that identify it. */
static void fill_report(EpochReport *r, EpochMetrics *em, Confusion *conf, int e, double *prec,
                        double *rec, double *f1, int64_t *support, int64_t *pred,
                        int64_t *matrix)
{
    memset(r, 0, sizeof *r);
    r->phase = e >= 2;
    r->phase_name = e >= 2 ? "unfreeze" : "head";
    r->epoch = e;
    r->phase_epoch = e >= 2 ? e - 2 : e;
    r->epochs_total = 4;
    r->lr = 0.001f;
    r->train_loss = 1.0 + e;
    r->train_accuracy = 0.5;
    r->val_loss = 2.0 + e;
    r->val_accuracy = 0.25 * e;
    r->val_balanced_accuracy = NAN; /* stored as NULL */
    r->seconds = 3.5;
    r->images_per_second = 100;
    r->best = e == 1;
    r->cached = 1;
    for (int k = 0; k < TRAIN_STAGES; k++) {
        r->grad_norm[k] = k;
        r->weight_change[k] = 0.5 * k;
    }
    prec[0] = 0.75; prec[1] = 0.5;
    rec[0] = 1.0;   rec[1] = 0.25;
    f1[0] = 0.8;    f1[1] = 0.3;
    support[0] = 3; support[1] = 4;
    pred[0] = 5;    pred[1] = 2;
    int64_t m[4] = {3, 0, 2, 2};
    memcpy(matrix, m, sizeof m);
    memset(em, 0, sizeof *em);
    em->k = 2;
    em->precision = prec; em->recall = rec; em->f1 = f1;
    em->support = support; em->predicted = pred;
    memset(conf, 0, sizeof *conf);
    conf->k = 2;
    conf->matrix = matrix;
    r->val = em;
    r->confusion = conf;
}

static void test_job_epochs_steps(void **state)
{
    (void)state;
    Store *s;
    Error err;
    assert_int_equal(store_open(&s, testutil_tmp_path("jobs.db"), &err), 0);
    int64_t id = 0;
    assert_int_equal(store_job_insert(s, "ft", "{\"name\": \"ft\"}", NULL, 4, JOB_QUEUED, &id, &err), 0);
    assert_true(id > 0);
    assert_string_equal(query_text(s, "SELECT state FROM jobs"), "queued");
    assert_true(isnan(query_real(s, "SELECT started FROM jobs")));

    char *names[2] = {"cat", "dog"};
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.n_classes = 2;
    ds.classes = names;
    assert_int_equal(store_job_started(s, id, &ds, "{\"x\": 1}", &err), 0);
    assert_int_equal(store_job_set_state(s, id, JOB_RUNNING, NULL, &err), 0);
    assert_string_equal(query_text(s, "SELECT classes FROM jobs"), "[\"cat\",\"dog\"]");
    assert_true(query_real(s, "SELECT started FROM jobs") > 1.7e9);
    assert_true(isnan(query_real(s, "SELECT finished FROM jobs")));
    assert_int_equal(store_job_phase(s, id, 1, "unfreeze", &err), 0);
    assert_string_equal(query_text(s, "SELECT phase_name FROM jobs"), "unfreeze");

    double prec[2], rec[2], f1[2];
    int64_t support[2], pred[2], matrix[4];
    EpochReport r;
    EpochMetrics em;
    Confusion conf;
    for (int e = 0; e < 3; e++) {
        fill_report(&r, &em, &conf, e, prec, rec, f1, support, pred, matrix);
        assert_int_equal(store_epoch_put(s, id, &r, names, &err), 0);
        for (int st = 0; st < 5; st++)
            assert_int_equal(store_step_put(s, id, e, st, 5, 1.0 / (st + 1), 0.01f, &err), 0);
    }
    assert_int_equal(query_int(s, "SELECT count(*) FROM epochs"), 3);
    assert_int_equal(query_int(s, "SELECT epochs_done FROM jobs"), 3);
    assert_int_equal(query_int(s, "SELECT count(*) FROM class_metrics"), 6);
    assert_int_equal(query_int(s, "SELECT count(*) FROM steps"), 15);
    assert_true(query_real(s, "SELECT val_loss FROM epochs WHERE epoch = 2") == 4.0);
    assert_true(isnan(query_real(s, "SELECT val_balanced_acc FROM epochs WHERE epoch = 2")));
    assert_int_equal(query_int(s, "SELECT best FROM epochs WHERE epoch = 1"), 1);
    assert_string_equal(query_text(s, "SELECT phase_name FROM epochs WHERE epoch = 2"), "unfreeze");
    assert_string_equal(query_text(s, "SELECT confusion FROM epochs WHERE epoch = 0"),
                        "[[3,0],[2,2]]");
    assert_string_equal(query_text(s, "SELECT predicted FROM epochs WHERE epoch = 0"), "[5,2]");
    assert_string_equal(query_text(s, "SELECT grad_norm FROM epochs WHERE epoch = 0"),
                        "[0.0,1.0,2.0,3.0,4.0,5.0]");
    assert_string_equal(query_text(s, "SELECT name FROM class_metrics WHERE class = 1 LIMIT 1"),
                        "dog");
    assert_true(query_real(s, "SELECT recall FROM class_metrics WHERE class = 1 AND epoch = 2")
                == 0.25);
    assert_true(query_real(s, "SELECT loss FROM steps WHERE epoch = 1 AND step = 3") == 0.25);
    /* learning rates are stored as the decimal they were written as */
    assert_true(query_real(s, "SELECT lr FROM steps WHERE epoch = 1 AND step = 3") == 0.01);
    assert_true(query_real(s, "SELECT lr FROM epochs WHERE epoch = 1") == 0.001);
    assert_true(store_float(0.1f) == 0.1 && store_float(3e-5f) == 3e-5);

    /* a resume from the checkpoint after epoch 1 trims epoch 2 and rewrites it */
    assert_int_equal(store_job_trim(s, id, 2, 0, &err), 0);
    assert_int_equal(query_int(s, "SELECT count(*) FROM epochs"), 2);
    assert_int_equal(query_int(s, "SELECT epochs_done FROM jobs"), 2);
    assert_int_equal(query_int(s, "SELECT count(*) FROM steps WHERE epoch = 2"), 0);
    assert_int_equal(query_int(s, "SELECT count(*) FROM class_metrics WHERE epoch = 2"), 0);
    /* writing an epoch twice keeps one row with the latest values */
    fill_report(&r, &em, &conf, 1, prec, rec, f1, support, pred, matrix);
    r.val_loss = 9.0;
    assert_int_equal(store_epoch_put(s, id, &r, names, &err), 0);
    assert_int_equal(query_int(s, "SELECT count(*) FROM epochs WHERE epoch = 1"), 1);
    assert_true(query_real(s, "SELECT val_loss FROM epochs WHERE epoch = 1") == 9.0);

    assert_int_equal(store_job_set_state(s, id, JOB_FAILED, "disk full", &err), 0);
    assert_string_equal(query_text(s, "SELECT error FROM jobs"), "disk full");
    assert_true(query_real(s, "SELECT finished FROM jobs") >= query_real(s, "SELECT started FROM jobs"));
    /* an unknown state is refused by the schema and changes nothing */
    assert_int_equal(store_job_set_state(s, id, "exploded", NULL, &err), -1);
    assert_non_null(strstr(err.msg, "CHECK constraint"));
    assert_string_equal(query_text(s, "SELECT state FROM jobs"), "failed");
    store_close(s);
}

static void test_dataset_find(void **state)
{
    (void)state;
    Store *s;
    Error err;
    assert_int_equal(store_open(&s, testutil_tmp_path("datasets.db"), &err), 0);
    int64_t a, b;
    assert_int_equal(store_dataset_insert(s, "flowers", "/d/flowers", "folder", "{\"images\": 3}",
                                          &a, &err), 0);
    /* a dataset whose name is another one's id: the name wins */
    assert_int_equal(store_dataset_insert(s, "1", "/d/one", "upload", "{}", &b, &err), 0);
    assert_int_equal(a, 1);
    int missing = -1;
    json_t *d = store_dataset_find(s, "flowers", 1, &missing, &err);
    assert_non_null(d);
    assert_int_equal(json_integer_value(json_object_get(d, "id")), a);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "report"), "images")), 3);
    json_decref(d);
    d = store_dataset_find(s, "2", 0, &missing, &err);
    assert_string_equal(json_string_value(json_object_get(d, "path")), "/d/one");
    assert_null(json_object_get(d, "report"));
    json_decref(d);
    d = store_dataset_find(s, "1", 0, &missing, &err);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "1");
    json_decref(d);
    assert_null(store_dataset_find(s, "tulips", 0, &missing, &err));
    assert_int_equal(missing, 1);
    assert_null(store_dataset_find(s, "3", 0, &missing, &err));
    assert_int_equal(missing, 1);
    store_close(s);
}

static void test_refusals(void **state)
{
    (void)state;
    Store *s;
    Error err;
    /* a database from a newer resnetd is left alone */
    const char *newer = testutil_tmp_path("newer.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(newer, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t (x); PRAGMA user_version = 99", NULL, NULL,
                                  NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(&s, newer, &err), -1);
    assert_null(s);
    assert_non_null(strstr(err.msg, "schema version 99, newer than this resnetd's 2"));
    assert_int_equal(sqlite3_open(newer, &db), SQLITE_OK);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* a file that is not a database */
    const char *junk = testutil_tmp_path("junk.db");
    char text[4096];
    memset(text, 'x', sizeof text);
    testutil_write_file(junk, text, sizeof text);
    assert_int_equal(store_open(&s, junk, &err), -1);
    assert_non_null(strstr(err.msg, junk));
    assert_non_null(strstr(err.msg, "not a database"));

    /* a folder that does not exist */
    assert_int_equal(store_open(&s, testutil_tmp_path("no/such/dir/x.db"), &err), -1);
    assert_non_null(strstr(err.msg, "cannot open database"));
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_and_wal),
        cmocka_unit_test(test_migrates_version_1),
        cmocka_unit_test(test_job_epochs_steps),
        cmocka_unit_test(test_dataset_find),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
