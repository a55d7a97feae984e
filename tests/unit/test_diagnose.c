/*
 * test_diagnose.c: core/diagnose.c's rules on hand-made inputs, each on both
 * sides of its threshold: the epoch rules over short histories, the dataset
 * rules over reports, the preflight rules over input statistics; each code is
 * raised once per job; the evidence is valid JSON with the numbers that
 * triggered it; the rule table has unique codes. (tests/tools/test_diagnosis.py
 * runs real scenarios end to end.)
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diagnose.h"

typedef struct {
    int n;
    Finding f[32];
} Sink;

static void collect(void *ctx, const Finding *f)
{
    Sink *s = ctx;
    assert_true(s->n < 32);
    s->f[s->n++] = *f;
}

static const Finding *find(const Sink *s, const char *code)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->f[i].code, code))
            return &s->f[i];
    return NULL;
}

/* The evidence's number at key (fails when missing or not JSON). */
static double ev(const Finding *f, const char *key)
{
    json_error_t je;
    json_t *j = json_loads(f->evidence, 0, &je);
    if (!j)
        fail_msg("%s: evidence is not JSON: %s (%s)", f->code, f->evidence, je.text);
    json_t *v = json_object_get(j, key);
    if (!json_is_number(v))
        fail_msg("%s: evidence has no number '%s': %s", f->code, key, f->evidence);
    double d = json_number_value(v);
    json_decref(j);
    return d;
}

static EpochSummary epoch(int e, int phase, int pe, double tl, double ta, double vl, double va)
{
    EpochSummary s;
    memset(&s, 0, sizeof s);
    s.epoch = e;
    s.phase = phase;
    s.phase_epoch = pe;
    s.train_loss = tl;
    s.train_acc = ta;
    s.val_loss = vl;
    s.val_acc = va;
    s.val_balanced_acc = va;
    s.trainable[5] = 1;
    s.top_pred_share = 0.4;
    s.top_pred_support_share = 0.34;
    s.majority_share = 0.34;
    s.bn_train_loss = s.bn_infer_loss = NAN;
    return s;
}

static void test_table(void **state)
{
    (void)state;
    assert_true(diag_rule_count >= 20 && diag_rule_count <= 64);
    for (int i = 0; i < diag_rule_count; i++)
        for (int j = i + 1; j < diag_rule_count; j++)
            assert_string_not_equal(diag_rules[i].code, diag_rules[j].code);
    assert_string_equal(diag_severity_name(DIAG_ERROR), "error");
}

static void test_divergence(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    diag_init(&d, 3, 0, 1.0);
    EpochSummary e = epoch(0, 0, 0, NAN, 0.3, NAN, 0.3);
    assert_int_equal(diag_epoch(&d, &e, collect, &s), 1);
    assert_string_equal(s.f[0].code, "LR_DIVERGED");
    assert_int_equal(s.f[0].severity, DIAG_ERROR);
    assert_int_equal(s.f[0].epoch, 0);
    /* once per job */
    assert_int_equal(diag_epoch(&d, &e, collect, &s), 0);
    diag_free(&d);

    /* rising 3 epochs in a row by more than 5% each: yes; by 4%: no */
    double up6[4] = {1.0, 1.06, 1.13, 1.2}, up4[4] = {1.0, 1.04, 1.08, 1.12};
    for (int k = 0; k < 2; k++) {
        Sink t = {0};
        diag_init(&d, 3, 0, 1.0);
        for (int i = 0; i < 4; i++) {
            e = epoch(i, 0, i, k == 0 ? up6[i] : up4[i], 0.5, 1.0, 0.5);
            diag_epoch(&d, &e, collect, &t);
        }
        assert_int_equal(find(&t, "LR_DIVERGED") != NULL, k == 0);
        diag_free(&d);
    }
    /* a finite blow-up: the head moved 95 times its norm in one epoch */
    Sink b = {0};
    diag_init(&d, 3, 0, 1.0);
    e = epoch(0, 0, 0, 3e4, 0.3, 2e4, 0.3);
    e.weight_change[5] = 95;
    diag_epoch(&d, &e, collect, &b);
    const Finding *f = find(&b, "LR_DIVERGED");
    assert_non_null(f);
    assert_true(fabs(ev(f, "max_relative_weight_change") - 95) < 1e-9);
    diag_free(&d);
    /* rising but tiny losses (a model that already fits): not divergence */
    Sink tiny = {0};
    diag_init(&d, 3, 0, 1.0);
    double small[4] = {1.4e-6, 1.5e-6, 1.9e-6, 2.7e-6};
    for (int i = 0; i < 4; i++) {
        e = epoch(i, 0, i, small[i], 1.0, 0.2, 0.9);
        diag_epoch(&d, &e, collect, &tiny);
    }
    assert_null(find(&tiny, "LR_DIVERGED"));
    diag_free(&d);
}

static void test_unfreeze_destroys(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) {
        Diagnosis d;
        Sink s = {0};
        diag_init(&d, 3, 0, 1.0);
        EpochSummary a = epoch(0, 0, 0, 0.8, 0.7, 0.7, 0.75);
        EpochSummary b = epoch(1, 1, 0, 1.5, 0.4, 1.6, 0.35);
        b.trainable[4] = 1;                    /* conv5 unfrozen in phase 1 */
        b.weight_change[4] = k == 1 ? 0.005 : 0.3; /* k 1: moved too little to blame */
        if (k == 2)
            b.val_acc = 0.74;                  /* k 2: val did not drop */
        b.val_loss = k == 2 ? 0.72 : 1.6;
        diag_epoch(&d, &a, collect, &s);
        diag_epoch(&d, &b, collect, &s);
        const Finding *f = find(&s, "LR_DESTROYS_PRETRAINED");
        assert_int_equal(f != NULL, k == 0);
        if (f) {
            assert_true(fabs(ev(f, "val_acc_before") - 0.75) < 1e-9);
            assert_true(fabs(ev(f, "val_acc_after") - 0.35) < 1e-9);
            assert_true(fabs(ev(f, "max_relative_weight_change") - 0.3) < 1e-9);
        }
        diag_free(&d);
    }
}

static void test_too_low_overfit_no_learning(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    /* a plateau: loss within 1%, weights moving 1e-5 per epoch */
    diag_init(&d, 4, 0, 1.0);
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, 0.9 - 0.001 * i, 0.6, 0.95, 0.55);
        e.weight_change[5] = 1e-5 * (i + 1);
        diag_epoch(&d, &e, collect, &s);
    }
    const Finding *f = find(&s, "LR_TOO_LOW");
    assert_non_null(f);
    assert_true(ev(f, "weight_change_per_epoch") < 1e-4);
    diag_free(&d);
    /* the same plateau with the weights moving 1e-3 per epoch: not the rate's fault */
    Sink t = {0};
    diag_init(&d, 4, 0, 1.0);
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, 0.9 - 0.001 * i, 0.6, 0.95, 0.55);
        e.weight_change[5] = 1e-3 * (i + 1);
        diag_epoch(&d, &e, collect, &t);
    }
    assert_null(find(&t, "LR_TOO_LOW"));
    diag_free(&d);

    /* overfitting: train 0.95 against val 0.6 and val loss up twice */
    Sink o = {0};
    diag_init(&d, 3, 0, 1.0);
    double vl[3] = {0.8, 0.9, 1.1};
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, 0.5 - 0.1 * i, 0.95, vl[i], 0.6);
        diag_epoch(&d, &e, collect, &o);
    }
    f = find(&o, "OVERFITTING");
    assert_non_null(f);
    assert_true(fabs(ev(f, "best_val_loss") - 0.8) < 1e-9);
    diag_free(&d);

    /* no learning: 3 epochs at log(3) */
    Sink n = {0};
    diag_init(&d, 3, 0, 1.0);
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, log(3.0) + 0.01 * i, 0.33, log(3.0), 0.33);
        e.weight_change[5] = 0.1 * (i + 1);
        diag_epoch(&d, &e, collect, &n);
    }
    f = find(&n, "NO_LEARNING");
    assert_non_null(f);
    assert_true(fabs(ev(f, "log_classes") - log(3.0)) < 1e-5);
    assert_int_equal((int)ev(f, "classes"), 3);
    diag_free(&d);
}

static void test_imbalance_rules(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    diag_init(&d, 2, 0, 9.0);
    EpochSummary e = epoch(0, 0, 0, 0.4, 0.9, 0.35, 0.9);
    e.majority_share = 0.9;
    e.top_pred_class = 0;
    e.top_pred_share = 1.0;
    e.top_pred_support_share = 0.9; /* predicting the majority everywhere */
    e.val_balanced_acc = 0.5;
    diag_epoch(&d, &e, collect, &s);
    assert_non_null(find(&s, "ACCURACY_IS_MAJORITY"));
    assert_non_null(find(&s, "BALANCED_GAP"));
    assert_null(find(&s, "PREDICTIONS_COLLAPSE")); /* the class is 90% of labels */
    diag_free(&d);
    /* collapse onto a class that is a third of the labels */
    Sink c = {0};
    diag_init(&d, 3, 0, 1.0);
    e = epoch(0, 0, 0, 1.0, 0.4, 1.0, 0.34);
    e.top_pred_class = 2;
    e.top_pred_share = 0.95;
    e.top_pred_support_share = 0.33;
    diag_epoch(&d, &e, collect, &c);
    const Finding *f = find(&c, "PREDICTIONS_COLLAPSE");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "class"), 2);
    diag_free(&d);
}

static void test_bn_gap(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    diag_init(&d, 3, 0, 1.0);
    EpochSummary e = epoch(0, 0, 0, 0.5, 0.8, 0.6, 0.75);
    e.bn_train_loss = 0.5;
    e.bn_infer_loss = 0.6; /* within max(0.2, 0.25): fine */
    diag_epoch(&d, &e, collect, &s);
    assert_null(find(&s, "BN_TRAIN_INFER_GAP"));
    e = epoch(1, 0, 1, 0.5, 0.8, 0.6, 0.75);
    e.bn_train_loss = 0.5;
    e.bn_infer_loss = 2.5;
    diag_epoch(&d, &e, collect, &s);
    const Finding *f = find(&s, "BN_TRAIN_INFER_GAP");
    assert_non_null(f);
    assert_true(fabs(ev(f, "inference_mode_loss") - 2.5) < 1e-9);
    diag_free(&d);

    Sink p = {0};
    assert_int_equal(diag_phase(1, "unfreeze", 9, 8, 4, collect, &p), 1);
    assert_string_equal(p.f[0].code, "BN_SMALL_BATCH");
    assert_int_equal(p.f[0].epoch, 4);
    assert_int_equal((int)ev(&p.f[0], "batch_size"), 8);
    assert_int_equal(diag_phase(1, "unfreeze", 9, 32, 4, collect, &p), 0);
    assert_int_equal(diag_phase(1, "unfreeze", 0, 2, 4, collect, &p), 0);
}

/* A 3-class dataset with the given report numbers. */
static void fake_dataset(Dataset *ds, ClassCounts *counts, char **names, int dup,
                         double train_mean, double val_mean, double sd, double image_sd)
{
    memset(ds, 0, sizeof *ds);
    ds->n_classes = 3;
    ds->classes = names;
    ds->counts = counts;
    ds->report.total[SPLIT_TRAIN] = counts[0].count[0] + counts[1].count[0] + counts[2].count[0];
    ds->report.total[SPLIT_VAL] = counts[0].count[1] + counts[1].count[1] + counts[2].count[1];
    int lo = counts[0].count[0], hi = lo;
    for (int c = 1; c < 3; c++) {
        if (counts[c].count[0] < lo) lo = counts[c].count[0];
        if (counts[c].count[0] > hi) hi = counts[c].count[0];
    }
    ds->report.imbalance[SPLIT_TRAIN] = (double)hi / lo;
    ds->report.n_cross_duplicates = dup;
    for (int c = 0; c < 3; c++) {
        ds->report.mean[SPLIT_TRAIN][c] = train_mean;
        ds->report.mean[SPLIT_VAL][c] = val_mean;
        ds->report.std[SPLIT_TRAIN][c] = ds->report.std[SPLIT_VAL][c] = sd;
        ds->report.image_mean_std[SPLIT_TRAIN][c] = ds->report.image_mean_std[SPLIT_VAL][c] =
            image_sd;
    }
    ds->report.side_median[SPLIT_TRAIN] = ds->report.side_median[SPLIT_VAL] = 40;
    ds->report.width_median = ds->report.height_median = 40;
}

static void test_dataset_rules(void **state)
{
    (void)state;
    char *names[3] = {"a", "b", "c"};
    ClassCounts even[3] = {{{40, 10}}, {{40, 10}}, {{40, 10}}};
    ClassCounts skew[3] = {{{120, 30}}, {{40, 10}}, {{10, 3}}};
    Dataset ds;
    Sink s = {0};
    fake_dataset(&ds, even, names, 0, 100, 101, 60, 20);
    assert_int_equal(diag_dataset(&ds, collect, &s), 0);
    fake_dataset(&ds, skew, names, 2, 100, 120, 60, 20); /* 20 levels: 5.9 standard errors */
    diag_dataset(&ds, collect, &s);
    const Finding *f = find(&s, "DATA_LEAKAGE");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "duplicates"), 2);
    f = find(&s, "DATA_IMBALANCE");
    assert_non_null(f);
    assert_true(fabs(ev(f, "imbalance") - 12.0) < 1e-9);
    assert_int_equal((int)ev(f, "smallest"), 10);
    f = find(&s, "DATA_SPLIT_MISMATCH");
    assert_non_null(f);
    assert_true(fabs(ev(f, "val_mean") - 120) < 1e-9);
    assert_true(fabs(ev(f, "standard_errors") - 20 / sqrt(400.0 / 170 + 400.0 / 43)) < 1e-3);
    assert_true(ev(f, "standard_errors") > 4.0);
    /* 40 levels apart with images whose own means spread by 60 is 3.9 standard
     * errors: within sampling */
    Sink w = {0};
    fake_dataset(&ds, skew, names, 0, 100, 140, 60, 60);
    diag_dataset(&ds, collect, &w);
    assert_null(find(&w, "DATA_SPLIT_MISMATCH"));
    /* nearly black, as images saved after dividing by 255 are */
    Sink k = {0};
    fake_dataset(&ds, even, names, 0, 0.5, 0.5, 0.3, 0.1);
    diag_dataset(&ds, collect, &k);
    f = find(&k, "DATA_DARK_OR_SCALED");
    assert_non_null(f);
    assert_true(ev(f, "pixel_mean") < 1);
    assert_null(find(&k, "DATA_SPLIT_FORMAT"));
    /* colour train, grayscale val; then same colour but 32 against 64 pixels */
    Sink g = {0};
    fake_dataset(&ds, even, names, 0, 100, 100, 60, 20);
    ds.report.gray[SPLIT_VAL] = ds.report.total[SPLIT_VAL];
    diag_dataset(&ds, collect, &g);
    f = find(&g, "DATA_SPLIT_FORMAT");
    assert_non_null(f);
    assert_true(fabs(ev(f, "val_gray_share") - 1.0) < 1e-9);
    assert_true(fabs(ev(f, "train_gray_share")) < 1e-9);
    Sink z = {0};
    fake_dataset(&ds, even, names, 0, 100, 100, 60, 20);
    ds.report.side_median[SPLIT_TRAIN] = 32;
    ds.report.side_median[SPLIT_VAL] = 64;
    diag_dataset(&ds, collect, &z);
    f = find(&z, "DATA_SPLIT_FORMAT");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "val_side_median"), 64);
    Sink same = {0};
    ds.report.side_median[SPLIT_VAL] = 44; /* 1.375x: within */
    diag_dataset(&ds, collect, &same);
    assert_null(find(&same, "DATA_SPLIT_FORMAT"));
}

static void test_preflight_rules(void **state)
{
    (void)state;
    char *names[3] = {"a", "b", "c"};
    ClassCounts even[3] = {{{40, 10}}, {{40, 10}}, {{40, 10}}};
    Dataset ds;
    fake_dataset(&ds, even, names, 0, 100, 100, 60, 20);
    Preprocess p;
    memset(&p, 0, sizeof p);
    p.size = 64;
    Error err;
    assert_int_equal(preprocess_norm_from_name(&p.norm, "caffe", &err), 0);
    /* caffe inputs of 0..1 pixels: a width of about 1 instead of 255 */
    InputStats st;
    input_stats_reset(&st);
    float px[6] = {-103.9f, -116.8f, -123.7f, -102.9f, -115.8f, -122.7f};
    input_stats_add(&st, px, 2);
    PreflightInput in;
    memset(&in, 0, sizeof in);
    in.ds = &ds;
    in.p = &p;
    in.declared = "caffe";
    in.inputs = &st;
    in.batch_size = 32;
    in.head_top_share = -1;
    in.overfit_accuracy = -1;
    Sink s = {0};
    diag_preflight(&in, collect, &s);
    const Finding *f = find(&s, "PREPROC_DOUBLE_SCALE");
    assert_non_null(f);
    assert_int_equal(f->severity, DIAG_ERROR);
    assert_int_equal(f->epoch, -1);
    assert_true(fabs(ev(f, "observed_width") - 1.0) < 1e-3);
    assert_true(fabs(ev(f, "expected_width") - 255.0) < 1e-3);
    assert_null(find(&s, "PREPROC_MISMATCH"));
    /* properly scaled caffe inputs span ~255: nothing */
    Sink ok = {0};
    float good[6] = {-103.9f, -116.8f, -123.7f, 151.1f, 138.2f, 131.3f};
    input_stats_reset(&st);
    input_stats_add(&st, good, 2);
    diag_preflight(&in, collect, &ok);
    assert_int_equal(ok.n, 0);
    /* a forced mode, a collapsed head, a failed overfit check, tiny inputs */
    Sink m = {0};
    in.declared = "torch";
    in.overridden = 1;
    in.head_top_share = 0.95;
    in.head_top_class = 7;
    in.head_classes = 1000;
    in.head_sample = 32;
    in.head_batch_majority = 0.34;
    in.overfit_accuracy = 0.34;
    in.overfit_steps = 50;
    in.overfit_batch = 32;
    p.size = 32;
    diag_preflight(&in, collect, &m);
    assert_non_null(find(&m, "PREPROC_MISMATCH"));
    f = find(&m, "HEAD_COLLAPSE");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "top_class"), 7);
    f = find(&m, "OVERFIT_BATCH_FAILED");
    assert_non_null(f);
    assert_true(fabs(ev(f, "accuracy") - 0.34) < 1e-9);
    assert_non_null(find(&m, "RESOLUTION_1X1"));
    assert_null(find(&m, "RESOLUTION_UPSCALED")); /* 40 native for 32 input */
    /* a batch that is 90% one class may land in one original class: no collapse */
    Sink one = {0};
    in.head_batch_majority = 0.9;
    diag_preflight(&in, collect, &one);
    assert_null(find(&one, "HEAD_COLLAPSE"));
    /* custom mode: rescale 1/255 in front of caffe's means expects 0..255 pixels
     * (means of ~100), so inputs one wide are double scaled */
    Sink cu = {0};
    in.overridden = 0;
    in.head_top_share = -1;
    in.overfit_accuracy = -1;
    p.norm.mode = NORM_CUSTOM;
    p.norm.rescale = 1.0f / 255;
    input_stats_reset(&st);
    input_stats_add(&st, px, 2);
    diag_preflight(&in, collect, &cu);
    f = find(&cu, "PREPROC_DOUBLE_SCALE");
    assert_non_null(f);
    assert_true(ev(f, "expected_width") > 200);
    /* constant inputs (all-black images) are not double scaling */
    Sink flat = {0};
    float black[6] = {-103.9f, -116.8f, -123.7f, -103.9f, -116.8f, -123.7f};
    input_stats_reset(&st);
    input_stats_add(&st, black, 2);
    diag_preflight(&in, collect, &flat);
    assert_null(find(&flat, "PREPROC_DOUBLE_SCALE"));
    p.norm.mode = NORM_CAFFE;
    p.norm.rescale = 1.0f;
    /* 20-pixel images fed at 64: upscaled 3.2x */
    Sink u = {0};
    ds.report.width_median = ds.report.height_median = 20;
    p.size = 64;
    in.overridden = 0;
    in.head_top_share = -1;
    in.overfit_accuracy = -1;
    diag_preflight(&in, collect, &u);
    f = find(&u, "RESOLUTION_UPSCALED");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "input_size"), 64);
    assert_null(find(&u, "RESOLUTION_1X1"));
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_divergence),
        cmocka_unit_test(test_unfreeze_destroys),
        cmocka_unit_test(test_too_low_overfit_no_learning),
        cmocka_unit_test(test_imbalance_rules),
        cmocka_unit_test(test_bn_gap),
        cmocka_unit_test(test_dataset_rules),
        cmocka_unit_test(test_preflight_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
